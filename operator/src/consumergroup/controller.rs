//! The I/O shell of the ConsumerGroup controller: read the group from the
//! admin API, write the status, come back after the refresh interval.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};

use crate::admin::{self, pb};
use crate::apply::apply_status;
use crate::cluster::status::admin_addresses;
use crate::context::{object_key, Context};
use crate::crd::condition::{self, Desired};
use crate::crd::{Cluster, ConsumerGroup, ConsumerGroupStatus};
use crate::{Error, Result};

use super::status::{from_description, offset_reset_outcome};

const CONTROLLER: &str = "consumergroup";

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
    apply_status(api, &group.name_any(), &status).await
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
        write(
            group,
            &api,
            previous,
            Desired::not_ready("ClusterNotFound", msg),
        )
        .await?;
        return Ok(Action::requeue(ctx.settings.group_refresh));
    };
    let described = async {
        let mut client = admin::connect(&admin_addresses(&cluster)).await?;
        let resp = client
            .describe_group(pb::DescribeGroupRequest {
                group_id: group.spec.group_id.clone(),
            })
            .await
            .map_err(admin::AdminError::from)?;
        Ok::<_, admin::AdminError>(resp.into_inner())
    }
    .await;
    match described {
        Ok(desc) => {
            let mut status = from_description(&group.spec, &desc);
            let state = status.state.clone().unwrap_or_default();
            status.offset_reset = offset_reset_outcome(&group.spec, &state);
            status.last_refresh = Some(Timestamp::now().to_string());
            write(
                group,
                &api,
                status,
                Desired::ready("Observed", format!("group is {state}")),
            )
            .await?;
        }
        Err(e) if e.is_not_found() => {
            let status = ConsumerGroupStatus {
                state: Some("Unknown".into()),
                members: Some(0),
                last_refresh: Some(Timestamp::now().to_string()),
                ..ConsumerGroupStatus::default()
            };
            let msg = format!(
                "group {} has not been created by a client yet",
                group.spec.group_id
            );
            write(
                group,
                &api,
                status,
                Desired::not_ready("GroupNotFound", msg),
            )
            .await?;
        }
        Err(e) => {
            write(
                group,
                &api,
                previous,
                Desired::not_ready("BrokerError", e.to_string()),
            )
            .await?;
            return Err(e.into());
        }
    }
    Ok(Action::requeue(ctx.settings.group_refresh))
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
