//! What every reconcile gets: the API client, the Event recorder, metrics and
//! the operator's tunables.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::admin::AdminChannels;
use crate::metrics::Metrics;

/// Tunables (command-line flags of `strata-operator`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a healthy object is reconciled again anyway.
    pub resync: Duration,
    /// ConsumerGroup status refresh interval.
    pub group_refresh: Duration,
    /// How long a Topic finalizer waits for an unreachable cluster before giving up.
    pub finalizer_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            group_refresh: Duration::from_secs(15),
            finalizer_timeout: Duration::from_secs(300),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    pub backoff: Backoff,
    /// One admin connection per Cluster.
    pub admin: AdminChannels,
    /// The Warning events of problems that persist, so each is published once.
    pub warnings: Warnings,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        admin: AdminChannels,
        settings: Settings,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            metrics,
            settings,
            backoff: Backoff::default(),
            warnings: Warnings::default(),
        })
    }

    /// Publishes an Event on `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

impl Context {
    /// Publishes a Warning about a problem that a later reconcile may find
    /// again (retried on every pass): only when it is new for `obj` and
    /// `subject` (a claim, a broker…) or its note changed, not on every pass.
    /// [`Context::resolved`] forgets it once the problem is gone.
    pub async fn warn_once<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        action: &str,
        subject: &str,
        note: String,
    ) {
        if self
            .warnings
            .first_report(&object_key(obj), reason, subject, &note)
        {
            self.event(obj, EventType::Warning, reason, action, note)
                .await;
        }
    }

    /// The problem `reason` of `obj` and `subject` is gone: a return publishes again.
    pub fn resolved<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, subject: &str) {
        self.warnings.clear(&object_key(obj), reason, subject);
    }
}

/// What each persisting problem last published (object key, reason, subject →
/// note). In memory only: a restarted operator reports a problem still there once more.
#[derive(Default)]
pub struct Warnings {
    published: std::sync::Mutex<std::collections::HashMap<(String, String, String), String>>,
}

impl Warnings {
    /// Whether this note is new for the problem (and records it as published).
    pub fn first_report(&self, key: &str, reason: &str, subject: &str, note: &str) -> bool {
        let mut map = match self.published.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let id = (key.to_string(), reason.to_string(), subject.to_string());
        if map.get(&id).is_some_and(|n| n == note) {
            return false;
        }
        map.insert(id, note.to_string());
        true
    }

    pub fn clear(&self, key: &str, reason: &str, subject: &str) {
        let mut map = match self.published.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(&(key.to_string(), reason.to_string(), subject.to_string()));
    }
}

/// Per-object exponential backoff for the controllers' error policies:
/// 1 s, 2 s, 4 s … capped at 5 minutes, reset by the next success.
#[derive(Default)]
pub struct Backoff {
    attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// Delay before the next retry of `key`, counting this failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut map = match self.attempts.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = Self::BASE
            .checked_mul(1u32 << (*n).min(16))
            .unwrap_or(Self::MAX)
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        let mut map = match self.attempts.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(key);
    }
}

/// Key of an object for [`Backoff`]: kind, namespace and name, so that a Topic
/// and a Cluster of the same name keep separate retry counts.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A finalizer's failure as the reconcile's error (the apply's or cleanup's own
/// error when it was one of those).
pub fn finalizer_error(e: kube::runtime::finalizer::Error<crate::Error>) -> crate::Error {
    match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => crate::Error::Finalizer(other.to_string()),
    }
}

/// The error policy of the Topic and User controllers: a permanent error waits
/// for a change; anything else retries with the object's backoff.
pub fn retry_later<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    error: &crate::Error,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    ctx.metrics.failed(controller, error.metric_label());
    if error.is_permanent() {
        return kube::runtime::controller::Action::await_change();
    }
    let delay = ctx.backoff.next(&object_key(obj));
    tracing::warn!(
        kind = %K::kind(&()),
        name = obj.meta().name.as_deref().unwrap_or(""),
        %error,
        ?delay,
        "reconcile failed"
    );
    kube::runtime::controller::Action::requeue(delay)
}

/// How long ago the object was marked for deletion (zero when it is not).
pub fn deleting_for(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Duration {
    meta.deletion_timestamp
        .as_ref()
        .and_then(|t| {
            let secs = k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second();
            u64::try_from(secs).ok()
        })
        .map(Duration::from_secs)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next("a"), Duration::from_secs(1));
        assert_eq!(b.next("a"), Duration::from_secs(2));
        assert_eq!(b.next("a"), Duration::from_secs(4));
        assert_eq!(b.next("b"), Duration::from_secs(1));
        for _ in 0..20 {
            b.next("a");
        }
        assert_eq!(b.next("a"), Duration::from_secs(300));
        b.reset("a");
        assert_eq!(b.next("a"), Duration::from_secs(1));
    }

    #[test]
    fn a_persisting_warning_is_published_once_until_it_changes_or_clears() {
        let w = Warnings::default();
        assert!(w.first_report("Cluster/ns/demo", "DrainFailed", "3", "cannot drain 3: x"));
        assert!(!w.first_report("Cluster/ns/demo", "DrainFailed", "3", "cannot drain 3: x"));
        // Another subject, reason or object is another problem.
        assert!(w.first_report("Cluster/ns/demo", "DrainFailed", "4", "cannot drain 4: x"));
        assert!(w.first_report(
            "Cluster/ns/demo",
            "UnregisterFailed",
            "3",
            "cannot drain 3: x"
        ));
        assert!(w.first_report("Cluster/ns/other", "DrainFailed", "3", "cannot drain 3: x"));
        // A changed note is news.
        assert!(w.first_report("Cluster/ns/demo", "DrainFailed", "3", "cannot drain 3: y"));
        assert!(!w.first_report("Cluster/ns/demo", "DrainFailed", "3", "cannot drain 3: y"));
        // Once resolved, the same problem coming back is published again.
        w.clear("Cluster/ns/demo", "DrainFailed", "3");
        assert!(w.first_report("Cluster/ns/demo", "DrainFailed", "3", "cannot drain 3: y"));
    }

    #[test]
    fn objects_of_different_kinds_with_one_name_have_their_own_backoff() {
        let meta = serde_json::json!({"name": "demo", "namespace": "ns"});
        let cluster: crate::crd::Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "Cluster", "metadata": meta,
            "spec": {},
        }))
        .unwrap();
        let topic: crate::crd::Topic = serde_json::from_value(serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "Topic", "metadata": meta,
            "spec": {"clusterRef": "demo", "partitions": 1},
        }))
        .unwrap();
        let (c, t) = (object_key(&cluster), object_key(&topic));
        assert_ne!(c, t);
        let b = Backoff::default();
        b.next(&c);
        b.next(&c);
        assert_eq!(b.next(&t), Duration::from_secs(1));
    }
}
