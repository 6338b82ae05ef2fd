//! The HTTP endpoints every Strata process serves: `/metrics` (Prometheus text of
//! the process' [`MetricsRegistry`]), `/healthz` (the process is alive) and
//! `/readyz` (the process says it is ready, through [`Readiness`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::registry::MetricsRegistry;

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Readiness switch behind `/readyz`; clones share it. Starts not ready.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Endpoints {
    metrics: MetricsRegistry,
    ready: Readiness,
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: MetricsRegistry, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(Endpoints { metrics, ready })
}

async fn metrics_handler(State(s): State<Endpoints>) -> impl IntoResponse {
    match s.metrics.render() {
        Ok(body) => (StatusCode::OK, [("content-type", PROMETHEUS_TEXT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready_handler(State(s): State<Endpoints>) -> impl IntoResponse {
    if s.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `addr`; the returned future serves the endpoints until `shutdown`
/// resolves. Binding first lets the caller fail before it starts anything else.
pub async fn bind(
    addr: SocketAddr,
    metrics: MetricsRegistry,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    let listener = TcpListener::bind(addr).await?;
    let server = axum::serve(listener, router(metrics, ready)).with_graceful_shutdown(shutdown);
    Ok(async move { server.await })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        buf
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_flips() {
        let metrics = MetricsRegistry::new("strata-test").expect("registry");
        metrics
            .meter()
            .u64_counter("strata_test_up")
            .build()
            .add(1, &[]);
        let ready = Readiness::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = bind(addr, metrics, ready.clone(), async move {
            let _ = stopped.await;
        })
        .await
        .expect("bind endpoints");
        let task = tokio::spawn(server);

        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.0 200"), "{m}");
        assert!(m.contains("content-type: text/plain; version=0.0.4"), "{m}");
        assert!(m.contains("strata_test_up_total{"), "{m}");
        assert!(get(addr, "/healthz").await.ends_with("\r\n\r\nok\n"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.0 503"), "{not_ready}");
        ready.set(true);
        let is_ready = get(addr, "/readyz").await;
        assert!(is_ready.starts_with("HTTP/1.0 200"), "{is_ready}");
        assert!(is_ready.ends_with("ready\n"), "{is_ready}");

        let _ = stop.send(());
        task.await.expect("join").expect("serve");
    }
}
