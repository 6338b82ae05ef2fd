//! Cluster controller: a `Cluster` becomes a broker StatefulSet, a headless and
//! a bootstrap Service, a ConfigMap and a PodDisruptionBudget.
//!
//! The folder reads as the pipeline: [`controller`] dereferences (the only
//! reads), [`validate`] checks the spec purely, [`build`] makes the desired
//! objects purely (one file per kind), the controller applies them with
//! server-side apply, and [`status`] computes the status purely from what exists.

pub mod build;
pub mod certs;
pub mod controller;
pub mod rebalancer;
pub mod rollout;
pub mod security;
pub mod status;
pub mod storage;
pub mod validate;

pub use validate::{validate, ValidatedCluster};

use std::collections::BTreeMap;

/// Names of the objects a Cluster owns, derived from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
}

impl Names {
    pub fn new(cluster: &str) -> Self {
        Names {
            cluster: cluster.to_string(),
        }
    }
    /// StatefulSet (and pod name prefix: `<cluster>-<ordinal>`).
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }
    /// Headless Service that gives each broker a stable DNS name.
    pub fn headless_service(&self) -> String {
        format!("{}-brokers", self.cluster)
    }
    /// ClusterIP Service clients bootstrap from.
    pub fn bootstrap_service(&self) -> String {
        format!("{}-bootstrap", self.cluster)
    }
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
}

/// Labels that select a cluster's broker pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "strata-broker".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
    ])
}

/// Labels on every object the operator creates for a cluster.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::FIELD_MANAGER.into(),
    );
    l.insert("strata.dev/cluster".into(), cluster.into());
    l
}

/// `k=v,k=v` form of the selector (for the scale subresource and list calls).
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::crd::Cluster;

    /// A Cluster as a user would write it, with the metadata the API server adds.
    pub fn cluster(yaml_spec: &str) -> Cluster {
        let doc = format!(
            "apiVersion: strata.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\n  namespace: kafka\n  uid: 7c0b6a4e-1111-2222-3333-444455556666\n  generation: 2\nspec:\n{}",
            yaml_spec
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        serde_yaml::from_str(&doc).expect("fixture parses")
    }
}
