//! `Topic`: a Kafka topic on a Cluster. One-way sync: the CR wins, except that
//! partitions never shrink and `strata.dev/managed: "false"` leaves it alone.

// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "st",
    category = "strata-all",
    doc = "A topic on a Strata cluster",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "RF", type_ = "integer", json_path = ".spec.replicationFactor"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the Cluster (same namespace) that holds the topic. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// Topic name on the brokers; the resource name when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topicName is immutable"))]
    pub topic_name: Option<String>,
    /// Number of partitions. May only grow.
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions may only increase"))]
    pub partitions: i32,
    /// Copies of each partition; must not exceed the cluster's broker count. A
    /// change moves replicas (added on the least loaded brokers, removed from the
    /// end of each list, never the leader); the Ready condition shows progress.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: i32,
    /// Topic configuration (Kafka names, e.g. `retention.ms`, `cleanup.policy`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// What deleting this resource does to the topic: Delete (default) removes
    /// it from the brokers, Retain keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl Topic {
    /// Name of the topic on the brokers.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}

/// Fate of the broker topic when the Topic resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// Observed state of a topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Topic id assigned by the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions that exist on the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor on the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Partition → replicas summary, e.g. `0:[1,2,0] 1:[2,0,1]` (leader first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// `Ready` condition; when False, its reason and message say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_replication_factor() -> i32 {
    1
}
