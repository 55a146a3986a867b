//! The parsing thread: the object body read on a blocking thread (gunzipped on the fly),
//! CSV records parsed into rows or rejects and handed to the run in chunks.

use crate::row::{check_header, parse_row, Reject, SettlementRow};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Parsed items handed from the parsing thread in one message (a channel send per row
/// cost more than validating it), and how many such chunks may wait: memory stays flat.
const CHUNK: usize = 256;
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the parsing thread sends (in chunks of up to [`CHUNK`]).
pub(super) enum Parsed {
    /// A valid row, its record number and the line it starts on.
    Row(SettlementRow, u64, u64),
    Reject(Reject),
    /// The file cannot be read as a settlement file at all.
    Fatal(String),
    /// Reading the body failed (the connection to S3, not the file): retry the run.
    Unreadable(String),
}

/// Bytes read and rows parsed so far, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
}

/// Counts what passes through, for [`Progress`].
struct Counting<R> {
    inner: R,
    progress: Option<Arc<Progress>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Starts [`parse_stream`] on a blocking thread over `body`; its chunks arrive on the
/// receiver, and the handle ends when it stops.
pub(super) fn spawn(
    body: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    gzipped: bool,
    progress: Option<Arc<Progress>>,
) -> (mpsc::Receiver<Vec<Parsed>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Vec<Parsed>>(CHUNKS_IN_FLIGHT);
    let body = Counting { inner: tokio_util::io::SyncIoBridge::new(body), progress: progress.clone() };
    let parser = tokio::task::spawn_blocking(move || parse_stream(body, gzipped, tx, progress));
    (rx, parser)
}

/// Runs on a blocking thread: bytes → (gunzip) → CSV records → rows or rejects.
fn parse_stream(body: impl Read, gzipped: bool, tx: mpsc::Sender<Vec<Parsed>>, progress: Option<Arc<Progress>>) {
    let input: Box<dyn Read> = if gzipped { Box::new(flate2::read::MultiGzDecoder::new(body)) } else { Box::new(body) };
    let mut chunk = Vec::with_capacity(CHUNK);
    let send = |chunk: &mut Vec<Parsed>, rows: u64| {
        if let Some(p) = &progress {
            p.rows.fetch_add(rows, Ordering::Relaxed);
        }
        // An error means the consumer gave up (a store failed): stop reading.
        tx.blocking_send(std::mem::replace(chunk, Vec::with_capacity(CHUNK))).is_ok()
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut number: u64 = 0;
    let mut unsent_rows: u64 = 0;
    loop {
        let fatal = match reader.read_byte_record(&mut record) {
            Ok(true) if number == 0 => check_header(&record).err(),
            Ok(true) => {
                chunk.push(match parse_row(&record, number) {
                    Ok(row) => Parsed::Row(row, number, record.position().map_or(number, |p| p.line())),
                    Err(reject) => Parsed::Reject(reject),
                });
                None
            }
            Ok(false) if number == 0 => Some("empty file: no header".to_string()),
            Ok(false) => {
                send(&mut chunk, unsent_rows);
                return;
            }
            Err(e) => {
                chunk.push(read_failure(&e));
                send(&mut chunk, unsent_rows);
                return;
            }
        };
        if let Some(reason) = fatal {
            chunk.push(Parsed::Fatal(reason));
            send(&mut chunk, unsent_rows);
            return;
        }
        number += 1;
        unsent_rows += 1;
        if chunk.len() >= CHUNK {
            if !send(&mut chunk, unsent_rows) {
                return;
            }
            unsent_rows = 0;
        }
    }
}

/// What a failed read means for the run: the file rejected, or the run retried.
fn read_failure(e: &csv::Error) -> Parsed {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    let line = e.position().map_or(0, |p| p.line());
    let csv::ErrorKind::Io(io) = e.kind() else { return Parsed::Fatal(format!("unreadable at line {line}")) };
    // Corrupt or truncated gzip is the file's fault; anything else (a reset connection, a
    // timeout) is the stream's, and the run is retried.
    if matches!(io.kind(), InvalidInput | InvalidData | UnexpectedEof) {
        Parsed::Fatal(format!("unreadable at line {line}: {io}"))
    } else {
        Parsed::Unreadable(format!("object body unreadable at line {line}: {io}"))
    }
}
