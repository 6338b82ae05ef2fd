//! Operator metrics (OpenTelemetry instruments exported in Prometheus text on
//! `/metrics`): reconcile runs, failures by error category, and durations, per
//! controller; External metrics requests; admin connections opened.

use std::time::Instant;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;
use strata_telemetry::registry::RenderError;
use strata_telemetry::MetricsRegistry;

/// The operator's instruments.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    pub reconciles: Counter<u64>,
    pub failures: Counter<u64>,
    pub duration: Histogram<f64>,
    pub leader: opentelemetry::metrics::Gauge<u64>,
    pub metric_requests: Counter<u64>,
    pub admin_connects: Counter<u64>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = MetricsRegistry::new("strata-operator")?;
        let meter = registry.meter();
        Ok(Metrics {
            reconciles: meter
                .u64_counter("strata_operator_reconciles")
                .with_description("Reconcile runs, per controller")
                .build(),
            failures: meter
                .u64_counter("strata_operator_reconcile_errors")
                .with_description("Failed reconciles, per controller and error category")
                .build(),
            duration: meter
                .f64_histogram("strata_operator_reconcile_duration")
                .with_unit("s")
                .with_description("Reconcile duration, per controller")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            leader: meter
                .u64_gauge("strata_operator_leader")
                .with_description("1 while this replica holds the leader Lease")
                .build(),
            metric_requests: meter
                .u64_counter("strata_operator_external_metric_requests")
                .with_description("external.metrics.k8s.io requests served, per result")
                .build(),
            admin_connects: meter
                .u64_counter("strata_operator_admin_connects")
                .with_description(
                    "Connections opened to a cluster's admin API (one is kept per cluster), per result",
                )
                .build(),
            registry,
        })
    }

    /// Starts timing one reconcile of `controller`; call `finish` on the result.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .add(1, &[KeyValue::new("controller", controller)]);
        ReconcileTimer {
            started: Instant::now(),
            controller,
        }
    }

    pub fn failed(&self, controller: &'static str, category: &'static str) {
        self.failures.add(
            1,
            &[
                KeyValue::new("controller", controller),
                KeyValue::new("error", category),
            ],
        );
    }

    /// Counts one External metrics API request (`ok` or `error`).
    pub fn metric_request(&self, result: &'static str) {
        self.metric_requests
            .add(1, &[KeyValue::new("result", result)]);
    }

    /// Counts one attempt to open an admin connection (`ok` or `error`).
    pub fn admin_connect(&self, result: &'static str) {
        self.admin_connects
            .add(1, &[KeyValue::new("result", result)]);
    }

    /// Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<String, RenderError> {
        self.registry.render()
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}

/// Records the duration when finished.
pub struct ReconcileTimer {
    started: Instant,
    controller: &'static str,
}

impl ReconcileTimer {
    pub fn finish(self, metrics: &Metrics) {
        metrics.duration.record(
            self.started.elapsed().as_secs_f64(),
            &[KeyValue::new("controller", self.controller)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_metrics_are_exported() {
        let m = Metrics::new().expect("metrics");
        let t = m.start("topic");
        t.finish(&m);
        m.failed("topic", "broker");
        let text = m.render().expect("render");
        assert!(
            text.contains("strata_operator_reconciles_total{controller=\"topic\""),
            "{text}"
        );
        assert!(
            text.contains("strata_operator_reconcile_errors_total"),
            "{text}"
        );
        assert!(
            text.contains("strata_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
