//! What follows a delivery attempt: the retry and disable policy, with no I/O, so that
//! each of its branches is tested without a receiver or a store.

use crate::deliver::AttemptResult;
use crate::retry_schedule;
use settle_shared::config::WebhookSettings;
use settle_shared::webhooks::EndpointRecord;
use std::time::Duration;

/// One attempt that was made.
pub struct Attempted<'a> {
    /// 1 for the first attempt.
    pub number: u32,
    /// An operator's resend: it never schedules retries of its own.
    pub resend: bool,
    pub result: &'a AttemptResult,
}

/// What becomes of the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver took it (2xx).
    Delivered { status: u16 },
    /// 410 Gone: the endpoint is disabled and the delivery ends.
    Gone,
    /// The endpoint has failed every delivery for `disable_after`: it is disabled and the
    /// delivery dead-lettered.
    EndpointFailing,
    /// Another attempt after `delay`.
    Retry { delay: Duration },
    /// The schedule is spent, or a resend failed: dead-lettered.
    Dead,
}

impl Verdict {
    /// Why the endpoint is disabled, when this verdict disables it.
    pub fn disables_endpoint(&self) -> Option<&'static str> {
        match self {
            Verdict::Gone => Some("the endpoint answered 410 Gone"),
            Verdict::EndpointFailing => Some("every delivery failed for the configured period"),
            _ => None,
        }
    }
}

/// What becomes of the endpoint's failing streak (its `failing_since`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    Unchanged,
    /// The first failure since the last success: the streak starts now.
    Starts,
    /// A success after failures: the streak ends.
    Ends,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub streak: Streak,
}

/// Decides what follows `attempted` at `now` (unix milliseconds). `jitter` scales a
/// planned wait (`retry_schedule::jitter`, 1.0 in tests).
pub fn decide(
    attempted: &Attempted,
    endpoint: &EndpointRecord,
    now: i64,
    policy: &WebhookSettings,
    jitter: f64,
) -> Decision {
    let result = attempted.result;
    if result.delivered() {
        let streak = if endpoint.failing_since.is_some() { Streak::Ends } else { Streak::Unchanged };
        return Decision { verdict: Verdict::Delivered { status: result.status.unwrap_or(200) }, streak };
    }
    if result.gone() {
        return Decision { verdict: Verdict::Gone, streak: Streak::Unchanged };
    }
    let streak = if endpoint.failing_since.is_none() { Streak::Starts } else { Streak::Unchanged };
    let failing_for = Duration::from_millis(u64::try_from(now - endpoint.failing_since.unwrap_or(now)).unwrap_or(0));
    let verdict = if failing_for >= policy.disable_after {
        Verdict::EndpointFailing
    } else {
        let next = attempted.number + 1;
        match retry_schedule::next_delay(&policy.retry_schedule, next, result.retry_after, jitter) {
            Some(delay) if !attempted.resend => Verdict::Retry { delay },
            _ => Verdict::Dead,
        }
    };
    Decision { verdict, streak }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000_000_000;
    const MINUTE: i64 = 60_000;

    fn policy() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            retry_schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(3600),
            dlq_url: None,
        }
    }

    fn endpoint(failing_since: Option<i64>) -> EndpointRecord {
        EndpointRecord {
            id: "we_1".into(),
            merchant_id: "m".into(),
            url: "https://example.com/hook".into(),
            event_types: vec![],
            description: None,
            enabled: true,
            disabled_reason: None,
            secrets: vec![],
            failing_since,
            created: 0,
            updated: 0,
        }
    }

    fn answered(status: Option<u16>, retry_after: Option<Duration>) -> AttemptResult {
        let error = status.is_none().then(|| "timeout".to_string());
        AttemptResult { status, duration: Duration::from_millis(3), excerpt: String::new(), error, retry_after }
    }

    fn decide_at(status: Option<u16>, number: u32, failing_since: Option<i64>) -> Decision {
        let result = answered(status, None);
        decide(&Attempted { number, resend: false, result: &result }, &endpoint(failing_since), NOW, &policy(), 1.0)
    }

    #[test]
    fn a_success_delivers_and_ends_a_failing_streak() {
        let fresh = decide_at(Some(204), 1, None);
        assert_eq!(fresh, Decision { verdict: Verdict::Delivered { status: 204 }, streak: Streak::Unchanged });
        let recovered = decide_at(Some(200), 3, Some(NOW - 5 * MINUTE));
        assert_eq!(recovered, Decision { verdict: Verdict::Delivered { status: 200 }, streak: Streak::Ends });
    }

    #[test]
    fn gone_disables_the_endpoint_at_once() {
        let gone = decide_at(Some(410), 1, None);
        assert_eq!(gone.verdict, Verdict::Gone);
        assert_eq!(gone.verdict.disables_endpoint(), Some("the endpoint answered 410 Gone"));
    }

    #[test]
    fn a_failure_follows_the_schedule_until_it_is_spent() {
        let first = decide_at(Some(500), 1, None);
        assert_eq!(
            first,
            Decision { verdict: Verdict::Retry { delay: Duration::from_secs(5) }, streak: Streak::Starts }
        );
        let second = decide_at(None, 2, Some(NOW - MINUTE));
        let then = Verdict::Retry { delay: Duration::from_secs(300) };
        assert_eq!(second, Decision { verdict: then, streak: Streak::Unchanged });
        let spent = decide_at(Some(503), 3, Some(NOW - 10 * MINUTE));
        assert_eq!(spent.verdict, Verdict::Dead);
        assert_eq!(spent.verdict.disables_endpoint(), None);
    }

    #[test]
    fn an_endpoint_failing_for_the_whole_period_is_disabled() {
        let long = decide_at(Some(500), 2, Some(NOW - 60 * MINUTE));
        assert_eq!(long.verdict, Verdict::EndpointFailing);
        assert!(long.verdict.disables_endpoint().is_some());
        assert_eq!(
            decide_at(Some(500), 2, Some(NOW - 59 * MINUTE)).verdict,
            Verdict::Retry { delay: Duration::from_secs(300) }
        );
    }

    #[test]
    fn retry_after_is_honoured_and_a_failed_resend_is_not_retried() {
        let result = answered(Some(429), Some(Duration::from_secs(90)));
        let asked =
            decide(&Attempted { number: 1, resend: false, result: &result }, &endpoint(None), NOW, &policy(), 1.1);
        assert_eq!(asked.verdict, Verdict::Retry { delay: Duration::from_secs(90) });
        let resend =
            decide(&Attempted { number: 1, resend: true, result: &result }, &endpoint(None), NOW, &policy(), 1.0);
        assert_eq!(resend.verdict, Verdict::Dead);
    }
}
