//! In-memory key-value store with expiry, the same lock and GCRA semantics as Redis.

use super::{split_versioned, versioned, Gcra, Throttle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

/// `now + ttl`, or no expiry for a TTL too large to represent (Redis would refuse it; here
/// it is simply kept).
fn expiry(ttl: Duration) -> Option<Instant> {
    Instant::now().checked_add(ttl)
}

#[derive(Clone)]
pub struct MemoryKv {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// Origin of the microsecond clock the GCRA uses.
    epoch: Instant,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv { entries: Arc::default(), epoch: Instant::now() }
    }
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Expire lazily, like Redis does on access (plus its background sweep).
        map.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
        map
    }

    pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).map(|e| e.value.clone())
    }

    pub(super) fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        let expires_at = ttl.and_then(expiry);
        self.lock().insert(key.to_string(), Entry { value: value.to_vec(), expires_at });
    }

    pub(super) fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let mut map = self.lock();
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.to_string(), Entry { value: value.to_vec(), expires_at: expiry(ttl) });
        true
    }

    pub(super) fn set_versioned(&self, key: &str, version: i64, value: &[u8], ttl: Duration) -> bool {
        let mut map = self.lock();
        let current = map.get(key).and_then(|e| split_versioned(&e.value)).map(|(v, _)| v);
        if current.is_some_and(|v| v >= version) {
            return false;
        }
        map.insert(key.to_string(), Entry { value: versioned(version, value), expires_at: expiry(ttl) });
        true
    }

    pub(super) fn delete(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    pub(super) fn delete_if_equals(&self, key: &str, value: &[u8]) -> bool {
        let mut map = self.lock();
        if map.get(key).is_some_and(|e| e.value == value) {
            map.remove(key);
            true
        } else {
            false
        }
    }

    pub(super) fn throttle(&self, key: &str, limit: &Gcra) -> Throttle {
        let mut map = self.lock();
        let now_us = self.epoch.elapsed().as_micros() as f64;
        let stored = map.get(key).and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<f64>().ok());
        let (throttle, new_tat) = limit.step(stored, now_us);
        if let Some(tat) = new_tat {
            let ttl = Duration::from_micros((tat - now_us).max(0.0) as u64) + Duration::from_millis(1);
            let entry = Entry { value: format!("{tat}").into_bytes(), expires_at: expiry(ttl) };
            map.insert(key.to_string(), entry);
        }
        throttle
    }
}
