//! When to try a failed delivery again: the configured schedule with ±10 % jitter (so
//! that deliveries that failed together do not retry together), or the receiver's
//! `Retry-After` when it gives one, capped.

use std::time::Duration;

/// The longest `Retry-After` honoured.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

/// The wait before attempt `next_attempt` (2 for the first retry), or `None` when the
/// schedule is exhausted. `jitter` scales the planned wait (see [`jitter`]).
pub fn next_delay(
    schedule: &[Duration],
    next_attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let index = usize::try_from(next_attempt.checked_sub(2)?).ok()?;
    let planned = *schedule.get(index)?;
    if let Some(asked) = retry_after {
        return Some(asked.min(RETRY_AFTER_CAP));
    }
    Some(planned.mul_f64(jitter))
}

/// A random factor from 0.9 to 1.1 for [`next_delay`].
pub fn jitter() -> f64 {
    0.9 + rand::random::<f64>() * 0.2
}

/// Parses `Retry-After` in its delay-seconds form (the HTTP-date form is rare from APIs
/// and is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_jitter_and_an_end() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        for _ in 0..100 {
            let d = next_delay(&schedule, 2, None, jitter()).unwrap();
            assert!(d >= Duration::from_millis(4500) && d <= Duration::from_millis(5500), "{d:?}");
        }
        assert_eq!(next_delay(&schedule, 3, None, 0.9), Some(Duration::from_secs(270)));
        assert_eq!(next_delay(&schedule, 4, None, 1.0), None);
        assert_eq!(next_delay(&schedule, 1, None, 1.0), None);
        let asked = Some(Duration::from_secs(60));
        assert_eq!(next_delay(&schedule, 2, asked, 1.1), Some(Duration::from_secs(60)), "no jitter on Retry-After");
        assert_eq!(next_delay(&schedule, 2, Some(Duration::from_secs(10 * 86_400)), 1.0), Some(RETRY_AFTER_CAP));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
