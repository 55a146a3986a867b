//! What Settle's test suites share: names no other test uses, and a configuration on the
//! loopback services that owns its database, exchange, queue, bucket and Redis keys, so
//! that suites running at once on one machine's services never see each other's data.

use settle_shared::config::{loopback_config, Backend};
use settle_shared::Config;

/// A name no other test (or earlier run) uses: `prefix-` and 12 random hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The names a test owns on the shared services, each [`unique`] under `prefix`.
pub fn owned_names(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SETTLE_MONGODB_DATABASE", unique(prefix)),
        ("SETTLE_EVENTS_EXCHANGE", unique(&format!("{prefix}.events"))),
        ("SETTLE_NOTIFY_QUEUE", unique(&format!("{prefix}.notify"))),
        ("SETTLE_BUCKET", unique(&format!("{prefix}-bucket"))),
        ("SETTLE_REDIS_PREFIX", format!("{}:", unique(prefix))),
        ("SETTLE_HTTP_ADDR", "127.0.0.1:0".into()),
    ]
}

/// A configuration on the loopback services (the environment's service URLs win, as in
/// [`loopback_config`]) with [`owned_names`] under `prefix`, then `overrides`, on
/// `backend`. Panics naming the variable a bad override sets.
pub fn config(prefix: &str, backend: Backend, overrides: &[(&str, String)]) -> Config {
    let mut vars = owned_names(prefix);
    vars.extend(overrides.iter().cloned());
    let mut config = loopback_config(&vars).unwrap_or_else(|e| panic!("test configuration: {e}"));
    config.backend = backend;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_configurations_share_no_name() {
        let (a, b) = (config("t", Backend::Memory, &[]), config("t", Backend::Real, &[]));
        assert_ne!(a.mongodb_database, b.mongodb_database);
        assert_ne!(a.events_exchange, b.events_exchange);
        assert_ne!(a.notify_queue, b.notify_queue);
        assert_ne!(a.bucket, b.bucket);
        assert_ne!(a.redis_prefix, b.redis_prefix);
        assert!(a.mongodb_database.starts_with("t-") && a.redis_prefix.ends_with(':'));
        assert_eq!((a.backend, b.backend), (Backend::Memory, Backend::Real));
        let timeout = config("t", Backend::Real, &[("SETTLE_DEPENDENCY_TIMEOUT_MS", "1500".into())]);
        assert_eq!(timeout.dependency_timeout.as_millis(), 1500, "overrides win");
    }
}
