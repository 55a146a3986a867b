//! The settlement summary: aggregates as csv-ingest writes them, summed per day, served
//! from the cache until the ingest drops it.

use crate::helpers::*;
use axum::http::StatusCode;
use serde_json::json;
use settle_shared::settlements::{summary_cache_key, AGGREGATES};

#[tokio::test]
async fn summaries_add_up_files_and_come_from_the_cache_until_dropped() {
    let _broker = BROKER.read().await;
    let app = TestApp::new().await;
    let (m, t) = merchant();
    let aggregate = |id: &str, charges: i64, amount: i64| {
        json!({"_id": id, "ledger": id, "merchant_id": m, "currency": "USD", "date": "2026-11-27", "count": charges,
            "by_type": {"charge": [charges, amount]}, "by_outcome": {"matched": charges}})
        .as_object()
        .cloned()
        .unwrap()
    };
    let docs = &app.state.backends.documents;
    docs.insert(AGGREGATES, aggregate("f1", 2, 3000)).await.unwrap();
    docs.insert(AGGREGATES, aggregate("f2", 1, 500)).await.unwrap();

    let path = "/v1/settlements/summary?date=2026-11-27";
    let r = app.get(path, &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["currencies"]["USD"]["by_type"]["charge"], json!({"count": 3, "amount": 3500}));
    assert_eq!(r.json["currencies"]["USD"]["by_outcome"]["matched"], 3);

    // Served from Redis: a new file is invisible until the ingest drops the cached copy.
    docs.insert(AGGREGATES, aggregate("f3", 1, 100)).await.unwrap();
    assert_eq!(app.get(path, &t).await.json["currencies"]["USD"]["count"], 3);
    app.state.backends.kv.delete(&summary_cache_key(&app.state.config.redis_prefix, &m, "2026-11-27")).await.unwrap();
    assert_eq!(app.get(path, &t).await.json["currencies"]["USD"]["count"], 4);

    // Another merchant's summary is not found; support must name the merchant.
    let (_, other) = merchant();
    assert_eq!(app.get(&format!("{path}&merchant_id={m}"), &other).await.status, StatusCode::NOT_FOUND);
    let support = sign(&claims("agent", None, &["support"]));
    assert_eq!(app.get(path, &support).await.json["field"], "merchant_id");
    assert_eq!(app.get(&format!("{path}&merchant_id={m}"), &support).await.json["currencies"]["USD"]["count"], 4);
    assert_eq!(app.get("/v1/settlements/summary?date=27-11-2026", &t).await.json["field"], "date");

    // Two files whose day totals together pass i64: refused by name, never wrapped round.
    docs.insert(AGGREGATES, aggregate("big1", 9000, i64::MAX - 10)).await.unwrap();
    docs.insert(AGGREGATES, aggregate("big2", 1, 11)).await.unwrap();
    let big = "/v1/settlements/summary?date=2026-11-27";
    app.state.backends.kv.delete(&summary_cache_key(&app.state.config.redis_prefix, &m, "2026-11-27")).await.unwrap();
    let refused = app.get(big, &t).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("largest sum"), "{}", refused.text);
}
