//! In-memory delay queue with SQS semantics: per-message delay, visibility timeout,
//! receipt handles that change on every receive, receive counts.

use super::QueuedMessage;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

struct Held {
    id: String,
    body: String,
    visible_at: Instant,
    receipt: Option<String>,
    receive_count: u32,
}

#[derive(Clone)]
pub struct MemoryQueue {
    messages: Arc<Mutex<Vec<Held>>>,
    visibility_timeout: Duration,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        // SQS's default visibility timeout.
        MemoryQueue { messages: Arc::default(), visibility_timeout: Duration::from_secs(30) }
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_visibility_timeout(visibility_timeout: Duration) -> Self {
        MemoryQueue { visibility_timeout, ..Self::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Held>> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn send(&self, body: &str, delay: Duration) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().push(Held {
            id: id.clone(),
            body: body.to_string(),
            visible_at: Instant::now() + delay,
            receipt: None,
            receive_count: 0,
        });
        id
    }

    pub(super) async fn receive(&self, max: u32, wait: Duration) -> Vec<QueuedMessage> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.take_visible(max);
            if !got.is_empty() || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn take_visible(&self, max: u32) -> Vec<QueuedMessage> {
        let now = Instant::now();
        let mut messages = self.lock();
        messages
            .iter_mut()
            .filter(|m| m.visible_at <= now)
            .take(max as usize)
            .map(|m| {
                let receipt = uuid::Uuid::new_v4().to_string();
                m.receipt = Some(receipt.clone());
                m.receive_count += 1;
                m.visible_at = now + self.visibility_timeout;
                QueuedMessage {
                    message_id: m.id.clone(),
                    body: m.body.clone(),
                    receipt,
                    receive_count: m.receive_count,
                }
            })
            .collect()
    }

    /// Deleting with a stale receipt (the message was received again since) is a no-op,
    /// as in SQS.
    pub(super) fn delete(&self, receipt: &str) {
        self.lock().retain(|m| m.receipt.as_deref() != Some(receipt));
    }
}
