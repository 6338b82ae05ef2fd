//! Pure validation of a Cluster spec beyond what the CRD schema enforces; the
//! result carries everything the builders need, so they cannot fail.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::cluster::{Cluster, ClusterSpec};
use crate::{Error, Result};

use super::Names;

/// Broker config keys the operator sets per pod; users may not override them.
pub const RESERVED_KEYS: &[&str] = &[
    "node_id",
    "cluster_id",
    "data_dir",
    "kafka_listen",
    "advertised_host",
    "advertised_port",
    "metrics_listen",
    "admin_listen",
    "rack",
    "controller_voters",
    "listeners",
    "advertised_listeners",
];

/// How many brokers vote in the metadata quorum of a new cluster: 3 once there
/// are at least 3 brokers, else 1. The voter set is fixed when the cluster is
/// created (brokers initialise the quorum with it), so it is recorded in status
/// and kept from then on.
pub fn initial_voters(replicas: i32) -> i32 {
    if replicas >= 3 {
        3
    } else {
        1
    }
}

/// A Cluster that passed validation, with its derived identity.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    /// Broker `cluster_id`: the Cluster's uid, stable for its lifetime.
    pub cluster_id: String,
    pub owner: OwnerReference,
    pub names: Names,
    pub spec: ClusterSpec,
    /// Tier local retention in milliseconds, when set.
    pub local_retention_ms: Option<i64>,
    /// Replication throttle of reassignments in bytes per second, when set.
    pub reassignment_throttle: Option<u64>,
    /// Metadata quorum voters: brokers `0..voters` (see [`initial_voters`]).
    pub voters: i32,
    /// The admin listener's TLS step the brokers are built with (from the
    /// status; the controller moves it on, see `security::next_internal_tls`).
    pub internal_tls: Option<crate::crd::cluster::InternalTls>,
}

/// Checks the spec; `Error::Invalid` names the offending field.
pub fn validate(cluster: &Cluster) -> Result<ValidatedCluster> {
    let name = cluster.name_any();
    let namespace = cluster
        .namespace()
        .ok_or_else(|| Error::Invalid("Cluster has no namespace".into()))?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("Cluster has no uid yet".into()))?;
    let cluster_id = cluster.uid().unwrap_or_else(|| name.clone());
    let spec = &cluster.spec;
    if spec.replicas < 0 {
        return Err(Error::Invalid("spec.replicas must be >= 0".into()));
    }
    // The pod name `<cluster>-<ordinal>` must stay a valid DNS label.
    if name.len() > 52 {
        return Err(Error::Invalid(format!(
            "metadata.name `{name}` is longer than 52 characters"
        )));
    }
    for key in spec.config.keys() {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Error::Invalid(format!(
                "spec.config.{key} is set by the operator per broker and may not be overridden"
            )));
        }
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::Invalid(format!(
                "spec.config key `{key}` is not a broker config key (lower_snake_case, see docs/configuration.md)"
            )));
        }
    }
    let l = &spec.listeners;
    super::security::validate(l.secure.as_ref(), &[l.kafka, l.admin, l.metrics])
        .map_err(Error::Invalid)?;
    if let Some(a) = &spec.authorization {
        if let Some(bad) = a.super_users.iter().find(|u| !u.starts_with("User:")) {
            return Err(Error::Invalid(format!(
                "spec.authorization.superUsers `{bad}` is not a principal (User:name)"
            )));
        }
    }
    if spec.storage.size.trim().is_empty() {
        return Err(Error::Invalid("spec.storage.size is empty".into()));
    }
    let local_retention_ms = match spec
        .tiered_storage
        .as_ref()
        .and_then(|t| t.local_retention.as_deref())
    {
        Some(s) => Some(parse_duration_ms(s).ok_or_else(|| {
            Error::Invalid(format!(
                "spec.tieredStorage.localRetention `{s}` is not a duration (e.g. 6h, 30m, 90s, or milliseconds)"
            ))
        })?),
        None => None,
    };
    let reassignment_throttle = match spec.reassignment_throttle.as_deref() {
        Some(q) => Some(
            super::storage::quantity_bytes(q)
                .and_then(|b| u64::try_from(b).ok())
                .filter(|b| (1..i64::MAX as u64).contains(b))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "spec.reassignmentThrottle `{q}` is not a positive number of bytes per second (e.g. 50Mi)"
                    ))
                })?,
        ),
        None => None,
    };
    if let Some(policy) = spec.image_pull_policy.as_deref() {
        if !["Always", "IfNotPresent", "Never"].contains(&policy) {
            return Err(Error::Invalid(format!(
                "spec.imagePullPolicy `{policy}` must be Always, IfNotPresent or Never"
            )));
        }
    }
    let internal_tls = cluster.status.as_ref().and_then(|s| s.internal_tls);
    if internal_tls.is_some() && !spec.listeners.admin_tls {
        return Err(Error::Invalid(
            "spec.listeners.adminTls cannot be turned off: the admin listener was switched to TLS"
                .into(),
        ));
    }
    let voters = cluster
        .status
        .as_ref()
        .and_then(|s| s.controller_voters)
        .unwrap_or_else(|| initial_voters(spec.replicas));
    if spec.replicas < voters {
        return Err(Error::Invalid(format!(
            "spec.replicas {} is below the {voters} metadata quorum voters (brokers 0..{}); voters cannot be removed",
            spec.replicas,
            voters - 1
        )));
    }
    Ok(ValidatedCluster {
        voters,
        internal_tls,
        names: Names::new(&name),
        name,
        namespace,
        cluster_id,
        owner,
        spec: spec.clone(),
        local_retention_ms,
        reassignment_throttle,
    })
}

/// `6h`, `30m`, `90s`, `500ms`, `2d` or a bare number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// User config as TOML lines, typed the way the broker expects: integers and
/// booleans bare, everything else quoted.
pub fn render_config(config: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in config {
        let value = if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
            v.clone()
        } else {
            serde_json::Value::String(v.clone()).to_string()
        };
        out.push_str(&format!("{k} = {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;

    #[test]
    fn minimal_spec_gets_defaults_and_identity() {
        let v = validate(&cluster("replicas: 1")).expect("valid");
        assert_eq!(v.name, "demo");
        assert_eq!(v.namespace, "kafka");
        assert_eq!(v.cluster_id, "7c0b6a4e-1111-2222-3333-444455556666");
        assert_eq!(v.owner.kind, "Cluster");
        assert_eq!(v.owner.controller, Some(true));
        assert_eq!(v.spec.storage.size, "10Gi");
        assert_eq!(v.spec.listeners.kafka, 9092);
    }

    #[test]
    fn reserved_config_key_is_rejected_with_the_field_name() {
        let err = validate(&cluster("config:\n  node_id: \"4\"")).expect_err("reserved");
        assert!(err.is_permanent());
        assert!(err.to_string().contains("spec.config.node_id"), "{err}");
    }

    #[test]
    fn reassignment_throttle_is_a_byte_rate() {
        let v = validate(&cluster("replicas: 3\nreassignmentThrottle: 50Mi")).expect("valid");
        assert_eq!(v.reassignment_throttle, Some(50 << 20));
        assert_eq!(
            validate(&cluster("replicas: 3"))
                .unwrap()
                .reassignment_throttle,
            None
        );
        for bad in ["0", "fast", "-5Mi", "0.5"] {
            let err = validate(&cluster(&format!(
                "replicas: 3\nreassignmentThrottle: \"{bad}\""
            )))
            .expect_err(bad);
            assert!(
                err.to_string().contains("spec.reassignmentThrottle"),
                "{err}"
            );
        }
        let err = validate(&cluster("config:\n  advertised_listeners: \"X://h:1\""))
            .expect_err("reserved");
        assert!(
            err.to_string().contains("spec.config.advertised_listeners"),
            "{err}"
        );
    }

    #[test]
    fn bad_config_key_and_retention_are_rejected() {
        assert!(validate(&cluster("config:\n  Log.Retention: \"4\"")).is_err());
        let err = validate(&cluster(
            "tieredStorage:\n  bucket: b\n  localRetention: soon",
        ))
        .expect_err("bad duration");
        assert!(err.to_string().contains("localRetention"), "{err}");
    }

    #[test]
    fn voters_are_chosen_at_creation_and_kept() {
        assert_eq!(validate(&cluster("replicas: 1")).expect("valid").voters, 1);
        assert_eq!(validate(&cluster("replicas: 5")).expect("valid").voters, 3);
        // Scaling a 1-voter cluster out keeps its single voter.
        let mut c = cluster("replicas: 4");
        c.status = Some(crate::crd::cluster::ClusterStatus {
            controller_voters: Some(1),
            ..Default::default()
        });
        assert_eq!(validate(&c).expect("valid").voters, 1);
        // Scaling in below the voters is refused with the reason.
        let mut c = cluster("replicas: 2");
        c.status = Some(crate::crd::cluster::ClusterStatus {
            controller_voters: Some(3),
            ..Default::default()
        });
        let err = validate(&c).expect_err("below voters");
        assert!(err.is_permanent());
        assert!(
            err.to_string().contains("3 metadata quorum voters"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("6h"), Some(21_600_000));
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("1500"), Some(1500));
        assert_eq!(parse_duration_ms("2w"), None);
        assert_eq!(parse_duration_ms(""), None);
    }

    #[test]
    fn config_renders_typed_toml() {
        let cfg = BTreeMap::from([
            ("auto_create_topics".to_string(), "false".to_string()),
            ("default_partitions".to_string(), "3".to_string()),
            ("log_format".to_string(), "say \"hi\"".to_string()),
        ]);
        assert_eq!(
            render_config(&cfg),
            "auto_create_topics = false\ndefault_partitions = 3\nlog_format = \"say \\\"hi\\\"\"\n"
        );
    }
}
