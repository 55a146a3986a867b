//! The rejects report: every rejected row of a file with its position and reason, as CSV
//! uploaded under [`REJECTS_PREFIX`].

use super::{PipelineError, REJECTS_PREFIX};
use crate::row::Reject;
use settle_shared::Backends;

/// The rejects report, written to a temporary file as rows are rejected and uploaded
/// from it: a file where every row is bad must not grow memory with it.
pub(super) struct RejectsReport {
    writer: csv::Writer<std::io::BufWriter<std::fs::File>>,
    path: TempPath,
}

/// Removes its file when dropped, whatever path the run took.
struct TempPath(std::path::PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl RejectsReport {
    pub(super) fn create() -> Result<Self, PipelineError> {
        let name = format!("settle-rejects-{:016x}.csv", rand::random::<u64>());
        let path = TempPath(std::env::temp_dir().join(name));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path.0).map_err(Self::failed)?;
        let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
        writer.write_record(["record", "line", "column", "reason"]).map_err(Self::failed)?;
        Ok(RejectsReport { writer, path })
    }

    pub(super) fn write(&mut self, r: &Reject) -> Result<(), PipelineError> {
        let column = r.column.map(|c| c.to_string()).unwrap_or_default();
        let record = [r.record.to_string(), r.line.to_string(), column, r.reason.clone()];
        self.writer.write_record(&record).map_err(Self::failed)
    }

    /// Flushes the report and hands over its file (removed when the guard drops).
    fn finish(mut self) -> Result<TempPath, PipelineError> {
        self.writer.flush().map_err(Self::failed)?;
        Ok(self.path)
    }

    /// Uploads the report for the settlement file `key`; answers the report's key.
    pub(super) async fn upload(self, backends: &Backends, key: &str) -> Result<String, PipelineError> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let report_key = format!("{REJECTS_PREFIX}{name}.rejects.csv");
        let path = self.finish()?;
        backends
            .objects
            .put_file(&report_key, &path.0, "text/csv")
            .await
            .map_err(|e| PipelineError::Unavailable(e.to_string()))?;
        Ok(report_key)
    }

    fn failed(e: impl std::fmt::Display) -> PipelineError {
        PipelineError::Unavailable(format!("rejects report (temporary file): {e}"))
    }
}
