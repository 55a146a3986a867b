//! Lambda entry point of the notifier: wires config and clients, then serves `aws:rmq` events.

use lambda_runtime::{service_fn, LambdaEvent};
use settle_notify::Notifier;
use settle_shared::config::{self, Backend};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real).await?;
    let notifier = Notifier::new(settle_shared::Backends::connect(&config).await?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<aws_lambda_events::event::rabbitmq::RabbitMqEvent>| {
        let notifier = notifier.clone();
        async move { notifier.handle_batch(event.payload).await }
    }))
    .await
}
