//! Ports: the narrow interfaces through which Settle reaches the outside world. Each is
//! an enum over a closed set of backends: an in-memory model (the zero-infrastructure
//! default of the local stack, and fast unit tests) and the real adapter. The same
//! contract tests (`shared/tests/it`) run against both.

pub mod delay_queue;
pub mod documents;
pub mod events;
pub mod kv;
pub mod objects;
pub mod secrets;

use std::time::Duration;

/// How long any single call to a dependency may take before it counts as unreachable.
/// Lambda bills by the millisecond and API Gateway gives up after 30 s: fail fast, answer
/// 503, let the client retry.
pub const DEFAULT_DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an AWS SDK failure means "unreachable" (dispatch failure or timeout: retry
/// later), and a one-line description: the service's error code and message for a
/// service error, the cause chain otherwise (never the raw response).
// One smithy error type serves every SDK; Secrets Manager's re-export is always linked.
pub(crate) fn aws_failure<E, R>(e: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> (bool, String)
where
    E: std::error::Error + aws_sdk_secretsmanager::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("service error");
            let text = match err.message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_string(),
            };
            (false, text)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (true, DisplayErrorContext(e).to_string()),
        _ => (false, DisplayErrorContext(e).to_string()),
    }
}
