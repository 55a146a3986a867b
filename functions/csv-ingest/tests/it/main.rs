//! The ingest through the real path: a file put into the emulator bucket, the S3 event
//! for it, the handler, and MongoDB, Redis and RabbitMQ behind it.

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use settle_csv_ingest::pipeline::{AGGREGATES, LEDGER};
use settle_csv_ingest::{Ingestor, ObjectOutcome};
use settle_shared::ports::documents::{Cond, Query};
use settle_shared::ports::objects::ObjectStore;
use settle_shared::Backends;
use std::io::Write;
use std::time::Duration;

use settle_test_support::unique;

async fn backends() -> Backends {
    let config = settle_test_support::config("ingest", settle_shared::config::Backend::Real, &[]);
    let backends = Backends::connect(&config).await.unwrap();
    if let ObjectStore::S3(s3) = &backends.objects {
        s3.ensure_bucket().await.unwrap();
    }
    let problems = backends.health().await.problems();
    assert!(problems.is_empty(), "services unreachable: {problems:?} (start them with scripts/services)");
    backends.bus.declare(&backends.topology).await.unwrap();
    backends
}

/// The S3 event for `key`, from the sample in `events/`.
fn s3_event(bucket: &str, key: &str) -> aws_lambda_events::event::s3::S3Event {
    let mut v: Value =
        serde_json::from_str(include_str!("../../../../events/csv-ingest/s3-put-settlement.json")).unwrap();
    v["Records"][0]["s3"]["bucket"]["name"] = json!(bucket);
    v["Records"][0]["s3"]["object"]["key"] = json!(key.replace(' ', "+"));
    serde_json::from_value(v).unwrap()
}

async fn ingest(backends: &Backends, key: &str) -> settle_csv_ingest::pipeline::IngestSummary {
    let report =
        Ingestor::new(backends.clone()).handle_s3_event(s3_event(backends.objects.bucket(), key)).await.unwrap();
    match report.outcomes.into_iter().next().unwrap() {
        ObjectOutcome::Received { summary, .. } => summary,
        other => panic!("{other:?}"),
    }
}

async fn seed_payment(backends: &Backends, id: &str, currency: &str, captured: i64, refunded: i64) {
    let doc = json!({"_id": id, "merchant_id": "m_1", "currency": currency, "amount": captured,
        "amount_captured": captured, "amount_refunded": refunded});
    backends.documents.insert("payments", doc.as_object().cloned().unwrap()).await.unwrap();
}

const HEAD: &str = "settlement_id,payment_id,gateway_reference,merchant_id,type,amount,currency,fee,net,settled_at\n";

fn file() -> String {
    let rows = [
        "s1,pay_a,gw-1,m_1,charge,20.00,USD,0.59,19.41,2026-11-27T06:00:00Z",
        "s1,pay_b,gw-2,m_1,charge,15.00,USD,0.45,14.55,2026-11-27T06:00:00Z", // captured 10.00
        "s1,pay_c,gw-3,m_1,charge,5.00,USD,0,5.00,2026-11-27T06:00:00Z",      // EUR payment
        "s1,pay_zzz,gw-4,m_1,charge,1.00,USD,0,1.00,2026-11-27T06:00:00Z",    // unknown
        "s1,pay_a,gw-1,m_1,charge,20.00,USD,0.59,19.41,2026-11-27T06:00:00Z", // duplicate of line 2
        "s1,pay_a,gw-5,m_1,refund,-5.00,USD,0,-5.00,2026-11-27T07:00:00Z",
        "s1,pay_a,gw-6,m_1,charge,2O.00,USD,0,20.00,2026-11-27T06:00:00Z", // bad number
        "s1,pay_a,gw-7,m_1,charge,20.00,USD,1.00,20.00,2026-11-27T06:00:00Z", // net mismatch
        "s1,pay_a,gw-8,m_1,charge",                                        // ragged
        "\"s1\",\"pay_a\",\"gw,9\",m_1,fee,-0.30,USD,0,-0.30,2026-11-28T00:00:00Z",
    ];
    format!("{HEAD}{}\n", rows.join("\n"))
}

fn outcomes(summary: &settle_csv_ingest::pipeline::IngestSummary) -> Vec<(String, u64)> {
    summary.outcomes.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_reconciled_reported_and_published_once() {
    let b = backends().await;
    seed_payment(&b, "pay_a", "USD", 2000, 500).await;
    seed_payment(&b, "pay_b", "USD", 1000, 0).await;
    seed_payment(&b, "pay_c", "EUR", 500, 0).await;
    let mut events = b.bus.subscribe(&b.topology.queue, 100).await.unwrap();
    let key = "settlements/incoming/day 1.csv";
    b.objects.put(key, file().into_bytes(), "text/csv").await.unwrap();
    let metrics = settle_shared::metrics::capture();

    let summary = ingest(&b, key).await;
    assert_eq!(summary.status, "ingested");
    assert_eq!((summary.rows, summary.rejects), (7, 3));
    // EMF: rows per outcome, rejects and throughput, one line each, as CloudWatch parses them.
    let records = settle_shared::metrics::captured_with(&metrics, "key", key);
    let by_outcome: Vec<(String, f64)> = records
        .iter()
        .filter_map(|r| Some((r.get("Outcome")?.as_str()?.to_string(), r["SettlementRows"].as_f64()?)))
        .collect();
    let expected: Vec<(String, f64)> = outcomes(&summary).into_iter().map(|(o, n)| (o, n as f64)).collect();
    assert_eq!(by_outcome, expected);
    let totals: Vec<_> = records.iter().filter(|r| r.contains_key("Rejects")).collect();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0]["Rejects"].as_f64(), totals[0]["RejectedFiles"].as_f64()), (Some(3.0), Some(0.0)));
    assert!(totals[0]["IngestRowsPerSecond"].as_f64().unwrap() > 0.0);
    assert_eq!(
        outcomes(&summary),
        [
            ("amount_mismatch".into(), 1),
            ("currency_mismatch".into(), 1),
            ("duplicate".into(), 1),
            ("matched".into(), 3),
            ("unknown_payment".into(), 1)
        ]
    );
    // The rejects report names every bad row with its line and column.
    let report_key = summary.rejects_key.clone().unwrap();
    assert_eq!(report_key, "settlements/rejects/day 1.csv.rejects.csv");
    let mut report = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut b.objects.get(&report_key).await.unwrap().unwrap().body, &mut report)
        .await
        .unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "record,line,column,reason");
    assert!(lines[1].starts_with("7,8,6,amount: bad number"), "{report}");
    assert!(lines[2].starts_with("8,9,9,net"), "{report}");
    assert!(lines[3].starts_with("9,10,,\"expected 10 columns, found 5\""), "{report}");

    // Aggregates per merchant, currency and day.
    let q = Query::new().filter(Cond::eq("merchant_id", "m_1")).filter(Cond::eq("date", "2026-11-27"));
    let aggs = b.documents.find(AGGREGATES, &q).await.unwrap();
    assert_eq!(aggs.len(), 1);
    assert_eq!(aggs[0]["count"], 6);
    assert_eq!(aggs[0]["by_type"]["charge"], json!([5, 6100]));

    // settlement.ingested and one settlement.mismatch per mismatch.
    let mut types = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), events.next()).await {
        let e: Value = serde_json::from_slice(&d.body).unwrap();
        types.push(e["type"].as_str().unwrap().to_string());
        d.ack().await.unwrap();
    }
    types.sort();
    assert_eq!(types.iter().filter(|t| *t == "settlement.mismatch").count(), 4);
    assert_eq!(types.iter().filter(|t| *t == "settlement.ingested").count(), 1);

    // The same S3 event again: a no-op, no new events, same aggregates.
    let again = ingest(&b, key).await;
    assert_eq!(again.status, "already_ingested");
    let counted = settle_shared::metrics::captured_with(&metrics, "key", key).len();
    assert_eq!(counted, records.len(), "a redelivery counts no rows again");
    assert_eq!(outcomes(&again), outcomes(&summary));
    assert!(tokio::time::timeout(Duration::from_secs(2), events.next()).await.is_err(), "redelivery published events");
    assert_eq!(b.documents.find(AGGREGATES, &q).await.unwrap(), aggs);

    // A run that crashed part-way (its ledger still says running) runs again to the same state.
    let ledger = b.documents.find(LEDGER, &Query::new().filter(Cond::eq("key", key))).await.unwrap();
    let ledger_id = ledger[0]["_id"].as_str().unwrap().to_string();
    b.documents
        .update(LEDGER, &ledger_id, vec![], json!({"status": "running"}).as_object().cloned().unwrap())
        .await
        .unwrap();
    let rerun = ingest(&b, key).await;
    assert_eq!(rerun.status, "ingested");
    assert_eq!(outcomes(&rerun), outcomes(&summary), "a rerun must not count its own rows as duplicates");
    assert_eq!(b.documents.find(AGGREGATES, &q).await.unwrap(), aggs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_files_stream_to_the_same_result() {
    let b = backends().await;
    seed_payment(&b, "pay_a", "USD", 2000, 500).await;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("{HEAD}s1,pay_a,gw-1,m_1,charge,20.00,USD,0.59,19.41,2026-11-27T06:00:00Z\n").as_bytes())
        .unwrap();
    let key = "settlements/incoming/day2.csv.gz";
    b.objects.put(key, gz.finish().unwrap(), "application/gzip").await.unwrap();
    let summary = ingest(&b, key).await;
    assert_eq!((summary.status.as_str(), summary.rows), ("ingested", 1));
    assert_eq!(outcomes(&summary), [("matched".to_string(), 1)]);
    // A corrupt gzip is rejected whole, with a reason, not a panic.
    b.objects
        .put("settlements/incoming/bad.csv.gz", b"\x1f\x8b\x08\x00garbage".to_vec(), "application/gzip")
        .await
        .unwrap();
    let bad = ingest(&b, "settlements/incoming/bad.csv.gz").await;
    assert_eq!(bad.status, "rejected");
    assert!(bad.reason.unwrap().contains("unreadable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_never_panic_and_report_every_bad_row() {
    let b = backends().await;
    let huge = "x".repeat(10_000);
    let cases: Vec<(&str, Vec<u8>, &str, u64, u64)> = vec![
        ("empty.csv", Vec::new(), "rejected", 0, 0),
        ("header-only.csv", HEAD.as_bytes().to_vec(), "ingested", 0, 0),
        ("wrong-header.csv", b"id,amount\n1,2\n".to_vec(), "rejected", 0, 0),
        ("bom-crlf.csv", format!("\u{feff}{}s1,pay_q,gw,m_1,charge,1.00,USD,0,1.00,2026-11-27T06:00:00Z\r\n", HEAD.replace('\n', "\r\n")).into_bytes(), "ingested", 1, 0),
        ("utf8.csv", [HEAD.as_bytes(), b"s1,pay_\xff,gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n"].concat(), "ingested", 0, 1),
        ("huge-field.csv", format!("{HEAD}s1,{huge},gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n").into_bytes(), "ingested", 0, 1),
        ("quotes.csv", format!("{HEAD}\"s1\",\"pay_q\",\"gw \"\"quoted\"\", with\nnewline\",m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n\"unterminated,x\n").into_bytes(), "ingested", 1, 1),
    ];
    for (name, body, status, rows, rejects) in cases {
        let key = format!("settlements/incoming/{name}");
        b.objects.put(&key, body, "text/csv").await.unwrap();
        let s = ingest(&b, &key).await;
        assert_eq!((s.status.as_str(), s.rows, s.rejects), (status, rows, rejects), "{name}: {s:?}");
        if status == "rejected" {
            assert!(s.reason.is_some() && s.rejects_key.is_some(), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_broker_refused_fail_the_run_and_the_retry_publishes_them() {
    let mut b = backends().await;
    seed_payment(&b, "pay_a", "USD", 2000, 500).await;
    // An exchange nobody declared: the broker refuses every publish to it.
    let declared = b.topology.clone();
    b.topology = settle_shared::ports::events::Topology::new(&unique("it.undeclared"), &declared.queue);
    let key = "settlements/incoming/broker down.csv";
    b.objects.put(key, file().into_bytes(), "text/csv").await.unwrap();
    let failed = Ingestor::new(b.clone()).handle_s3_event(s3_event(b.objects.bucket(), key)).await;
    assert!(failed.is_err(), "a run whose events were not published must fail, so that Lambda retries it");
    let ledger = b.documents.find(LEDGER, &Query::new().filter(Cond::eq("key", key))).await.unwrap();
    assert_eq!(ledger[0]["status"], "running", "the ledger must not record a run that lost events");

    // The retry, with the broker taking events again, publishes what the first run could not.
    b.topology = declared;
    let mut events = b.bus.subscribe(&b.topology.queue, 100).await.unwrap();
    let summary = ingest(&b, key).await;
    assert_eq!((summary.status.as_str(), summary.rows), ("ingested", 7));
    let mut count = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), events.next()).await {
        count += 1;
        d.ack().await.unwrap();
    }
    let mismatches = summary.outcomes.iter().filter(|(k, _)| *k != "matched").map(|(_, v)| v).sum::<u64>();
    assert_eq!(count, mismatches + 1, "every mismatch and settlement.ingested");
}
