//! HTTP endpoints of the operator process: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (it holds the leader Lease
//! and its controllers run, or it is a ready standby). The endpoints themselves
//! are `strata_telemetry::http`'s, the same the broker serves.

use std::net::SocketAddr;

pub use strata_telemetry::Readiness;

use crate::metrics::Metrics;

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics, ready: Readiness) -> std::io::Result<()> {
    let server = strata_telemetry::http::bind(
        addr,
        metrics.registry().clone(),
        ready,
        std::future::pending(),
    )
    .await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    server.await
}
