//! Lambda entry point of the notifier: wires config and clients, then serves every event
//! it gets (`dispatch`): `aws:rmq` events from Amazon MQ, SQS events from the retry queue,
//! the relay's EventBridge schedule and the BrokerTopology custom resource.

use lambda_runtime::{service_fn, LambdaEvent};
use settle_notify::Notifier;
use settle_shared::config::{self, Backend, Function};

// One thread: Lambda gives a process one invocation at a time, and the work is waiting on
// the network (csv-ingest parses on a blocking thread of its own). A multi-threaded
// runtime would start a worker per vCPU at every cold start for nothing.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    settle_shared::telemetry::init();
    let config = config::from_process_env(Backend::Real, Function::Notify).await?;
    let notifier = Notifier::new(&config, settle_shared::Backends::connect(&config).await?)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let notifier = notifier.clone();
        async move {
            let context = &event.context;
            let work = settle_notify::dispatch(&notifier, event.payload);
            settle_shared::telemetry::invocation(
                settle_notify::FUNCTION,
                &context.request_id,
                context.xray_trace_id.as_deref(),
                work,
            )
            .await
        }
    }))
    .await
}
