//! The HorizontalPodAutoscaler a ConsumerGroup with `spec.autoscaling` owns
//! (pure builder). It scales the consumers on the External metric
//! [`METRIC_NAME`] with an `AverageValue` target of `lagPerReplica`, so the
//! HPA asks for `ceil(lag / lagPerReplica)` replicas, as KEDA's Kafka scaler
//! does; the operator serves the metric (see [`crate::metrics_api`]).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::crd::consumergroup::AutoscalingSpec;

use super::status::max_replicas;

/// Name of the External metric: the group's lag, capped so the HPA never asks
/// for more replicas than there are partitions.
pub const METRIC_NAME: &str = "strata_consumergroup_lag";

/// Metric selector label naming the ConsumerGroup (in the HPA's namespace).
pub const GROUP_LABEL: &str = "strata.dev/consumergroup";

/// Label the operator puts on the HPAs it owns.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "strata-operator");

/// Where the HPA goes and what owns it.
#[derive(Debug, Clone)]
pub struct HpaTarget<'a> {
    /// Name of the ConsumerGroup (the HPA has the same name).
    pub group: &'a str,
    pub namespace: &'a str,
    /// Controller owner reference to the ConsumerGroup.
    pub owner: OwnerReference,
}

/// The HPA for `a`; `partitions` (of the group's topics) is the default maxReplicas.
pub fn build(t: &HpaTarget<'_>, a: &AutoscalingSpec, partitions: i32) -> HorizontalPodAutoscaler {
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            GROUP_LABEL.to_string(),
            t.group.to_string(),
        )])),
        ..LabelSelector::default()
    };
    let behavior = a
        .scale_down_stabilization_seconds
        .map(|secs| HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(secs),
                ..HPAScalingRules::default()
            }),
            scale_up: None,
        });
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(t.group.to_string()),
            namespace: Some(t.namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (GROUP_LABEL.to_string(), t.group.to_string()),
            ])),
            owner_references: Some(vec![t.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: a.target_ref.kind.clone(),
                name: a.target_ref.name.clone(),
            },
            min_replicas: Some(a.min_replicas.max(1)),
            max_replicas: max_replicas(a, partitions),
            metrics: Some(vec![MetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        name: METRIC_NAME.into(),
                        selector: Some(selector),
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(a.lag_per_replica.max(1).to_string())),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior,
        }),
        status: None,
    }
}

/// Whether `hpa` is one this operator made for ConsumerGroup `uid` (so it may delete it).
pub fn owned_by(hpa: &HorizontalPodAutoscaler, uid: &str) -> bool {
    hpa.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "ConsumerGroup" && o.uid == uid && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HpaTarget<'static> {
        HpaTarget {
            group: "orders-processor",
            namespace: "shop",
            owner: OwnerReference {
                api_version: "strata.dev/v1alpha1".into(),
                kind: "ConsumerGroup".into(),
                name: "orders-processor".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn autoscaling(yaml: &str) -> AutoscalingSpec {
        serde_yaml::from_str(yaml).expect("autoscaling")
    }

    #[test]
    fn hpa_scales_the_target_on_the_external_lag_metric() {
        let a = autoscaling(
            "targetRef: {name: orders-consumer}\nminReplicas: 2\nmaxReplicas: 8\nlagPerReplica: 500",
        );
        let hpa = build(&target(), &a, 12);
        let yaml = serde_yaml::to_string(&hpa).expect("yaml");
        assert_eq!(hpa.metadata.name.as_deref(), Some("orders-processor"));
        assert_eq!(hpa.metadata.namespace.as_deref(), Some("shop"));
        assert!(owned_by(&hpa, "uid-1"));
        assert!(!owned_by(&hpa, "uid-2"));
        let spec = hpa.spec.expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "orders-consumer");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 8));
        let metrics = spec.metrics.expect("metrics");
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].type_, "External");
        let ext = metrics[0].external.as_ref().expect("external");
        assert_eq!(ext.metric.name, "strata_consumergroup_lag");
        let labels = ext
            .metric
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("labels");
        assert_eq!(labels[GROUP_LABEL], "orders-processor");
        assert_eq!(ext.target.type_, "AverageValue");
        assert_eq!(ext.target.average_value, Some(Quantity("500".into())));
        assert!(spec.behavior.is_none(), "HPA defaults unless asked: {yaml}");
    }

    #[test]
    fn max_replicas_defaults_to_the_partition_count() {
        let a = autoscaling("targetRef: {name: c}\nlagPerReplica: 100");
        let spec = build(&target(), &a, 6).spec.expect("spec");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 6));
        // Partitions unknown yet: a valid HPA that stays at minReplicas.
        let spec = build(&target(), &a, 0).spec.expect("spec");
        assert_eq!(spec.max_replicas, 1);
    }

    #[test]
    fn scale_down_window_and_statefulset_targets_pass_through() {
        let a = autoscaling(
            "targetRef: {kind: StatefulSet, name: c}\nlagPerReplica: 100\nscaleDownStabilizationSeconds: 0",
        );
        let spec = build(&target(), &a, 3).spec.expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "StatefulSet");
        let down = spec
            .behavior
            .and_then(|b| b.scale_down)
            .expect("scale down rules");
        assert_eq!(down.stabilization_window_seconds, Some(0));
    }
}
