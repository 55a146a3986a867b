//! Dependency health for `GET /healthz` and start-up checks: each dependency answers ok or
//! unreachable with a reason, with every secret scrubbed from the reason.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyHealth {
    pub name: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `ok` only when every dependency is.
    pub status: Status,
    pub backend: &'static str,
    pub dependencies: Vec<DependencyHealth>,
}

impl HealthReport {
    pub fn new(backend: &'static str, dependencies: Vec<DependencyHealth>) -> Self {
        let status = if dependencies.iter().all(|d| d.status == Status::Ok) { Status::Ok } else { Status::Unreachable };
        HealthReport { status, backend, dependencies }
    }

    /// One line per unreachable dependency, for start-up messages.
    pub fn problems(&self) -> Vec<String> {
        self.dependencies
            .iter()
            .filter(|d| d.status != Status::Ok)
            .map(|d| format!("{} unreachable: {}", d.name, d.reason.as_deref().unwrap_or("no answer")))
            .collect()
    }
}
