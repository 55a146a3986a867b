//! The typed sections of the configuration that have their own parsers: webhook delivery
//! (a retry schedule like `5s,5m,2h`) and rate limits (`N/PERIOD`).

use crate::ports::kv::Gcra;
use std::time::Duration;

/// How the notifier delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Local development only: allow http and loopback/private receivers.
    pub allow_private: bool,
    /// Waits before attempts 2, 3, …; its length is the number of retries.
    pub retry_schedule: Vec<Duration>,
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// An endpoint that has failed everything for this long is disabled.
    pub disable_after: Duration,
    /// Optional SQS queue for operators' copies of dead deliveries.
    pub dlq_url: Option<String>,
}

/// `5s,5m,30m,2h` → durations.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (digits, unit) = item.split_at(item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len()));
            let n: u64 = digits.parse().map_err(|_| format!("'{item}' is not a duration like 5s, 5m or 2h"))?;
            let secs = match unit {
                "ms" => return Ok(Duration::from_millis(n)),
                "s" | "" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => return Err(format!("'{item}' is not a duration like 5s, 5m or 2h")),
            };
            Ok(Duration::from_secs(secs))
        })
        .collect()
}

/// GCRA limits per caller class. Each is `N/PERIOD` (`600/60s`, `10/1s`, `100/1m`):
/// N requests per period, in bursts of up to N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub merchant: Gcra,
    pub ip: Gcra,
    pub tokens: Gcra,
    pub refunds: Gcra,
}

/// Parses `N/PERIOD` with PERIOD in seconds (`60s`, `1s`) or minutes (`1m`).
pub fn parse_rate(text: &str) -> Result<Gcra, String> {
    let bad = || format!("'{text}' is not N/PERIOD (e.g. 600/60s)");
    let (n, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let limit: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let period = period.trim();
    let (digits, unit) = period.split_at(period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len()));
    let count: u64 = digits.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let seconds = match unit {
        "s" | "" => count,
        "m" => count * 60,
        "h" => count * 3600,
        _ => return Err(bad()),
    };
    Ok(Gcra { limit, period: Duration::from_secs(seconds), burst: limit })
}
