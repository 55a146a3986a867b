//! Document store contract: memory model and MongoDB.

use crate::helpers;
use serde_json::json;
use settle_shared::ports::documents::*;
use std::sync::Arc;

async fn memory_store() -> DocumentStore {
    DocumentStore::Memory(MemoryDocuments::new())
}

async fn mongo_store() -> DocumentStore {
    let store = MongoDocuments::connect(&helpers::mongodb_uri(), &helpers::unique("it"), None, helpers::TIMEOUT)
        .await
        .unwrap_or_else(|e| helpers::unreachable("MongoDB", e));
    let store = DocumentStore::Mongo(store);
    if let Err(e) = store.ping().await {
        helpers::unreachable("MongoDB", e);
    }
    store
}

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().expect("object")
}

async fn inserted_documents_read_back_and_ids_collide(store: DocumentStore) {
    let payment = doc(json!({"_id": "pay_1", "merchant_id": "m_1", "amount": 1999, "metadata": {"k": "v"}}));
    store.insert("payments", payment.clone()).await.unwrap();
    assert_eq!(store.get("payments", "pay_1").await.unwrap(), Some(payment));
    assert_eq!(store.get("payments", "pay_2").await.unwrap(), None);
    let again = store.insert("payments", doc(json!({"_id": "pay_1", "amount": 1}))).await;
    assert!(matches!(again, Err(StoreError::Duplicate { .. })), "{again:?}");
    assert_eq!(store.get("payments", "pay_1").await.unwrap().unwrap()["amount"], 1999);
}

async fn values_keep_their_json_shape_and_names_stay_plain(store: DocumentStore) {
    let original = doc(json!({
        "_id": "d",
        "nested": {"list": [1, "two", {"three": 3.5}], "big": 9_007_199_254_740_993_i64, "flag": false, "none": null},
        "ext_json_lookalike": {"date": {"when": "$date"}, "n": "$numberLong"},
    }));
    store.insert("shapes", original.clone()).await.unwrap();
    assert_eq!(store.get("shapes", "d").await.unwrap(), Some(original));
    for bad in ["a.b", "$where", ""] {
        let mut d = doc(json!({"_id": "x"}));
        d.insert(bad.to_string(), json!(1));
        assert!(matches!(store.insert("shapes", d).await, Err(StoreError::Other(_))), "{bad:?} accepted");
        let q = Query::new().filter(Cond::eq(bad, 1));
        assert!(store.find("shapes", &q).await.is_err(), "{bad:?} accepted in a query");
    }
    let set_id = store.update("shapes", "d", vec![], doc(json!({"_id": "other"}))).await;
    assert!(set_id.is_err(), "_id must not be updatable");
    // limit(0) is treated as 1 by both stores (MongoDB would read 0 as "no limit").
    store.insert("shapes", doc(json!({"_id": "e"}))).await.unwrap();
    assert_eq!(store.find("shapes", &Query::new().limit(0)).await.unwrap().len(), 1);
}

/// Batch reads by id, and batch inserts that converge when rerun.
async fn batches_read_by_id_and_rerun_idempotently(store: DocumentStore) {
    let rows: Vec<Document> = (0..5).map(|i| doc(json!({"_id": format!("r{i}"), "n": i}))).collect();
    assert_eq!(store.insert_many_new("rows", rows[..3].to_vec()).await.unwrap(), 3);
    // A rerun of the whole batch after a crash: only the missing ones are new.
    assert_eq!(store.insert_many_new("rows", rows.clone()).await.unwrap(), 2);
    assert_eq!(store.insert_many_new("rows", rows).await.unwrap(), 0);
    let ids: Vec<String> = ["r4", "absent", "r0"].iter().map(|s| s.to_string()).collect();
    let mut got: Vec<i64> =
        store.get_many("rows", &ids).await.unwrap().iter().map(|d| d["n"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, [0, 4]);
    assert!(store.get_many("rows", &[]).await.unwrap().is_empty());
}

async fn unique_indexes_reject_a_second_document(store: DocumentStore) {
    store.ensure_indexes(&[IndexSpec::new("keys", &["merchant_id", "key"]).unique()]).await.unwrap();
    // Idempotent: a second cold start declares the same index again.
    store.ensure_indexes(&[IndexSpec::new("keys", &["merchant_id", "key"]).unique()]).await.unwrap();
    store.insert("keys", doc(json!({"_id": "a", "merchant_id": "m_1", "key": "k1"}))).await.unwrap();
    store.insert("keys", doc(json!({"_id": "b", "merchant_id": "m_2", "key": "k1"}))).await.unwrap();
    let clash = store.insert("keys", doc(json!({"_id": "c", "merchant_id": "m_1", "key": "k1"}))).await;
    assert!(matches!(clash, Err(StoreError::Duplicate { ref collection }) if collection == "keys"), "{clash:?}");
    assert_eq!(store.get("keys", "c").await.unwrap(), None);
}

async fn queries_filter_sort_and_limit(store: DocumentStore) {
    store.ensure_indexes(&[IndexSpec::new("payments", &["merchant_id", "created"])]).await.unwrap();
    for (id, merchant, created, status) in [
        ("p1", "m_1", 10, "succeeded"),
        ("p2", "m_1", 20, "failed"),
        ("p3", "m_2", 30, "succeeded"),
        ("p4", "m_1", 40, "succeeded"),
        ("p5", "m_1", 50, "succeeded"),
    ] {
        let d = doc(json!({"_id": id, "merchant_id": merchant, "created": created, "status": status}));
        store.insert("payments", d).await.unwrap();
    }
    let query = Query::new()
        .filter(Cond::eq("merchant_id", "m_1"))
        .filter(Cond::eq("status", "succeeded"))
        .filter(Cond::new("created", Op::Gt, 10))
        .sort("created", Order::Desc)
        .limit(5);
    let ids: Vec<String> =
        store.find("payments", &query).await.unwrap().iter().map(|d| d["_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["p5", "p4"]);

    let page = store.find("payments", &Query::new().sort("created", Order::Asc).limit(2)).await.unwrap();
    assert_eq!(page.iter().map(|d| d["_id"].as_str().unwrap()).collect::<Vec<_>>(), ["p1", "p2"]);

    // Operator-shaped input is only ever a string value: it matches nothing.
    let injected = Query::new().filter(Cond::eq("merchant_id", r#"{"$gt": ""}"#));
    assert!(store.find("payments", &injected).await.unwrap().is_empty());
    // Comparisons are typed: a string never compares with a number.
    let typed = Query::new().filter(Cond::new("created", Op::Gt, "0"));
    assert!(store.find("payments", &typed).await.unwrap().is_empty());
    let missing = Query::new().filter(Cond::new("refunded", Op::Ne, 1));
    assert_eq!(store.find("payments", &missing).await.unwrap().len(), 5);
}

async fn conditional_updates_apply_once(store: DocumentStore) {
    store.insert("payments", doc(json!({"_id": "p", "status": "requires_capture", "version": 1}))).await.unwrap();
    let set = doc(json!({"status": "succeeded", "version": 2}));
    let cond = || vec![Cond::eq("version", 1), Cond::eq("status", "requires_capture")];
    assert!(store.update("payments", "p", cond(), set.clone()).await.unwrap());
    assert!(!store.update("payments", "p", cond(), set).await.unwrap(), "stale version must not apply");
    assert!(!store.update("payments", "absent", vec![], doc(json!({"x": 1}))).await.unwrap());
    let stored = store.get("payments", "p").await.unwrap().unwrap();
    assert_eq!((stored["status"].as_str(), stored["version"].as_i64()), (Some("succeeded"), Some(2)));
}

async fn transactions_commit_whole_or_not_at_all(store: DocumentStore) {
    store.insert("payments", doc(json!({"_id": "p", "refunded": 0, "version": 1}))).await.unwrap();
    // Arrange: a refund insert plus a payment update whose condition fails.
    let failing = vec![
        Write::Insert { collection: "refunds".into(), doc: doc(json!({"_id": "r1", "amount": 5})) },
        Write::Insert { collection: "outbox".into(), doc: doc(json!({"_id": "e1"})) },
        Write::Update {
            collection: "payments".into(),
            id: "p".into(),
            conds: vec![Cond::eq("version", 7)],
            set: doc(json!({"refunded": 5, "version": 2})),
        },
    ];
    // Act / Assert: nothing of it is visible.
    assert!(matches!(store.transaction(failing).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get("refunds", "r1").await.unwrap(), None);
    assert_eq!(store.get("outbox", "e1").await.unwrap(), None);

    // A duplicate insert also rolls back the writes before it.
    store.insert("outbox", doc(json!({"_id": "dup"}))).await.unwrap();
    let duplicate = vec![
        Write::Update {
            collection: "payments".into(),
            id: "p".into(),
            conds: vec![],
            set: doc(json!({"refunded": 9})),
        },
        Write::Insert { collection: "outbox".into(), doc: doc(json!({"_id": "dup"})) },
    ];
    assert!(matches!(store.transaction(duplicate).await, Err(StoreError::Duplicate { .. })));
    assert_eq!(store.get("payments", "p").await.unwrap().unwrap()["refunded"], 0);

    let ok = vec![
        Write::Insert { collection: "refunds".into(), doc: doc(json!({"_id": "r1", "amount": 5})) },
        Write::Update {
            collection: "payments".into(),
            id: "p".into(),
            conds: vec![Cond::eq("version", 1)],
            set: doc(json!({"refunded": 5, "version": 2})),
        },
        Write::Delete { collection: "outbox".into(), id: "dup".into() },
    ];
    store.transaction(ok).await.unwrap();
    assert_eq!(store.get("payments", "p").await.unwrap().unwrap()["refunded"], 5);
    assert!(store.get("refunds", "r1").await.unwrap().is_some());
    assert!(store.get("outbox", "dup").await.unwrap().is_none());
}

/// Twenty racing read-modify-write cycles guarded by a version condition: none is lost,
/// none applied twice. This is the mechanism that keeps refunds under the capture.
async fn racing_compare_and_set_loses_nothing(store: DocumentStore) {
    store.insert("counters", doc(json!({"_id": "c", "n": 0, "version": 0}))).await.unwrap();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let current = store.get("counters", "c").await.unwrap().unwrap();
                let (n, v) = (current["n"].as_i64().unwrap(), current["version"].as_i64().unwrap());
                let set = doc(json!({"n": n + 1, "version": v + 1}));
                match store.update("counters", "c", vec![Cond::eq("version", v)], set).await {
                    Ok(true) => return,
                    Ok(false) | Err(StoreError::Conflict(_)) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = store.get("counters", "c").await.unwrap().unwrap();
    assert_eq!((end["n"].as_i64(), end["version"].as_i64()), (Some(20), Some(20)));
}

crate::contract_tests!(
    memory: memory_store,
    real: mongo_store,
    contracts: [
        inserted_documents_read_back_and_ids_collide,
        values_keep_their_json_shape_and_names_stay_plain,
        batches_read_by_id_and_rerun_idempotently,
        unique_indexes_reject_a_second_document,
        queries_filter_sort_and_limit,
        conditional_updates_apply_once,
        transactions_commit_whole_or_not_at_all,
        racing_compare_and_set_loses_nothing,
    ]
);

#[tokio::test]
async fn unreachable_mongodb_is_reported_as_unavailable() {
    let store = MongoDocuments::connect(
        "mongodb://127.0.0.1:1/?directConnection=true",
        "x",
        None,
        std::time::Duration::from_millis(300),
    )
    .await
    .unwrap();
    let err = DocumentStore::Mongo(store).get("c", "id").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
