//! A batch of broker messages: malformed ones dead-lettered, duplicates sent once, and a
//! store error that fails its message, not the batch.

use crate::harness::*;
use base64::Engine;
use settle_notify::MessageOutcome;
use settle_shared::domain::event::CloudEvent;
use settle_shared::webhook_signature::generate_secret;
use settle_shared::webhooks::{DEAD_LETTERS, ENDPOINTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_dead_lettered_and_duplicates_sent_once() {
    let h = Harness::new().await;
    let (receiver, addr) = Receiver::start().await;
    h.endpoint(format!("http://{addr}/ok"), &[(&generate_secret(), None)]).await;
    let (event, _) = h.event("payment.captured");
    let good = base64::engine::general_purpose::STANDARD.encode(event.to_json());
    // One batch: a good event, garbage, the good event again (broker redelivery).
    let report = h.notifier.handle_batch(rmq_event(&[good.clone(), "%%%".into(), good])).await.unwrap();
    assert_eq!(report.outcomes.len(), 3);
    assert!(matches!(&report.outcomes[1].1, MessageOutcome::Malformed { reason } if reason.contains("base64")));
    assert_eq!(receiver.at("ok").len(), 1, "one delivery per (event, endpoint)");
    let q = settle_shared::ports::documents::Query::new()
        .filter(settle_shared::ports::documents::Cond::eq("kind", "malformed_message"));
    let letters = h.backends.documents.find(DEAD_LETTERS, &q).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["reason"].as_str().unwrap().contains("base64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_error_on_one_message_fails_that_message_not_the_batch() {
    // Arrange: two events for one endpoint; the store fails the first endpoint lookup.
    let base = Harness::new().await;
    let (h, memory) = base.on_memory_documents();
    let (receiver, addr) = Receiver::start().await;
    h.endpoint(format!("http://{addr}/ok"), &[(&generate_secret(), None)]).await;
    let (first, _) = h.event("payment.succeeded");
    let (second, _) = h.event("payment.refunded");
    let encode = |e: &CloudEvent| base64::engine::general_purpose::STANDARD.encode(e.to_json());
    memory.fail_next_finds(ENDPOINTS, 1);

    // Act
    let report = h.notifier.handle_batch(rmq_event(&[encode(&first), encode(&second)])).await.unwrap();

    // Assert: one message held with its reason, the other delivered; then the held one
    // is delivered from the retry queue, and each event reached the endpoint once.
    let held = report
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, MessageOutcome::Held { reason } if reason.contains("injected")))
        .count();
    assert_eq!((held, report.accepted()), (1, 1), "{report:?}");
    assert_eq!(receiver.at("ok").len(), 1);
    feed_retry_queue(&h, 4).await;
    let mut ids: Vec<String> =
        receiver.at("ok").iter().map(|r| r.headers["webhook-id"].to_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "both events delivered, each once");
    assert_eq!(receiver.at("ok").len(), 2);
}
