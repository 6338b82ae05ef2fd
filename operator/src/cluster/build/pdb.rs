//! PodDisruptionBudget: voluntary disruptions (node drains) take at most one
//! broker at a time, so replicated partitions keep a leader.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::cluster::{selector_labels, ValidatedCluster};

pub fn build(cluster: &ValidatedCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(cluster, cluster.names.pdb()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;
    use crate::cluster::validate;

    #[test]
    fn pdb_allows_one_broker_down_and_selects_the_brokers() {
        let pdb = build(&validate(&cluster("replicas: 3")).expect("valid"));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let sel = spec
            .selector
            .and_then(|s| s.match_labels)
            .expect("selector");
        assert_eq!(sel["app.kubernetes.io/instance"], "demo");
        let owners = pdb.metadata.owner_references.expect("owner");
        assert_eq!(owners[0].name, "demo");
    }
}
