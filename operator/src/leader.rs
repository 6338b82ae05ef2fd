//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs
//! the controllers. Acquire by create or by taking over an expired Lease, renew
//! every `renew` interval; every write carries the resourceVersion it read, so
//! two candidates cannot both win. Losing the Lease ends the process (the
//! Deployment restarts it as a standby), as controller-runtime does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// Whether `lease` may be taken by `identity` at `now`.
pub fn can_acquire(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                None => true,
                Some(t) => now.duration_since(t) > SignedDuration::from_secs(duration),
            }
        }
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

/// One attempt to acquire or renew; true when we hold the Lease afterwards.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if !can_acquire(&lease, &cfg.identity, now) {
                return Ok(false);
            }
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            // replace carries metadata.resourceVersion: a concurrent writer gets 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this process holds the Lease.
pub async fn acquire(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        match try_acquire(&api, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return;
            }
            Ok(false) => tracing::debug!(lease = %cfg.name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.renew).await;
    }
}

/// Renews the Lease until it is lost; returns when it is (the caller exits).
pub async fn hold(client: Client, cfg: LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew).await;
        match try_acquire(&api, &cfg).await {
            Ok(true) => last_ok = std::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %cfg.name, "leader Lease taken by another replica");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the leader Lease failed");
                if last_ok.elapsed() >= cfg.duration {
                    tracing::error!("could not renew the leader Lease in time");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                renew_time: Some(MicroTime(renewed.parse().expect("ts"))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_live_lease_of_another_holder_is_respected() {
        let now: Timestamp = "2025-01-01T00:00:10Z".parse().expect("ts");
        assert!(!can_acquire(
            &lease("b", "2025-01-01T00:00:00Z", 15),
            "a",
            now
        ));
        assert!(can_acquire(
            &lease("a", "2025-01-01T00:00:00Z", 15),
            "a",
            now
        ));
        assert!(can_acquire(
            &lease("b", "2025-01-01T00:00:00Z", 5),
            "a",
            now
        ));
        assert!(can_acquire(
            &lease("", "2025-01-01T00:00:00Z", 15),
            "a",
            now
        ));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        let now: Timestamp = "2025-01-01T00:00:10Z".parse().expect("ts");
        let prev = lease("b", "2025-01-01T00:00:00Z", 5).spec.expect("spec");
        let s = spec_for(&cfg, Some(&prev), now);
        assert_eq!(s.holder_identity.as_deref(), Some("a"));
        assert_eq!(s.lease_transitions, Some(1));
        let renewed = spec_for(&cfg, Some(&s), now);
        assert_eq!(renewed.lease_transitions, Some(1));
    }
}
