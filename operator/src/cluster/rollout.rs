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

/// Whether every broker runs the pod template `hash` and is ready: the
/// StatefulSet carries that template, its controller saw the latest spec, and
/// all its pods are on the update revision (so a roll of that template is over).
pub fn rolled_out(sts: Option<&StatefulSet>, pods: &[Pod], hash: &str) -> bool {
    let Some(sts) = sts else {
        return false;
    };
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let Some(st) = sts.status.as_ref() else {
        return false;
    };
    let Some(revision) = st.update_revision.as_deref() else {
        return false;
    };
    let on_revision = pods
        .iter()
        .filter(|p| {
            ready(p) && p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision)
        })
        .count();
    template_hash(sts) == hash
        && st
            .observed_generation
            .is_some_and(|g| Some(g) >= sts.metadata.generation)
        && i32::try_from(on_revision).ok() == Some(want)
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
mod tests;
