//! strata-operator: runs Strata on Kubernetes.
//!
//! Three controllers, one per custom resource (see [`crd`]):
//! [`cluster`] turns a `Cluster` into a broker StatefulSet and its Services,
//! ConfigMap and PodDisruptionBudget; [`topic`] keeps topics on the brokers in
//! line with `Topic` resources through the broker admin API ([`admin`]);
//! [`consumergroup`] reports group state and lag, runs offset resets and owns
//! an HPA per autoscaled group, whose External metric [`metrics_api`] serves.
//! Each controller is a staged pipeline: dereference (the only reads) →
//! validate (pure) → build (pure) → apply (server-side apply) → status.
//! [`run`] wires them up behind a leader Lease, with metrics and health endpoints.

pub mod admin;
pub mod apply;
pub mod cluster;
pub mod consumergroup;
pub mod context;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod metrics_api;
pub mod rebalance;
pub mod run;
pub mod topic;
pub mod user;

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "strata-operator";

/// Everything a reconcile can fail with. The category drives retry policy,
/// metrics labels and Event reasons.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec cannot be realised as written; retrying will not help until it changes.
    #[error("invalid spec: {0}")]
    Invalid(String),
    /// The broker admin API failed (unreachable, or an error status).
    #[error("broker admin API: {0}")]
    Broker(#[from] admin::AdminError),
    /// A dependency (e.g. the referenced Cluster) is missing; retried slowly.
    #[error("{0}")]
    Missing(String),
    /// Serialising a built object failed (a bug).
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A finalizer add/remove or its cleanup step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid(_) => "invalid",
            Error::Broker(_) => "broker",
            Error::Missing(_) => "missing",
            Error::Serialization(_) => "serialization",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// Whether retrying without a spec change is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Invalid(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
