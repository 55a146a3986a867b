//! The event checks: a tap on the exchange, started before the load, and afterwards every
//! state change of the load's payments published exactly once under one id.

use super::checks::Effects;
use super::webhooks::Receiver;
use super::LoadOptions;
use settle_shared::ports::events::{EventBus, RabbitBus};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// An event as the tap saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) id: String,
    pub(super) event_type: String,
    pub(super) subject: String,
    pub(super) sequence: Option<i64>,
    pub(super) payment: Option<String>,
}

/// A tap following the exchange: the events it has seen, and the task that follows it.
pub(super) struct Tap {
    seen: Arc<Mutex<Vec<Seen>>>,
    pub(super) task: JoinHandle<()>,
}

/// How many of the run's events the checks saw.
#[derive(Default)]
pub(super) struct EventCounts {
    pub(super) events: usize,
    /// Repeat deliveries of an event id already seen (at-least-once publishing).
    pub(super) copies: usize,
    pub(super) deliveries: usize,
}

/// Declares a tap on the options' exchange and follows it; `None` when no RabbitMQ is
/// given, which skips the event checks.
pub(super) async fn start_tap(options: &LoadOptions) -> anyhow::Result<Option<Tap>> {
    let Some(url) = &options.amqp_url else { return Ok(None) };
    let bus = EventBus::RabbitMq(RabbitBus::new(url, None, Duration::from_secs(5)));
    let queue = format!("settle.load.tap.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    bus.declare_tap(&options.exchange, &queue, Duration::from_secs(600))
        .await
        .map_err(|e| anyhow::anyhow!("event tap on {}: {e}", options.exchange))?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let tapped = seen.clone();
    // A message redelivered because its ack was lost is the tap's duplicate, not the
    // publisher's: it is dropped here.
    let mut taken = HashSet::new();
    let task = crate::tap::follow(bus, queue, move |e, redelivered| {
        let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        if !(redelivered && taken.contains(&text("id"))) {
            taken.insert(text("id"));
            tapped.lock().unwrap().push(Seen {
                id: text("id"),
                event_type: text("type"),
                subject: text("subject"),
                sequence: e["sequence"].as_i64(),
                payment: e["data"]["payment_id"].as_str().map(str::to_string),
            });
        }
    });
    Ok(Some(Tap { seen, task }))
}

/// Which of the load's payments an event belongs to. Only this run's events count: the
/// exchange may carry other merchants' too.
struct Owners<'a> {
    ours: HashSet<&'a String>,
    refund_owner: &'a HashMap<String, String>,
}

impl<'a> Owners<'a> {
    fn new(effects: &'a Effects) -> Self {
        Owners { ours: effects.payment_ids.iter().collect(), refund_owner: &effects.refund_owner }
    }

    fn payment_of(&self, s: &Seen) -> Option<String> {
        let payment = if s.event_type.starts_with("refund.") {
            s.payment.clone().or_else(|| self.refund_owner.get(&s.subject).cloned())
        } else {
            Some(s.subject.clone())
        };
        payment.filter(|p| self.ours.contains(p))
    }
}

/// Compares the events the tap saw for the load's payments with those their final states
/// call for, then the webhook deliveries with the events.
pub(super) async fn check_events(
    tap: &Tap,
    receiver: Option<&Receiver>,
    drain: Duration,
    effects: &Effects,
    violations: &mut Vec<String>,
) -> EventCounts {
    let owners = Owners::new(effects);
    wait_for_events(tap, receiver, drain, effects.expected.values().sum(), &owners).await;
    // A little longer, so that a late duplicate is seen too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = tap.seen.lock().unwrap().clone();
    let published = count_published(&seen, &owners, violations);
    compare_with_expected(&effects.expected, &published.by_payment, violations);
    let deliveries = receiver.map_or(0, |r| r.check_deliveries(&seen, &published.ids, violations));
    EventCounts { events: published.ids.len(), copies: published.copies, deliveries }
}

/// Waits until the tap has every expected event (the outbox relay may still be catching
/// up) and the webhook every one of them, or the drain time is over.
async fn wait_for_events(tap: &Tap, receiver: Option<&Receiver>, drain: Duration, want: u32, owners: &Owners<'_>) {
    let until = Instant::now() + drain;
    loop {
        let our_ids: HashSet<String> =
            tap.seen.lock().unwrap().iter().filter(|s| owners.payment_of(s).is_some()).map(|s| s.id.clone()).collect();
        let delivered_ok = receiver.is_none_or(|r| our_ids.is_subset(&r.delivered_ids()));
        if (our_ids.len() as u32 >= want && delivered_ok) || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The load's events as the tap saw them, each id once.
struct Published {
    /// How many events each (payment, event type) has.
    by_payment: HashMap<(String, String), u32>,
    ids: HashSet<String>,
    /// Repeats of an id already seen.
    copies: usize,
}

/// Counts the load's events. Two events of one payment with one sequence number are a
/// violation.
fn count_published(seen: &[Seen], owners: &Owners<'_>, violations: &mut Vec<String>) -> Published {
    let mut published = Published { by_payment: HashMap::new(), ids: HashSet::new(), copies: 0 };
    let mut sequences = HashSet::new();
    for s in seen {
        let Some(payment) = owners.payment_of(s) else { continue };
        // The outbox publishes at least once: a copy under the same id (a confirm lost,
        // then the relay) is the same event, dropped by id downstream. Counted, not a
        // violation; one state change under two ids is.
        if !published.ids.insert(s.id.clone()) {
            published.copies += 1;
            continue;
        }
        if let Some(seq) = s.sequence {
            if !sequences.insert((payment.clone(), s.subject.clone(), seq)) {
                violations.push(format!("{payment}: two events with sequence {seq} ({})", s.event_type));
            }
        }
        *published.by_payment.entry((payment, s.event_type.clone())).or_default() += 1;
    }
    published
}

/// Every expected event published as many times as expected, and nothing else.
fn compare_with_expected(
    expected: &HashMap<(String, String), u32>,
    got: &HashMap<(String, String), u32>,
    violations: &mut Vec<String>,
) {
    for (k, n) in expected {
        let g = got.get(k).copied().unwrap_or(0);
        if g != *n {
            violations.push(format!("{}: {} published {g} times, expected {n}", k.0, k.1));
        }
    }
    for (k, g) in got {
        if !expected.contains_key(k) {
            violations.push(format!("{}: {} published {g} times, expected none", k.0, k.1));
        }
    }
}
