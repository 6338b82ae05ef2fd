//! Pure status computation: from the Cluster and what exists (StatefulSet and
//! broker pods) to `ClusterStatus`. No reads, no clock except the one passed in.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::cluster::{BrokerStatus, Cluster, ClusterPhase, ClusterStatus, RebalanceStatus};
use crate::crd::condition::{self, Desired};

use super::rollout::Activity;
use super::{selector_string, Names};

/// What the dereference step observed.
pub struct Observed<'a> {
    pub statefulset: Option<&'a StatefulSet>,
    pub pods: &'a [Pod],
    /// Set when validation failed (the message names the field).
    pub invalid: Option<String>,
    /// The voter count the StatefulSet was built with (None when invalid).
    pub voters: Option<i32>,
    /// What the rollout is in the middle of (draining, scaling, rolling).
    pub activity: Option<&'a Activity>,
    /// The rebalancer's latest reassignment.
    pub rebalance: Option<RebalanceStatus>,
    /// Where the admin listener's switch to TLS is (None: keep the previous).
    pub internal_tls: Option<crate::crd::cluster::InternalTls>,
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn broker_state(pod: Option<&Pod>) -> &'static str {
    match pod {
        None => "Missing",
        Some(p) if p.metadata.deletion_timestamp.is_some() => "Terminating",
        Some(p) if pod_ready(p) => "Ready",
        Some(p) => match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => "Running",
            _ => "Pending",
        },
    }
}

/// The status the Cluster should have now.
pub fn compute(cluster: &Cluster, observed: &Observed<'_>, now: Timestamp) -> ClusterStatus {
    let name = cluster.name_any();
    let names = Names::new(&name);
    let previous = cluster.status.clone().unwrap_or_default();
    let desired_replicas = cluster.spec.replicas.max(0);
    let brokers: Vec<BrokerStatus> = (0..desired_replicas)
        .map(|id| {
            let pod_name = names.pod(id);
            let pod = observed.pods.iter().find(|p| p.name_any() == pod_name);
            BrokerStatus {
                id,
                pod: pod_name,
                state: broker_state(pod).to_string(),
                address: pod.and_then(|p| p.status.as_ref()?.pod_ip.clone()),
            }
        })
        .collect();
    let existing = observed
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count() as i32;
    let ready = observed.pods.iter().filter(|p| pod_ready(p)).count() as i32;
    let sts_current = observed.statefulset.is_some_and(|s| {
        let gen_seen = s.status.as_ref().and_then(|st| st.observed_generation);
        gen_seen.is_some() && gen_seen == s.metadata.generation
    });
    let was_running = previous
        .phase
        .is_some_and(|p| p != ClusterPhase::Provisioning);
    let all_ready = ready >= desired_replicas && existing == desired_replicas;
    let phase = if let Some(a) = observed.activity.filter(|_| observed.invalid.is_none()) {
        a.phase
    } else if all_ready && sts_current {
        ClusterPhase::Running
    } else if was_running && ready < desired_replicas.min(existing.max(1)) {
        ClusterPhase::Degraded
    } else if was_running {
        // Every remaining broker still serving (a finished activity ends here too).
        match previous.phase {
            Some(ClusterPhase::Degraded) => ClusterPhase::Degraded,
            _ => ClusterPhase::Running,
        }
    } else {
        ClusterPhase::Provisioning
    };
    let ready_condition = match &observed.invalid {
        Some(msg) => Desired::not_ready("InvalidSpec", msg.clone()),
        None if ready >= desired_replicas
            && !matches!(phase, ClusterPhase::Provisioning | ClusterPhase::Degraded) =>
        {
            Desired::ready(
                "AllBrokersReady",
                format!("{ready}/{desired_replicas} brokers ready"),
            )
        }
        None => Desired::not_ready(
            "BrokersNotReady",
            format!("{ready}/{desired_replicas} brokers ready"),
        ),
    };
    let progressing = match observed.activity {
        Some(a) => Desired {
            type_: condition::PROGRESSING,
            ready: true,
            reason: a.reason.to_string(),
            message: a.message.clone(),
        },
        None => Desired {
            type_: condition::PROGRESSING,
            ready: false,
            reason: "Idle".into(),
            message: "no drain, scaling or rolling restart in progress".into(),
        },
    };
    let namespace = cluster.namespace().unwrap_or_default();
    ClusterStatus {
        replicas: existing,
        ready_replicas: ready,
        selector: Some(selector_string(&name)),
        phase: Some(phase),
        brokers,
        bootstrap_servers: Some(format!(
            "{}.{namespace}.svc:{}",
            names.bootstrap_service(),
            cluster.spec.listeners.kafka
        )),
        conditions: condition::merge(
            &previous.conditions,
            &[ready_condition, progressing],
            cluster.metadata.generation,
            now,
        ),
        observed_generation: cluster.metadata.generation,
        controller_voters: previous.controller_voters.or(observed.voters),
        internal_tls: observed.internal_tls.or(previous.internal_tls),
        rebalance: observed.rebalance.clone(),
    }
}

/// `host:port` admin addresses of brokers that have an IP, ready ones first.
pub fn admin_addresses(cluster: &Cluster) -> Vec<String> {
    admin_targets(cluster).into_iter().map(|(a, _)| a).collect()
}

/// [`admin_addresses`] with whether each broker is Ready.
pub fn admin_targets(cluster: &Cluster) -> Vec<(String, bool)> {
    let port = cluster.spec.listeners.admin;
    let Some(status) = &cluster.status else {
        return Vec::new();
    };
    let mut brokers: Vec<&BrokerStatus> = status
        .brokers
        .iter()
        .filter(|b| b.address.is_some())
        .collect();
    brokers.sort_by_key(|b| (b.state != "Ready", b.id));
    brokers
        .iter()
        .filter_map(|b| {
            b.address
                .as_ref()
                .map(|a| (format!("{a}:{port}"), b.state == "Ready"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: {name}\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"{}\"",
            if ready { "True" } else { "False" }
        ))
        .expect("pod")
    }

    fn sts(generation: i64, observed: i64) -> StatefulSet {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: demo\n  generation: {generation}\nstatus:\n  replicas: 3\n  observedGeneration: {observed}"
        ))
        .expect("sts")
    }

    fn now() -> Timestamp {
        "2025-01-01T00:00:00Z".parse().expect("ts")
    }

    #[test]
    fn all_brokers_ready_means_running() {
        let c = cluster("replicas: 3");
        let pods = [
            pod("demo-0", "10.0.0.1", true),
            pod("demo-1", "10.0.0.2", true),
            pod("demo-2", "10.0.0.3", true),
        ];
        let s = sts(1, 1);
        let st = compute(
            &c,
            &Observed {
                statefulset: Some(&s),
                pods: &pods,
                invalid: None,
                voters: None,
                activity: None,
                rebalance: None,
                internal_tls: None,
            },
            now(),
        );
        assert_eq!(st.phase, Some(ClusterPhase::Running));
        assert_eq!((st.replicas, st.ready_replicas), (3, 3));
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(st.brokers[1].address.as_deref(), Some("10.0.0.2"));
        assert_eq!(st.conditions[0].reason, "AllBrokersReady");
        assert_eq!(
            st.bootstrap_servers.as_deref(),
            Some("demo-bootstrap.kafka.svc:9092")
        );
        assert_eq!(
            st.selector.as_deref(),
            Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=strata-broker")
        );
    }

    #[test]
    fn fresh_cluster_is_provisioning_and_a_lost_broker_degrades_it() {
        let mut c = cluster("replicas: 3");
        let pods = [
            pod("demo-0", "10.0.0.1", true),
            pod("demo-1", "10.0.0.2", false),
        ];
        let s = sts(1, 1);
        let obs = Observed {
            statefulset: Some(&s),
            pods: &pods,
            invalid: None,
            voters: None,
            activity: None,
            rebalance: None,
            internal_tls: None,
        };
        let st = compute(&c, &obs, now());
        assert_eq!(st.phase, Some(ClusterPhase::Provisioning));
        assert_eq!(st.brokers[2].state, "Missing");
        assert_eq!(st.brokers[1].state, "Running");
        assert_eq!(st.conditions[0].status, "False");
        c.status = Some(ClusterStatus {
            phase: Some(ClusterPhase::Running),
            ..ClusterStatus::default()
        });
        assert_eq!(compute(&c, &obs, now()).phase, Some(ClusterPhase::Degraded));
    }

    #[test]
    fn statefulset_not_caught_up_is_not_running() {
        let c = cluster("replicas: 1");
        let pods = [pod("demo-0", "10.0.0.1", true)];
        let s = sts(2, 1);
        let st = compute(
            &c,
            &Observed {
                statefulset: Some(&s),
                pods: &pods,
                invalid: None,
                voters: None,
                activity: None,
                rebalance: None,
                internal_tls: None,
            },
            now(),
        );
        assert_eq!(st.phase, Some(ClusterPhase::Provisioning));
    }

    #[test]
    fn invalid_spec_is_reported_in_the_ready_condition() {
        let c = cluster("replicas: 1");
        let st = compute(
            &c,
            &Observed {
                statefulset: None,
                pods: &[],
                invalid: Some("spec.config.node_id is set".into()),
                voters: None,
                activity: None,
                rebalance: None,
                internal_tls: None,
            },
            now(),
        );
        assert_eq!(st.conditions[0].reason, "InvalidSpec");
        assert!(st.conditions[0].message.contains("node_id"));
    }

    #[test]
    fn admin_addresses_prefer_ready_brokers() {
        let mut c = cluster("replicas: 2");
        let pods = [
            pod("demo-0", "10.0.0.1", false),
            pod("demo-1", "10.0.0.2", true),
        ];
        c.status = Some(compute(
            &c,
            &Observed {
                statefulset: None,
                pods: &pods,
                invalid: None,
                voters: None,
                activity: None,
                rebalance: None,
                internal_tls: None,
            },
            now(),
        ));
        assert_eq!(admin_addresses(&c), ["10.0.0.2:9093", "10.0.0.1:9093"]);
    }
}
