//! The smallest `lambda_runtime` function, echoing its event: the baseline the cold-start
//! benchmark (`local/benches/init.rs`) compares Settle's functions with. Built as they are:
//! the release profile, the one-threaded Tokio runtime their mains use, and their link
//! layout (`functions/init_order.rs`), so that what differs is only what they do.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
