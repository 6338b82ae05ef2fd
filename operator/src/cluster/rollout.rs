//! How the broker StatefulSet changes, decided purely from what exists: the
//! replica count it gets (scale-in waits until the leaving brokers are drained),
//! the rolling-update `partition` (a changed pod template rolls one broker at a
//! time, each only once every broker is ready, no partition is under-replicated
//! and none would drop below `min.insync.replicas`), and the admin calls to make (drain the brokers that are
//! leaving, undrain the ones that stay, unregister the ones that are gone).
//!
//! StatefulSets remove the highest ordinals, and broker id = ordinal, so the
//! brokers to drain are exactly `spec.replicas..current`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::cluster::ClusterPhase;

/// Pod label with the StatefulSet revision the pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// StatefulSet annotation with the hash of the pod template the operator built.
pub const TEMPLATE_HASH_ANNOTATION: &str = "strata.dev/pod-template-hash";

/// One broker as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: i32,
    pub rack: Option<String>,
    pub draining: bool,
    pub fenced: bool,
    /// Partition replicas it still holds.
    pub replicas: i32,
    pub leaders: i32,
    /// Partitions with a replica to spare that would still fall below
    /// `min.insync.replicas` if it stopped (one of their replicas is catching up).
    pub min_isr_at_risk: i32,
}

/// The cluster as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub brokers: Vec<BrokerView>,
    pub under_replicated: i32,
    pub offline: i32,
    /// Topics whose replication factor is at or below their `min.insync.replicas`.
    pub min_isr_no_spare: Vec<String>,
}

impl ClusterView {
    fn broker(&self, id: i32) -> Option<&BrokerView> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// An admin call the controller makes before applying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminStep {
    Drain(i32),
    Undrain(i32),
    /// Forget a broker whose pod is gone for good (after a scale-in): it is fenced
    /// and holds nothing, so the metadata and the quorum stop carrying it.
    Unregister(i32),
}

/// What the operator is in the middle of, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub phase: ClusterPhase,
    /// Condition reason (CamelCase) and message.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// `spec.replicas` of the StatefulSet.
    pub replicas: i32,
    /// `spec.updateStrategy.rollingUpdate.partition`: pods with a lower ordinal
    /// keep their old revision.
    pub partition: i32,
    pub steps: Vec<AdminStep>,
    pub activity: Option<Activity>,
    /// Brokers beyond the StatefulSet are still registered (waiting to be fenced,
    /// or being unregistered now): look again soon rather than at the next resync.
    pub forgetting: bool,
}

impl Rollout {
    /// Puts the decided replicas and partition into the built StatefulSet.
    pub fn apply_to(&self, sts: &mut StatefulSet) {
        if let Some(spec) = sts.spec.as_mut() {
            spec.replicas = Some(self.replicas);
            if let Some(r) = spec
                .update_strategy
                .as_mut()
                .and_then(|u| u.rolling_update.as_mut())
            {
                r.partition = Some(self.partition);
            }
        }
    }
}

/// The template hash the builder put on a StatefulSet.
pub fn template_hash(sts: &StatefulSet) -> &str {
    sts.annotations()
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
}

pub struct Inputs<'a> {
    /// `spec.replicas` of the Cluster.
    pub desired: i32,
    /// Hash of the pod template just built.
    pub template_hash: &'a str,
    pub statefulset: Option<&'a StatefulSet>,
    pub pods: &'a [Pod],
    /// None: no broker answered the admin API.
    pub view: Option<&'a ClusterView>,
}

fn ordinal(pod: &Pod, sts_name: &str) -> Option<i32> {
    pod.name_any()
        .strip_prefix(&format!("{sts_name}-"))?
        .parse()
        .ok()
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The next StatefulSet shape and admin steps.
pub fn plan(inp: &Inputs<'_>) -> Rollout {
    let Some(sts) = inp.statefulset else {
        // A new cluster: everything at once.
        return Rollout {
            replicas: inp.desired,
            partition: 0,
            steps: Vec::new(),
            activity: None,
            forgetting: false,
        };
    };
    let name = sts.name_any();
    let spec = sts.spec.as_ref();
    let current = spec.and_then(|s| s.replicas).unwrap_or(0);
    let current_partition = spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let mut steps = Vec::new();
    let mut activity = None;
    let mut forgetting = false;

    // Scale-in: drain the leaving brokers first; shrink only when they hold nothing.
    let replicas = if inp.desired < current {
        let leaving: Vec<i32> = (inp.desired..current).collect();
        match inp.view {
            None => {
                activity = Some(Activity {
                    phase: ClusterPhase::Draining,
                    reason: "Draining",
                    message: format!(
                        "waiting for the admin API to drain brokers {leaving:?} before scaling in"
                    ),
                });
                current
            }
            Some(view) => {
                let mut left = Vec::new();
                for id in &leaving {
                    match view.broker(*id) {
                        // Never registered (e.g. a pod that never started): nothing to move.
                        None => {}
                        Some(b) => {
                            if !b.draining {
                                steps.push(AdminStep::Drain(*id));
                            }
                            if b.replicas > 0 || b.leaders > 0 || !b.draining {
                                left.push(format!("{id} ({} replicas)", b.replicas));
                            }
                        }
                    }
                }
                if left.is_empty() {
                    activity = Some(Activity {
                        phase: ClusterPhase::Scaling,
                        reason: "ScalingIn",
                        message: format!("brokers {leaving:?} drained; removing their pods"),
                    });
                    inp.desired
                } else {
                    activity = Some(Activity {
                        phase: ClusterPhase::Draining,
                        reason: "Draining",
                        message: format!(
                            "moving partitions off brokers {} before scaling in",
                            left.join(", ")
                        ),
                    });
                    current
                }
            }
        }
    } else {
        if inp.desired > current {
            activity = Some(Activity {
                phase: ClusterPhase::Scaling,
                reason: "ScalingOut",
                message: format!(
                    "adding brokers {:?}",
                    (current..inp.desired).collect::<Vec<_>>()
                ),
            });
        }
        inp.desired
    };
    // Brokers that stay (or came back after a scale-out) must not stay drained.
    if let Some(view) = inp.view {
        for b in &view.brokers {
            if b.draining && b.id < replicas.min(inp.desired) {
                steps.push(AdminStep::Undrain(b.id));
            }
        }
        // Brokers beyond the StatefulSet whose pods are gone: once fenced (stopped
        // heartbeating) and empty, they are forgotten.
        let pod_ordinals: Vec<i32> = inp.pods.iter().filter_map(|p| ordinal(p, &name)).collect();
        forgetting = view
            .brokers
            .iter()
            .any(|b| b.id >= replicas.max(inp.desired));
        for b in &view.brokers {
            if b.id >= replicas
                && replicas == current
                && !pod_ordinals.contains(&b.id)
                && b.fenced
                && b.replicas == 0
                && b.leaders == 0
            {
                steps.push(AdminStep::Unregister(b.id));
            }
        }
    }

    // Rolling restart, one broker at a time.
    let applied_hash = sts
        .annotations()
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str);
    let status = sts.status.as_ref();
    let controller_caught_up = status
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) >= sts.metadata.generation);
    let partition = if applied_hash != Some(inp.template_hash) {
        // A new template: freeze every existing pod; later reconciles release them.
        current
    } else if !controller_caught_up {
        current_partition
    } else {
        let update_revision = status.and_then(|s| s.update_revision.as_deref());
        let members: Vec<&Pod> = inp
            .pods
            .iter()
            .filter(|p| ordinal(p, &name).is_some_and(|o| o < replicas))
            .collect();
        let outdated: Vec<i32> = members
            .iter()
            .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) != update_revision)
            .filter_map(|p| ordinal(p, &name))
            .collect();
        let all_ready = members.len() as i32 == replicas && members.iter().all(|p| ready(p));
        match outdated.iter().max() {
            None => {
                // The StatefulSet controller moves currentRevision to the update
                // revision only once every pod runs it and is ready.
                let finishing =
                    status.and_then(|s| s.current_revision.as_deref()) != update_revision;
                if finishing && !all_ready && activity.is_none() {
                    // The last restarted broker is still starting: part of the roll.
                    activity = Some(Activity {
                        phase: ClusterPhase::RollingRestart,
                        reason: "RollingRestart",
                        message: "waiting for the last restarted broker to be ready".into(),
                    });
                }
                0
            }
            Some(&next) => {
                let all_ready =
                    members.len() as i32 == replicas && members.iter().all(|p| ready(p));
                let healthy = inp
                    .view
                    .is_some_and(|v| v.under_replicated == 0 && v.offline == 0);
                let at_risk = inp
                    .view
                    .and_then(|v| v.broker(next))
                    .map_or(0, |b| b.min_isr_at_risk);
                let (release, reason, mut why) = match (all_ready, inp.view) {
                    (false, _) => (
                        false,
                        "RollingRestart",
                        "waiting for every broker to be ready".to_string(),
                    ),
                    (true, None) => (
                        false,
                        "RollingRestart",
                        "waiting for the admin API".to_string(),
                    ),
                    (true, Some(v)) if !healthy => (
                        false,
                        "RollingRestart",
                        format!(
                            "waiting for {} under-replicated and {} offline partitions to recover",
                            v.under_replicated, v.offline
                        ),
                    ),
                    // Its ISRs have no spare right now (a replica is catching up, which
                    // the under-replicated count of another broker's view may not show
                    // yet): restarting it would stop acks=all producers.
                    (true, Some(_)) if at_risk > 0 => (
                        false,
                        "RollBlockedByMinIsr",
                        format!(
                            "restarting broker {next} would take {at_risk} partition(s) below \
                             min.insync.replicas; waiting for their replicas to catch up"
                        ),
                    ),
                    _ => (true, "RollingRestart", format!("restarting broker {next}")),
                };
                if let Some(v) = inp.view.filter(|v| !v.min_isr_no_spare.is_empty()) {
                    // Waiting would never help these, so they do not hold the roll.
                    why.push_str(&format!(
                        "; topics {:?} have a replicationFactor at or below \
                         min.insync.replicas: acks=all produce to them fails while their \
                         brokers restart (raise the replicationFactor or lower \
                         min.insync.replicas)",
                        v.min_isr_no_spare
                    ));
                }
                if activity.is_none() {
                    activity = Some(Activity {
                        phase: ClusterPhase::RollingRestart,
                        reason,
                        message: format!("{} brokers to restart; {why}", outdated.len()),
                    });
                }
                if release {
                    next
                } else {
                    // Keep the broker being restarted going; release nobody new.
                    current_partition.max(next)
                }
            }
        }
    };
    Rollout {
        replicas,
        partition,
        steps,
        activity,
        forgetting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "h2";

    fn sts(replicas: i32, partition: i32, hash: &str, update_revision: &str) -> StatefulSet {
        // Mid-roll: the StatefulSet still reports the old revision as current.
        let current_revision = "rev1";
        serde_yaml::from_str(&format!(
            "metadata:\n  name: demo\n  generation: 4\n  annotations:\n    {TEMPLATE_HASH_ANNOTATION}: {hash}\n\
             spec:\n  replicas: {replicas}\n  selector: {{}}\n  serviceName: demo-brokers\n  template: {{}}\n\
             \x20 updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: {partition}\n\
             status:\n  replicas: {replicas}\n  observedGeneration: 4\n  updateRevision: {update_revision}\n  currentRevision: {current_revision}\n"
        ))
        .expect("sts")
    }

    fn pod(ordinal: i32, revision: &str, ready: bool) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: demo-{ordinal}\n  labels:\n    {REVISION_LABEL}: {revision}\n\
             status:\n  conditions:\n  - type: Ready\n    status: \"{}\"\n",
            if ready { "True" } else { "False" }
        ))
        .expect("pod")
    }

    fn view(brokers: &[(i32, bool, i32)], urp: i32) -> ClusterView {
        ClusterView {
            brokers: brokers
                .iter()
                .map(|&(id, draining, replicas)| BrokerView {
                    id,
                    rack: None,
                    draining,
                    fenced: false,
                    replicas,
                    leaders: 0,
                    min_isr_at_risk: 0,
                })
                .collect(),
            under_replicated: urp,
            offline: 0,
            min_isr_no_spare: Vec::new(),
        }
    }

    fn run(desired: i32, s: &StatefulSet, pods: &[Pod], v: Option<&ClusterView>) -> Rollout {
        plan(&Inputs {
            desired,
            template_hash: HASH,
            statefulset: Some(s),
            pods,
            view: v,
        })
    }

    #[test]
    fn a_new_cluster_starts_every_broker() {
        let r = plan(&Inputs {
            desired: 3,
            template_hash: HASH,
            statefulset: None,
            pods: &[],
            view: None,
        });
        assert_eq!((r.replicas, r.partition), (3, 0));
        assert!(r.steps.is_empty() && r.activity.is_none());
    }

    #[test]
    fn a_changed_template_freezes_every_pod_first() {
        let s = sts(3, 0, "h1", "rev1");
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", true),
            pod(2, "rev1", true),
        ];
        let r = run(3, &s, &pods, Some(&view(&[], 0)));
        assert_eq!(r.partition, 3);
    }

    #[test]
    fn rolls_the_highest_outdated_broker_only_when_healthy() {
        let s = sts(3, 3, HASH, "rev2");
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", true),
            pod(2, "rev1", true),
        ];
        let r = run(3, &s, &pods, Some(&view(&[], 0)));
        assert_eq!(r.partition, 2);
        assert_eq!(
            r.activity.expect("activity").phase,
            ClusterPhase::RollingRestart
        );
        // Broker 2 restarted and ready, but its partitions are catching up: wait.
        let s = sts(3, 2, HASH, "rev2");
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", true),
            pod(2, "rev2", true),
        ];
        let r = run(3, &s, &pods, Some(&view(&[], 4)));
        assert_eq!(r.partition, 2);
        assert!(r
            .activity
            .expect("activity")
            .message
            .contains("4 under-replicated"));
        // Without the admin API nothing new is released either.
        assert_eq!(run(3, &s, &pods, None).partition, 2);
        // Caught up: next broker.
        assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 1);
        // A broker that is not ready holds the roll.
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", false),
            pod(2, "rev2", true),
        ];
        assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 2);
    }

    #[test]
    fn a_broker_whose_restart_would_break_min_isr_is_not_released_and_says_why() {
        let s = sts(3, 2, HASH, "rev2");
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", true),
            pod(2, "rev2", true),
        ];
        let healthy = view(&[(0, false, 3), (1, false, 3), (2, false, 3)], 0);
        assert_eq!(run(3, &s, &pods, Some(&healthy)).partition, 1);
        // Broker 1 is in the ISR of a partition whose ISR sits at min.insync.replicas.
        let mut tight = healthy.clone();
        tight.brokers[1].min_isr_at_risk = 2;
        let r = run(3, &s, &pods, Some(&tight));
        assert_eq!(r.partition, 2, "broker 1 is not released");
        let a = r.activity.expect("activity");
        assert_eq!(
            (a.phase, a.reason),
            (ClusterPhase::RollingRestart, "RollBlockedByMinIsr")
        );
        assert!(
            a.message
                .contains("broker 1 would take 2 partition(s) below"),
            "{}",
            a.message
        );
        // Topics with no replica to spare are reported, not waited for.
        let mut never = healthy.clone();
        never.min_isr_no_spare = vec!["lonely".into()];
        let r = run(3, &s, &pods, Some(&never));
        assert_eq!(r.partition, 1);
        let a = r.activity.expect("activity");
        assert!(
            a.message
                .contains("[\"lonely\"] have a replicationFactor at or below"),
            "{}",
            a.message
        );
    }

    #[test]
    fn a_finished_roll_resets_the_partition() {
        let s = sts(3, 1, HASH, "rev2");
        let pods = [
            pod(0, "rev2", true),
            pod(1, "rev2", true),
            pod(2, "rev2", true),
        ];
        let r = run(3, &s, &pods, Some(&view(&[], 0)));
        assert_eq!(r.partition, 0);
        assert!(r.activity.is_none());
        // Until the last restarted broker is ready, the roll is still going on.
        let s = sts(3, 0, HASH, "rev2");
        let pods = [
            pod(0, "rev2", false),
            pod(1, "rev2", true),
            pod(2, "rev2", true),
        ];
        let r = run(3, &s, &pods, Some(&view(&[], 0)));
        assert_eq!(r.partition, 0);
        assert_eq!(
            r.activity.expect("activity").phase,
            ClusterPhase::RollingRestart
        );
    }

    #[test]
    fn a_stale_statefulset_status_releases_nothing() {
        let mut s = sts(3, 3, HASH, "rev1");
        s.metadata.generation = Some(5);
        let pods = [
            pod(0, "rev1", true),
            pod(1, "rev1", true),
            pod(2, "rev1", true),
        ];
        assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 3);
    }

    #[test]
    fn scale_in_drains_the_highest_brokers_before_shrinking() {
        let s = sts(5, 0, HASH, "rev1");
        let pods: Vec<Pod> = (0..5).map(|i| pod(i, "rev1", true)).collect();
        let v = view(
            &[
                (0, false, 4),
                (1, false, 4),
                (2, false, 4),
                (3, false, 3),
                (4, false, 3),
            ],
            0,
        );
        let r = run(3, &s, &pods, Some(&v));
        assert_eq!(r.replicas, 5, "no pod removed before the drain");
        assert_eq!(r.steps, vec![AdminStep::Drain(3), AdminStep::Drain(4)]);
        assert_eq!(
            r.activity.as_ref().expect("activity").phase,
            ClusterPhase::Draining
        );
        // Draining, one still holds replicas: keep waiting, no repeated drain call.
        let v = view(
            &[
                (0, false, 6),
                (1, false, 6),
                (2, false, 5),
                (3, true, 1),
                (4, true, 0),
            ],
            1,
        );
        let r = run(3, &s, &pods, Some(&v));
        assert_eq!((r.replicas, r.steps.len()), (5, 0));
        assert!(r
            .activity
            .expect("activity")
            .message
            .contains("3 (1 replicas)"));
        // Empty: shrink.
        let v = view(
            &[
                (0, false, 6),
                (1, false, 6),
                (2, false, 6),
                (3, true, 0),
                (4, true, 0),
            ],
            0,
        );
        let r = run(3, &s, &pods, Some(&v));
        assert_eq!(r.replicas, 3);
        assert_eq!(r.activity.expect("activity").phase, ClusterPhase::Scaling);
        // No admin API: hold.
        assert_eq!(run(3, &s, &pods, None).replicas, 5);
    }

    #[test]
    fn brokers_that_stay_or_return_are_undrained() {
        let s = sts(3, 0, HASH, "rev1");
        let pods: Vec<Pod> = (0..3).map(|i| pod(i, "rev1", true)).collect();
        // Scaled back out to 4 after a scale-in left broker 3 drained.
        let v = view(
            &[(0, false, 2), (1, false, 2), (2, false, 2), (3, true, 0)],
            0,
        );
        let r = run(4, &s, &pods, Some(&v));
        assert_eq!(r.replicas, 4);
        assert_eq!(r.steps, vec![AdminStep::Undrain(3)]);
        // While scaling in, the leaving brokers stay drained.
        let s = sts(4, 0, HASH, "rev1");
        let r = run(3, &s, &pods, Some(&v));
        assert!(r.steps.is_empty(), "{:?}", r.steps);
    }

    #[test]
    fn brokers_whose_pods_are_gone_are_unregistered_once_fenced_and_empty() {
        let s = sts(3, 0, HASH, "rev1");
        let pods: Vec<Pod> = (0..3).map(|i| pod(i, "rev1", true)).collect();
        let gone = |fenced: bool, replicas: i32| {
            let mut v = view(
                &[
                    (0, false, 2),
                    (1, false, 2),
                    (2, false, 2),
                    (3, true, replicas),
                ],
                0,
            );
            v.brokers[3].fenced = fenced;
            v
        };
        // Scaled in to 3, broker 3's pod removed and its heartbeats stopped.
        let r = run(3, &s, &pods, Some(&gone(true, 0)));
        assert_eq!(r.steps, vec![AdminStep::Unregister(3)]);
        assert!(r.forgetting);
        // Not fenced yet (still heartbeating, or only just stopped): wait, and look
        // again soon.
        let r = run(3, &s, &pods, Some(&gone(false, 0)));
        assert!(r.steps.is_empty() && r.forgetting);
        let mut settled = gone(true, 0);
        settled.brokers.pop();
        assert!(!run(3, &s, &pods, Some(&settled)).forgetting);
        // Still named by a partition: never.
        assert!(run(3, &s, &pods, Some(&gone(true, 1))).steps.is_empty());
        // Its pod still exists (terminating): wait.
        let mut with_pod = pods.clone();
        with_pod.push(pod(3, "rev1", false));
        assert!(run(3, &s, &with_pod, Some(&gone(true, 0))).steps.is_empty());
        // Scaling back out to 4 instead: it comes back, nothing is forgotten.
        let r = run(4, &s, &pods, Some(&gone(true, 0)));
        assert_eq!(r.steps, vec![AdminStep::Undrain(3)]);
    }
}
