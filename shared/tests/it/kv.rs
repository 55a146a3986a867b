//! Key-value contract: memory model and Redis.

use crate::helpers;
use settle_shared::ports::kv::*;
use std::sync::Arc;
use std::time::Duration;

/// Keys carry a per-test prefix, so the real Redis is shared safely.
struct Kv {
    store: KeyValueStore,
    prefix: String,
}

impl Kv {
    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }
}

async fn memory_kv() -> Kv {
    Kv { store: KeyValueStore::Memory(MemoryKv::new()), prefix: helpers::unique("it") }
}

async fn redis_kv() -> Kv {
    let store = KeyValueStore::Redis(RedisKv::new(&helpers::redis_url(), None, helpers::TIMEOUT).unwrap());
    if let Err(e) = store.ping().await {
        helpers::unreachable("Redis", e);
    }
    Kv { store, prefix: helpers::unique("it") }
}

async fn values_expire_after_their_ttl(kv: Kv) {
    let (a, b) = (kv.key("a"), kv.key("b"));
    kv.store.set(&a, b"1", Some(Duration::from_millis(150))).await.unwrap();
    kv.store.set(&b, b"2", None).await.unwrap();
    assert_eq!(kv.store.get(&a).await.unwrap().as_deref(), Some(&b"1"[..]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(kv.store.get(&a).await.unwrap(), None);
    assert_eq!(kv.store.get(&b).await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(kv.store.delete(&b).await.unwrap());
    assert!(!kv.store.delete(&b).await.unwrap());
}

async fn get_many_answers_in_key_order(kv: Kv) {
    kv.store.set(&kv.key("x"), b"X", None).await.unwrap();
    kv.store.set(&kv.key("z"), b"Z", None).await.unwrap();
    let got = kv.store.get_many(&[kv.key("x"), kv.key("y"), kv.key("z")]).await.unwrap();
    assert_eq!(got, vec![Some(b"X".to_vec()), None, Some(b"Z".to_vec())]);
    assert_eq!(kv.store.get_many(&[kv.key("y")]).await.unwrap(), vec![None]);
    assert!(kv.store.get_many(&[]).await.unwrap().is_empty());
}

async fn locks_are_taken_once_and_released_only_by_their_owner(kv: Kv) {
    let lock = kv.key("lock");
    assert!(kv.store.set_if_absent(&lock, b"owner-1", Duration::from_secs(5)).await.unwrap());
    assert!(!kv.store.set_if_absent(&lock, b"owner-2", Duration::from_secs(5)).await.unwrap());
    assert!(!kv.store.delete_if_equals(&lock, b"owner-2").await.unwrap());
    assert!(kv.store.delete_if_equals(&lock, b"owner-1").await.unwrap());
    assert!(kv.store.set_if_absent(&lock, b"owner-2", Duration::from_millis(100)).await.unwrap());
    // A lock left by a crashed holder expires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(kv.store.set_if_absent(&lock, b"owner-3", Duration::from_secs(5)).await.unwrap());
}

async fn fifty_racing_lock_attempts_have_one_winner(kv: Kv) {
    let store = Arc::new(kv.store);
    let lock = Arc::new(format!("{}:race", kv.prefix));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, lock) = (store.clone(), lock.clone());
        tasks.push(tokio::spawn(async move {
            store.set_if_absent(&lock, format!("t{i}").as_bytes(), Duration::from_secs(10)).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn gcra_allows_the_burst_then_throttles(kv: Kv) {
    let limit = Gcra { limit: 3, period: Duration::from_secs(3), burst: 3 };
    let key = kv.key("rl");
    for _ in 0..3 {
        assert!(kv.store.throttle(&key, &limit).await.unwrap().allowed);
    }
    let denied = kv.store.throttle(&key, &limit).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    assert!(denied.retry_after > Duration::ZERO && denied.retry_after <= Duration::from_secs(1), "{denied:?}");
    // Another key has its own budget.
    assert!(kv.store.throttle(&kv.key("other"), &limit).await.unwrap().allowed);
    tokio::time::sleep(denied.retry_after + Duration::from_millis(50)).await;
    assert!(kv.store.throttle(&key, &limit).await.unwrap().allowed);
}

crate::contract_tests!(
    memory: memory_kv,
    real: redis_kv,
    contracts: [
        values_expire_after_their_ttl,
        get_many_answers_in_key_order,
        locks_are_taken_once_and_released_only_by_their_owner,
        fifty_racing_lock_attempts_have_one_winner,
        gcra_allows_the_burst_then_throttles,
        versioned_values_only_move_forward,
    ]
);

#[tokio::test]
async fn unreachable_redis_is_reported_as_unavailable() {
    let store = KeyValueStore::Redis(RedisKv::new("redis://127.0.0.1:1", None, Duration::from_millis(300)).unwrap());
    let err = store.get("k").await.unwrap_err();
    assert!(matches!(err, KvError::Unavailable(_)), "{err:?}");
}

/// The cache's guard: an older version never overwrites a newer one.
async fn versioned_values_only_move_forward(kv: Kv) {
    let key = kv.key("payment");
    let ttl = Duration::from_secs(30);
    assert!(kv.store.set_versioned(&key, 2, b"{\"v\":2}", ttl).await.unwrap());
    assert!(!kv.store.set_versioned(&key, 1, b"{\"v\":1}", ttl).await.unwrap(), "stale write must lose");
    assert!(!kv.store.set_versioned(&key, 2, b"{\"v\":2b}", ttl).await.unwrap());
    assert_eq!(kv.store.get_versioned(&key).await.unwrap(), Some((2, b"{\"v\":2}".to_vec())));
    assert!(kv.store.set_versioned(&key, 3, b"line1\nline2", ttl).await.unwrap());
    assert_eq!(kv.store.get_versioned(&key).await.unwrap(), Some((3, b"line1\nline2".to_vec())));
    assert_eq!(kv.store.get_versioned(&kv.key("absent")).await.unwrap(), None);
}
