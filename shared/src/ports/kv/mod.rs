//! Key-value port (Redis): short-lived state with expiry (idempotency records and locks,
//! token revocations, cached reads) and GCRA rate limiting.

mod memory;
mod redis;

pub use self::memory::MemoryKv;
pub use self::redis::RedisKv;

use crate::dependency_span;
use crate::otel::traced;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    #[error("key-value store error: {0}")]
    Other(String),
}

/// A GCRA (generic cell rate algorithm) limit: `limit` requests per `period`, with bursts
/// of up to `burst` requests at once. Same algorithm as redis-cell and Stripe's limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub limit: u32,
    pub period: Duration,
    pub burst: u32,
}

/// The outcome of one rate-limit check, with what the `RateLimit` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// When denied: how long until one request would be allowed.
    pub retry_after: Duration,
    /// How long until the limiter is back to a full burst.
    pub reset_after: Duration,
}

impl Gcra {
    /// The GCRA step on microsecond timestamps, shared by the in-memory model; the Redis
    /// adapter runs the same arithmetic in a Lua script (`redis.rs`).
    /// Returns the decision and, when allowed, the new theoretical arrival time.
    fn step(&self, stored_tat_us: Option<f64>, now_us: f64) -> (Throttle, Option<f64>) {
        let (interval, tolerance) = self.interval_and_tolerance_us();
        let tat = stored_tat_us.unwrap_or(now_us).max(now_us);
        let new_tat = tat + interval;
        let diff = new_tat - now_us;
        if diff > tolerance {
            let throttle = Throttle {
                allowed: false,
                remaining: 0,
                retry_after: micros((diff - tolerance).ceil()),
                reset_after: micros((tat - now_us).ceil()),
            };
            (throttle, None)
        } else {
            let throttle = Throttle {
                allowed: true,
                remaining: ((tolerance - diff) / interval).floor() as u32,
                retry_after: Duration::ZERO,
                reset_after: micros(diff.ceil()),
            };
            (throttle, Some(new_tat))
        }
    }

    fn interval_and_tolerance_us(&self) -> (f64, f64) {
        let interval = self.period.as_micros() as f64 / f64::from(self.limit.max(1));
        (interval, interval * f64::from(self.burst.max(1)))
    }
}

/// `"<version>\n<value>"`, the layout `set_versioned` writes.
fn split_versioned(raw: &[u8]) -> Option<(i64, Vec<u8>)> {
    let newline = raw.iter().position(|b| *b == b'\n')?;
    let version = std::str::from_utf8(&raw[..newline]).ok()?.parse().ok()?;
    Some((version, raw[newline + 1..].to_vec()))
}

fn versioned(version: i64, value: &[u8]) -> Vec<u8> {
    let mut raw = format!("{version}\n").into_bytes();
    raw.extend_from_slice(value);
    raw
}

fn micros(us: f64) -> Duration {
    Duration::from_micros(us.max(0.0) as u64)
}

#[derive(Clone)]
pub enum KeyValueStore {
    Memory(MemoryKv),
    Redis(RedisKv),
}

impl KeyValueStore {
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.get(key)),
            KeyValueStore::Redis(r) => traced(dependency_span!("redis", "GET", key_kind(key)), r.get(key)).await,
        }
    }

    /// Several keys in one round trip (MGET).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            KeyValueStore::Memory(m) => Ok(keys.iter().map(|k| m.get(k)).collect()),
            KeyValueStore::Redis(r) => {
                let kind = keys.first().map(|k| key_kind(k)).unwrap_or_default();
                traced(dependency_span!("redis", "MGET", kind, db.keys = keys.len()), r.get_many(keys)).await
            }
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        match self {
            KeyValueStore::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            KeyValueStore::Redis(r) => {
                traced(dependency_span!("redis", "SET", key_kind(key)), r.set(key, value, ttl)).await
            }
        }
    }

    /// SET NX: `true` if this call created the key (a lock was taken).
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.set_if_absent(key, value, ttl)),
            KeyValueStore::Redis(r) => {
                traced(dependency_span!("redis", "SET NX", key_kind(key)), r.set_if_absent(key, value, ttl)).await
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.delete(key)),
            KeyValueStore::Redis(r) => traced(dependency_span!("redis", "DEL", key_kind(key)), r.delete(key)).await,
        }
    }

    /// Deletes the key only if it still holds `value` (releasing a lock we own, never one
    /// that expired and was taken by someone else).
    pub async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.delete_if_equals(key, value)),
            KeyValueStore::Redis(r) => {
                traced(
                    dependency_span!("redis", "EVAL delete_if_equals", key_kind(key)),
                    r.delete_if_equals(key, value),
                )
                .await
            }
        }
    }

    /// Stores `value` tagged with `version`, unless the key already holds the same or a
    /// newer version: a slow writer can never put an older copy over a newer one (the
    /// read-through cache relies on it). `true` if stored.
    pub async fn set_versioned(&self, key: &str, version: i64, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.set_versioned(key, version, value, ttl)),
            KeyValueStore::Redis(r) => {
                let span = dependency_span!("redis", "EVAL set_versioned", key_kind(key));
                traced(span, r.set_versioned(key, version, value, ttl)).await
            }
        }
    }

    /// The value and version stored by [`KeyValueStore::set_versioned`].
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(i64, Vec<u8>)>, KvError> {
        Ok(self.get(key).await?.as_deref().and_then(split_versioned))
    }

    /// One GCRA rate-limit check, atomic on the server.
    pub async fn throttle(&self, key: &str, limit: &Gcra) -> Result<Throttle, KvError> {
        match self {
            KeyValueStore::Memory(m) => Ok(m.throttle(key, limit)),
            KeyValueStore::Redis(r) => {
                traced(dependency_span!("redis", "EVAL gcra", key_kind(key)), r.throttle(key, limit)).await
            }
        }
    }

    pub async fn ping(&self) -> Result<(), KvError> {
        match self {
            KeyValueStore::Memory(_) => Ok(()),
            KeyValueStore::Redis(r) => traced(dependency_span!("redis", "PING", ""), r.ping()).await,
        }
    }
}

/// What a key is for, without the ids in it (`settle:idem:m_1:key` → `settle:idem`): span
/// names must not carry merchant ids or client-chosen keys.
fn key_kind(key: &str) -> &str {
    let mut colons = key.match_indices(':').map(|(i, _)| i);
    match (colons.next(), colons.next()) {
        (Some(_), Some(second)) => &key[..second],
        _ => key.split(':').next().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_spaces_requests() {
        let limit = Gcra { limit: 10, period: Duration::from_secs(1), burst: 3 };
        let mut tat = None;
        let now = 1_000_000_000.0;
        for expected_remaining in [2, 1, 0] {
            let (t, new_tat) = limit.step(tat, now);
            assert!(t.allowed);
            assert_eq!(t.remaining, expected_remaining);
            tat = new_tat;
        }
        let (denied, none) = limit.step(tat, now);
        assert!(!denied.allowed && none.is_none());
        assert_eq!(denied.retry_after, Duration::from_millis(100));
        // One interval later one more request fits.
        let (later, _) = limit.step(tat, now + 100_000.0);
        assert!(later.allowed);
    }
}
