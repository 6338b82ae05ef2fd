//! The broker StatefulSet. Broker identity comes from the pod, not from the
//! operator: `node_id` is the StatefulSet ordinal (the `apps.kubernetes.io/pod-index`
//! label), the advertised host is the pod IP (downward API), the rack is a
//! topology label copied from the node. Listeners bind the pod IP.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_map::{stable_hash, CONFIG_FILE};
use super::object_meta;
use crate::cluster::rollout::TEMPLATE_HASH_ANNOTATION;
use crate::cluster::{labels, selector_labels, ValidatedCluster};

/// Where the data PVC is mounted in the broker container.
pub const DATA_MOUNT: &str = "/var/lib/strata";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT: &str = "/etc/strata";
/// Pod template annotation carrying the config hash (a change rolls the brokers).
pub const CONFIG_HASH_ANNOTATION: &str = "strata.dev/config-hash";
/// Label the StatefulSet controller puts on each pod with its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Environment of the broker container. Order matters: `$(POD_IP)` expands
/// only variables defined earlier in the list.
pub fn broker_env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    let l = &cluster.spec.listeners;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        field_env(
            "STRATA_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
        plain_env("STRATA_DATA_DIR", format!("{DATA_MOUNT}/data")),
        plain_env("STRATA_KAFKA_LISTEN", format!("$(POD_IP):{}", l.kafka)),
        plain_env("STRATA_ADMIN_LISTEN", format!("$(POD_IP):{}", l.admin)),
        plain_env("STRATA_METRICS_LISTEN", format!("$(POD_IP):{}", l.metrics)),
        plain_env("STRATA_ADVERTISED_HOST", "$(POD_IP)"),
        plain_env("STRATA_ADVERTISED_PORT", l.kafka.to_string()),
        plain_env("STRATA_CONTROLLER_VOTERS", controller_voters(cluster)),
    ];
    env.extend(crate::cluster::security::listener_env(cluster));
    if let Some(label) = &cluster.spec.rack_label {
        env.push(field_env(
            "STRATA_RACK",
            &format!("metadata.labels['{label}']"),
        ));
    }
    if let Some(tier) = &cluster.spec.tiered_storage {
        env.push(env_tier("STRATA_TIER_BUCKET", &tier.bucket));
        if let Some(e) = &tier.endpoint {
            env.push(env_tier("STRATA_TIER_ENDPOINT", e));
        }
        if let Some(r) = &tier.region {
            env.push(env_tier("STRATA_TIER_REGION", r));
        }
        let prefix = tier.prefix.clone().unwrap_or_else(|| cluster.name.clone());
        env.push(env_tier("STRATA_TIER_PREFIX", &prefix));
        if let Some(ms) = cluster.local_retention_ms {
            env.push(plain_env("STRATA_TIER_LOCAL_RETENTION_MS", ms.to_string()));
        }
        if let Some(secret) = &tier.credentials_secret {
            env.push(secret_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"));
            env.push(secret_env(
                "AWS_SECRET_ACCESS_KEY",
                secret,
                "AWS_SECRET_ACCESS_KEY",
            ));
        }
    }
    if let Some(t) = &cluster.spec.tracing {
        env.push(plain_env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            t.otlp_endpoint.clone(),
        ));
        if let Some(ratio) = t.sample_ratio {
            env.push(plain_env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
            env.push(plain_env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()));
        }
    }
    env
}

/// `id@host:port` of the quorum voters by their stable headless-Service names
/// (`<cluster>-<n>.<cluster>-brokers.<ns>.svc`): pod IPs change when a pod is
/// recreated, these names do not.
pub fn controller_voters(cluster: &ValidatedCluster) -> String {
    (0..cluster.voters)
        .map(|id| {
            format!(
                "{id}@{}.{}.{}.svc:{}",
                cluster.names.pod(id),
                cluster.names.headless_service(),
                cluster.namespace,
                cluster.spec.listeners.admin
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn env_tier(name: &str, value: &str) -> EnvVar {
    plain_env(name, value)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn anti_affinity(cluster: &ValidatedCluster) -> Affinity {
    // Preferred, not required: a small cluster on fewer nodes than brokers still runs.
    let term = |weight: i32, key: &str| WeightedPodAffinityTerm {
        weight,
        pod_affinity_term: PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                ..LabelSelector::default()
            }),
            topology_key: key.into(),
            ..PodAffinityTerm::default()
        },
    };
    let mut terms = vec![term(100, "kubernetes.io/hostname")];
    if let Some(label) = &cluster.spec.rack_label {
        terms.push(term(50, label));
    }
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(terms),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn data_claim(cluster: &ValidatedCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector_labels(&cluster.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: cluster.spec.storage.class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(cluster.spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

pub fn build(cluster: &ValidatedCluster, config_hash: &str) -> StatefulSet {
    let l = &cluster.spec.listeners;
    let port = |name: &str, p: i32| ContainerPort {
        name: Some(name.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let (secret_volumes, secret_mounts) = crate::cluster::security::volumes(cluster);
    let container = Container {
        name: "broker".into(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: cluster.spec.image_pull_policy.clone(),
        command: Some(vec!["strata-broker".into()]),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
        ]),
        env: Some(broker_env(cluster)),
        ports: Some({
            let mut ports = vec![
                port("kafka", l.kafka),
                port("admin", l.admin),
                port("metrics", l.metrics),
            ];
            if let Some(s) = &l.secure {
                ports.push(port("secure", s.port));
            }
            ports
        }),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..http_probe("/healthz", 10, 6)
        }),
        resources: cluster.spec.resources.clone(),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: "data".into(),
                    mount_path: DATA_MOUNT.into(),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "config".into(),
                    mount_path: CONFIG_MOUNT.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]
            .into_iter()
            .chain(secret_mounts)
            .collect(),
        ),
        ..Container::default()
    };
    let mut pod_labels = labels(&cluster.name);
    pod_labels.insert("app.kubernetes.io/component".into(), "broker".into());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_string(),
                config_hash.to_string(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            affinity: Some(anti_affinity(cluster)),
            termination_grace_period_seconds: Some(60),
            volumes: Some(
                std::iter::once(Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: cluster.names.config_map(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                })
                .chain(secret_volumes)
                .collect(),
            ),
            ..PodSpec::default()
        }),
    };
    // What the rollout compares to see whether brokers must be restarted.
    let template_hash = stable_hash(&[&serde_json::to_vec(&template).unwrap_or_default()]);
    let mut metadata = object_meta(cluster, cluster.names.statefulset());
    metadata.annotations = Some(BTreeMap::from([(
        TEMPLATE_HASH_ANNOTATION.to_string(),
        template_hash,
    )]));
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.replicas),
            service_name: Some(cluster.names.headless_service()),
            // Brokers start independently; waiting for ordinal order buys nothing.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                ..LabelSelector::default()
            },
            // The operator moves `partition` down one broker at a time (see
            // `cluster::rollout`); the StatefulSet controller restarts only
            // pods at or above it.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    max_unavailable: None,
                    partition: Some(0),
                }),
            }),
            // Broker data outlives scale-in and Cluster deletion; delete PVCs explicitly.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template,
            volume_claim_templates: Some(vec![data_claim(cluster)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;
    use crate::cluster::validate;

    fn sts(yaml: &str) -> StatefulSet {
        build(&validate(&cluster(yaml)).expect("valid"), "abc")
    }

    fn env_of(s: &StatefulSet) -> Vec<EnvVar> {
        s.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
            .containers[0]
            .env
            .clone()
            .expect("env")
    }

    fn find<'a>(env: &'a [EnvVar], name: &str) -> &'a EnvVar {
        env.iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("env {name}"))
    }

    fn field(e: &EnvVar) -> String {
        e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("fieldRef")
            .field_path
            .clone()
    }

    #[test]
    fn traces_are_exported_only_when_the_spec_asks() {
        let env = env_of(&sts("replicas: 3"));
        assert!(!env.iter().any(|e| e.name.starts_with("OTEL_")));
        let env = env_of(&sts(
            "replicas: 3\ntracing:\n  otlpEndpoint: http://collector:4318\n  sampleRatio: 0.25",
        ));
        assert_eq!(
            find(&env, "OTEL_EXPORTER_OTLP_ENDPOINT").value.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(
            find(&env, "OTEL_TRACES_SAMPLER_ARG").value.as_deref(),
            Some("0.25")
        );
    }

    #[test]
    fn broker_identity_comes_from_the_pod() {
        let env = env_of(&sts("replicas: 3"));
        assert_eq!(
            field(find(&env, "STRATA_NODE_ID")),
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        assert_eq!(field(find(&env, "POD_IP")), "status.podIP");
        assert_eq!(
            find(&env, "STRATA_ADVERTISED_HOST").value.as_deref(),
            Some("$(POD_IP)")
        );
        assert_eq!(
            find(&env, "STRATA_KAFKA_LISTEN").value.as_deref(),
            Some("$(POD_IP):9092")
        );
        assert_eq!(
            find(&env, "STRATA_ADMIN_LISTEN").value.as_deref(),
            Some("$(POD_IP):9093")
        );
        // $(POD_IP) only expands variables defined before it.
        let pos = |n: &str| env.iter().position(|e| e.name == n).expect("present");
        assert!(pos("POD_IP") < pos("STRATA_ADVERTISED_HOST"));
        assert!(env.iter().all(|e| e.name != "STRATA_RACK"));
    }

    #[test]
    fn voters_are_the_first_brokers_by_their_stable_names() {
        let env = env_of(&sts("replicas: 5"));
        assert_eq!(
            find(&env, "STRATA_CONTROLLER_VOTERS").value.as_deref(),
            Some(
                "0@demo-0.demo-brokers.kafka.svc:9093,1@demo-1.demo-brokers.kafka.svc:9093,2@demo-2.demo-brokers.kafka.svc:9093"
            )
        );
        let env = env_of(&sts("replicas: 1"));
        assert_eq!(
            find(&env, "STRATA_CONTROLLER_VOTERS").value.as_deref(),
            Some("0@demo-0.demo-brokers.kafka.svc:9093")
        );
    }

    #[test]
    fn statefulset_shape() {
        let s = sts("replicas: 3\nstorage:\n  size: 50Gi\n  class: fast\nimage: strata-broker:dev");
        assert_eq!(s.metadata.name.as_deref(), Some("demo"));
        assert_eq!(
            s.metadata.owner_references.as_ref().expect("owner")[0].kind,
            "Cluster"
        );
        let spec = s.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("demo-brokers"));
        let pvc = &spec.volume_claim_templates.expect("pvc")[0];
        let pvc_spec = pvc.spec.as_ref().expect("pvc spec");
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .expect("requests")["storage"],
            Quantity("50Gi".into())
        );
        let tpl = spec.template;
        assert_eq!(
            tpl.metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .expect("annotations")[CONFIG_HASH_ANNOTATION],
            "abc"
        );
        let pod = tpl.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("strata-broker:dev"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["strata-broker".to_string()][..])
        );
        assert_eq!(
            c.args.as_ref().expect("args").join(" "),
            "serve --config /etc/strata/broker.toml"
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("metrics".into()));
        let anti = pod
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .expect("anti-affinity");
        let terms = anti
            .preferred_during_scheduling_ignored_during_execution
            .expect("preferred");
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            pod.volumes.expect("volumes")[0]
                .config_map
                .as_ref()
                .expect("cm")
                .name,
            "demo-config"
        );
    }

    #[test]
    fn rack_and_tier_settings_reach_the_broker() {
        let s = sts(
            "rackLabel: topology.kubernetes.io/zone\ntieredStorage:\n  bucket: strata-tier\n  endpoint: http://s3:8333\n  credentialsSecret: s3-creds\n  localRetention: 1h",
        );
        let env = env_of(&s);
        assert_eq!(
            field(find(&env, "STRATA_RACK")),
            "metadata.labels['topology.kubernetes.io/zone']"
        );
        assert_eq!(
            find(&env, "STRATA_TIER_BUCKET").value.as_deref(),
            Some("strata-tier")
        );
        assert_eq!(
            find(&env, "STRATA_TIER_PREFIX").value.as_deref(),
            Some("demo")
        );
        assert_eq!(
            find(&env, "STRATA_TIER_LOCAL_RETENTION_MS")
                .value
                .as_deref(),
            Some("3600000")
        );
        let key = find(&env, "AWS_SECRET_ACCESS_KEY")
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(key.name, "s3-creds");
        let anti = s
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.affinity)
            .and_then(|a| a.pod_anti_affinity)
            .expect("anti");
        let keys: Vec<_> = anti
            .preferred_during_scheduling_ignored_during_execution
            .expect("terms")
            .into_iter()
            .map(|t| t.pod_affinity_term.topology_key)
            .collect();
        assert_eq!(
            keys,
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
    }
}
