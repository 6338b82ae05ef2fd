//! The I/O shell of the User controller: the Secret (created once, its password
//! or certificate kept until it must change), the SCRAM credential and the ACLs
//! on the brokers (through the admin API), the status; the finalizer removes
//! the credential and the ACLs. Nothing is written when nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};

use super::plan::{self, Credential};
use super::FINALIZER;
use crate::admin::{pb, Admin, AdminError};
use crate::apply::apply_status;
use crate::cluster::certs::{self, Leaf};
use crate::cluster::security;
use crate::context::{deleting_for, finalizer_error, object_key, retry_later, Context};
use crate::crd::condition::{self, Desired};
use crate::crd::user::{User, UserAuthenticationType, UserStatus};
use crate::crd::Cluster;
use crate::{Error, Result};

const CONTROLLER: &str = "user";
/// Retry interval while the referenced Cluster does not exist.
const MISSING_CLUSTER_REQUEUE: Duration = Duration::from_secs(30);

pub async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(CONTROLLER);
    let ns = user
        .namespace()
        .ok_or_else(|| Error::Invalid("User has no namespace".into()))?;
    let api: Api<User> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, user.clone(), |event| async {
        match event {
            Finalizer::Apply(u) => apply_user(&u, &ns, &ctx).await,
            Finalizer::Cleanup(u) => cleanup_user(&u, &ns, &ctx).await,
        }
    })
    .await
    .map_err(finalizer_error);
    timer.finish(&ctx.metrics);
    if result.is_ok() {
        ctx.backoff.reset(&object_key(user.as_ref()));
    }
    result
}

fn secret_name(user: &User) -> String {
    user.spec
        .secret_name
        .clone()
        .unwrap_or_else(|| user.name_any())
}

async fn write_status(user: &User, ns: &str, ctx: &Context, status: UserStatus) -> Result<()> {
    if user.status.as_ref() != Some(&status) {
        let api: Api<User> = Api::namespaced(ctx.client.clone(), ns);
        apply_status(&api, &user.name_any(), &status).await?;
    }
    Ok(())
}

/// The status with `cond` merged into the previous conditions.
fn status_with(user: &User, mut status: UserStatus, cond: Desired) -> UserStatus {
    let previous = user.status.clone().unwrap_or_default();
    status.conditions = condition::merge(
        &previous.conditions,
        &[cond],
        user.metadata.generation,
        Timestamp::now(),
    );
    status.observed_generation = user.metadata.generation;
    status
}

async fn not_ready(
    user: &User,
    ns: &str,
    ctx: &Context,
    reason: &str,
    message: String,
) -> Result<()> {
    let previous = user.status.clone().unwrap_or_default();
    let already = previous
        .conditions
        .iter()
        .any(|c| c.reason == reason && c.message == message);
    if !already && reason != "ClusterUnreachable" {
        ctx.event(
            user,
            EventType::Warning,
            reason,
            "Reconcile",
            message.clone(),
        )
        .await;
    }
    write_status(
        user,
        ns,
        ctx,
        status_with(user, previous, Desired::not_ready(reason, message)),
    )
    .await
}

/// The CA certificate clients verify the brokers with, when the listener uses TLS.
async fn broker_ca(secrets: &Api<Secret>, cluster: &Cluster) -> Result<Option<String>> {
    let Some(s) = cluster.spec.listeners.secure.as_ref().filter(|s| s.tls) else {
        return Ok(None);
    };
    let name = s
        .certificate_secret
        .clone()
        .unwrap_or_else(|| format!("{}-broker-tls", cluster.name_any()));
    Ok(secrets
        .get_opt(&name)
        .await?
        .and_then(|s| security::secret_data(&s, "ca.crt")))
}

/// The Secret's data as it should be, keeping its password or certificate when
/// they can stay.
async fn desired_secret(
    user: &User,
    cluster: &Cluster,
    ns: &str,
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
) -> Result<std::result::Result<BTreeMap<String, String>, String>> {
    let username = user.name_any();
    let bootstrap = plan::bootstrap(cluster, ns);
    let protocol = plan::client_protocol(cluster.spec.listeners.secure.as_ref());
    let ca = broker_ca(secrets, cluster).await?;
    let kind = user.spec.authentication.kind;
    let credential_data = match kind.scram_mechanism() {
        Some(mechanism) => {
            let password = match existing.and_then(|s| security::secret_data(s, "password")) {
                Some(p) if !p.is_empty() => p,
                _ => security::random_hex(24)?,
            };
            plan::secret_data(
                &username,
                &bootstrap,
                protocol,
                ca.as_deref(),
                Credential::Scram {
                    mechanism,
                    password: &password,
                },
            )
        }
        None => {
            let operator_ca = cluster
                .spec
                .listeners
                .secure
                .as_ref()
                .is_some_and(|s| s.tls && s.certificate_secret.is_none());
            if !operator_ca {
                return Ok(Err(
                    "a tls User needs the operator's cluster CA (spec.listeners.secure without certificateSecret)".into(),
                ));
            }
            let now = SystemTime::now();
            let kept = existing.and_then(|s| {
                let cert = security::secret_data(s, "tls.crt")?;
                let key = security::secret_data(s, "tls.key")?;
                let same_ca = security::secret_data(s, "ca.crt") == ca;
                (same_ca && certs::still_good(&cert, &[], now)).then_some((cert, key))
            });
            let (cert, key) = match kept {
                Some(k) => k,
                None => {
                    let validated = crate::cluster::validate(cluster)?;
                    let ca_pem = security::cluster_ca(secrets, &validated).await?;
                    let leaf = certs::issue(
                        &cluster.name_any(),
                        ns,
                        &ca_pem.key,
                        Leaf::Client(&username),
                        now,
                    )
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                    (leaf.cert, leaf.key)
                }
            };
            plan::secret_data(
                &username,
                &bootstrap,
                protocol,
                ca.as_deref(),
                Credential::Certificate {
                    cert: &cert,
                    key: &key,
                },
            )
        }
    };
    Ok(Ok(credential_data))
}

/// Writes the Secret when its data differs; answers its resourceVersion.
async fn put_secret(
    user: &User,
    secrets: &Api<Secret>,
    existing: Option<Secret>,
    wanted: BTreeMap<String, String>,
) -> Result<String> {
    let current: BTreeMap<String, String> = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = &existing {
        if current == wanted {
            return Ok(s.resource_version().unwrap_or_default());
        }
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name(user)),
            namespace: user.namespace(),
            owner_references: user.controller_owner_ref(&()).map(|o| vec![o]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".into(),
                    "strata-operator".into(),
                ),
                ("strata.dev/user".into(), user.name_any()),
            ])),
            ..Default::default()
        },
        string_data: Some(wanted),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    let written = security::put(secrets, existing.as_ref(), secret).await?;
    Ok(written.resource_version().unwrap_or_default())
}

async fn sync_credential(
    client: &mut Admin,
    user: &User,
    password: &str,
    mechanism: &str,
    fresh: bool,
) -> std::result::Result<bool, AdminError> {
    let name = user.name_any();
    let users = client
        .list_scram_users(pb::ListScramUsersRequest {})
        .await?
        .into_inner()
        .users;
    let known = users
        .iter()
        .any(|u| u.name == name && u.mechanisms.iter().any(|m| m == mechanism));
    if known && !fresh {
        return Ok(false);
    }
    let salt = security::random_hex(16)
        .map_err(|e| AdminError::Status {
            code: tonic::Code::Internal,
            message: e.to_string(),
        })?
        .into_bytes();
    let salted = plan::salted_password(mechanism, password, &salt, plan::SCRAM_ITERATIONS);
    client
        .upsert_scram_credential(pb::UpsertScramCredentialRequest {
            user: name,
            mechanism: mechanism.into(),
            salt,
            iterations: i32::try_from(plan::SCRAM_ITERATIONS).unwrap_or(8192),
            salted_password: salted,
        })
        .await?;
    Ok(true)
}

async fn sync_acls(
    client: &mut Admin,
    principal: &str,
    desired: &[pb::AclBinding],
) -> std::result::Result<(usize, usize), AdminError> {
    let actual = client
        .list_acls(pb::ListAclsRequest {
            principal: principal.into(),
        })
        .await?
        .into_inner()
        .acls;
    let (create, delete) = plan::acl_changes(desired, &actual);
    if !create.is_empty() {
        client
            .create_acls(pb::CreateAclsRequest {
                acls: create.clone(),
            })
            .await?;
    }
    if !delete.is_empty() {
        client
            .delete_acls(pb::DeleteAclsRequest {
                acls: delete.clone(),
            })
            .await?;
    }
    Ok((create.len(), delete.len()))
}

/// Makes the brokers' quotas of `user` exactly `desired`; whether they changed.
async fn sync_quotas(
    client: &mut Admin,
    user: &str,
    desired: &HashMap<String, f64>,
) -> std::result::Result<bool, AdminError> {
    let actual = client
        .get_user_quotas(pb::GetUserQuotasRequest { user: user.into() })
        .await?
        .into_inner()
        .quotas;
    if actual == *desired {
        return Ok(false);
    }
    client
        .set_user_quotas(pb::UserQuotas {
            user: user.into(),
            quotas: desired.clone(),
        })
        .await?;
    Ok(true)
}

async fn apply_user(user: &User, ns: &str, ctx: &Context) -> Result<Action> {
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), ns);
    let Some(cluster) = clusters.get_opt(&user.spec.cluster_ref).await? else {
        not_ready(
            user,
            ns,
            ctx,
            "ClusterNotFound",
            format!(
                "Cluster {} does not exist in namespace {ns}",
                user.spec.cluster_ref
            ),
        )
        .await?;
        return Ok(Action::requeue(MISSING_CLUSTER_REQUEUE));
    };
    let principal = plan::principal(&user.name_any());
    let desired_acls = match plan::desired_acls(&user.spec, &principal) {
        Ok(a) => a,
        Err(why) => {
            not_ready(user, ns, ctx, "InvalidSpec", why).await?;
            return Ok(Action::await_change());
        }
    };
    let desired_quotas = plan::desired_quotas(&user.spec);
    let kind = user.spec.authentication.kind;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = secrets.get_opt(&secret_name(user)).await?;
    let wanted = match desired_secret(user, &cluster, ns, &secrets, existing.as_ref()).await? {
        Ok(w) => w,
        Err(why) => {
            not_ready(user, ns, ctx, "InvalidSpec", why).await?;
            return Ok(Action::await_change());
        }
    };
    let password = wanted.get("password").cloned().unwrap_or_default();
    let version = put_secret(user, &secrets, existing, wanted).await?;
    let mut client = match ctx.admin.client(&cluster).await {
        Ok(c) => c,
        Err(e) => {
            not_ready(user, ns, ctx, "ClusterUnreachable", e.to_string()).await?;
            return Err(e.into());
        }
    };
    let previous = user.status.clone().unwrap_or_default();
    let fresh = previous.credential_version.as_deref() != Some(version.as_str());
    let outcome = async {
        let set = match kind.scram_mechanism() {
            Some(m) => sync_credential(&mut client, user, &password, m, fresh).await?,
            None => false,
        };
        let changed = sync_acls(&mut client, &principal, &desired_acls).await?;
        let quotas = sync_quotas(&mut client, &user.name_any(), &desired_quotas).await?;
        Ok::<_, AdminError>((set, changed, quotas))
    }
    .await;
    match outcome {
        Ok((set, (created, deleted), quotas)) => {
            if quotas {
                ctx.event(
                    user,
                    EventType::Normal,
                    "QuotasSet",
                    "Reconcile",
                    format!(
                        "{principal}'s quotas set to {:?}",
                        desired_quotas.iter().collect::<BTreeMap<_, _>>()
                    ),
                )
                .await;
            }
            if set {
                ctx.event(
                    user,
                    EventType::Normal,
                    "CredentialSet",
                    "Reconcile",
                    format!(
                        "{principal}'s SCRAM credential set from Secret {}",
                        secret_name(user)
                    ),
                )
                .await;
            }
            if created + deleted > 0 {
                ctx.event(
                    user,
                    EventType::Normal,
                    "AclsChanged",
                    "Reconcile",
                    format!("{created} ACLs added, {deleted} removed"),
                )
                .await;
            }
            let note = match plan::mismatch(kind, cluster.spec.listeners.secure.as_ref()) {
                Some(why) => Desired::not_ready("ListenerMismatch", why),
                None => Desired::ready(
                    "Ready",
                    format!(
                        "{principal} has its credential and {} ACLs",
                        desired_acls.len()
                    ),
                ),
            };
            let status = status_with(
                user,
                UserStatus {
                    principal: Some(principal),
                    secret: Some(secret_name(user)),
                    credential_version: Some(version),
                    acls: i32::try_from(desired_acls.len()).unwrap_or(i32::MAX),
                    ..UserStatus::default()
                },
                note,
            );
            write_status(user, ns, ctx, status).await?;
            Ok(Action::requeue(ctx.settings.resync))
        }
        Err(e) if e.is_invalid_argument() => {
            not_ready(user, ns, ctx, "BrokerRejected", e.to_string()).await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            not_ready(user, ns, ctx, "BrokerError", e.to_string()).await?;
            Err(e.into())
        }
    }
}

async fn cleanup_user(user: &User, ns: &str, ctx: &Context) -> Result<Action> {
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), ns);
    let cluster = match clusters.get_opt(&user.spec.cluster_ref).await? {
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        _ => return Ok(Action::await_change()),
    };
    let principal = plan::principal(&user.name_any());
    let outcome = async {
        let mut client = ctx.admin.client(&cluster).await?;
        if user.spec.authentication.kind != UserAuthenticationType::Tls {
            match client
                .delete_scram_user(pb::DeleteScramUserRequest {
                    user: user.name_any(),
                })
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(AdminError::from(s)),
            }
        }
        sync_quotas(&mut client, &user.name_any(), &HashMap::new()).await?;
        sync_acls(&mut client, &principal, &[]).await
    }
    .await;
    match outcome {
        Ok((_, deleted)) => {
            ctx.event(
                user,
                EventType::Normal,
                "Deleted",
                "Delete",
                format!("{principal}'s credential, quotas and {deleted} ACLs removed"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            if deleting_for(&user.metadata) >= ctx.settings.finalizer_timeout {
                ctx.event(
                    user,
                    EventType::Warning,
                    "FinalizerTimedOut",
                    "Delete",
                    format!("cluster unreachable ({e}); released without removing {principal}"),
                )
                .await;
                return Ok(Action::await_change());
            }
            Err(e.into())
        }
    }
}

pub fn error_policy(user: Arc<User>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(CONTROLLER, user.as_ref(), error, &ctx)
}

/// Runs the User controller (one namespace or all). A deleted or edited Secret
/// of a User re-reconciles it.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let (users, secrets) = match &namespace {
        Some(ns) => (
            Api::<User>::namespaced(ctx.client.clone(), ns),
            Api::<Secret>::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::<User>::all(ctx.client.clone()),
            Api::<Secret>::all(ctx.client.clone()),
        ),
    };
    Controller::new(users, watcher::Config::default())
        .owns(
            secrets,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=strata-operator"),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "user reconcile error");
            }
        })
        .await;
}
