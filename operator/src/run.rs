//! The operator process: API client, metrics and health endpoints, leader
//! election, then the three controllers for each watched namespace.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use kube::Client;

use crate::admin::AdminChannels;
use crate::context::{Context, Settings};
use crate::http::{self, Readiness};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::metrics_api::{self, MetricsApiOptions};

/// How the process runs (from command-line flags / env).
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespaces to watch; empty = all namespaces.
    pub namespaces: Vec<String>,
    /// Address of /metrics, /healthz, /readyz.
    pub http_listen: SocketAddr,
    /// Leader election; None runs the controllers straight away (single replica / tests).
    pub lease: Option<LeaseConfig>,
    pub settings: Settings,
    /// The external.metrics.k8s.io server for ConsumerGroup HPAs; None: not served.
    pub metrics_api: Option<MetricsApiOptions>,
}

/// Runs until a shutdown signal or the loss of the leader Lease (an error).
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let ready = Readiness::default();
    // One admin connection per Cluster, for the controllers and the metrics API alike.
    let admin = AdminChannels::with_tokens(metrics.clone(), client.clone());
    let http = tokio::spawn(http::serve(
        opts.http_listen,
        metrics.clone(),
        ready.clone(),
    ));

    // Ready once the API server answers: standbys are ready too, so a rollout of
    // several replicas completes.
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                tracing::info!(version = %v.git_version, "connected to the API server");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "API server not reachable yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    ready.set(true);

    // Every replica serves the External metrics API (the APIService's Service
    // selects them all); it reads the brokers itself, so standbys answer too.
    let metrics_api = opts.metrics_api.clone().map(|m| {
        tokio::spawn(metrics_api::serve(
            client.clone(),
            metrics.clone(),
            admin.clone(),
            m,
        ))
    });
    let metrics_api = async move {
        match metrics_api {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };

    let lost = match &opts.lease {
        Some(cfg) => {
            metrics.leader.record(0, &[]);
            leader::acquire(client.clone(), cfg).await;
            metrics.leader.record(1, &[]);
            Some(tokio::spawn(leader::hold(client.clone(), cfg.clone())))
        }
        None => None,
    };

    let ctx = Context::new(client, metrics, admin, opts.settings.clone());
    let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    for ns in scopes {
        controllers.push(tokio::spawn(crate::cluster::controller::run(
            ctx.clone(),
            ns.clone(),
        )));
        controllers.push(tokio::spawn(crate::topic::controller::run(
            ctx.clone(),
            ns.clone(),
        )));
        controllers.push(tokio::spawn(crate::user::controller::run(
            ctx.clone(),
            ns.clone(),
        )));
        controllers.push(tokio::spawn(crate::consumergroup::controller::run(
            ctx.clone(),
            ns,
        )));
    }
    tracing::info!(namespaces = ?opts.namespaces, "controllers running");
    let all = join_all(controllers);
    match lost {
        Some(lost) => {
            tokio::select! {
                _ = all => Ok(()),
                _ = lost => anyhow::bail!("lost the leader Lease"),
                r = http => anyhow::bail!("HTTP server ended: {r:?}"),
                r = metrics_api => anyhow::bail!("external metrics API ended: {r:?}"),
            }
        }
        None => {
            tokio::select! {
                _ = all => Ok(()),
                r = http => anyhow::bail!("HTTP server ended: {r:?}"),
                r = metrics_api => anyhow::bail!("external metrics API ended: {r:?}"),
            }
        }
    }
}
