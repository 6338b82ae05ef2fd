//! One admin gRPC channel per Cluster, shared by every reconcile and every
//! External metrics request, instead of a new connection each time.
//!
//! A tonic `Channel` is an HTTP/2 connection that multiplexes any number of
//! concurrent calls and reconnects by itself when the same address comes back.
//! What it cannot do is move to another broker: the pool watches each channel
//! for transport failures (connection refused or reset, timeouts) and replaces
//! a failed one, or one whose broker is no longer a preferred address of the
//! Cluster (gone, or not Ready while another broker is), on the next request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use kube::ResourceExt;
use tonic::body::Body;
use tonic::transport::Channel;

use super::{connect_channel, AdminClient, AdminError};
use crate::cluster::status::admin_targets;
use crate::crd::Cluster;
use crate::metrics::Metrics;

/// The admin client of a pooled channel.
pub type Admin = AdminClient<AdminChannel>;

/// A `Channel` that records a transport failure of any call made on it, so
/// that the pool stops handing it out.
#[derive(Clone)]
pub struct AdminChannel {
    inner: Channel,
    failed: Arc<AtomicBool>,
    /// `authorization: Bearer <token>` of a secured Cluster's admin API.
    bearer: Option<http::HeaderValue>,
}

impl AdminChannel {
    fn new(inner: Channel, token: Option<&str>) -> Self {
        AdminChannel {
            inner,
            failed: Arc::new(AtomicBool::new(false)),
            bearer: token.and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok()),
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

impl tower_service::Service<http::Request<Body>> for AdminChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Err(_)) = &ready {
            self.failed.store(true, Ordering::Relaxed);
        }
        ready
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let failed = self.failed.clone();
        if let Some(b) = &self.bearer {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, b.clone());
        }
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            // An error here is the transport's (a broker's gRPC error status is
            // an Ok response): the connection is no good. So is one whose token
            // the broker refuses (grpc-status 16, UNAUTHENTICATED): the Cluster
            // was secured after it was opened, and a new one reads the token.
            let refused = result.as_ref().is_ok_and(|r| {
                r.headers()
                    .get("grpc-status")
                    .is_some_and(|v| v.as_bytes() == b"16")
            });
            if result.is_err() || refused {
                failed.store(true, Ordering::Relaxed);
            }
            result
        })
    }
}

/// A broker admin address and whether its broker is Ready, in the order the
/// Cluster's status lists them (Ready brokers first).
pub type Target = (String, bool);

/// Whether a channel to `addr` may serve the Cluster whose brokers are
/// `targets`: it has not failed and its broker is Ready, or no broker is Ready
/// and it is still one of the Cluster's brokers. A fresh connection tries the
/// Ready brokers first, so this keeps the choice `connect` would make, without
/// reconnecting when only the order of equally good brokers changed.
pub fn reusable(addr: &str, failed: bool, targets: &[Target]) -> bool {
    if failed {
        return false;
    }
    let any_ready = targets.iter().any(|(_, ready)| *ready);
    targets
        .iter()
        .any(|(a, ready)| a == addr && (*ready || !any_ready))
}

struct Pooled {
    addr: String,
    channel: AdminChannel,
    /// Opened with TLS (a Cluster switching to TLS needs a new one).
    tls: bool,
}

/// The channels, keyed by the Cluster's namespace and name.
#[derive(Clone)]
pub struct AdminChannels {
    channels: Arc<Mutex<HashMap<String, Pooled>>>,
    metrics: Metrics,
    /// Reads the admin token of secured Clusters (none: calls carry no token).
    secrets: Option<kube::Client>,
}

impl AdminChannels {
    pub fn new(metrics: Metrics) -> Self {
        AdminChannels {
            channels: Arc::default(),
            metrics,
            secrets: None,
        }
    }

    /// A pool whose channels to a secured Cluster carry its admin token (Secret
    /// `<cluster>-admin-token`, see `cluster::security`).
    pub fn with_tokens(metrics: Metrics, client: kube::Client) -> Self {
        AdminChannels {
            secrets: Some(client),
            ..AdminChannels::new(metrics)
        }
    }

    /// An admin client of `cluster`'s brokers, on its pooled channel when that
    /// is still good, else on a new connection (which the pool keeps).
    pub async fn client(&self, cluster: &Cluster) -> Result<Admin, AdminError> {
        let key = format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        );
        let targets = admin_targets(cluster);
        let tls = self.secrets.is_some()
            && crate::cluster::security::operator_uses_tls(
                cluster.status.as_ref().and_then(|s| s.internal_tls),
            );
        if let Some(channel) = self.pooled(&key, &targets, tls) {
            return Ok(AdminClient::new(channel));
        }
        let tls_config = match (&self.secrets, tls) {
            (Some(client), true) => Some(
                crate::cluster::security::internal_client_tls(client, cluster)
                    .await
                    .map_err(|e| AdminError::Unreachable {
                        tried: "the cluster CA Secret".into(),
                        last: e.to_string(),
                    })?,
            ),
            _ => None,
        };
        let token = match &self.secrets {
            Some(client) => crate::cluster::security::admin_token(client, cluster)
                .await
                .map_err(|e| AdminError::Unreachable {
                    tried: "the admin token Secret".into(),
                    last: e.to_string(),
                })?,
            None => None,
        };
        let addrs: Vec<String> = targets.into_iter().map(|(a, _)| a).collect();
        let connected = connect_channel(&addrs, tls_config.as_ref()).await;
        self.metrics
            .admin_connect(if connected.is_ok() { "ok" } else { "error" });
        let (addr, channel) = connected?;
        tracing::debug!(cluster = %key, %addr, tls, "admin channel opened");
        let channel = AdminChannel::new(channel, token.as_deref());
        let mut map = lock(&self.channels);
        map.insert(
            key,
            Pooled {
                addr,
                channel: channel.clone(),
                tls,
            },
        );
        Ok(AdminClient::new(channel))
    }

    fn pooled(&self, key: &str, targets: &[Target], tls: bool) -> Option<AdminChannel> {
        let mut map = lock(&self.channels);
        let pooled = map.get(key)?;
        if pooled.tls == tls && reusable(&pooled.addr, pooled.channel.failed(), targets) {
            return Some(pooled.channel.clone());
        }
        map.remove(key);
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(list: &[(&str, bool)]) -> Vec<Target> {
        list.iter().map(|(a, r)| (a.to_string(), *r)).collect()
    }

    #[test]
    fn a_healthy_channel_to_a_ready_broker_is_reused_whatever_the_order() {
        let t = targets(&[("10.0.0.1:9093", true), ("10.0.0.2:9093", true)]);
        assert!(reusable("10.0.0.1:9093", false, &t));
        assert!(reusable("10.0.0.2:9093", false, &t));
    }

    #[test]
    fn a_failed_channel_is_replaced() {
        let t = targets(&[("10.0.0.1:9093", true)]);
        assert!(!reusable("10.0.0.1:9093", true, &t));
    }

    #[test]
    fn a_channel_to_a_broker_that_left_or_is_not_ready_is_replaced() {
        let t = targets(&[("10.0.0.2:9093", true), ("10.0.0.1:9093", false)]);
        assert!(!reusable("10.0.0.1:9093", false, &t), "not Ready");
        assert!(
            !reusable("10.0.0.3:9093", false, &t),
            "not a broker any more"
        );
        assert!(!reusable("10.0.0.1:9093", false, &[]), "no brokers known");
    }

    #[test]
    fn with_no_ready_broker_any_of_the_clusters_brokers_will_do() {
        let t = targets(&[("10.0.0.1:9093", false), ("10.0.0.2:9093", false)]);
        assert!(reusable("10.0.0.2:9093", false, &t));
        assert!(!reusable("10.0.0.3:9093", false, &t));
    }
}
