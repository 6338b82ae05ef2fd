//! The I/O shell of the ConsumerGroup controller: read the group from the
//! admin API, run a requested offset reset, keep the HPA in line with
//! `spec.autoscaling`, write the status, come back after the refresh interval.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};

use crate::admin::{self, Admin};
use crate::apply::{apply, apply_status};
use crate::context::{object_key, Context};
use crate::crd::condition::{self, Desired};
use crate::crd::consumergroup::{OffsetResetPhase, OffsetResetStatus};
use crate::crd::{Cluster, ConsumerGroup, ConsumerGroupStatus};
use crate::{Error, Result, FIELD_MANAGER};

use super::hpa::{self, HpaTarget};
use super::observe::{observe, Observation};
use super::reset::{self, Decision};
use super::status::{from_description, unknown_group};

const CONTROLLER: &str = "consumergroup";

#[tracing::instrument(
    level = "debug",
    name = "reconcile",
    skip_all,
    fields(
        otel.name = "reconcile ConsumerGroup",
        k8s.namespace = group.metadata.namespace.as_deref().unwrap_or(""),
        k8s.name = group.metadata.name.as_deref().unwrap_or(""),
    )
)]
pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(CONTROLLER);
    let result = reconcile_inner(&group, &ctx).await;
    timer.finish(&ctx.metrics);
    if result.is_ok() {
        ctx.backoff.reset(&object_key(group.as_ref()));
    }
    result
}

async fn write(
    group: &ConsumerGroup,
    api: &Api<ConsumerGroup>,
    mut status: ConsumerGroupStatus,
    cond: Desired,
) -> Result<()> {
    let previous = group.status.clone().unwrap_or_default();
    status.conditions = condition::merge(
        &previous.conditions,
        &[cond],
        group.metadata.generation,
        Timestamp::now(),
    );
    status.observed_generation = group.metadata.generation;
    if unchanged(&previous, &status) {
        // Nothing to tell: a write every refresh would only bump the object's
        // resourceVersion and wake every watcher of ConsumerGroups.
        return Ok(());
    }
    apply_status(api, &group.name_any(), &status).await
}

/// Whether `new` says nothing `previous` does not (the refresh time aside).
fn unchanged(previous: &ConsumerGroupStatus, new: &ConsumerGroupStatus) -> bool {
    let mut same_time = new.clone();
    same_time.last_refresh = previous.last_refresh.clone();
    previous.last_refresh.is_some() && &same_time == previous
}

async fn reconcile_inner(group: &ConsumerGroup, ctx: &Context) -> Result<Action> {
    let ns = group
        .namespace()
        .ok_or_else(|| Error::Invalid("ConsumerGroup has no namespace".into()))?;
    let api: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = group.status.clone().unwrap_or_default();
    // Our own status write triggers a reconcile too: when the status is fresh
    // for this generation, just wait for the next refresh.
    if let Some(wait) = fresh_for(group, ctx.settings.group_refresh, Timestamp::now()) {
        return Ok(Action::requeue(wait));
    }
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(&group.spec.cluster_ref).await? else {
        let msg = format!(
            "Cluster {} does not exist in namespace {ns}",
            group.spec.cluster_ref
        );
        let mut status = previous;
        status.hpa = sync_hpa(group, ctx, &ns, status.partitions.unwrap_or(0)).await?;
        write(
            group,
            &api,
            status,
            Desired::not_ready("ClusterNotFound", msg),
        )
        .await?;
        return Ok(Action::requeue(ctx.settings.group_refresh));
    };
    let observed = async {
        let mut client = ctx.admin.client(&cluster).await?;
        let obs = observe(&mut client, &group.spec).await?;
        Ok::<_, admin::AdminError>((client, obs))
    }
    .await;
    let (mut client, mut obs) = match observed {
        Ok(v) => v,
        Err(e) => {
            let mut status = previous;
            status.hpa = sync_hpa(group, ctx, &ns, status.partitions.unwrap_or(0)).await?;
            write(
                group,
                &api,
                status,
                Desired::not_ready("BrokerError", e.to_string()),
            )
            .await?;
            return Err(e.into());
        }
    };

    let state = obs
        .description
        .as_ref()
        .map(|d| (d.state.as_str(), d.members.len()));
    let mut recorded = previous.offset_reset.clone();
    if recorded
        .as_ref()
        .is_some_and(|r| r.phase == OffsetResetPhase::Running)
    {
        // The watch cache may predate this process's own final write of a reset it
        // just ran: only a Running the API server still holds means a stopped operator.
        recorded = api
            .get_status(&group.name_any())
            .await?
            .status
            .and_then(|s| s.offset_reset);
    }
    let offset_reset = match reset::decide(&group.spec, recorded.as_ref(), state) {
        Decision::Keep => recorded.clone(),
        Decision::Wait(st) => {
            let was_pending = recorded.as_ref().is_some_and(|p| {
                p.request_id == st.request_id && p.phase == OffsetResetPhase::Pending
            });
            if !was_pending {
                let note = st.message.clone().unwrap_or_default();
                ctx.event(
                    group,
                    EventType::Normal,
                    "OffsetResetPending",
                    "ResetOffsets",
                    note,
                )
                .await;
            }
            Some(st)
        }
        Decision::Fail(st) => {
            let note = st.message.clone().unwrap_or_default();
            ctx.event(
                group,
                EventType::Warning,
                "OffsetResetFailed",
                "ResetOffsets",
                note,
            )
            .await;
            Some(st)
        }
        Decision::Execute(req) => run_reset(group, &api, ctx, &mut client, req, &mut obs).await?,
    };

    let now = Timestamp::now();
    let (mut status, cond) = match &obs.description {
        Some(desc) => {
            let status = from_description(&group.spec, desc, obs.partitions);
            let state = status.state.clone().unwrap_or_default();
            (
                status,
                Desired::ready("Observed", format!("group is {state}")),
            )
        }
        None => (
            unknown_group(&group.spec, obs.partitions),
            Desired::not_ready(
                "GroupNotFound",
                format!(
                    "group {} has not been created by a client yet",
                    group.spec.group_id
                ),
            ),
        ),
    };
    status.offset_reset = offset_reset;
    status.last_refresh = Some(now.to_string());
    status.hpa = sync_hpa(group, ctx, &ns, obs.partitions).await?;
    write(group, &api, status, cond).await?;
    Ok(Action::requeue(ctx.settings.group_refresh))
}

/// Runs one offset reset: re-reads the object to be sure the request is still
/// undone, records Running (guarded by the resourceVersion, so two writers
/// cannot both send it), calls the broker, and returns the outcome to record.
/// On success the group description in `obs` is replaced by the broker's answer.
async fn run_reset(
    group: &ConsumerGroup,
    api: &Api<ConsumerGroup>,
    ctx: &Context,
    client: &mut Admin,
    req: crate::admin::pb::ResetGroupOffsetsRequest,
    obs: &mut Observation,
) -> Result<Option<OffsetResetStatus>> {
    let Some(spec) = group.spec.offset_reset.clone() else {
        return Ok(None);
    };
    let name = group.name_any();
    // The watch cache may lag behind our own last write: decide again on a fresh read.
    let fresh = api.get_status(&name).await?;
    let recorded = fresh.status.as_ref().and_then(|s| s.offset_reset.clone());
    let state = obs
        .description
        .as_ref()
        .map(|d| (d.state.as_str(), d.members.len()));
    if fresh.spec.offset_reset.as_ref() != Some(&spec)
        || !matches!(
            reset::decide(&fresh.spec, recorded.as_ref(), state),
            Decision::Execute(_)
        )
    {
        return Ok(recorded);
    }
    let running = reset::running(&spec);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": fresh.resource_version()},
        "status": {"offsetReset": running},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&name, &params, &Patch::Merge(&patch))
        .await?;
    tracing::info!(group = %name, request_id = %spec.request_id, target = %spec.target, "resetting offsets");
    let result = client
        .reset_group_offsets(req)
        .await
        .map(|r| r.into_inner())
        .map_err(admin::AdminError::from);
    let outcome = reset::outcome(
        &spec,
        &group.spec.topics,
        &result.as_ref().map(|_| ()).map_err(Clone::clone),
        Timestamp::now(),
    );
    match (&result, outcome.phase) {
        (Ok(desc), _) => {
            obs.description = Some(desc.clone());
            let note = outcome.message.clone().unwrap_or_default();
            ctx.event(
                group,
                EventType::Normal,
                "OffsetsReset",
                "ResetOffsets",
                note,
            )
            .await;
        }
        (Err(e), OffsetResetPhase::Failed) => {
            tracing::warn!(group = %name, error = %e, "offset reset failed");
            let note = outcome.message.clone().unwrap_or_default();
            ctx.event(
                group,
                EventType::Warning,
                "OffsetResetFailed",
                "ResetOffsets",
                note,
            )
            .await;
        }
        (Err(e), _) => {
            tracing::info!(group = %name, error = %e, "offset reset deferred");
        }
    }
    Ok(Some(outcome))
}

/// Creates or updates the HPA `spec.autoscaling` asks for, or deletes the one
/// this ConsumerGroup owns when autoscaling is off. Returns the HPA's name.
async fn sync_hpa(
    group: &ConsumerGroup,
    ctx: &Context,
    ns: &str,
    partitions: i32,
) -> Result<Option<String>> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let name = group.name_any();
    let uid = group.uid().unwrap_or_default();
    let existing = api.get_opt(&name).await?;
    let ours = existing.as_ref().map(|h| hpa::owned_by(h, &uid));
    let Some(a) = &group.spec.autoscaling else {
        ctx.resolved(group, "AutoscalerConflict", "");
        if ours == Some(true) {
            api.delete(&name, &DeleteParams::default()).await?;
            tracing::info!(group = %name, "deleted HorizontalPodAutoscaler");
            ctx.event(
                group,
                EventType::Normal,
                "AutoscalerDeleted",
                "Autoscale",
                format!("deleted HorizontalPodAutoscaler {name}: spec.autoscaling was removed"),
            )
            .await;
        }
        return Ok(None);
    };
    if ours == Some(false) {
        ctx.warn_once(
            group,
            "AutoscalerConflict",
            "Autoscale",
            "",
            format!("HorizontalPodAutoscaler {name} exists and is not owned by this ConsumerGroup; leaving it alone"),
        )
        .await;
        return Ok(None);
    }
    ctx.resolved(group, "AutoscalerConflict", "");
    let owner = group
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("ConsumerGroup has no uid yet".into()))?;
    let target = HpaTarget {
        group: &name,
        namespace: ns,
        owner,
    };
    let desired = hpa::build(&target, a, partitions);
    apply(&api, &desired).await?;
    if existing.is_none() {
        tracing::info!(group = %name, target = %a.target_ref.name, "created HorizontalPodAutoscaler");
        ctx.event(
            group,
            EventType::Normal,
            "AutoscalerCreated",
            "Autoscale",
            format!(
                "created HorizontalPodAutoscaler {name} scaling {} {} on {} (lagPerReplica {})",
                a.target_ref.kind,
                a.target_ref.name,
                hpa::METRIC_NAME,
                a.lag_per_replica
            ),
        )
        .await;
    }
    Ok(Some(name))
}

/// Time left until the next refresh when the status is current, else None.
pub fn fresh_for(
    group: &ConsumerGroup,
    refresh: std::time::Duration,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let status = group.status.as_ref()?;
    if status.observed_generation != group.metadata.generation {
        return None;
    }
    let last: Timestamp = status.last_refresh.as_deref()?.parse().ok()?;
    let age = std::time::Duration::try_from(now.duration_since(last)).ok()?;
    refresh.checked_sub(age).filter(|d| !d.is_zero())
}

pub fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    if error.is_permanent() {
        return Action::await_change();
    }
    let delay = ctx
        .backoff
        .next(&object_key(group.as_ref()))
        .max(std::time::Duration::from_secs(1));
    tracing::warn!(group = %group.name_any(), %error, ?delay, "refresh failed");
    Action::requeue(delay)
}

pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let api = match &namespace {
        Some(ns) => Api::<ConsumerGroup>::namespaced(ctx.client.clone(), ns),
        None => Api::<ConsumerGroup>::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "consumergroup reconcile error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(last_refresh: &str, observed: i64) -> ConsumerGroup {
        serde_yaml::from_str(&format!(
            "apiVersion: strata.dev/v1alpha1\nkind: ConsumerGroup\nmetadata:\n  name: g\n  generation: 2\nspec:\n  clusterRef: demo\n  groupId: g\nstatus:\n  lastRefresh: \"{last_refresh}\"\n  observedGeneration: {observed}"
        ))
        .expect("group")
    }

    #[test]
    fn a_status_that_differs_only_in_its_refresh_time_is_not_written() {
        let old = ConsumerGroupStatus {
            state: Some("Stable".into()),
            total_lag: Some(5),
            last_refresh: Some("2025-01-01T00:00:05Z".into()),
            ..ConsumerGroupStatus::default()
        };
        let mut new = old.clone();
        new.last_refresh = Some("2025-01-01T00:00:20Z".into());
        assert!(unchanged(&old, &new));
        new.total_lag = Some(6);
        assert!(!unchanged(&old, &new));
        // The first status is always written.
        assert!(!unchanged(&ConsumerGroupStatus::default(), &old));
    }

    #[test]
    fn a_fresh_status_defers_the_refresh() {
        let now: Timestamp = "2025-01-01T00:00:10Z".parse().expect("ts");
        let g = group("2025-01-01T00:00:05Z", 2);
        assert_eq!(
            fresh_for(&g, Duration::from_secs(15), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(fresh_for(&g, Duration::from_secs(5), now), None);
        // A spec change (new generation) refreshes at once.
        assert_eq!(
            fresh_for(
                &group("2025-01-01T00:00:05Z", 1),
                Duration::from_secs(15),
                now
            ),
            None
        );
    }
}
