//! The I/O shell of the Topic controller: dereference the Cluster and the
//! broker topic, run the plan's admin calls, write the status; the finalizer
//! honours `deletionPolicy` and never traps a namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};

use crate::admin::{pb, Admin, AdminError};
use crate::apply::apply_status;
use crate::cluster::status::admin_addresses;
use crate::context::{deleting_for, finalizer_error, object_key, retry_later, Context};
use crate::crd::condition::{self, Desired};
use crate::crd::topic::DeletionPolicy;
use crate::crd::{Cluster, Topic, TopicStatus, ALLOW_DELETION_ANNOTATION, MANAGED_ANNOTATION};
use crate::{Error, Result};

use super::plan::{assignment_summary, plan, ObservedTopic, TopicAction, CHANGING_RF};
use super::FINALIZER;

/// How often a topic whose partitions move to a new replication factor is re-read.
const MOVING_REQUEUE: Duration = Duration::from_secs(5);

const CONTROLLER: &str = "topic";
/// Retry interval while the referenced Cluster does not exist.
const MISSING_CLUSTER_REQUEUE: Duration = Duration::from_secs(30);

#[tracing::instrument(
    level = "debug",
    name = "reconcile",
    skip_all,
    fields(
        otel.name = "reconcile Topic",
        k8s.namespace = topic.metadata.namespace.as_deref().unwrap_or(""),
        k8s.name = topic.metadata.name.as_deref().unwrap_or(""),
    )
)]
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(CONTROLLER);
    let ns = topic
        .namespace()
        .ok_or_else(|| Error::Invalid("Topic has no namespace".into()))?;
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, topic.clone(), |event| async {
        match event {
            Finalizer::Apply(t) => apply_topic(&t, &ns, &ctx).await,
            Finalizer::Cleanup(t) => cleanup_topic(&t, &ns, &ctx).await,
        }
    })
    .await
    .map_err(finalizer_error);
    timer.finish(&ctx.metrics);
    if result.is_ok() {
        ctx.backoff.reset(&object_key(topic.as_ref()));
    }
    result
}

fn unmanaged(topic: &Topic) -> bool {
    topic
        .annotations()
        .get(MANAGED_ANNOTATION)
        .is_some_and(|v| v == "false")
}

/// Whether the Topic's status already shows this problem: its Warning event was
/// emitted when it first appeared, and a reconcile that finds it again (every
/// resync) must not repeat it.
fn already_reported(topic: &Topic, reason: &str, message: &str) -> bool {
    topic.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.reason == reason && c.message == message)
    })
}

async fn write_status(
    topic: &Topic,
    ns: &str,
    ctx: &Context,
    observed: Option<&ObservedTopic>,
    cond: Desired,
) -> Result<()> {
    let previous = topic.status.clone().unwrap_or_default();
    let status = TopicStatus {
        topic_id: observed
            .map(|o| o.topic_id.clone())
            .or(previous.topic_id.clone()),
        partitions: observed.map(|o| o.partitions).or(previous.partitions),
        replication_factor: observed
            .map(|o| o.replication_factor)
            .or(previous.replication_factor),
        assignment: observed
            .map(|o| assignment_summary(o, 32))
            .or(previous.assignment.clone()),
        conditions: condition::merge(
            &previous.conditions,
            &[cond],
            topic.metadata.generation,
            Timestamp::now(),
        ),
        observed_generation: topic.metadata.generation,
    };
    if topic.status.as_ref() != Some(&status) {
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), ns);
        apply_status(&api, &topic.name_any(), &status).await?;
    }
    Ok(())
}

async fn describe(client: &mut Admin, name: &str) -> Result<Option<ObservedTopic>, AdminError> {
    match client
        .describe_topic(pb::DescribeTopicRequest { name: name.into() })
        .await
    {
        Ok(resp) => Ok(Some(ObservedTopic::from(resp.get_ref()))),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

async fn execute(
    client: &mut Admin,
    name: &str,
    action: &TopicAction,
) -> Result<ObservedTopic, AdminError> {
    let resp = match action {
        TopicAction::Create {
            partitions,
            replication_factor,
            config,
        } => {
            client
                .create_topic(pb::CreateTopicRequest {
                    name: name.into(),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    configs: config.clone().into_iter().collect(),
                    validate_only: false,
                })
                .await?
        }
        TopicAction::AddPartitions { total } => {
            client
                .add_partitions(pb::AddPartitionsRequest {
                    name: name.into(),
                    total_partitions: *total,
                })
                .await?
        }
        TopicAction::ReplaceConfig { config } => {
            client
                .alter_topic_config(pb::AlterTopicConfigRequest {
                    name: name.into(),
                    configs: config.clone().into_iter().collect(),
                    replace: true,
                })
                .await?
        }
        TopicAction::SetReplicationFactor { replication_factor } => {
            client
                .set_replication_factor(pb::SetReplicationFactorRequest {
                    topic: name.into(),
                    replication_factor: *replication_factor,
                })
                .await?;
            client
                .describe_topic(pb::DescribeTopicRequest { name: name.into() })
                .await?
        }
    };
    Ok(ObservedTopic::from(resp.get_ref()))
}

fn action_event(action: &TopicAction) -> (&'static str, String) {
    match action {
        TopicAction::Create {
            partitions,
            replication_factor,
            ..
        } => (
            "Created",
            format!("created topic with {partitions} partitions, replication factor {replication_factor}"),
        ),
        TopicAction::AddPartitions { total } => ("PartitionsAdded", format!("partitions increased to {total}")),
        TopicAction::ReplaceConfig { config } => ("ConfigUpdated", format!("topic config set to {config:?}")),
        TopicAction::SetReplicationFactor { replication_factor } => (
            "ReplicationFactorChanging",
            format!("moving partitions to replication factor {replication_factor}"),
        ),
    }
}

async fn apply_topic(topic: &Topic, ns: &str, ctx: &Context) -> Result<Action> {
    if unmanaged(topic) {
        write_status(
            topic,
            ns,
            ctx,
            None,
            Desired::not_ready(
                "Unmanaged",
                format!("{MANAGED_ANNOTATION}=false: the operator leaves this topic alone"),
            ),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), ns);
    let Some(cluster) = clusters.get_opt(&topic.spec.cluster_ref).await? else {
        write_status(
            topic,
            ns,
            ctx,
            None,
            Desired::not_ready(
                "ClusterNotFound",
                format!(
                    "Cluster {} does not exist in namespace {ns}",
                    topic.spec.cluster_ref
                ),
            ),
        )
        .await?;
        return Ok(Action::requeue(MISSING_CLUSTER_REQUEUE));
    };
    let name = topic.topic_name();
    let mut client = match ctx.admin.client(&cluster).await {
        Ok(c) => c,
        Err(e) => {
            write_status(
                topic,
                ns,
                ctx,
                None,
                Desired::not_ready("ClusterUnreachable", e.to_string()),
            )
            .await?;
            return Err(e.into());
        }
    };
    let result: Result<(Option<ObservedTopic>, Desired), AdminError> = async {
        let mut observed = describe(&mut client, &name).await?;
        let p = plan(&topic.spec, observed.as_ref(), cluster.spec.replicas);
        for action in &p.actions {
            observed = Some(execute(&mut client, &name, action).await?);
            let (reason, note) = action_event(action);
            ctx.event(topic, EventType::Normal, reason, "Reconcile", note)
                .await;
        }
        if !p.actions.is_empty() {
            // The last call's answer may predate the others; read once more.
            observed = describe(&mut client, &name).await?.or(observed);
        }
        Ok((observed, p.condition))
    }
    .await;
    match result {
        Ok((observed, cond)) => {
            if (cond.reason == "NotSupported" || cond.reason == "ReplicationFactorTooLarge")
                && !already_reported(topic, &cond.reason, &cond.message)
            {
                ctx.event(
                    topic,
                    EventType::Warning,
                    &cond.reason,
                    "Reconcile",
                    cond.message.clone(),
                )
                .await;
            }
            let settled = cond.ready;
            let moving = cond.reason == CHANGING_RF;
            write_status(topic, ns, ctx, observed.as_ref(), cond).await?;
            Ok(if moving {
                // Follow the moves until every partition has its new replicas.
                Action::requeue(MOVING_REQUEUE)
            } else if settled {
                Action::requeue(ctx.settings.resync)
            } else {
                // Only a spec change (or the cluster growing) can fix it.
                Action::requeue(ctx.settings.resync)
            })
        }
        Err(e) if e.is_invalid_argument() => {
            if !already_reported(topic, "BrokerRejected", &e.to_string()) {
                ctx.event(
                    topic,
                    EventType::Warning,
                    "BrokerRejected",
                    "Reconcile",
                    e.to_string(),
                )
                .await;
            }
            write_status(
                topic,
                ns,
                ctx,
                None,
                Desired::not_ready("BrokerRejected", e.to_string()),
            )
            .await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            write_status(
                topic,
                ns,
                ctx,
                None,
                Desired::not_ready("BrokerError", e.to_string()),
            )
            .await?;
            Err(e.into())
        }
    }
}

async fn cleanup_topic(topic: &Topic, ns: &str, ctx: &Context) -> Result<Action> {
    let name = topic.topic_name();
    if topic.annotations().contains_key(ALLOW_DELETION_ANNOTATION) {
        ctx.event(
            topic,
            EventType::Warning,
            "FinalizerSkipped",
            "Delete",
            format!("{ALLOW_DELETION_ANNOTATION} set: released without touching topic {name} on the brokers"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if topic.spec.deletion_policy == DeletionPolicy::Retain || unmanaged(topic) {
        ctx.event(
            topic,
            EventType::Normal,
            "Retained",
            "Delete",
            format!("topic {name} kept on the brokers"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), ns);
    let cluster = match clusters.get_opt(&topic.spec.cluster_ref).await? {
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        _ => {
            ctx.event(
                topic,
                EventType::Warning,
                "ClusterGone",
                "Delete",
                format!(
                    "Cluster {} is gone; released without deleting topic {name}",
                    topic.spec.cluster_ref
                ),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let outcome = async {
        let mut client = ctx.admin.client(&cluster).await?;
        match client
            .delete_topic(pb::DeleteTopicRequest { name: name.clone() })
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(AdminError::from(s)),
        }
    }
    .await;
    match outcome {
        Ok(existed) => {
            let note = if existed {
                format!("deleted topic {name}")
            } else {
                format!("topic {name} was already gone")
            };
            ctx.event(topic, EventType::Normal, "Deleted", "Delete", note)
                .await;
            Ok(Action::await_change())
        }
        Err(e) if deleting_for(&topic.metadata) >= ctx.settings.finalizer_timeout => {
            ctx.event(
                topic,
                EventType::Warning,
                "FinalizerTimedOut",
                "Delete",
                format!(
                    "cluster unreachable for {:?} ({e}); released without deleting topic {name}",
                    ctx.settings.finalizer_timeout
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn error_policy(topic: Arc<Topic>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(CONTROLLER, topic.as_ref(), error, &ctx)
}

/// The part of a Cluster its Topics depend on: where its admin API is, its phase
/// (a scale-in's drain or a scale-out moved replicas once the phase changes) and
/// the rebalance it runs (a finished round moved replicas, which the Topics'
/// assignment summaries show). Status patches that change only progress messages,
/// conditions or counts (every few seconds during a rollout) must not re-reconcile
/// every Topic of the cluster.
#[derive(Default)]
struct ClusterChanges {
    last: std::sync::Mutex<std::collections::HashMap<ClusterKey, ClusterFingerprint>>,
}

type ClusterKey = (Option<String>, String);

#[derive(Debug, Clone, PartialEq)]
struct ClusterFingerprint {
    admin: Vec<String>,
    phase: Option<crate::crd::cluster::ClusterPhase>,
    /// (id, phase) of the latest rebalance.
    rebalance: Option<(String, String)>,
}

impl ClusterChanges {
    /// Whether `cluster` changed in a way its Topics care about since last seen
    /// (the first sighting always matters).
    fn matters(&self, cluster: &Cluster) -> bool {
        let key = (cluster.namespace(), cluster.name_any());
        let status = cluster.status.as_ref();
        let now = ClusterFingerprint {
            admin: admin_addresses(cluster),
            phase: status.and_then(|s| s.phase),
            rebalance: status
                .and_then(|s| s.rebalance.as_ref())
                .map(|r| (r.id.clone(), r.phase.clone())),
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(key, now.clone()).as_ref() != Some(&now)
    }
}

/// Runs the Topic controller (one namespace or all). A Cluster change (e.g. its
/// brokers getting addresses) re-reconciles the Topics that reference it.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let (topics, clusters) = match &namespace {
        Some(ns) => (
            Api::<Topic>::namespaced(ctx.client.clone(), ns),
            Api::<Cluster>::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::<Topic>::all(ctx.client.clone()),
            Api::<Cluster>::all(ctx.client.clone()),
        ),
    };
    let controller = Controller::new(topics, watcher::Config::default());
    let store = controller.store();
    let seen = ClusterChanges::default();
    controller
        .watches(
            clusters,
            watcher::Config::default(),
            move |cluster: Cluster| {
                if !seen.matters(&cluster) {
                    return Vec::new();
                }
                let ns = cluster.namespace();
                let name = cluster.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|t| t.namespace() == ns && t.spec.cluster_ref == name)
                    .map(|t| kube::runtime::reflector::ObjectRef::from(t.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "topic reconcile error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(status: serde_json::Value) -> Cluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "ns"},
            "spec": {}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_cluster_changes_that_move_the_admin_api_re_reconcile_topics() {
        let seen = ClusterChanges::default();
        let broker = |ip: &str, phase: &str| {
            serde_json::json!({
                "phase": phase,
                "brokers": [{"id": 0, "pod": "demo-0", "address": ip, "state": "Ready"}],
            })
        };
        let a = cluster(broker("10.0.0.1", "Running"));
        assert_eq!(admin_addresses(&a).len(), 1, "{:?}", admin_addresses(&a));
        assert!(seen.matters(&a), "first sighting");
        assert!(!seen.matters(&a), "the same status again");
        let mut progress = broker("10.0.0.1", "Running");
        progress["conditions"] = serde_json::json!([{"type": "Ready", "status": "True",
            "reason": "Running", "message": "3 of 3 brokers ready",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]);
        assert!(
            !seen.matters(&cluster(progress)),
            "a condition (progress message) change alone"
        );
        assert!(
            seen.matters(&cluster(broker("10.0.0.1", "RollingRestart"))),
            "a new phase"
        );
        let mut done = broker("10.0.0.1", "RollingRestart");
        done["rebalance"] = serde_json::json!({"id": "r1", "phase": "Done",
            "totalMoves": 3, "completedMoves": 3});
        assert!(seen.matters(&cluster(done)), "a rebalance round finished");
        assert!(seen.matters(&cluster(broker("10.0.0.2", "Running"))));
    }
}
