//! The Payment API's service layer: each write path as a function that takes a typed
//! command (ids, amounts and currencies already domain types, parsed at the edge), uses
//! the repositories, and answers a domain record or an [`ApiError`](crate::error::ApiError).
//! Handlers only extract, call one of these and map the result.

pub mod gateway_events;
pub mod payments;
pub mod refunds;

/// Retries of a change that lost a race, before the caller is told to retry.
const RACE_RETRIES: u32 = 50;

/// The pause before retry `attempt` of a change that lost a race: short and varied, so
/// that racing requests do not meet again in step.
fn race_pause(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(attempt % 8) * 3)
}
