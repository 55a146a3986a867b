//! Starting and stopping the local stack.

use crate::{rmq_bridge, s3_feed};
use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::s3::S3Event;
use settle_csv_ingest::{IngestReport, Ingestor, INCOMING_PREFIX};
use settle_notify::{BatchReport, Notifier};
use settle_shared::config::Backend;
use settle_shared::ports::delay_queue::{DelayQueue, SqsQueue};
use settle_shared::ports::objects::ObjectStore;
use settle_shared::{Backends, Config};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Memory backend only: files dropped here are ingested as settlement files.
    pub watch_dir: Option<PathBuf>,
    /// Real backend: the SQS queue the bucket notifies of created objects.
    pub s3_events_queue: String,
    /// Real backend: the webhook retry queue, created when `SETTLE_RETRY_QUEUE_URL` is unset.
    pub retry_queue: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            watch_dir: None,
            s3_events_queue: "settle-local-s3-events".into(),
            retry_queue: "settle-webhook-retries".into(),
        }
    }
}

/// What a handler was given and what it made of it: the local stack's window into the
/// wiring, used by its tests and printed in verbose mode.
#[derive(Debug, Clone)]
pub enum Observation {
    Notify { event: RabbitMqEvent, report: BatchReport },
    Ingest { event: S3Event, report: IngestReport },
}

pub struct LocalStack {
    pub http_addr: SocketAddr,
    pub backends: Backends,
    /// One line per part: where it listens or what feeds it.
    pub banner: Vec<String>,
    observations: broadcast::Sender<Observation>,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalStack {
    /// Starts the three functions and their feeds. With the real backend, every service is
    /// checked first and an unreachable one fails the start with one line naming it.
    pub async fn start(mut config: Config, options: StackOptions) -> anyhow::Result<LocalStack> {
        let mut backends = Backends::connect(&config).await?;
        let mut banner: Vec<String> =
            crate::dev_keys::apply(&mut config).into_iter().map(|d| format!("dev default  {d}")).collect();
        if let ObjectStore::S3(s3) = &backends.objects {
            // The template creates the bucket in AWS; locally the stack does, before the
            // health check looks for it.
            if let Err(e) = s3.ensure_bucket().await {
                anyhow::bail!("cannot start on the real services: s3 unreachable: {e}");
            }
        }
        if config.backend == Backend::Real {
            let problems = backends.health().await.problems();
            if !problems.is_empty() {
                anyhow::bail!("cannot start on the real services: {}", problems.join("; "));
            }
        }
        backends.bus.declare(&backends.topology).await?;
        let (observations, _) = broadcast::channel(256);
        let mut tasks = Vec::new();

        // csv-ingest's trigger.
        let ingestor_backends = backends.clone();
        match (&backends.objects, &backends.sdk) {
            (ObjectStore::S3(s3), Some(sdk)) => {
                let queue = SqsQueue::ensure(sdk, &options.s3_events_queue).await?;
                s3.notify_queue_on_create(&queue.arn().await?, INCOMING_PREFIX).await?;
                banner.push(format!(
                    "csv-ingest   s3://{}/{INCOMING_PREFIX} (S3 events via SQS queue {})",
                    s3.bucket(),
                    options.s3_events_queue
                ));
                if config.retry_queue_url.is_none() {
                    backends.retry_queue = Some(DelayQueue::Sqs(SqsQueue::ensure(sdk, &options.retry_queue).await?));
                }
                let feed = s3_feed::run_from_queue(
                    Ingestor::new(ingestor_backends),
                    DelayQueue::Sqs(queue),
                    observations.clone(),
                );
                tasks.push(tokio::spawn(feed));
            }
            (ObjectStore::Memory(memory), _) => {
                let created = memory.subscribe_created();
                let feed = s3_feed::run_from_memory(
                    Ingestor::new(ingestor_backends),
                    memory.clone(),
                    created,
                    observations.clone(),
                );
                tasks.push(tokio::spawn(feed));
                match &options.watch_dir {
                    Some(dir) => {
                        tokio::fs::create_dir_all(dir).await?;
                        banner.push(format!(
                            "csv-ingest   files dropped in {} (in-memory bucket {})",
                            dir.display(),
                            memory.bucket()
                        ));
                        tasks.push(tokio::spawn(s3_feed::watch_folder(dir.clone(), backends.objects.clone())));
                    }
                    None => banner.push(format!("csv-ingest   in-memory bucket {}", memory.bucket())),
                }
            }
            (ObjectStore::S3(_), None) => anyhow::bail!("S3 backend without an AWS configuration"),
            (ObjectStore::NotBuiltIn, _) => anyhow::bail!("the local stack needs settle-shared's `s3` feature"),
        }

        // notify's trigger.
        let notifier = Notifier::new(&config, backends.clone())?;
        if let Some(queue) = backends.retry_queue.clone() {
            tasks.push(tokio::spawn(rmq_bridge::run_retries(notifier.clone(), queue)));
        }
        banner.push(format!(
            "notify       queue {} bound to exchange {} (aws:rmq events)",
            backends.topology.queue, backends.topology.exchange
        ));
        let bridge = rmq_bridge::run(notifier, backends.topology.queue.clone(), observations.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = bridge.await {
                tracing::error!(error = %e, "notify bridge stopped");
            }
        }));

        // The Payment API, the very router the Lambda serves.
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("SETTLE_HTTP_ADDR {}: {e}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let state = settle_payment::AppState::new(config, backends.clone())?;
        state.prepare().await.map_err(anyhow::Error::msg)?;
        // The outbox relay on a schedule, as a scheduled trigger would run it in AWS.
        let relay_state = state.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                // Each pass in a task of its own: a panic in one (a driver bug) is logged
                // and the next pass still runs, instead of the relay stopping for good.
                let state = relay_state.clone();
                match tokio::spawn(async move { state.outbox.relay(&state).await }).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "outbox relay failed"),
                    Err(e) => tracing::error!(error = %e, "outbox relay pass panicked"),
                }
            }
        }));
        let app = settle_payment::router(state);
        tasks.push(tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }));
        banner.insert(0, format!("payment API  http://{http_addr}  (GET /healthz)"));
        Ok(LocalStack { http_addr, backends, banner, observations, tasks })
    }

    /// Everything the handlers are given from now on.
    pub fn observe(&self) -> broadcast::Receiver<Observation> {
        self.observations.subscribe()
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
