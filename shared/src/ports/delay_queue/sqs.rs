//! Amazon SQS adapter of the delay queue.

use super::{QueueError, QueuedMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_sdk_sqs::Client;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The client is built on first use, and shared by clones: building one parses the SDK's
/// endpoint partition table and compiles its region patterns, a quarter to half a
/// millisecond of every cold start, and the payment API and the notifier use their queues
/// only when a webhook is retried or resent.
#[derive(Clone)]
pub struct SqsQueue {
    lazy: Arc<LazyClient>,
    url: String,
}

struct LazyClient {
    sdk: aws_config::SdkConfig,
    client: OnceLock<Client>,
}

impl SqsQueue {
    pub fn new(sdk: &aws_config::SdkConfig, url: &str) -> Self {
        let client = LazyClient { sdk: sdk.clone(), client: OnceLock::new() };
        SqsQueue { lazy: Arc::new(client), url: url.to_string() }
    }

    fn client(&self) -> &Client {
        self.lazy.client.get_or_init(|| Client::new(&self.lazy.sdk))
    }

    /// Creates the queue if needed and returns an adapter for it (local stack and tests;
    /// in AWS the template creates queues).
    pub async fn ensure(sdk: &aws_config::SdkConfig, name: &str) -> Result<Self, QueueError> {
        let queue = SqsQueue::new(sdk, "");
        let out = queue.client().create_queue().queue_name(name).send().await.map_err(classify)?;
        let url = out.queue_url().ok_or_else(|| QueueError::Other("CreateQueue returned no URL".into()))?;
        Ok(SqsQueue { url: url.to_string(), ..queue })
    }

    /// The queue's ARN (what S3 notifications and IAM policies name).
    pub async fn arn(&self) -> Result<String, QueueError> {
        let out = self
            .client()
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(classify)?;
        out.attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| QueueError::Other("queue has no QueueArn attribute".into()))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's name: the last segment of its URL.
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    pub(super) async fn send(&self, body: &str, delay: Duration) -> Result<String, QueueError> {
        let out = self
            .client()
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(i32::try_from(delay.as_secs()).unwrap_or(900))
            .send()
            .await
            .map_err(classify)?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    pub(super) async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueuedMessage>, QueueError> {
        let wait = wait.min(Duration::from_secs(20));
        // The long poll itself may take `wait`: give this call that much on top of the
        // client's usual attempt timeout, or an empty queue would look like an outage.
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(wait + Duration::from_secs(5))
            .build();
        let out = self
            .client()
            .receive_message()
            .queue_url(&self.url)
            // SQS allows 1..=10 per call and long polls of at most 20 s.
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .messages()
            .iter()
            .map(|m| QueuedMessage {
                message_id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    pub(super) async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client().delete_message().queue_url(&self.url).receipt_handle(receipt).send().await.map_err(classify)?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        self.client().get_queue_attributes().queue_url(&self.url).send().await.map_err(classify)?;
        Ok(())
    }
}

fn classify<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match super::super::aws_failure(&e) {
        (true, text) => QueueError::Unavailable(text),
        (false, text) => QueueError::Other(text),
    }
}
