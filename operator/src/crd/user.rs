//! `User`: a Kafka principal of a Cluster, its credential and its ACLs. The
//! operator creates the credential (a SCRAM password, or a client certificate
//! from the cluster CA), writes it into a Secret the application mounts, and
//! keeps the ACLs of `User:<name>` on the brokers equal to `spec.acls`.

// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    status = "UserStatus",
    shortname = "su",
    category = "strata-all",
    doc = "A Kafka user of a Strata cluster: its credential and its ACLs",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    #[serde(default)]
    pub authentication: UserAuthentication,
    /// What `User:<name>` may do. Only these ACLs of the principal exist: one
    /// added with kafka-acls for the same principal is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<UserAcl>,
    /// The Secret the credential is written to (default: the User's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Client quotas of `User:<name>` (Kafka's user quotas, enforced by every
    /// broker): only these exist; one set with kafka-configs for the same user is
    /// replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<UserQuotas>,
}

/// A user's quotas; an absent field is no quota.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserQuotas {
    /// Bytes per second the user's producers may send (`producer_byte_rate`),
    /// counted per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<i64>,
    /// Bytes per second the user's consumers may fetch (`consumer_byte_rate`),
    /// counted per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<i64>,
    /// Percentage of one request handler's time per second
    /// (`request_percentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub request_percentage: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthentication {
    #[serde(default, rename = "type")]
    pub kind: UserAuthenticationType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserAuthenticationType {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[default]
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// A client certificate from the cluster CA, subject `CN=<name>`.
    Tls,
}

impl UserAuthenticationType {
    /// The SASL mechanism of a SCRAM user.
    pub fn scram_mechanism(self) -> Option<&'static str> {
        match self {
            UserAuthenticationType::ScramSha256 => Some("SCRAM-SHA-256"),
            UserAuthenticationType::ScramSha512 => Some("SCRAM-SHA-512"),
            UserAuthenticationType::Tls => None,
        }
    }
}

/// One rule: the operations allowed (or denied) on a resource pattern.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAcl {
    pub resource: AclResource,
    /// Kafka's operation names: Read, Write, Create, Delete, Alter, Describe,
    /// ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All.
    #[schemars(length(min = 1))]
    pub operations: Vec<String>,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub permission: AclPermission,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclResource {
    #[serde(rename = "type")]
    pub kind: AclResourceType,
    /// The topic, group or transactional id (or prefix); `*` for all. Ignored for
    /// `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub pattern_type: AclPatternType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternType {
    #[default]
    Literal,
    Prefixed,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclPermission {
    #[default]
    Allow,
    Deny,
}

fn default_host() -> String {
    "*".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The principal the brokers know this user as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The Secret's resourceVersion whose password the brokers hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_version: Option<String>,
    #[serde(default)]
    pub acls: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
