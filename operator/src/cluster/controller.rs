//! The I/O shell of the Cluster controller: dereference → validate → build →
//! apply → status, run by `kube::runtime::Controller`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};

use crate::apply::{apply, apply_status};
use crate::context::{object_key, Context};
use crate::crd::Cluster;
use crate::{Error, Result};

use super::rebalancer;
use super::rollout::{self, Activity, AdminStep, BrokerView, ClusterView};
use super::status::{self, Observed};
use super::storage::{self, StorageChange};
use super::{build, selector_string, validate};
use crate::admin::pb;
use crate::crd::cluster::RebalanceStatus;

const CONTROLLER: &str = "cluster";
/// Requeue interval while brokers are still coming up.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);

/// What exists for a cluster (the only reads of a reconcile).
struct World {
    statefulset: Option<StatefulSet>,
    pods: Vec<Pod>,
    /// The brokers' own view (None: no admin endpoint answered, e.g. still starting).
    view: Option<ClusterView>,
}

async fn dereference(cluster: &Cluster, ns: &str, ctx: &Context) -> Result<World> {
    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let name = cluster.name_any();
    let statefulset = sts.get_opt(&name).await?;
    let view = if statefulset.is_some() {
        describe(cluster, ctx).await
    } else {
        None
    };
    Ok(World {
        statefulset,
        pods: pods
            .list(&ListParams::default().labels(&selector_string(&name)))
            .await?
            .items,
        view,
    })
}

/// The cluster as its brokers describe it.
async fn describe(cluster: &Cluster, ctx: &Context) -> Option<ClusterView> {
    let mut client = ctx.admin.client(cluster).await.ok()?;
    match client.describe_cluster(pb::DescribeClusterRequest {}).await {
        Ok(r) => {
            let d = r.into_inner();
            Some(ClusterView {
                brokers: d
                    .brokers
                    .iter()
                    .map(|b| BrokerView {
                        id: b.id,
                        rack: (!b.rack.is_empty()).then(|| b.rack.clone()),
                        draining: b.state() == pb::BrokerState::Draining,
                        fenced: b.state() == pb::BrokerState::Fenced,
                        replicas: b.replicas,
                        leaders: b.leaders,
                        min_isr_at_risk: b.min_isr_at_risk,
                    })
                    .collect(),
                under_replicated: d.under_replicated_partitions,
                offline: d.offline_partitions,
                min_isr_no_spare: d.min_isr_no_spare_topics,
            })
        }
        Err(e) => {
            tracing::debug!(cluster = %cluster.name_any(), error = %e, "describe cluster failed");
            None
        }
    }
}

/// Grows each broker's data claim to `to` (the StorageClass must allow volume
/// expansion). A refusal is a log line, retried on later reconciles, and a
/// Warning event the first time; it never holds up the rest of the reconcile.
async fn expand_claims(
    cluster: &Cluster,
    ctx: &Context,
    ns: &str,
    replicas: i32,
    from: &str,
    to: &str,
) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let name = cluster.name_any();
    for ordinal in 0..replicas {
        let claim = format!("data-{name}-{ordinal}");
        let pvc = match pvcs.get_opt(&claim).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%claim, error = %e, "cannot read a broker's claim to expand it");
                continue;
            }
        };
        if !storage::needs_expansion(&pvc, to) {
            ctx.resolved(cluster, "VolumeExpansionFailed", &claim);
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": to}}}});
        match pvcs
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.resolved(cluster, "VolumeExpansionFailed", &claim);
                ctx.event(
                    cluster,
                    EventType::Normal,
                    "VolumeExpanding",
                    "ExpandVolume",
                    format!("expanding {claim} from {from} to {to}"),
                )
                .await
            }
            Err(e) => {
                let why = match e {
                    kube::Error::Api(s) => s.message,
                    other => other.to_string(),
                };
                tracing::warn!(%claim, error = %why, "volume expansion refused");
                ctx.warn_once(
                    cluster,
                    "VolumeExpansionFailed",
                    "ExpandVolume",
                    &claim,
                    format!("cannot expand {claim} to {to}: {why}"),
                )
                .await;
            }
        }
    }
}

/// Runs the rollout's admin calls; a refused drain is reported (and stops the
/// scale-in where it is), not retried hot; a refused unregistration is only an
/// event (the next reconcile tries again). A refusal's Warning is published
/// once, not at every retry.
async fn run_steps(cluster: &Cluster, ctx: &Context, steps: &[AdminStep]) -> Option<String> {
    if steps.is_empty() {
        return None;
    }
    let mut client = match ctx.admin.client(cluster).await {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    let mut failure = None;
    for step in steps {
        let (id, verb, done, refused, action, result) = match step {
            AdminStep::Drain(id) => (
                *id,
                "drain",
                "Draining",
                "DrainFailed",
                "DrainBroker",
                client
                    .drain_broker(pb::DrainBrokerRequest { broker_id: *id })
                    .await
                    .map(drop),
            ),
            AdminStep::Undrain(id) => (
                *id,
                "undrain",
                "Undrained",
                "DrainFailed",
                "DrainBroker",
                client
                    .undrain_broker(pb::DrainBrokerRequest { broker_id: *id })
                    .await
                    .map(drop),
            ),
            AdminStep::Unregister(id) => (
                *id,
                "unregister",
                "Unregistered",
                "UnregisterFailed",
                "UnregisterBroker",
                client
                    .unregister_broker(pb::UnregisterBrokerRequest { broker_id: *id })
                    .await
                    .map(drop),
            ),
        };
        let subject = id.to_string();
        match result {
            Ok(()) => {
                ctx.resolved(cluster, refused, &subject);
                ctx.event(
                    cluster,
                    EventType::Normal,
                    done,
                    action,
                    format!("{verb} broker {id}"),
                )
                .await
            }
            Err(e) => {
                let msg = format!("cannot {verb} broker {id}: {}", e.message());
                ctx.warn_once(cluster, refused, action, &subject, msg.clone())
                    .await;
                if !matches!(step, AdminStep::Unregister(_)) {
                    failure = Some(msg);
                }
            }
        }
    }
    failure
}

#[tracing::instrument(
    level = "debug",
    name = "reconcile",
    skip_all,
    fields(
        otel.name = "reconcile Cluster",
        k8s.namespace = cluster.metadata.namespace.as_deref().unwrap_or(""),
        k8s.name = cluster.metadata.name.as_deref().unwrap_or(""),
    )
)]
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(CONTROLLER);
    let result = reconcile_inner(&cluster, &ctx).await;
    timer.finish(&ctx.metrics);
    if result.is_ok() {
        ctx.backoff.reset(&object_key(cluster.as_ref()));
    }
    result
}

async fn reconcile_inner(cluster: &Cluster, ctx: &Context) -> Result<Action> {
    let ns = cluster
        .namespace()
        .ok_or_else(|| Error::Invalid("Cluster has no namespace".into()))?;
    let name = cluster.name_any();
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let world = dereference(cluster, &ns, ctx).await?;

    // A storage change the existing volumes cannot take is an invalid spec too.
    let storage_change = storage::plan(world.statefulset.as_ref(), &cluster.spec.storage);
    let checked = validate(cluster).and_then(|v| match &storage_change {
        StorageChange::Refused(why) => Err(Error::Invalid(why.clone())),
        _ => Ok(v),
    });
    let mut validated = match checked {
        Ok(v) => v,
        Err(Error::Invalid(msg)) => {
            // Report and wait for the user to change the spec; no hot retry.
            let observed = Observed {
                statefulset: world.statefulset.as_ref(),
                pods: &world.pods,
                invalid: Some(msg.clone()),
                voters: None,
                activity: None,
                rebalance: cluster.status.as_ref().and_then(|s| s.rebalance.clone()),
                internal_tls: None,
            };
            let new = status::compute(cluster, &observed, Timestamp::now());
            if cluster.status.as_ref() != Some(&new) {
                ctx.event(cluster, EventType::Warning, "InvalidSpec", "Validate", msg)
                    .await;
                apply_status(&clusters, &name, &new).await?;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };

    // The admin listener's TLS step: where it starts (a new secured Cluster on
    // TLS, a running one on the first of three rolls), and the next step once
    // every broker runs the current one.
    let wants =
        super::security::wants_security(&validated.spec) && validated.spec.listeners.admin_tls;
    let brokers_exist = world.statefulset.is_some();
    let step =
        super::security::next_internal_tls(validated.internal_tls, wants, brokers_exist, false);
    if validated.internal_tls.is_none() && step.is_some() {
        // Recorded before any broker is built with it: a reconcile that fails
        // later must not find brokers and take the Cluster for a running one.
        clusters
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"status": {"internalTls": step}})),
            )
            .await?;
    }
    validated.internal_tls = step;
    let mut desired = build::build(&validated);
    if step.is_some() {
        let rolled = rollout::rolled_out(
            world.statefulset.as_ref(),
            &world.pods,
            rollout::template_hash(&desired.statefulset),
        );
        let next = super::security::next_internal_tls(step, wants, brokers_exist, rolled);
        if next != step {
            ctx.event(
                cluster,
                EventType::Normal,
                "InternalTls",
                "SwitchAdminListenerToTls",
                format!("every broker runs {step:?}; rolling them to {next:?}"),
            )
            .await;
            validated.internal_tls = next;
            desired = build::build(&validated);
        }
    }
    storage::keep_claim_templates(&mut desired.statefulset, world.statefulset.as_ref());
    let mut rollout = rollout::plan(&rollout::Inputs {
        desired: validated.spec.replicas,
        template_hash: rollout::template_hash(&desired.statefulset),
        statefulset: world.statefulset.as_ref(),
        pods: &world.pods,
        view: world.view.as_ref(),
    });
    if let Some(failure) = run_steps(cluster, ctx, &rollout.steps).await {
        // A refused drain stops the scale-in where it is and says why; the
        // StatefulSet keeps every broker that still holds data.
        if let Some(a) = rollout.activity.as_mut() {
            a.message = format!("{}; {failure}", a.message);
        }
    }
    rollout.apply_to(&mut desired.statefulset);
    // Certificates and the admin token exist before a broker mounts them.
    super::security::ensure_secrets(&validated, &ctx.client).await?;
    apply(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &desired.config_map,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    apply(&services, &desired.headless_service).await?;
    apply(&services, &desired.bootstrap_service).await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let applied = apply(&sts_api, &desired.statefulset).await?;
    if let StorageChange::Expand { from, to } = &storage_change {
        expand_claims(cluster, ctx, &ns, rollout.replicas, from, to).await;
    }
    apply(
        &Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns),
        &desired.pdb,
    )
    .await?;

    let previous_replicas = world
        .statefulset
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas);
    match previous_replicas {
        None => {
            ctx.event(
                cluster,
                EventType::Normal,
                "Provisioning",
                "CreateBrokers",
                format!(
                    "created StatefulSet {name} with {} brokers",
                    validated.spec.replicas
                ),
            )
            .await
        }
        Some(r) if r != rollout.replicas => {
            ctx.event(
                cluster,
                EventType::Normal,
                "Scaling",
                "ScaleBrokers",
                format!("scaling brokers {r} → {}", rollout.replicas),
            )
            .await
        }
        Some(_) => {}
    }

    let Balance {
        status: rebalance,
        activity,
        again: rebalance_due,
    } = balance(
        cluster,
        ctx,
        &world,
        &rollout,
        validated.reassignment_throttle,
    )
    .await;
    let observed = Observed {
        statefulset: Some(&applied),
        pods: &world.pods,
        invalid: None,
        voters: Some(validated.voters),
        activity: activity.as_ref(),
        rebalance,
        internal_tls: validated.internal_tls,
    };
    let new = status::compute(cluster, &observed, Timestamp::now());
    let was_running = cluster.status.as_ref().and_then(|s| s.phase) == new.phase;
    if cluster.status.as_ref() != Some(&new) {
        if !was_running && new.phase == Some(crate::crd::cluster::ClusterPhase::Running) {
            ctx.event(
                cluster,
                EventType::Normal,
                "Running",
                "Reconcile",
                format!("all {} brokers ready", new.ready_replicas),
            )
            .await;
        }
        apply_status(&clusters, &name, &new).await?;
    }
    if new.phase == Some(crate::crd::cluster::ClusterPhase::Running)
        && !rollout.forgetting
        && !rebalance_due
    {
        Ok(Action::requeue(ctx.settings.resync))
    } else {
        Ok(Action::requeue(PROGRESS_REQUEUE))
    }
}

/// What the rebalancer did in one reconcile.
struct Balance {
    /// The rebalance status to record.
    status: Option<RebalanceStatus>,
    activity: Option<Activity>,
    /// Look again soon: a round just finished (the next may be due), or a round
    /// is held by something that clears by itself.
    again: bool,
}

/// Runs the rebalancer when the cluster is otherwise settled (or a rebalance it
/// started is still running).
async fn balance(
    cluster: &Cluster,
    ctx: &Context,
    world: &World,
    rollout: &rollout::Rollout,
    throttle: Option<u64>,
) -> Balance {
    let previous = cluster.status.as_ref().and_then(|s| s.rebalance.clone());
    let activity = rollout.activity.clone();
    let running = previous.as_ref().is_some_and(rebalancer::in_progress);
    let keep = |again| Balance {
        status: previous.clone(),
        activity: activity.clone(),
        again,
    };
    let ready = world
        .pods
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count() as i32;
    let enabled = cluster.spec.auto_rebalance.unwrap_or(true);
    let hold = rebalancer::hold(
        enabled,
        world.view.as_ref(),
        activity.as_ref(),
        ready,
        rollout.replicas,
    );
    let Some(view) = world.view.as_ref() else {
        return keep(true);
    };
    // The throttle is kept whether or not a round runs now, so a reassignment
    // started by hand (`strata topic reassign`) is throttled too.
    if let Ok(mut client) = ctx.admin.client(cluster).await {
        if let Err(e) = rebalancer::set_throttle(&mut client, throttle).await {
            tracing::warn!(cluster = %cluster.name_any(), error = %e.message(), "cannot set the reassignment throttle");
        }
    }
    if !running {
        if let Some(h) = hold {
            if h.transient() {
                tracing::info!(cluster = %cluster.name_any(), reason = %h, "rebalance round skipped");
            }
            return keep(h.transient());
        }
    }
    let mut client = match ctx.admin.client(cluster).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(cluster = %cluster.name_any(), error = %e, "rebalancer: no admin endpoint");
            return keep(true);
        }
    };
    match rebalancer::step(&mut client, previous.as_ref(), view, rollout.replicas).await {
        Ok(out) => {
            if let (Some(n), Some(s)) = (out.submitted, out.status.as_ref()) {
                ctx.event(
                    cluster,
                    EventType::Normal,
                    "Rebalancing",
                    "ReassignPartitions",
                    format!(
                        "submitted reassignment {}: {n} partition moves to even out the brokers",
                        s.id
                    ),
                )
                .await;
            }
            if let Some(s) = out.status.as_ref().filter(|s| s.phase == "Failed") {
                if previous.as_ref().map(|p| p.phase.as_str()) != Some("Failed") {
                    ctx.event(
                        cluster,
                        EventType::Warning,
                        "RebalanceFailed",
                        "ReassignPartitions",
                        format!(
                            "reassignment {} failed: {}",
                            s.id,
                            s.message.clone().unwrap_or_default()
                        ),
                    )
                    .await;
                }
            }
            // A round that just finished (at most MAX_MOVES moves) may leave more
            // to do; one still running is followed anyway.
            let finished = running
                && out
                    .status
                    .as_ref()
                    .is_some_and(|r| !rebalancer::in_progress(r));
            Balance {
                again: finished || out.submitted.is_some(),
                status: out.status.or(previous),
                activity: activity.or(out.activity),
            }
        }
        Err(e) => {
            tracing::warn!(cluster = %cluster.name_any(), error = %e, "rebalancer step failed");
            keep(true)
        }
    }
}

pub fn error_policy(cluster: Arc<Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.next(&object_key(cluster.as_ref()));
    tracing::warn!(cluster = %cluster.name_any(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the Cluster controller on `api` (one namespace or all) until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let api = |c: &kube::Client| match &namespace {
        Some(ns) => Api::<Cluster>::namespaced(c.clone(), ns),
        None => Api::<Cluster>::all(c.clone()),
    };
    let owned = |c: &kube::Client| -> (
        Api<StatefulSet>,
        Api<Service>,
        Api<ConfigMap>,
        Api<PodDisruptionBudget>,
    ) {
        match &namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (sts, svc, cm, pdb) = owned(&client);
    let owned_cfg =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=strata-operator");
    Controller::new(api(&client), watcher::Config::default())
        .owns(sts, owned_cfg.clone())
        .owns(svc, owned_cfg.clone())
        .owns(cm, owned_cfg.clone())
        .owns(pdb, owned_cfg)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "cluster reconcile error"),
            }
        })
        .await;
}
