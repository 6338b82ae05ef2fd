//! Process lifecycle: open storage, bind listeners, run until a shutdown signal,
//! then stop accepting, drain and close the logs cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{AdminServer, AdminService};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::kafka::server;
use crate::telemetry::{self, Metrics, Readiness};

/// Runs a broker until `shutdown` resolves.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let ready = Readiness::default();
    let kafka_addr = config.kafka_listen;
    let metrics_addr = config.metrics_listen;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut http_stop = stop_rx.clone();
    let http = telemetry::serve_http(metrics_addr, metrics.clone(), ready.clone(), async move {
        let _ = http_stop.changed().await;
    })
    .await?;
    let http_task = tokio::spawn(http);

    let broker = {
        let config = config.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || Broker::open(config, metrics)).await??
    };
    let listener = TcpListener::bind(kafka_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind Kafka listener {kafka_addr}: {e}"))?;
    let (host, port) = config.advertised();
    info!(listen = %kafka_addr, advertised = %format!("{host}:{port}"), node_id = config.node_id, "Kafka listener ready");
    broker.spawn_background();
    let admin_addr = config.admin_listen;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind admin listener {admin_addr}: {e}"))?;
    let mut admin_stop = stop_rx.clone();
    let admin = tonic::transport::Server::builder()
        .add_service(AdminServer::new(AdminService::new(Arc::clone(&broker))))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(admin_listener),
            async move {
                let _ = admin_stop.changed().await;
            },
        );
    let admin_task = tokio::spawn(admin);
    info!(listen = %admin_addr, "admin gRPC listener ready");
    let kafka_task = tokio::spawn(server::serve(listener, Arc::clone(&broker), stop_rx));
    ready.set(true);

    shutdown.await;
    info!("shutting down");
    ready.set(false);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(10), kafka_task)
        .await
        .is_err()
    {
        warn!("Kafka listener did not stop within 10s");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    // Give in-flight requests a moment to finish their appends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::task::spawn_blocking(move || broker.close()).await??;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
