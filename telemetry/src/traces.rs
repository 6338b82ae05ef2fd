//! OpenTelemetry traces: the `tracing` spans of a process exported over OTLP/HTTP
//! (protobuf), off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_TRACES_EXPORTER` is not
//! `none`), as every OpenTelemetry SDK reads them. `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
//! apply as usual. Spans are batched and sent from a thread of their own, so a slow
//! or absent collector never holds up the work being traced.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where traces go, from the standard environment variables; `None`: not exported.
pub fn endpoint_from(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if env("OTEL_TRACES_EXPORTER").is_some_and(|e| e.trim() == "none") {
        return None;
    }
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .filter(|e| !e.trim().is_empty())
}

/// Flushes the spans still batched and stops the exporter when dropped: keep it
/// until the process exits.
pub struct TracesGuard {
    provider: SdkTracerProvider,
}

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// The layer exporting spans, with its guard, when the environment asks for traces;
/// `service` names the process unless `OTEL_SERVICE_NAME` does. An unusable setting
/// is an error (at startup).
pub fn layer<S>(
    service: &'static str,
    attributes: Vec<KeyValue>,
) -> Result<Option<(impl Layer<S>, TracesGuard)>, String>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let Some(endpoint) = endpoint_from(|k| std::env::var(k).ok()) else {
        return Ok(None);
    };
    // The exporter reads the endpoint itself (`…/v1/traces` appended to the generic
    // variable, the signal's variable taken as is); it is read here only to decide
    // whether to export and to say where.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTLP trace exporter for {endpoint}: {e}"))?;
    let mut resource = Resource::builder().with_attributes(attributes);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(service);
    eprintln!("exporting traces over OTLP/HTTP to {endpoint}");
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        TracesGuard { provider },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(endpoint_from(env(&[])), None);
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])).as_deref(),
            Some("http://c:4318")
        );
        assert_eq!(
            endpoint_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://t:4318/v1/traces"
                ),
            ]))
            .as_deref(),
            Some("http://t:4318/v1/traces")
        );
        assert_eq!(
            endpoint_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])),
            None
        );
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
    }
}
