//! The process-wide `tracing` subscriber: an `EnvFilter`, text or JSON lines, on
//! stdout or stderr, coloured only when that stream is a terminal (log files and
//! `kubectl logs` stay plain text); and, when the environment asks for them, spans
//! exported as OpenTelemetry traces (`traces`, filtered by [`TRACES_FILTER`]
//! whatever the log filter).

use std::io::IsTerminal;

use opentelemetry::KeyValue;
use tracing_subscriber::fmt::writer::EitherWriter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::traces::{self, TracesGuard};

/// How each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing_subscriber`'s default human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format named by a `log_format` setting: `json`, or text for anything else.
    pub fn from_name(name: &str) -> Self {
        if name == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Why the subscriber was not installed (most likely: one is installed already).
pub type InitError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The stream logs go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
}

impl LogOutput {
    fn is_terminal(self) -> bool {
        match self {
            LogOutput::Stdout => std::io::stdout().is_terminal(),
            LogOutput::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = EitherWriter<std::io::Stdout, std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            LogOutput::Stdout => EitherWriter::A(std::io::stdout()),
            LogOutput::Stderr => EitherWriter::B(std::io::stderr()),
        }
    }
}

/// The log lines' layer: `format` on `output`, coloured only on a terminal.
fn log_layer<S>(format: LogFormat, output: LogOutput) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(output.is_terminal())
        .with_writer(output);
    match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    }
}

/// Installs the global subscriber without traces; fails if one is installed already.
pub fn init(filter: EnvFilter, format: LogFormat, output: LogOutput) -> Result<(), InitError> {
    tracing_subscriber::registry()
        .with(log_layer(format, output).with_filter(filter))
        .try_init()?;
    Ok(())
}

/// What is exported as traces: Strata's spans from debug level up (a request and its
/// stages are debug spans, so that log lines at the default level do not carry
/// them), everything else from info.
pub const TRACES_FILTER: &str = "info,strata_broker=debug,strata_operator=debug";

/// [`init`], and the OTLP trace exporter when the environment configures one
/// (`service` names the process, `attributes` go on its resource). Keep the guard
/// until exit: dropping it flushes the last spans.
pub fn init_with_traces(
    filter: EnvFilter,
    format: LogFormat,
    output: LogOutput,
    service: &'static str,
    attributes: Vec<KeyValue>,
) -> Result<Option<TracesGuard>, InitError> {
    let registry =
        tracing_subscriber::registry().with(log_layer(format, output).with_filter(filter));
    match traces::layer(service, attributes)? {
        Some((traces, guard)) => {
            registry
                .with(traces.with_filter(EnvFilter::new(TRACES_FILTER)))
                .try_init()?;
            Ok(Some(guard))
        }
        None => {
            registry.try_init()?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_selects_json() {
        assert_eq!(LogFormat::from_name("json"), LogFormat::Json);
        assert_eq!(LogFormat::from_name("text"), LogFormat::Text);
        assert_eq!(LogFormat::from_name("JSON"), LogFormat::Text);
        assert_eq!(LogFormat::from_name(""), LogFormat::Text);
    }
}
