//! The set of ports one function uses, built once per cold start from the `Config`:
//! all in-memory, or all real (clients created here and reused across invocations).

use crate::config::{Backend, Config};
use crate::health::{DependencyHealth, HealthReport, Status};
#[cfg(feature = "sqs")]
use crate::ports::delay_queue::SqsQueue;
use crate::ports::delay_queue::{DelayQueue, MemoryQueue};
use crate::ports::documents::{DocumentStore, MemoryDocuments, MongoDocuments};
use crate::ports::events::{EventBus, MemoryBus, RabbitBus, Topology};
use crate::ports::kv::{KeyValueStore, MemoryKv, RedisKv};
#[cfg(feature = "s3")]
use crate::ports::objects::S3Objects;
use crate::ports::objects::{MemoryObjects, ObjectStore};
use crate::redact::{scrub, Secret};
use anyhow::Context;
use std::future::Future;
use std::time::Duration;

#[derive(Clone)]
pub struct Backends {
    pub backend: Backend,
    pub documents: DocumentStore,
    pub kv: KeyValueStore,
    pub bus: EventBus,
    pub topology: Topology,
    pub objects: ObjectStore,
    /// The webhook retry queue; absent when no `SETTLE_RETRY_QUEUE_URL` is configured.
    pub retry_queue: Option<DelayQueue>,
    /// The AWS SDK configuration, for the real backend.
    pub sdk: Option<aws_config::SdkConfig>,
    /// Prefix of every Redis key (`SETTLE_REDIS_PREFIX`).
    pub redis_prefix: String,
    timeout: Duration,
    secrets: Vec<Secret>,
}

impl Backends {
    /// In-memory ports only: no network, nothing to configure.
    pub fn memory(config: &Config) -> Self {
        Backends {
            backend: Backend::Memory,
            documents: DocumentStore::Memory(MemoryDocuments::new()),
            kv: KeyValueStore::Memory(MemoryKv::new()),
            bus: EventBus::Memory(MemoryBus::new()),
            topology: Topology::new(&config.events_exchange, &config.notify_queue),
            objects: ObjectStore::Memory(MemoryObjects::new(&config.bucket)),
            retry_queue: Some(DelayQueue::Memory(MemoryQueue::new())),
            sdk: None,
            redis_prefix: config.redis_prefix.clone(),
            timeout: config.dependency_timeout,
            secrets: Vec::new(),
        }
    }

    /// The configured backend. For the real one, clients are built but nothing is dialled
    /// yet: an unreachable service shows up in [`Backends::health`] and as 503s, not as a
    /// failed cold start.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        if config.backend == Backend::Memory {
            return Ok(Self::memory(config));
        }
        crate::tls::install_crypto_provider();
        let extra_ca = config.extra_ca_file.as_deref().map(crate::tls::read_extra_ca).transpose()?;
        let required = |value: &Option<Secret>, name: &str| {
            value.clone().with_context(|| format!("configuration: {name} is required but not set"))
        };
        let mongodb_uri = required(&config.mongodb_uri, crate::config::vars::MONGODB_URI)?;
        let redis_url = required(&config.redis_url, crate::config::vars::REDIS_URL)?;
        let amqp_url = required(&config.amqp_url, crate::config::vars::AMQP_URL)?;
        let timeout = config.dependency_timeout;

        let documents = MongoDocuments::connect(
            mongodb_uri.expose(),
            &config.mongodb_database,
            config.extra_ca_file.as_deref(),
            timeout,
        )
        .await
        .context(crate::config::vars::MONGODB_URI)?;
        let kv =
            RedisKv::new(redis_url.expose(), extra_ca.as_deref(), timeout).context(crate::config::vars::REDIS_URL)?;
        let bus = RabbitBus::new(amqp_url.expose(), extra_ca.as_deref(), timeout);

        let sdk = crate::aws::load_sdk_config(Some(timeout)).await;
        #[cfg(feature = "sqs")]
        let retry_queue = config.retry_queue_url.as_deref().map(|url| DelayQueue::Sqs(SqsQueue::new(&sdk, url)));
        #[cfg(not(feature = "sqs"))]
        let retry_queue: Option<DelayQueue> = None;
        #[cfg(feature = "s3")]
        let objects = ObjectStore::S3(S3Objects::new(&sdk, &config.bucket));
        #[cfg(not(feature = "s3"))]
        let objects = ObjectStore::NotBuiltIn;
        Ok(Backends {
            backend: Backend::Real,
            documents: DocumentStore::Mongo(documents),
            kv: KeyValueStore::Redis(kv),
            bus: EventBus::RabbitMq(bus),
            topology: Topology::new(&config.events_exchange, &config.notify_queue),
            objects,
            retry_queue,
            sdk: Some(sdk),
            redis_prefix: config.redis_prefix.clone(),
            timeout,
            secrets: config.secrets().into_iter().cloned().collect(),
        })
    }

    /// Pings every dependency concurrently, each bounded by the dependency timeout.
    pub async fn health(&self) -> HealthReport {
        let (documents, kv, bus, objects, queue) = tokio::join!(
            self.check("mongodb", self.documents.ping()),
            self.check("redis", self.kv.ping()),
            self.check("rabbitmq", self.bus.ping()),
            async {
                match &self.objects {
                    ObjectStore::NotBuiltIn => None,
                    objects => Some(self.check("s3", objects.ping()).await),
                }
            },
            async {
                match &self.retry_queue {
                    Some(q) => Some(self.check("sqs", q.ping()).await),
                    None => None,
                }
            },
        );
        let backend = match self.backend {
            Backend::Memory => "memory",
            Backend::Real => "real",
        };
        HealthReport::new(
            backend,
            [Some(documents), Some(kv), Some(bus), objects, queue].into_iter().flatten().collect(),
        )
    }

    async fn check<E: std::fmt::Display>(
        &self,
        name: &'static str,
        ping: impl Future<Output = Result<(), E>>,
    ) -> DependencyHealth {
        let secrets: Vec<&Secret> = self.secrets.iter().collect();
        let reason = match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(scrub(&e.to_string(), &secrets)),
            Err(_) => Some(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        DependencyHealth { name, status: if reason.is_none() { Status::Ok } else { Status::Unreachable }, reason }
    }
}
