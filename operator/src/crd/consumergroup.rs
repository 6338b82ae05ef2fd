//! `ConsumerGroup`: observe-and-act on a group that clients create. The
//! operator never fights clients over membership; it reports state and lag,
//! optionally scales a Deployment on lag, and runs explicit offset resets.

// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to watch (and optionally scale) for one consumer group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    status = "ConsumerGroupStatus",
    shortname = "scg",
    category = "strata-all",
    doc = "A consumer group on a Strata cluster, its lag and its autoscaling",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupId"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.totalLag"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// Name of the Cluster (same namespace). Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: String,
    /// Kafka group id. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("groupId is immutable"))]
    pub group_id: String,
    /// Topics the group consumes (for lag on partitions without commits yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Scale a Deployment on this group's lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Reset committed offsets; runs once per `requestId`, only while the group is Empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetResetSpec>,
}

/// Lag-driven scaling of the consumers: the operator owns an `autoscaling/v2`
/// HorizontalPodAutoscaler on the External metric `strata_consumergroup_lag`,
/// which it serves itself through `external.metrics.k8s.io`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxReplicas) || self.maxReplicas >= self.minReplicas").message("maxReplicas must be >= minReplicas"))]
pub struct AutoscalingSpec {
    /// The Deployment (or StatefulSet) to scale.
    pub target_ref: TargetRef,
    /// Lower bound of the HPA (Kubernetes HPAs cannot scale to zero without an alpha gate).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound; the partition count of the group's topics when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// Lag one consumer replica is expected to absorb (the HPA's AverageValue target).
    #[schemars(range(min = 1))]
    pub lag_per_replica: i64,
    /// Seconds the HPA looks back before scaling down (its `behavior.scaleDown`
    /// stabilization window); the HPA default (300) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: Option<i32>,
}

/// A scalable workload in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `Deployment` (default) or `StatefulSet`.
    #[serde(default = "default_target_kind")]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
}

/// An offset reset command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetSpec {
    /// `Earliest`, `Latest`, an absolute offset (clamped to each partition's
    /// range), or an RFC 3339 timestamp (the first offset at or after it).
    #[schemars(pattern(r"^(Earliest|Latest|[0-9]+|[0-9]{4}-[0-9]{2}-[0-9]{2}T.+)$"))]
    pub target: String,
    /// Any new value asks for a new reset; the outcome is reported under the same id.
    #[schemars(length(min = 1))]
    pub request_id: String,
}

/// What the group looks like on the brokers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// Empty, PreparingRebalance, CompletingRebalance, Stable, Dead, or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Number of members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i32>,
    /// Sum of per-partition lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_lag: Option<i64>,
    /// Per-partition lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<PartitionLagStatus>,
    /// Partitions of the group's topics (the default maxReplicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replicas the lag asks for (with autoscaling): the value the HPA converges to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Name of the HorizontalPodAutoscaler the operator owns (with autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<String>,
    /// Outcome of the last offset reset command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetResetStatus>,
    /// When the status last changed (RFC 3339). The lag is read from the brokers
    /// every refresh; a status with nothing new is not written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<String>,
    /// `Ready` condition; when False, its reason and message say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lag of one partition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLagStatus {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub end_offset: i64,
    pub lag: i64,
}

/// Outcome of an offset reset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetStatus {
    /// The `spec.offsetReset.requestId` this outcome belongs to.
    pub request_id: String,
    pub phase: OffsetResetPhase,
    /// The target as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it waits, what failed, or what was reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the reset reached Succeeded or Failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// Where an offset reset is. Succeeded and Failed are final for a requestId:
/// a reset never runs twice for the same id.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OffsetResetPhase {
    /// Waiting for the group to be Empty (or for the brokers to answer).
    Pending,
    /// The reset call was sent; the outcome is not recorded yet.
    Running,
    /// The offsets were moved.
    Succeeded,
    /// Invalid target, unknown topic, or an unknown outcome; use a new requestId to retry.
    Failed,
}

impl OffsetResetPhase {
    /// Succeeded or Failed: nothing more happens for this requestId.
    pub fn is_final(self) -> bool {
        matches!(self, OffsetResetPhase::Succeeded | OffsetResetPhase::Failed)
    }
}

fn default_min_replicas() -> i32 {
    1
}
fn default_target_kind() -> String {
    "Deployment".to_string()
}
