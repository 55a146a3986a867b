//! Amazon S3 adapter (path-style when pointed at an emulator endpoint).

use super::{ObjectError, ObjectMeta, ObjectReader};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

#[derive(Clone)]
pub struct S3Objects {
    client: Client,
    bucket: String,
}

impl S3Objects {
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str) -> Self {
        let mut config = aws_sdk_s3::config::Builder::from(sdk);
        if sdk.endpoint_url().is_some() {
            // Emulators serve buckets by path, not by virtual-host DNS names.
            config = config.force_path_style(true);
        }
        S3Objects { client: Client::from_conf(config.build()), bucket: bucket.to_string() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist (local stack and tests; in AWS the
    /// template creates it).
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Sends `s3:ObjectCreated:*` notifications for keys under `prefix` to the SQS queue
    /// `queue_arn` (the local stack's feed; in AWS the template wires S3 to Lambda).
    pub async fn notify_queue_on_create(&self, queue_arn: &str, prefix: &str) -> Result<(), ObjectError> {
        use aws_sdk_s3::types::{
            Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
            QueueConfiguration, S3KeyFilter,
        };
        let rule = FilterRule::builder().name(FilterRuleName::Prefix).value(prefix).build();
        let filter =
            NotificationConfigurationFilter::builder().key(S3KeyFilter::builder().filter_rules(rule).build()).build();
        let queue = QueueConfiguration::builder()
            .queue_arn(queue_arn)
            .events(Event::S3ObjectCreated)
            .filter(filter)
            .build()
            .map_err(|e| ObjectError::Other(e.to_string()))?;
        let config = NotificationConfiguration::builder().queue_configurations(queue).build();
        self.client
            .put_bucket_notification_configuration()
            .bucket(&self.bucket)
            .notification_configuration(config)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<ObjectMeta, ObjectError> {
        self.upload(key, ByteStream::from(body), content_type).await
    }

    pub(super) async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectError> {
        let body = ByteStream::from_path(path).await.map_err(|e| ObjectError::Other(e.to_string()))?;
        self.upload(key, body, content_type).await
    }

    /// One `PutObject`. The client's attempt timeout is sized for small requests; an
    /// upload's attempt carries its whole body, so it gets time in proportion (at 1 MiB/s
    /// at worst).
    async fn upload(&self, key: &str, body: ByteStream, content_type: &str) -> Result<ObjectMeta, ObjectError> {
        let size = body.size_hint().0;
        let attempt = std::time::Duration::from_secs(30 + size / (1 << 20));
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder().operation_attempt_timeout(attempt).build();
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().timeout_config(timeouts))
            .send()
            .await
            .map_err(classify)?;
        Ok(ObjectMeta { size, etag: clean_etag(out.e_tag()) })
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectError> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let meta = ObjectMeta {
                    size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
                    etag: clean_etag(out.e_tag()),
                };
                Ok(Some(ObjectReader { meta, body: Box::pin(out.body.into_async_read()) }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    pub(super) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
                etag: clean_etag(out.e_tag()),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), ObjectError> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map(|_| ()).map_err(classify)
    }
}

fn clean_etag(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

fn classify<E, R>(e: SdkError<E, R>) -> ObjectError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match super::super::aws_failure(&e) {
        (true, text) => ObjectError::Unavailable(text),
        (false, text) => ObjectError::Other(text),
    }
}
