//! The `settle` command: runs the local stack (`settle up`).

use clap::{Parser, Subcommand};
use settle_local::{LocalStack, StackOptions};
use settle_shared::config::{Backend, Sources};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "settle", about = "Settle's local tools", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system locally: the Payment API, the notifier and csv-ingest.
    Up {
        /// Use the real services (MongoDB, Redis, RabbitMQ, S3/SQS emulator on loopback
        /// unless configured) instead of the in-memory backends. Same as SETTLE_BACKEND=real.
        #[arg(long)]
        real: bool,
        /// In-memory mode: ingest settlement files dropped into this folder.
        #[arg(long, default_value = ".settle/incoming")]
        watch: PathBuf,
    },
}

/// Loopback defaults for the real services, used when a variable is not set: the same
/// addresses `scripts/services` starts them on.
const LOCAL_DEFAULTS: &[(&str, &str)] = &[
    ("SETTLE_MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true"),
    ("SETTLE_REDIS_URL", "redis://127.0.0.1:6379"),
    ("SETTLE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

fn main() {
    let cli = Cli::parse();
    let Command::Up { real, watch } = cli.command;
    let real = real || std::env::var("SETTLE_BACKEND").is_ok_and(|b| b == "real");
    if real {
        for (name, value) in LOCAL_DEFAULTS {
            if std::env::var_os(name).is_none() {
                // Before the runtime starts any thread, so no one reads the environment concurrently.
                std::env::set_var(name, value);
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(up(real, watch)) {
        eprintln!("settle: {e:#}");
        std::process::exit(1);
    }
}

async fn up(real: bool, watch: PathBuf) -> anyhow::Result<()> {
    settle_shared::telemetry::init();
    let env = |name: &str| std::env::var(name).ok();
    let backend = if real { Backend::Real } else { Backend::Memory };
    let sources = Sources { env: &env, secrets: None };
    let mut config = settle_shared::Config::load(&sources, backend)?;
    config.backend = backend;
    let stack = LocalStack::start(config, StackOptions { watch_dir: Some(watch), ..StackOptions::default() }).await?;
    match backend {
        Backend::Memory => println!(
            "settle: in-memory backends (zero infrastructure); --real or SETTLE_BACKEND=real for the real services"
        ),
        Backend::Real => println!("settle: real services (MongoDB, Redis, RabbitMQ, S3/SQS)"),
    }
    for line in &stack.banner {
        println!("  {line}");
    }
    println!("settle: running; Ctrl-C stops");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
