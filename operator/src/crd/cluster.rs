//! `Cluster`: a set of Strata brokers. Owns a StatefulSet, a headless and a
//! bootstrap Service, a ConfigMap and a PodDisruptionBudget (see `crate::cluster`).

// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Image used when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = "ghcr.io/strata-dev/strata-broker:0.1.0";

/// Desired state of a Strata broker cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "strata",
    category = "strata-all",
    doc = "A Strata (Kafka-compatible) broker cluster",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of brokers. Broker ids are the StatefulSet ordinals (0..replicas).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Broker container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy (Always, IfNotPresent, Never); Kubernetes' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// CPU/memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent volume of each broker (its log directory).
    #[serde(default)]
    pub storage: StorageSpec,
    /// Container ports of the broker listeners.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// Broker configuration keys (see docs/configuration.md), written into the
    /// broker's config file. Per-broker keys (node_id, listeners, advertised
    /// address, rack, data_dir) are set by the operator and may not appear here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Node label whose value is the broker's rack (e.g. `topology.kubernetes.io/zone`);
    /// also the topology key that spreads brokers apart. Kubernetes copies only
    /// `topology.kubernetes.io/*` node labels onto pods, so pick one of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_label: Option<String>,
    /// Object-storage tier for closed log segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiered_storage: Option<TieredStorageSpec>,
    /// Move partition replicas by themselves so every broker holds an even share
    /// (after a scale-out, or when replicas sit on brokers that are gone).
    /// Default true; false leaves placement to `strata topic reassign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rebalance: Option<bool>,
    /// Bytes per second that moving partition replicas may copy between brokers
    /// (a quantity: `50Mi` is 50 MiB/s), on each broker, leading and following:
    /// the operator sets the brokers' `leader.replication.throttled.rate` and
    /// `follower.replication.throttled.rate` to it, which hold back replicas being
    /// added by a reassignment until they are in sync. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment_throttle: Option<String>,
    /// OpenTelemetry traces of the brokers, exported over OTLP/HTTP; off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    /// ACLs on: every Kafka request is checked against the ACLs of the `User`s
    /// (and any made with kafka-acls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,
}

/// Where the brokers send their traces (the standard `OTEL_*` variables of the
/// broker container).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// OTLP/HTTP endpoint of a collector, e.g. `http://otel-collector.monitoring:4318`
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[schemars(length(min = 1))]
    pub otlp_endpoint: String,
    /// Share of traces kept, 0 to 1 (`parentbased_traceidratio`); every trace when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: Option<f64>,
}

/// Persistent volume claim template of each broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, a Kubernetes quantity (e.g. `10Gi`).
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// StorageClass name; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            class: None,
        }
    }
}

/// Ports the broker listens on inside its pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Kafka protocol port.
    #[serde(default = "default_kafka_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub kafka: i32,
    /// gRPC admin port (used by the operator).
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin: i32,
    /// HTTP port for /metrics, /healthz and /readyz.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics: i32,
    /// A second Kafka listener for clients, with TLS and/or authentication
    /// (Kafka's SSL, SASL_PLAINTEXT or SASL_SSL). The `kafka` port stays the
    /// brokers' own PLAINTEXT listener (replication of transaction markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<SecureListenerSpec>,
    /// TLS on the admin/internal gRPC port of a secured Cluster (one with
    /// `secure` or `spec.authorization`): the brokers authenticate each other
    /// with certificates of the cluster CA (Secret `<cluster>-internal-tls`) and
    /// the operator verifies them. Turned on for a running Cluster, the brokers
    /// are switched in three rolls without a moment where two cannot talk
    /// (`status.internalTls`). It cannot be turned off again.
    #[serde(default = "default_true")]
    pub admin_tls: bool,
}

/// The client listener with TLS and authentication (`spec.listeners.secure`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureListenerSpec {
    #[serde(default = "default_secure_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TLS on this listener. The certificate comes from `certificateSecret`, or
    /// from the cluster CA the operator creates (Secret `<cluster>-ca`).
    #[serde(default = "default_true")]
    pub tls: bool,
    /// How clients authenticate: SCRAM (a `User` of type scram-sha-*), client
    /// certificates (`tls`, needs `tls: true`), or not at all.
    #[serde(default)]
    pub authentication: ListenerAuthentication,
    /// A Secret with `tls.crt`, `tls.key` and `ca.crt` for the brokers, instead
    /// of certificates from the operator's CA. It must name every broker's DNS
    /// name (`*.<cluster>-brokers.<namespace>.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerAuthentication {
    None,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[default]
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    Tls,
}

/// ACL authorization on every Kafka request (`spec.authorization`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// Principals allowed everything (`User:name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub super_users: Vec<String>,
    /// Allow a request on a resource no ACL names at all (Kafka's
    /// `allow.everyone.if.no.acl.found`).
    #[serde(default)]
    pub allow_everyone_if_no_acl_found: bool,
}

impl Default for ListenersSpec {
    fn default() -> Self {
        ListenersSpec {
            kafka: default_kafka_port(),
            admin: default_admin_port(),
            metrics: default_metrics_port(),
            secure: None,
            admin_tls: true,
        }
    }
}

/// Where closed segments are uploaded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TieredStorageSpec {
    /// Bucket name.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// S3 endpoint URL (e.g. `http://seaweedfs.storage:8333`); AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Key prefix for this cluster's objects; the cluster name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// How long segments stay on the broker's disk after upload (e.g. `6h`, `30m`,
    /// or milliseconds); the broker default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_retention: Option<String>,
}

/// Observed state of a Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Broker pods that exist (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Broker pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the broker pods (for the scale subresource and HPAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Provisioning, Running, Rebalancing, Draining, Scaling, RollingRestart or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// One entry per broker id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    /// `host:port` list of the bootstrap Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// `Ready` condition; when False, its reason and message say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest reassignment the operator submitted to balance the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
    /// Number of metadata quorum voters (brokers `0..controllerVoters`), fixed
    /// when the cluster was created; `spec.replicas` may not go below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_voters: Option<i32>,
    /// TLS between the brokers and to the operator on the admin/internal gRPC
    /// listener, for Clusters with a secure listener or authorization: `Tls` from
    /// the start on new Clusters; a running Cluster gets there in three rolls
    /// (`AcceptingTls` → `CallingWithTls` → `Tls`). Absent: clear text. Once on,
    /// it stays on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls: Option<InternalTls>,
}

/// How far a Cluster's admin/internal listener is switched to TLS (each step is
/// a one-broker-at-a-time roll; every pair of brokers can talk at every point).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InternalTls {
    /// Rolling to: brokers serve TLS and clear text, and call in clear text.
    AcceptingTls,
    /// Rolling to: brokers serve both and call with TLS (as the operator does).
    CallingWithTls,
    /// TLS only (rolling to it while a running Cluster switches).
    Tls,
}

/// A reassignment submitted by the operator's rebalancer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// Reassignment id (`strata topic reassignment-status <id>`).
    pub id: String,
    /// Pending, Copying, MovingLeadership, Removing, Done or Failed.
    pub phase: String,
    /// Partitions it moves.
    pub total_moves: i32,
    pub completed_moves: i32,
    /// The brokers' message (why it failed, when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle phase of a Cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Brokers are starting; not all are ready yet.
    Provisioning,
    /// Every broker is ready.
    Running,
    /// Partitions are being moved between brokers.
    Rebalancing,
    /// Brokers being removed are handing off their partitions.
    Draining,
    /// Brokers are being added, or drained brokers' pods removed.
    Scaling,
    /// A changed pod template is being rolled out, one broker at a time.
    RollingRestart,
    /// Brokers that were ready are not any more.
    Degraded,
}

/// One broker as the operator sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Broker id (= pod ordinal).
    pub id: i32,
    /// Pod name.
    pub pod: String,
    /// Pending, Running, Ready or Missing.
    pub state: String,
    /// Pod IP (the broker's advertised host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_replicas() -> i32 {
    3
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_storage_size() -> String {
    "10Gi".to_string()
}
fn default_kafka_port() -> i32 {
    9092
}
fn default_admin_port() -> i32 {
    9093
}
fn default_metrics_port() -> i32 {
    9644
}
fn default_secure_port() -> i32 {
    9094
}
fn default_true() -> bool {
    true
}
