//! Redis adapter of the key-value port, over a reconnecting `ConnectionManager`
//! (`redis://` or `rediss://` through rustls).

use super::{Gcra, KvError, Throttle};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Script, SetExpiry, SetOptions};
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone)]
pub struct RedisKv {
    /// Lazy: connects on first use (so a cold start with Redis down still serves what
    /// does not need it), shares one connection attempt among concurrent callers, and
    /// reconnects by itself afterwards.
    conn: ConnectionManager,
}

/// GCRA in one atomic script, with the server's clock so that every Lambda instance
/// agrees on "now". Mirrors `Gcra::step`. KEYS[1] = key; ARGV = period µs, limit, burst.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1]) / math.max(tonumber(ARGV[2]), 1)
local tolerance = interval * math.max(tonumber(ARGV[3]), 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local diff = new_tat - now
if diff > tolerance then
  return {0, 0, math.ceil(diff - tolerance), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%d', math.floor(new_tat)), 'PX', math.ceil(diff / 1000) + 1)
return {1, math.floor((tolerance - diff) / interval), 0, math.ceil(diff)}
",
    )
});

/// Stores ARGV[1]..'\n'..ARGV[2] unless KEYS[1] already holds version >= ARGV[1].
static SET_VERSIONED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then
  local v = tonumber(string.match(current, '^(-?%d+)\n'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// Deletes KEYS[1] only if it holds ARGV[1].
static DELETE_IF_EQUALS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

impl RedisKv {
    /// `extra_ca_pem` is trusted for `rediss://` URLs signed by a private CA (instead of
    /// the system roots: the redis client takes one root set). Must be called inside a
    /// Tokio runtime.
    pub fn new(url: &str, extra_ca_pem: Option<&str>, timeout: Duration) -> Result<Self, KvError> {
        let client = match extra_ca_pem {
            Some(pem) if url.starts_with("rediss://") => {
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.as_bytes().to_vec()) };
                Client::build_with_tls(url, certs)
            }
            _ => Client::open(url),
        }
        .map_err(|e| KvError::Other(format!("invalid Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One quick retry, then report: the caller decides fail-open or closed.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(classify)?;
        Ok(RedisKv { conn })
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        Ok(self.conn.clone())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.conn().await?.get(key).await.map_err(classify)
    }

    pub(super) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        // MGET with one key answers a bare value, so always ask through a command.
        redis::cmd("MGET").arg(keys).query_async(&mut self.conn().await?).await.map_err(classify)
    }

    pub(super) async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let mut conn = self.conn().await?;
        match ttl {
            Some(ttl) => conn.pset_ex::<_, _, ()>(key, value, ttl_millis(ttl)).await,
            None => conn.set::<_, _, ()>(key, value).await,
        }
        .map_err(classify)
    }

    pub(super) async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl_millis(ttl)));
        let reply: Option<String> = self.conn().await?.set_options(key, value, options).await.map_err(classify)?;
        Ok(reply.is_some())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let removed: i64 = self.conn().await?.del(key).await.map_err(classify)?;
        Ok(removed > 0)
    }

    pub(super) async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        let removed: i64 =
            DELETE_IF_EQUALS.key(key).arg(value).invoke_async(&mut self.conn().await?).await.map_err(classify)?;
        Ok(removed > 0)
    }

    pub(super) async fn set_versioned(
        &self,
        key: &str,
        version: i64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let stored: i64 = SET_VERSIONED
            .key(key)
            .arg(version)
            .arg(value)
            .arg(ttl_millis(ttl))
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(classify)?;
        Ok(stored == 1)
    }

    pub(super) async fn throttle(&self, key: &str, limit: &Gcra) -> Result<Throttle, KvError> {
        let period_us = u64::try_from(limit.period.as_micros()).unwrap_or(u64::MAX);
        let reply: Vec<i64> = GCRA
            .key(key)
            .arg(period_us)
            .arg(limit.limit)
            .arg(limit.burst)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(classify)?;
        let [allowed, remaining, retry_after_us, reset_after_us] = reply[..] else {
            return Err(KvError::Other(format!("unexpected GCRA reply {reply:?}")));
        };
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Throttle {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: us(retry_after_us),
            reset_after: us(reset_after_us),
        })
    }

    pub(super) async fn ping(&self) -> Result<(), KvError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await.map_err(classify)?;
        Ok(())
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn classify(e: redis::RedisError) -> KvError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        KvError::Unavailable(e.to_string())
    } else {
        KvError::Other(e.to_string())
    }
}
