//! Delay-queue contract: memory model and SQS (emulator).

use crate::helpers;
use settle_shared::ports::delay_queue::*;
use std::time::{Duration, Instant};

async fn memory_queue() -> DelayQueue {
    DelayQueue::Memory(MemoryQueue::new())
}

async fn sqs_queue() -> DelayQueue {
    match SqsQueue::ensure(&helpers::sdk().await, &helpers::unique("it-queue")).await {
        Ok(q) => DelayQueue::Sqs(q),
        Err(e) => helpers::unreachable("SQS (emulator)", e),
    }
}

async fn messages_are_received_then_hidden_then_deleted(q: DelayQueue) {
    q.send("{\"attempt\":1}", Duration::ZERO).await.unwrap();
    let got = q.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "{\"attempt\":1}");
    assert_eq!(got[0].receive_count, 1);
    // In flight: invisible to a second receiver until deleted or timed out.
    assert!(q.receive(10, Duration::from_millis(300)).await.unwrap().is_empty());
    q.delete(&got[0].receipt).await.unwrap();
    assert!(q.receive(10, Duration::from_millis(300)).await.unwrap().is_empty());
}

async fn delayed_messages_wait_for_their_delay(q: DelayQueue) {
    let sent = Instant::now();
    q.send("later", Duration::from_secs(2)).await.unwrap();
    assert!(q.receive(10, Duration::from_millis(500)).await.unwrap().is_empty(), "visible too early");
    let mut got = Vec::new();
    while got.is_empty() && sent.elapsed() < Duration::from_secs(10) {
        got = q.receive(10, Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(got.len(), 1, "delayed message never arrived");
    assert!(sent.elapsed() >= Duration::from_millis(1900), "arrived after {:?}", sent.elapsed());
    assert_eq!(got[0].body, "later");
}

crate::contract_tests!(
    memory: memory_queue,
    real: sqs_queue,
    contracts: [messages_are_received_then_hidden_then_deleted, delayed_messages_wait_for_their_delay]
);
