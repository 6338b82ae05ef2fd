//! The `external.metrics.k8s.io/v1beta1` API the HPAs of autoscaled
//! ConsumerGroups read, served over HTTPS by every operator replica (leader or
//! not) behind the chart's APIService.
//!
//! kube-apiserver proxies `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/strata_consumergroup_lag?labelSelector=strata.dev/consumergroup={name}`
//! here; the answer is read live from the brokers (the group's lag, see
//! [`value::metric_value`]), so the HPA never acts on a stale status.
//! [`value`] is the pure part, [`tls`] the certificates.

pub mod tls;
pub mod value;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio_rustls::TlsAcceptor;

use crate::admin::AdminChannels;
use crate::consumergroup::hpa::{GROUP_LABEL, METRIC_NAME};
use crate::consumergroup::observe::observe;
use crate::crd::{Cluster, ConsumerGroup};
use crate::metrics::Metrics;

/// Label with the Kafka group id on each reported value (informational).
pub const GROUP_ID_LABEL: &str = "strata.dev/group-id";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CA_RETRY: Duration = Duration::from_secs(30);

/// Where and how the metrics API listens.
#[derive(Debug, Clone)]
pub struct MetricsApiOptions {
    pub listen: SocketAddr,
    /// PEM bundle of the CA that signs the aggregator's client certificate
    /// (any common name is then accepted); read from
    /// `kube-system/extension-apiserver-authentication`, with its allowed
    /// names, when None.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Clone)]
struct AppState {
    client: Client,
    metrics: Metrics,
    admin: AdminChannels,
}

/// The routes (without TLS).
pub fn router(client: Client, metrics: Metrics, admin: AdminChannels) -> Router {
    let base = format!("/apis/{}/{}", value::GROUP, value::VERSION);
    Router::new()
        .route("/apis", get(|| async { Json(value::api_group_list()) }))
        .route(
            &format!("/apis/{}", value::GROUP),
            get(|| async { Json(value::api_group()) }),
        )
        .route(&base, get(|| async { Json(value::resource_list()) }))
        .route(
            &format!("{base}/namespaces/{{namespace}}/{{metric}}"),
            get(external_metric),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NotFound", "no such path".into()) })
        .with_state(AppState {
            client,
            metrics,
            admin,
        })
}

fn error(code: StatusCode, reason: &str, message: String) -> Response {
    (code, Json(value::status(code.as_u16(), reason, &message))).into_response()
}

async fn external_metric(
    State(s): State<AppState>,
    Path((namespace, metric)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let result = async {
        if metric != METRIC_NAME {
            return Err((
                StatusCode::NOT_FOUND,
                format!("unknown metric {metric}; this server has {METRIC_NAME}"),
            ));
        }
        let selector = value::parse_selector(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        let name = value::selected_group(&selector)
            .map_err(|e| (StatusCode::BAD_REQUEST, e))?
            .to_string();
        group_lag(&s.client, &s.admin, &namespace, &name).await
    }
    .await;
    match result {
        Ok((v, labels)) => {
            s.metrics.metric_request("ok");
            tracing::debug!(%namespace, %metric, value = v, "served external metric");
            Json(value::value_list(&labels, v, &Timestamp::now().to_string())).into_response()
        }
        Err((code, message)) => {
            s.metrics.metric_request("error");
            tracing::warn!(%namespace, %metric, %message, "external metric request failed");
            let reason = match code {
                StatusCode::NOT_FOUND => "NotFound",
                StatusCode::BAD_REQUEST => "BadRequest",
                _ => "ServiceUnavailable",
            };
            error(code, reason, message)
        }
    }
}

/// The metric value of ConsumerGroup `namespace/name`, read live from its brokers.
async fn group_lag(
    client: &Client,
    pool: &AdminChannels,
    namespace: &str,
    name: &str,
) -> Result<(i64, BTreeMap<String, String>), (StatusCode, String)> {
    let unavailable = |e: String| (StatusCode::SERVICE_UNAVAILABLE, e);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), namespace);
    let group = groups
        .get_opt(name)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("ConsumerGroup {namespace}/{name} not found"),
            )
        })?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    let cluster = clusters
        .get_opt(&group.spec.cluster_ref)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("Cluster {namespace}/{} not found", group.spec.cluster_ref),
            )
        })?;
    let mut admin = pool
        .client(&cluster)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let obs = observe(&mut admin, &group.spec)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let total = obs.total_lag(&group.spec);
    let v = match &group.spec.autoscaling {
        Some(a) => value::metric_value(total, a.lag_per_replica, obs.partitions),
        None => total.max(0),
    };
    let labels = BTreeMap::from([
        (GROUP_LABEL.to_string(), name.to_string()),
        (GROUP_ID_LABEL.to_string(), group.spec.group_id.clone()),
    ]);
    Ok((v, labels))
}

/// Loads the client CA, then serves HTTPS on `opts.listen` until the process ends.
/// Without a client CA nothing is served (retried every 30 s): the endpoint
/// is never open to unauthenticated callers.
pub async fn serve(
    client: Client,
    metrics: Metrics,
    admin: AdminChannels,
    opts: MetricsApiOptions,
) -> anyhow::Result<()> {
    let auth = loop {
        let loaded = match &opts.client_ca_file {
            Some(path) => tokio::fs::read_to_string(path)
                .await
                .map(|ca_pem| tls::ClientAuth {
                    ca_pem,
                    allowed_names: Vec::new(),
                })
                .map_err(|e| format!("{}: {e}", path.display())),
            None => tls::requestheader_auth(&client)
                .await
                .map_err(|e| e.to_string()),
        };
        match loaded {
            Ok(auth) => break auth,
            Err(e) => {
                tracing::error!(error = %e, "external metrics API not served: no client CA");
                tokio::time::sleep(CA_RETRY).await;
            }
        }
    };
    let client_ca = tls::parse_ca_bundle(&auth.ca_pem)?;
    let allowed_names = Arc::new(auth.allowed_names);
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::env::var("HOSTNAME") {
        names.push(host);
    }
    let (chain, key) = tls::self_signed(&names)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(chain, key, client_ca)?));
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        allowed_names = ?allowed_names,
        "serving external.metrics.k8s.io over HTTPS"
    );
    let app = router(client, metrics, admin);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let allowed_names = allowed_names.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let allowed = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .is_some_and(|leaf| tls::client_name_allowed(leaf, &allowed_names));
            if !allowed {
                tracing::warn!(%peer, "client certificate not in requestheader-allowed-names; closing");
                return;
            }
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
