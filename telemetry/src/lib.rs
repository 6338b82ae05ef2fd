//! What the broker and the operator share of their telemetry: the tracing
//! subscriber (`logging`) with its optional OTLP trace export (`traces`), the
//! OpenTelemetry meter provider with its Prometheus
//! registry (`registry`), and the HTTP endpoints `/metrics`, `/healthz` and
//! `/readyz` (`http`).
//!
//! Each binary defines its own instruments on the meter this crate provides; the
//! metric names and their meaning stay with the product that records them.

pub mod http;
pub mod logging;
pub mod registry;
pub mod traces;

pub use http::Readiness;
pub use logging::{LogFormat, LogOutput};
pub use registry::MetricsRegistry;
