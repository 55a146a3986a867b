//! This function's CloudWatch metrics: one EMF record per call, under a stable name.

/// The `Function` dimension of this function's metrics: stable across deployments, unlike
/// the Lambda function's name, so that the template's dashboard and alarms can name it.
pub const METRICS_FUNCTION: &str = "payment";

/// One EMF record counting one `metric` (see `settle_shared::metrics`), under this
/// function's name, with `dimensions` and searchable `properties`.
pub fn count(metric: &str, dimensions: &[(&str, &str)], properties: &[(&str, serde_json::Value)]) {
    record(dimensions, &[settle_shared::metrics::Measure::count(metric, 1)], properties);
}

/// One EMF record of several `measures` under this function's name.
pub fn record(
    dimensions: &[(&str, &str)],
    measures: &[settle_shared::metrics::Measure],
    properties: &[(&str, serde_json::Value)],
) {
    settle_shared::metrics::emit(METRICS_FUNCTION, dimensions, measures, properties);
}
