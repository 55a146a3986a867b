//! Contract tests: every port's in-memory model and its real adapter pass the same
//! suite, against the real services on loopback (start them with `scripts/services`).
//! A real service that does not answer fails the test; nothing is skipped.

mod delay_queue;
mod documents;
mod events;
mod helpers;
mod kv;
mod objects;
mod outbox;
mod secrets;
mod tls;

/// Generates one `#[tokio::test]` per contract and backend: `memory::<name>` and
/// `real::<name>`, each given a fresh port from the named constructor.
#[macro_export]
macro_rules! contract_tests {
    (memory: $memory:ident, real: $real:ident, contracts: [$($name:ident),* $(,)?]) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::$memory().await).await
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::$real().await).await
                }
            )*
        }
    };
}
