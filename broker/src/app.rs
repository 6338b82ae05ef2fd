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
use crate::security::acl::Operation;
use crate::security::admin::{AdminPeer, AdminSecurity, AdminTlsStream};
use crate::security::ClientContext;
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
    let admin_security = Arc::new(AdminSecurity::from_config(&config)?);
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
    let admin = serve_admin(
        Arc::clone(&broker),
        Arc::clone(&admin_security),
        admin_listener,
        stop_rx.clone(),
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

/// The admin and internal gRPC services on the admin listener, every call
/// authenticated and authorized by `security` (see `security::admin`): admin calls
/// as ALTER on the cluster, internal ones (Raft, replication) as CLUSTER_ACTION.
async fn serve_admin(
    broker: Arc<Broker>,
    security: Arc<AdminSecurity>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    use tonic::service::interceptor::InterceptedService;
    if !security.enabled() {
        warn!("the admin/internal gRPC listener is open: whoever reaches it administers the cluster (set admin_ssl_* or admin_token_file)");
    }
    let gate = |op: Operation| {
        let (b, s) = (Arc::clone(&broker), Arc::clone(&security));
        move |req: tonic::Request<()>| admit(&b, &s, op, req)
    };
    let router = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            AdminServer::new(AdminService::new(Arc::clone(&broker))),
            gate(Operation::Alter),
        ))
        .add_service(InterceptedService::new(
            InternalServer::new(InternalService::new(Arc::clone(&broker)))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(256 << 20),
            gate(Operation::ClusterAction),
        ));
    let signal = async move {
        let _ = stop.changed().await;
    };
    // No Nagle: follower fetches and Raft messages are small request/response
    // exchanges, and a delayed ACK would add ~40 ms to every acks=all round.
    let Some(tls) = security.tls.clone() else {
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            },
        );
        return router.serve_with_incoming_shutdown(incoming, signal).await;
    };
    // Handshakes run in their own tasks, so a slow or silent client holds up no
    // other connection; finished ones are handed to the server in order.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<AdminTlsStream>>(64);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (tx, security, tls) = (tx.clone(), Arc::clone(&security), Arc::clone(&tls));
            tokio::spawn(async move {
                match AdminTlsStream::accept(&security, &tls, tcp, addr).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(e) => info!(peer = %addr, error = %e, "admin connection refused"),
                }
            });
        }
    });
    let served = router
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), signal)
        .await;
    accept.abort();
    served
}

/// Lets a call of the admin listener through, or answers UNAUTHENTICATED or
/// PERMISSION_DENIED. An open listener (no TLS, no token) authorizes nothing: its
/// callers are all anonymous.
fn admit(
    broker: &Broker,
    security: &AdminSecurity,
    op: Operation,
    req: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if !security.enabled() {
        return Ok(req);
    }
    let peer = req
        .extensions()
        .get::<AdminPeer>()
        .and_then(|p| p.addr)
        .or_else(|| req.remote_addr())
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let principal = security.authenticate(&req).inspect_err(|e| {
        info!(%peer, error = e.message(), "admin call refused: not authenticated");
    })?;
    let ctx = ClientContext {
        listener: Arc::from("admin"),
        principal,
        peer,
    };
    if !crate::kafka::authorize::Authz::new(broker, &ctx).cluster(op) {
        return Err(tonic::Status::permission_denied(format!(
            "{} is not allowed {op} on the cluster",
            ctx.principal
        )));
    }
    Ok(req)
}
