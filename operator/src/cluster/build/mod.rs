//! Pure builders: a [`ValidatedCluster`] in, the desired Kubernetes objects out.
//! Each object carries the cluster's labels and a controller owner reference,
//! so garbage collection removes them with the Cluster.

pub mod config_map;
pub mod pdb;
pub mod service;
pub mod statefulset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{labels, ValidatedCluster};

/// Metadata for an object named `name` owned by the cluster.
pub fn object_meta(cluster: &ValidatedCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(labels(&cluster.name)),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// All owned objects, in apply order (config before the pods that read it).
pub struct Desired {
    pub config_map: k8s_openapi::api::core::v1::ConfigMap,
    pub headless_service: k8s_openapi::api::core::v1::Service,
    pub bootstrap_service: k8s_openapi::api::core::v1::Service,
    pub statefulset: k8s_openapi::api::apps::v1::StatefulSet,
    pub pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget,
}

/// Builds every owned object.
pub fn build(cluster: &ValidatedCluster) -> Desired {
    let config_map = config_map::build(cluster);
    let config_hash = config_map::content_hash(&config_map);
    Desired {
        headless_service: service::headless(cluster),
        bootstrap_service: service::bootstrap(cluster),
        statefulset: statefulset::build(cluster, &config_hash),
        pdb: pdb::build(cluster),
        config_map,
    }
}
