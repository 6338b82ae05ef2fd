//! Process lifecycle: open storage, bind listeners, run until a shutdown signal,
//! then stop accepting, drain and close the logs cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{AdminServer, AdminService};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::kafka::server;
use crate::replication::{self, InternalServer, InternalService};
use crate::telemetry::{self, Metrics, Readiness};

/// Runs a broker until `shutdown` resolves.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let ready = Readiness::default();
    let security = crate::security::SecuritySettings::from_config(&config)?;
    let metrics_addr = config.metrics_listen;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut http_stop = stop_rx.clone();
    let http = telemetry::serve_http(metrics_addr, metrics.clone(), ready.clone(), async move {
        let _ = http_stop.changed().await;
    })
    .await?;
    let http_task = tokio::spawn(http);

    let listeners = security
        .runtime(&metrics.meter())
        .map_err(|e| anyhow::anyhow!("cannot start the Kafka listeners: {e}"))?;
    let broker = Broker::open(config.clone(), metrics.clone()).await?;
    let mut kafka_listeners = Vec::new();
    for l in listeners {
        let addr = l.listener.bind;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind Kafka listener {} {addr}: {e}", l.name))?;
        let advertised = format!(
            "{}:{}",
            l.listener.advertised_host, l.listener.advertised_port
        );
        info!(listener = %l.name, protocol = l.listener.protocol.name(), listen = %addr, %advertised, node_id = config.node_id, "Kafka listener ready");
        kafka_listeners.push((tcp, l));
    }
    // The composition root: the broker's services are built; the replication
    // tasks (metadata following, heartbeats, the controller, ISR changes) and the
    // housekeeping start on top of them.
    let reconciler = replication::spawn_cluster_tasks(&broker);
    broker.spawn_background();
    // The transaction markers the coordinator decides are written by their own task.
    if let Some(decided) = broker.txns.take_completions() {
        tokio::spawn(crate::kafka::txn_markers::run_writer(
            Arc::clone(&broker),
            decided,
        ));
    }
    let admin_addr = config.admin_listen;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind admin listener {admin_addr}: {e}"))?;
    let mut admin_stop = stop_rx.clone();
    let admin = tonic::transport::Server::builder()
        .add_service(AdminServer::new(AdminService::new(Arc::clone(&broker))))
        .add_service(
            InternalServer::new(InternalService::new(Arc::clone(&broker)))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(
            // No Nagle: follower fetches and Raft messages are small request/response
            // exchanges, and a delayed ACK would add ~40 ms to every acks=all round.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(admin_listener),
                |s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                },
            ),
            async move {
                let _ = admin_stop.changed().await;
            },
        );
    let admin_task = tokio::spawn(admin);
    info!(listen = %admin_addr, "admin gRPC listener ready");
    let kafka_task = tokio::spawn(server::serve(kafka_listeners, Arc::clone(&broker), stop_rx));
    // Ready once registered with the controller and caught up with the metadata.
    let ready_flag = ready.clone();
    let weak = Arc::downgrade(&broker);
    tokio::spawn(async move {
        loop {
            match weak.upgrade() {
                Some(b) if b.is_ready() => {
                    ready_flag.set(true);
                    return;
                }
                Some(_) => {}
                None => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // A metadata quorum that stopped on a storage error cannot come back in this
    // process: exit with the reason (no clean-shutdown marker, so the next start
    // validates every log tail) and let the supervisor restart the broker.
    let quorum = Arc::clone(&broker.quorum);
    tokio::select! {
        () = shutdown => {}
        why = quorum.stopped() => {
            ready.set(false);
            error!(reason = %why, "the metadata quorum stopped on its own; exiting");
            let _ = stop_tx.send(true);
            return Err(anyhow::anyhow!(
                "the metadata quorum stopped ({why}); restart the broker once its data directory ({}) is writable",
                config.data_dir.display()
            ));
        }
    }
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
    reconciler.stop();
    broker.shutdown().await;
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
