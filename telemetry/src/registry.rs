//! The OpenTelemetry meter provider of a process and the Prometheus registry its
//! instruments are exported to, rendered as Prometheus text on `/metrics`.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// Why the registry could not be rendered.
pub type RenderError = prometheus::Error;

/// A meter provider whose every instrument lands in one Prometheus registry.
/// Cloning shares the provider and the registry.
#[derive(Clone)]
pub struct MetricsRegistry {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    /// The instrumentation scope, exported as the `otel_scope_name` label.
    scope: &'static str,
}

impl MetricsRegistry {
    /// A fresh registry; `scope` names the meter (`strata-broker`, `strata-operator`).
    pub fn new(scope: &'static str) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(MetricsRegistry {
            registry,
            provider,
            scope,
        })
    }

    /// The meter instruments are created from.
    pub fn meter(&self) -> Meter {
        self.provider.meter(self.scope)
    }

    /// Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<String, RenderError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruments_render_with_their_scope() {
        let r = MetricsRegistry::new("strata-test").expect("registry");
        let c = r.meter().u64_counter("strata_test_events").build();
        c.add(2, &[]);
        let text = r.render().expect("render");
        assert!(text.contains("strata_test_events_total{"), "{text}");
        assert!(text.contains("otel_scope_name=\"strata-test\""), "{text}");
        assert!(!text.contains("target_info"), "{text}");
    }
}
