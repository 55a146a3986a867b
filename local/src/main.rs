//! The `settle` command: runs the local stack (`settle up`).

use clap::{Parser, Subcommand};
use settle_local::{LocalStack, StackOptions};
use settle_shared::config::vars;
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
    /// Run the csv-ingest pipeline on a local settlement file (.csv or .csv.gz), with a
    /// progress line and a summary table.
    Ingest {
        file: PathBuf,
        /// Use the real services (see `up --real`) instead of in-memory backends.
        #[arg(long)]
        real: bool,
    },
    /// Write a realistic settlement file for tests and benchmarks.
    Generate {
        /// Where to write it.
        out: PathBuf,
        /// Size in bytes (suffixes k, M, G).
        #[arg(long, default_value = "10M")]
        size: String,
        /// Share of invalid rows.
        #[arg(long, default_value_t = 0.01)]
        errors: f64,
        /// Share of valid rows that do not reconcile.
        #[arg(long, default_value_t = 0.02)]
        mismatches: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print a JWT signed with the local stack's development key.
    Token {
        /// The merchant the token acts for (`merchant_id` claim).
        #[arg(long)]
        merchant: Option<String>,
        /// Comma-separated roles: merchant, support, admin.
        #[arg(long, default_value = "merchant", value_delimiter = ',')]
        roles: Vec<String>,
        /// The `sub` claim (defaults to the merchant id, or "dev").
        #[arg(long)]
        subject: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Print a sample event from `events/` with its placeholders filled: a fresh
    /// development token, and the card token or payment id earlier calls returned.
    Event {
        file: PathBuf,
        #[command(flatten)]
        values: SampleValues,
    },
    /// Load-test the Payment API with a realistic mix, then check the effects: one
    /// payment per Idempotency-Key, each state change published once, refunds within
    /// captures, every event delivered to a webhook. Exits 1 on any violation.
    Load {
        /// Base URL of the API (the local stack by default).
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        /// Scenarios in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// How long to load, in seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Scenarios started per second (default: as fast as the concurrency allows).
        #[arg(long)]
        rate: Option<u32>,
        /// A JWT to use (default: a development token for a new merchant).
        #[arg(long, env = "SETTLE_LOAD_TOKEN")]
        token: Option<String>,
        /// RabbitMQ to count events on; `none` skips the event and webhook checks.
        #[arg(long, env = "SETTLE_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        #[arg(long, env = "SETTLE_EVENTS_EXCHANGE", default_value = "settle.events")]
        exchange: String,
        /// Skip the webhook check (needed when the notifier cannot reach this machine).
        #[arg(long)]
        no_webhooks: bool,
        /// Seconds to wait for events and webhooks after the load.
        #[arg(long, default_value_t = 60)]
        drain: u64,
    },
    /// Print the environment (dotenv lines) that runs a function binary on this machine's
    /// services with the development keys: `cargo lambda watch --env-file …`.
    LambdaEnv,
    /// Print the `--env-vars` file (JSON, per function of template.yaml) that runs the
    /// `sam build` output under `sam local invoke --docker-network host` on this machine's
    /// services with the development keys.
    SamEnv,
    /// Run one event through a function's release binary (`scripts/lambda-binaries`) under
    /// AWS's Lambda Runtime Interface Emulator (from aws-sam-cli, no Docker), on this
    /// machine's services, and print what the runtime answered. Placeholders are filled as
    /// `settle event` fills them; a CloudFormation request's ResponseURL is served here and
    /// the answer CloudFormation would receive is printed after the invocation's.
    Invoke {
        /// payment, notify or csv-ingest.
        function: String,
        /// The event file, e.g. events/payment/apigw-v2-get-healthz.json.
        event: PathBuf,
        #[command(flatten)]
        values: SampleValues,
    },
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

/// What fills a sample event's placeholders (`settle event`, `settle invoke`).
#[derive(clap::Args)]
struct SampleValues {
    /// The merchant the token acts for.
    #[arg(long, default_value = "m_123")]
    merchant: String,
    /// Fills `${CARD_TOKEN}` (a `tok_…` from the create-token sample).
    #[arg(long)]
    card: Option<String>,
    /// Fills `${PAYMENT_ID}` (a `pay_…` from the create-payment sample).
    #[arg(long)]
    payment: Option<String>,
}

/// The AWS emulator `scripts/services` starts, with the dummy credentials it accepts.
const AWS_EMULATOR: &[(&str, &str)] = &[
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

/// Points every unset service variable at the loopback services. Called before the
/// runtime starts any thread, so no one reads the environment concurrently.
fn default_to_local_services() {
    for (name, value) in settle_shared::config::LOOPBACK_SERVICES.iter().chain(AWS_EMULATOR) {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let (real, watch) = match cli.command {
        Command::Up { real, watch } => (real, watch),
        Command::Generate { out, size, errors, mismatches, seed } => {
            std::process::exit(match settle_local::tools::generate(&out, &size, errors, mismatches, seed) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    1
                }
            })
        }
        Command::Ingest { file, real } => {
            if real {
                default_to_local_services();
            }
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            std::process::exit(match runtime.block_on(settle_local::tools::ingest(&file, real)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    1
                }
            })
        }
        Command::Invoke { function, event, values } => {
            default_to_local_services();
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let invoked = filled_sample(&event, values)
                .and_then(|text| runtime.block_on(settle_local::emulator::invoke_sample(&function, &text)));
            std::process::exit(match invoked {
                Ok(printed) => {
                    println!("{printed}");
                    0
                }
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    1
                }
            })
        }
        Command::Event { file, values } => {
            let filled = filled_sample(&file, values);
            std::process::exit(match filled {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    1
                }
            })
        }
        Command::Load { url, concurrency, duration, rate, token: given, amqp_url, exchange, no_webhooks, drain } => {
            let merchant = format!("m_load{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
            let token =
                match given.map(Ok).unwrap_or_else(|| token(Some(merchant), vec!["merchant".into()], None, 3600)) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("settle: {e:#}");
                        std::process::exit(1)
                    }
                };
            let amqp_url = (amqp_url != "none").then_some(amqp_url);
            let options = settle_local::load::LoadOptions {
                url: url.trim_end_matches('/').to_string(),
                token,
                concurrency: concurrency.max(1),
                duration: std::time::Duration::from_secs(duration),
                rate,
                webhooks: amqp_url.is_some() && !no_webhooks,
                amqp_url,
                exchange,
                drain: std::time::Duration::from_secs(drain),
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            std::process::exit(match runtime.block_on(settle_local::load::run(options)) {
                Ok(report) => {
                    println!("{}", report.text);
                    i32::from(!report.violations.is_empty())
                }
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    2
                }
            })
        }
        Command::LambdaEnv => {
            print!("{}", settle_local::sample_events::local_lambda_env());
            std::process::exit(0)
        }
        Command::SamEnv => {
            println!("{:#}", settle_local::sample_events::sam_env_file());
            std::process::exit(0)
        }
        Command::Token { merchant, roles, subject, ttl } => {
            std::process::exit(match token(merchant, roles, subject, ttl) {
                Ok(t) => {
                    println!("{t}");
                    0
                }
                Err(e) => {
                    eprintln!("settle: {e:#}");
                    1
                }
            })
        }
    };
    let real = real || std::env::var(vars::BACKEND).is_ok_and(|b| b == "real");
    if real {
        default_to_local_services();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(up(real, watch)) {
        eprintln!("settle: {e:#}");
        std::process::exit(1);
    }
}

/// A sample event with its placeholders filled: a fresh development token for the
/// merchant, and the card token and payment id given.
fn filled_sample(file: &std::path::Path, given: SampleValues) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let token = token(Some(given.merchant), vec!["merchant".into()], None, 3600)?;
    let mut values = vec![("SETTLE_TOKEN", token.as_str())];
    values.extend(given.card.as_deref().map(|c| ("CARD_TOKEN", c)));
    values.extend(given.payment.as_deref().map(|p| ("PAYMENT_ID", p)));
    settle_local::sample_events::fill(&text, &values)
}

fn token(merchant: Option<String>, roles: Vec<String>, subject: Option<String>, ttl: i64) -> anyhow::Result<String> {
    let env = |name: &str| std::env::var(name).ok();
    let config = settle_shared::Config::load(&Sources { env: &env, secrets: None }, Backend::Memory)?;
    if config.jwt_key.is_some() || config.jwt_algorithm.is_some() {
        anyhow::bail!("JWT settings are configured; `settle token` signs only with the development key");
    }
    if !(1..=config.jwt_max_lifetime.as_secs() as i64).contains(&ttl) {
        anyhow::bail!("--ttl must be between 1 and {} seconds", config.jwt_max_lifetime.as_secs());
    }
    let subject = subject.or_else(|| merchant.clone()).unwrap_or_else(|| "dev".into());
    settle_local::dev_keys::mint(&config, &subject, merchant.as_deref(), &roles, ttl)
}

async fn up(real: bool, watch: PathBuf) -> anyhow::Result<()> {
    settle_shared::telemetry::init();
    let env = |name: &str| std::env::var(name).ok();
    let backend = if real { Backend::Real } else { Backend::Memory };
    let sources = Sources { env: &env, secrets: None };
    let mut config = settle_shared::Config::load(&sources, backend)?;
    config.backend = backend;
    if std::env::var_os(vars::WEBHOOK_ALLOW_PRIVATE).is_none() {
        // Locally, merchants' receivers are on this machine, over http.
        config.webhooks.allow_private = true;
    }
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
