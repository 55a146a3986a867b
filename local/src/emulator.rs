//! Runs a function's release binary under AWS's Lambda Runtime Interface Emulator
//! (`aws-lambda-rie`, shipped inside the aws-sam-cli wheel), without Docker: the binary
//! talks to the real Runtime API contract, and each invocation's answer is what leaves
//! the runtime (for the Payment API, the API Gateway response: status, headers, body,
//! `isBase64Encoded`). `settle invoke` and the sample-event tests run on it.

use anyhow::Context;
use serde_json::Value;
use settle_shared::config::vars;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The three functions, by the names of their binaries.
pub const FUNCTIONS: [&str; 3] = ["payment", "notify", "csv-ingest"];

/// The workspace this CLI was built from (where `target/` and the sam virtualenv are).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The aws-sam-cli virtualenv `scripts/sam-tools` installs: `$SETTLE_SERVICES_DIR/sam-venv`
/// (by default under `~/.cache/settle`).
fn sam_venv() -> PathBuf {
    let services = std::env::var_os("SETTLE_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("settle"));
    services.join("sam-venv")
}

/// What `sam local invoke --env-vars` gives each function the file at `env_file` names:
/// resolved by the SAM CLI's own code (`scripts/sam-local-env.py`), which fails if the
/// file sets a variable SAM would drop.
pub fn sam_local_env(env_file: &Path) -> anyhow::Result<std::collections::BTreeMap<String, Vec<(String, String)>>> {
    let python = sam_venv().join("bin").join("python");
    let out = std::process::Command::new(&python)
        .current_dir(workspace())
        .arg("scripts/sam-local-env.py")
        .arg(env_file)
        .output()
        .with_context(|| format!("running {} (install it with `bash scripts/sam-tools`)", python.display()))?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let resolved: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        serde_json::from_slice(&out.stdout).context("scripts/sam-local-env.py printed no JSON")?;
    Ok(resolved.into_iter().map(|(function, env)| (function, env.into_iter().collect())).collect())
}

/// `SETTLE_LAMBDA_RIE`, else the emulator inside the aws-sam-cli virtualenv that
/// `scripts/sam-tools` installs (`$SETTLE_SERVICES_DIR/sam-venv`).
pub fn rie_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SETTLE_LAMBDA_RIE") {
        return Ok(PathBuf::from(path));
    }
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "x86_64" };
    let lib = sam_venv().join("lib");
    let found = std::fs::read_dir(&lib).ok().into_iter().flatten().flatten().find_map(|python| {
        let rie = python.path().join("site-packages/samcli/local/rapid").join(format!("aws-lambda-rie-{arch}"));
        rie.is_file().then_some(rie)
    });
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "aws-lambda-rie not found under {}: run `bash scripts/sam-tools` (installs aws-sam-cli) or set SETTLE_LAMBDA_RIE",
            lib.display()
        )
    })
}

/// The function's release binary: `SETTLE_LAMBDA_BINARIES/<function>`, by default
/// `target/lambda-native/<function>` (built by `scripts/lambda-binaries`).
pub fn binary_path(function: &str) -> anyhow::Result<PathBuf> {
    if !FUNCTIONS.contains(&function) {
        anyhow::bail!("unknown function '{function}' (one of {})", FUNCTIONS.join(", "));
    }
    let dir = std::env::var_os("SETTLE_LAMBDA_BINARIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("lambda-native"));
    let binary = dir.join(function);
    if !binary.is_file() {
        anyhow::bail!("{} does not exist: build it with `bash scripts/lambda-binaries`", binary.display());
    }
    Ok(binary)
}

/// One function running under the emulator; stopped when dropped.
pub struct Emulator {
    pub function: String,
    child: tokio::process::Child,
    invocations: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts `function`'s binary under the emulator with exactly `env` (plus `PATH`), on
    /// two free loopback ports, and waits until the emulator listens.
    pub async fn start(function: &str, env: &[(String, String)]) -> anyhow::Result<Emulator> {
        let (rie, binary) = (rie_path()?, binary_path(function)?);
        let (api, runtime) = (free_port()?, free_port()?);
        let logs = workspace().join("target").join("emulator-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{function}-{api}.log"));
        let out = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
        let child = tokio::process::Command::new(&rie)
            .arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{api}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{runtime}"))
            .arg(&binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("settle-{function}-local"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", rie.display()))?;
        let emulator = Emulator {
            function: function.to_string(),
            child,
            invocations: format!("http://127.0.0.1:{api}/2015-03-31/functions/function/invocations"),
            log,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).no_proxy().build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", api)).await.is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("the emulator did not listen within 10 s: {}", emulator.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(emulator)
    }

    /// Invokes the function once with `event`; returns what the runtime answered (the
    /// function's response, or Lambda's `{"errorType", "errorMessage"}` for an error).
    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(&self.invocations)
            .json(event)
            .send()
            .await
            .with_context(|| format!("invoking {}: {}", self.function, self.log_tail()))?;
        let body = response.bytes().await?;
        serde_json::from_slice(&body).with_context(|| {
            format!("{} answered no JSON ({}): {}", self.function, String::from_utf8_lossy(&body), self.log_tail())
        })
    }

    /// The last lines the emulator and the function wrote (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{} (last lines of {}):\n{}",
            self.function,
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Stops the emulator and the function.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The error Lambda reports for a failed invocation, if `answer` is one.
pub fn invocation_error(answer: &Value) -> Option<String> {
    let kind = answer.get("errorType")?.as_str()?;
    Some(format!("{kind}: {}", answer.get("errorMessage").and_then(Value::as_str).unwrap_or_default()))
}

/// The environment `settle invoke` runs a function with: this machine's services and the
/// development keys ([`crate::sample_events::local_lambda_vars`]), where any of those
/// variables set in the caller's environment wins, plus the caller's other `SETTLE_*`,
/// `OTEL_*` and `RUST_LOG` settings.
pub fn invoke_env() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = crate::sample_events::local_lambda_vars()
        .into_iter()
        .map(|(name, value)| {
            let value = std::env::var(&name).unwrap_or(value);
            (name, value)
        })
        .collect();
    for (name, value) in std::env::vars() {
        let passed = name.starts_with("SETTLE_") || name.starts_with("OTEL_") || name == "RUST_LOG";
        if passed && !vars.iter().any(|(known, _)| *known == name) {
            vars.push((name, value));
        }
    }
    vars
}

/// `settle invoke`: one invocation of `function` with the event `text` under the
/// emulator, answered as pretty JSON. A CloudFormation custom resource request gets a
/// local stand-in for its pre-signed ResponseURL, and what it received is shown too.
pub async fn invoke_sample(function: &str, text: &str) -> anyhow::Result<String> {
    let mut event: Value = serde_json::from_str(text).context("the event is not JSON")?;
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    if event.get("ResponseURL").is_some() {
        event["ResponseURL"] = Value::String(response_url_stand_in(answers.clone()).await?);
    }
    let env = invoke_env();
    ensure_local_resources(&env).await?;
    let emulator = Emulator::start(function, &env).await?;
    let answer = emulator.invoke(&event).await;
    emulator.stop().await;
    let answer = answer?;
    let mut printed = serde_json::to_string_pretty(&answer)?;
    for sent in answers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        printed.push_str(&format!("\nCloudFormation would receive: {}", serde_json::to_string_pretty(sent)?));
    }
    match invocation_error(&answer) {
        Some(error) => anyhow::bail!("{function} failed: {error}\n{printed}"),
        None => Ok(printed),
    }
}

/// Creates the bucket and the retry queue `env` names in the AWS emulator if they are
/// missing, as `settle up --real` does: in AWS the template creates them.
async fn ensure_local_resources(env: &[(String, String)]) -> anyhow::Result<()> {
    let value = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let config = settle_shared::config::loopback_config(&[(vars::BUCKET, value(vars::BUCKET).unwrap_or_default())])?;
    let backends = settle_shared::Backends::connect(&config).await?;
    backends.objects.ensure_bucket().await?;
    if let (Some(url), Some(sdk)) = (value(vars::RETRY_QUEUE_URL), &backends.sdk) {
        let name = url.rsplit('/').next().unwrap_or_default();
        settle_shared::ports::delay_queue::SqsQueue::ensure(sdk, name).await?;
    }
    Ok(())
}

/// A loopback HTTP server that takes PUTs as CloudFormation's pre-signed URL does and
/// keeps their JSON bodies; returns its URL.
pub async fn response_url_stand_in(answers: std::sync::Arc<std::sync::Mutex<Vec<Value>>>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/cloudformation-response",
        axum::routing::put(move |body: axum::body::Bytes| {
            let answers = answers.clone();
            async move {
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                answers.lock().unwrap_or_else(|p| p.into_inner()).push(json);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "response URL stand-in stopped");
        }
    });
    Ok(format!("http://{addr}/cloudformation-response"))
}
