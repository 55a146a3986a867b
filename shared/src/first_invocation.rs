//! Cold-start set-up that no request waits for, started by the first invocation.

use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

/// Background work a cold start owes (declaring indexes and the exchange) that runs
/// beside the first invocation rather than inside init.
///
/// Why not `tokio::spawn` in `main`: on the functions' one-thread runtime, a task spawned
/// before `lambda_runtime::run` is polled while the runtime connects to the Runtime API,
/// so its first steps (dialling MongoDB and RabbitMQ) ran before the first `/next` call
/// and counted as init time.
#[derive(Clone)]
pub struct FirstInvocation {
    work: Arc<Mutex<Option<BoxFuture<'static, ()>>>>,
}

impl FirstInvocation {
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Self {
        FirstInvocation { work: Arc::new(Mutex::new(Some(Box::pin(work)))) }
    }

    /// Spawns the work on the first call; every later call does nothing.
    pub fn start(&self) {
        let work = self.work.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(work) = work {
            tokio::spawn(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn the_work_runs_once_and_only_when_started() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let first = FirstInvocation::new(async move {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the work must wait for the first invocation");
        let clone = first.clone();
        first.start();
        clone.start();
        first.start();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
