//! S3 → csv-ingest feed: turns "object created" notifications into the S3 event Lambda
//! receives. Real backend: the bucket notifies an SQS queue (as many AWS deployments
//! do) which this polls. Memory backend: the in-memory bucket's own notifications, plus a
//! watched local folder whose new files are put into the bucket.

use crate::stack::Observation;
use aws_lambda_events::event::s3::S3Event;
use settle_csv_ingest::{Ingestor, INCOMING_PREFIX};
use settle_shared::ports::delay_queue::DelayQueue;
use settle_shared::ports::objects::{MemoryObjects, ObjectMeta, ObjectStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

/// The S3 event for one created object, shaped like a real `ObjectCreated:Put` record
/// (key form-URL-encoded, as S3 sends it).
pub fn created_event(bucket: &str, key: &str, meta: &ObjectMeta) -> S3Event {
    let encoded: String = percent_encoding::utf8_percent_encode(key, KEY_ESCAPES).to_string().replace("%20", "+");
    let json = serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "settle-local" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "settle-local",
                "bucket": { "name": bucket, "ownerIdentity": { "principalId": "settle-local" }, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": { "key": encoded, "size": meta.size, "eTag": meta.etag }
            }
        }]
    });
    match normalise(json) {
        Notification::Event(event) => event,
        // The JSON above is a well-formed record; this arm is unreachable in practice.
        _ => S3Event::default(),
    }
}

/// Characters S3 escapes in event keys (everything but unreserved characters and `/`).
const KEY_ESCAPES: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// What a notification body turned out to be.
#[derive(Debug)]
pub enum Notification {
    Event(S3Event),
    /// `s3:TestEvent`, sent once when the notification is configured.
    Test,
    /// Not an S3 event: the reason, for the log (the message is kept for a look).
    Unreadable(String),
}

/// Parses a notification body, filling the members emulators leave out
/// (`userIdentity`, `requestParameters`), which the Lambda event type requires.
pub fn normalise(mut json: serde_json::Value) -> Notification {
    if json.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Notification::Test;
    }
    let Some(records) = json.get_mut("Records").and_then(|r| r.as_array_mut()) else {
        return Notification::Unreadable("no Records array".into());
    };
    for record in records.iter_mut() {
        if let Some(record) = record.as_object_mut() {
            record.entry("userIdentity").or_insert_with(|| serde_json::json!({}));
            record.entry("requestParameters").or_insert_with(|| serde_json::json!({}));
        }
    }
    match serde_json::from_value(json) {
        Ok(event) => Notification::Event(event),
        Err(e) => Notification::Unreadable(e.to_string()),
    }
}

async fn handle(ingestor: &Ingestor, event: S3Event, observations: &broadcast::Sender<Observation>) -> bool {
    let work = ingestor.handle_s3_event(event.clone());
    match crate::invocation(settle_csv_ingest::FUNCTION, work).await {
        Ok(report) => {
            let _ = observations.send(Observation::Ingest { event, report });
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "csv-ingest failed; the event will be retried");
            false
        }
    }
}

/// Real backend: poll the SQS queue the bucket notifies.
pub async fn run_from_queue(ingestor: Ingestor, queue: DelayQueue, observations: broadcast::Sender<Observation>) {
    loop {
        let messages = match queue.receive(10, Duration::from_secs(1)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "csv-ingest feed: cannot poll the S3 event queue; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for message in messages {
            let parsed = match serde_json::from_str(&message.body) {
                Ok(json) => normalise(json),
                Err(e) => Notification::Unreadable(e.to_string()),
            };
            let done = match parsed {
                Notification::Test => true,
                Notification::Event(event) => handle(&ingestor, event, &observations).await,
                Notification::Unreadable(reason) => {
                    // Kept in the queue (and so in its DLQ after the retries) for a look.
                    tracing::warn!(%reason, message_id = %message.message_id, "unreadable S3 notification");
                    false
                }
            };
            if done {
                queue.delete(&message.receipt).await.ok();
            }
        }
    }
}

/// Memory backend: the in-memory bucket's notifications. `created` must be subscribed
/// before anything is put, so that no notification is missed.
pub async fn run_from_memory(
    ingestor: Ingestor,
    bucket: MemoryObjects,
    mut created: broadcast::Receiver<(String, ObjectMeta)>,
    observations: broadcast::Sender<Observation>,
) {
    let name = bucket.bucket().to_string();
    loop {
        match created.recv().await {
            Ok((key, meta)) => {
                handle(&ingestor, created_event(&name, &key, &meta), &observations).await;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("csv-ingest feed skipped {n} notifications"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Memory backend: files that appear (or change) in `dir` are put into the bucket under
/// `settlements/incoming/`, which notifies csv-ingest like any other put.
pub async fn watch_folder(dir: PathBuf, objects: ObjectStore) {
    let mut seen: HashMap<PathBuf, (SystemTime, u64)> = HashMap::new();
    loop {
        if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let Ok(meta) = entry.metadata().await else { continue };
                if !meta.is_file() {
                    continue;
                }
                let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
                let path = entry.path();
                if seen.get(&path) == Some(&stamp) {
                    continue;
                }
                seen.insert(path.clone(), stamp);
                let name = entry.file_name().to_string_lossy().into_owned();
                match tokio::fs::read(&path).await {
                    Ok(body) => {
                        let key = format!("{INCOMING_PREFIX}{name}");
                        if let Err(e) = objects.put(&key, body, "text/csv").await {
                            tracing::warn!(error = %e, %key, "could not put watched file");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, path = %path.display(), "could not read watched file"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_events_encode_keys_like_s3_and_decode_back() {
        let meta = ObjectMeta { size: 3, etag: "abc".into() };
        let event = created_event("b", "settlements/incoming/day 1 (eu).csv", &meta);
        let raw = event.records[0].s3.object.key.clone().unwrap();
        assert_eq!(raw, "settlements/incoming/day+1+%28eu%29.csv");
        assert_eq!(settle_csv_ingest::object_key(&event.records[0]), "settlements/incoming/day 1 (eu).csv");
    }

    #[test]
    fn emulator_events_without_identity_are_accepted_and_test_events_skipped() {
        let moto_like = serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-27T00:00:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c", "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
                   "object": {"key": "settlements%2Fincoming%2Fa.csv", "size": 1, "eTag": "e"}}}]});
        let Notification::Event(event) = normalise(moto_like) else { panic!("lenient parse failed") };
        assert_eq!(settle_csv_ingest::object_key(&event.records[0]), "settlements/incoming/a.csv");
        let test_event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert!(matches!(normalise(test_event), Notification::Test));
        let broken = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put"}]});
        assert!(matches!(normalise(broken), Notification::Unreadable(_)));
    }
}
