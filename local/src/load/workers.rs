//! The load itself: workers playing scenarios from the mix until the deadline, flat out or
//! paced to a rate, with a live progress line.

use super::client::Shared;
use super::scenarios::pick;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Runs the workers for the load's duration; answers how long they ran and how many
/// requests they made.
pub(super) async fn drive_load(shared: &Arc<Shared>) -> anyhow::Result<(Duration, u64)> {
    let options = &shared.options;
    let started = Instant::now();
    let deadline = started + options.duration;
    let permits = Arc::new(Semaphore::new(0));
    let pacer = options.rate.map(|rate| spawn_pacer(rate, permits.clone()));
    let mut workers = Vec::new();
    for _ in 0..options.concurrency {
        workers.push(spawn_worker(shared.clone(), permits.clone(), deadline));
    }
    let progress = spawn_progress_line(shared.clone(), started);
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed();
    let load_requests = shared.record.lock().unwrap().requests;
    progress.abort();
    if let Some(p) = pacer {
        p.abort();
    }
    eprintln!();
    Ok((elapsed, load_requests))
}

/// Hands out `rate` permits a second, one scenario each.
fn spawn_pacer(rate: u32, permits: Arc<Semaphore>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        loop {
            tick.tick().await;
            permits.add_permits(1);
        }
    })
}

/// Plays scenarios until `deadline`, each waiting for a permit when the load is paced.
fn spawn_worker(shared: Arc<Shared>, permits: Arc<Semaphore>, deadline: Instant) -> JoinHandle<()> {
    let paced = shared.options.rate.is_some();
    tokio::spawn(async move {
        while Instant::now() < deadline {
            if paced {
                match tokio::time::timeout_at(deadline.into(), permits.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    _ => break,
                }
            }
            let scenario = pick(&mut rand::rng());
            shared.run_scenario(scenario).await;
        }
    })
}

/// Rewrites the progress line on stderr every second: requests, their rate, server errors
/// and violations so far.
fn spawn_progress_line(shared: Arc<Shared>, started: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let r = shared.record.lock().unwrap();
            let errors: u64 =
                r.statuses.values().flat_map(|s| s.iter()).filter(|(c, _)| **c >= 500).map(|(_, n)| n).sum();
            eprint!(
                "\r{:>5.0} s  {:>8} requests  {:>6} req/s  {:>4} 5xx  {:>4} violations   ",
                started.elapsed().as_secs_f64(),
                r.requests,
                r.requests - last,
                errors,
                r.violations.len()
            );
            last = r.requests;
        }
    })
}
