//! `settle ingest` and `settle generate`: the csv-ingest pipeline and the file generator
//! for people at a terminal.

use settle_csv_ingest::generate::{write_file, Shape};
use settle_csv_ingest::pipeline::{ingest_object_with, Progress};
use settle_csv_ingest::INCOMING_PREFIX;
use settle_shared::config::{Backend, Sources};
use settle_shared::Backends;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `10M`, `512k`, `1G`, or plain bytes.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| anyhow::anyhow!("--size {text}: expected a number with k, M or G"))?;
    let factor = match unit {
        "" | "B" => 1,
        "k" | "K" | "kB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => anyhow::bail!("--size {text}: unknown unit {unit}"),
    };
    Ok(n * factor)
}

pub fn generate(out: &Path, size: &str, errors: f64, mismatches: f64, seed: u64) -> anyhow::Result<()> {
    let bytes = parse_size(size)?;
    let file = std::fs::File::create(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let shape = Shape { bytes, errors, mismatches, seed };
    let written = write_file(&mut writer, &[], shape)?;
    writer.flush()?;
    println!(
        "{}: {} rows, {} bytes ({} invalid); rows name payments this stack does not know, so they reconcile as unknown_payment",
        out.display(),
        written.rows,
        written.bytes,
        written.bad
    );
    Ok(())
}

pub async fn ingest(path: &Path, real: bool) -> anyhow::Result<()> {
    settle_shared::telemetry::init();
    let env = |name: &str| std::env::var(name).ok();
    let backend = if real { Backend::Real } else { Backend::Memory };
    let mut config = settle_shared::Config::load(&Sources { env: &env, secrets: None }, backend)?;
    config.backend = backend;
    let backends = Backends::connect(&config).await?;
    backends.objects.ensure_bucket().await?;
    backends.bus.declare(&backends.topology).await?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{}: not a file name", path.display()))?;
    let body = tokio::fs::read(path).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let key = format!("{INCOMING_PREFIX}{name}");
    let meta = backends.objects.put(&key, body, "text/csv").await?;
    let total = meta.size.max(1);

    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                print_progress(&progress, total, started.elapsed());
            }
        })
    };
    let summary = ingest_object_with(&backends, &key, &meta, Some(progress.clone())).await;
    ticker.abort();
    print_progress(&progress, total, started.elapsed());
    eprintln!();
    let summary = summary?;
    let elapsed = started.elapsed().as_secs_f64();
    println!("\n{:<22} {:>12}", "file", name);
    println!("{:<22} {:>12}", "status", summary.status);
    println!("{:<22} {:>12}", "rows", summary.rows);
    println!("{:<22} {:>12}", "rejected rows", summary.rejects);
    for (outcome, count) in &summary.outcomes {
        println!("{:<22} {:>12}", outcome, count);
    }
    println!("{:<22} {:>12.0}", "rows per second", (summary.rows + summary.rejects) as f64 / elapsed.max(1e-9));
    if let Some(k) = &summary.rejects_key {
        println!("{:<22} s3://{}/{k}", "rejects report", backends.objects.bucket());
    }
    if let Some(r) = &summary.reason {
        println!("{:<22} {r}", "reason");
    }
    Ok(())
}

fn print_progress(p: &Progress, total: u64, elapsed: Duration) {
    let bytes = p.bytes.load(Ordering::Relaxed);
    let rows = p.rows.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let width = 30;
    let done = ((bytes.min(total) as f64 / total as f64) * width as f64) as usize;
    eprint!(
        "\r[{}{}] {:>6.1} MiB  {:>9} rows  {:>7.1} MiB/s  {:>9.0} rows/s",
        "#".repeat(done),
        " ".repeat(width - done),
        bytes as f64 / 1_048_576.0,
        rows,
        bytes as f64 / 1_048_576.0 / secs,
        rows as f64 / secs
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(super::parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(super::parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(super::parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(super::parse_size("100").unwrap(), 100);
        assert!(super::parse_size("ten").is_err());
        assert!(super::parse_size("1T").is_err());
    }
}
