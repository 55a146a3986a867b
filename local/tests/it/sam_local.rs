//! `sam local invoke` without Docker: the `--env-vars` file `settle sam-env` writes,
//! resolved against template.yaml by the SAM CLI's own code, is the environment each
//! function gets here under the Lambda runtime emulator (as in SAM's container, on the
//! host's network; only the names of the test's own database, queues and Redis prefix are
//! put in), and the samples do their work in it.

use crate::events::{api_response, invoke, sample, World};
use crate::stack::unique;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sam_env_file_runs_each_function_as_sam_local_invoke_would() {
    let file = std::env::temp_dir().join(format!("{}.json", unique("sam-env")));
    std::fs::write(&file, settle_local::sample_events::sam_env_file().to_string()).unwrap();
    let resolved = settle_local::emulator::sam_local_env(&file);
    std::fs::remove_file(&file).ok();
    let mut resolved = resolved.unwrap_or_else(|e| panic!("{e:#}"));
    let functions: Vec<&String> = resolved.keys().collect();
    assert_eq!(functions, ["CsvIngestFunction", "NotifyFunction", "PaymentFunction"]);
    for env in resolved.values() {
        // No Secrets Manager: every value is in the file.
        assert!(env.contains(&("SETTLE_SECRET_ID".to_string(), String::new())), "{env:?}");
    }

    // The Payment API: its keys (a development token verifies; a card's fingerprint is
    // keyed) and stores.
    let world = World::on(resolved.remove("PaymentFunction").unwrap(), &[]).await;
    let payment = world.start("payment").await;
    let token = crate::events::dev_token("m_123", &["merchant"]);
    for (name, status) in [("apigw-v2-get-healthz.json", 200), ("apigw-v2-create-token.json", 201)] {
        let (path, text) = sample("payment", name);
        let text = settle_local::sample_events::fill(&text, &[("SETTLE_TOKEN", token.as_str())]).unwrap();
        let answer = invoke(&payment, &serde_json::from_str(&text).unwrap()).await;
        let (response, _) = api_response(&path, answer.clone());
        assert_eq!(response.status_code, status, "{}: {answer}", path.display());
    }
    payment.stop().await;

    // The notifier: the relay's schedule reads the outbox (MongoDB) and the broker.
    let world = World::on(resolved.remove("NotifyFunction").unwrap(), &[]).await;
    world.backends.bus.declare(&world.backends.topology).await.unwrap();
    let notify = world.start("notify").await;
    let (_, text) = sample("notify", "eventbridge-relay-outbox.json");
    let answer = invoke(&notify, &serde_json::from_str(&text).unwrap()).await;
    assert_eq!(answer["due"].as_u64(), Some(0), "a new database has nothing to relay: {answer}");
    notify.stop().await;

    // csv-ingest: the settlement file is read from the S3 emulator, which only
    // SETTLE_AWS_ENDPOINT_URL names in this environment.
    let world = World::on(resolved.remove("CsvIngestFunction").unwrap(), &[]).await;
    world.backends.bus.declare(&world.backends.topology).await.unwrap();
    let ingest = world.start("csv-ingest").await;
    let (_, text) = sample("csv-ingest", "s3-put-settlement.json");
    let event: Value = serde_json::from_str(&text).unwrap();
    let s3: aws_lambda_events::event::s3::S3Event = serde_json::from_value(event.clone()).unwrap();
    let key = settle_csv_ingest::object_key(&s3.records[0]);
    let header = settle_csv_ingest::row::HEADER.join(",");
    let row = format!("{},pay_zzz,gw-1,m_123,charge,10.00,USD,0.30,9.70,2026-11-27T06:00:00Z", unique("s"));
    world.backends.objects.put(&key, format!("{header}\n{row}\n").into_bytes(), "text/csv").await.unwrap();
    let answer = invoke(&ingest, &event).await;
    assert!(answer.to_string().contains("unknown_payment"), "{answer}");
    ingest.stop().await;
}
