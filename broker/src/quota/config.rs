//! Client quota configuration as the metadata quorum stores it: quota values by
//! entity (user, client id, or both; each a name or the default), altered by
//! [`Command::AlterClientQuotas`](crate::metadata::cluster::Command) and resolved for
//! one connection by Kafka's precedence rules ([`ClientQuotas::resolve`]).
//!
//! The serde shape is part of the metadata snapshot and log, so it only grows with
//! `#[serde(default)]` fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One of the names an entity component can take.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    /// `<default>`: applies to every user (or client id) with no quota of its own.
    Default,
    Named(String),
}

impl EntityName {
    /// Kafka's wire form: a null name is the default.
    pub fn from_wire(name: Option<&str>) -> Self {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// What a quota is set on: a user, a client id, or a user's client id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

/// The quota kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKind {
    /// Produce request bytes per second.
    Produce,
    /// Fetch response bytes per second.
    Fetch,
    /// Percentage of one handler's time per second.
    Request,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    /// The config key Kafka uses for this quota.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
        }
    }

    /// The metric label of this quota.
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Request => "request",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        QuotaKind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// A quota value: finite and positive (checked before it is stored), hence `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl Eq for QuotaValue {}

/// One entity's quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaEntry {
    pub entity: QuotaEntity,
    /// Config key → value.
    pub values: BTreeMap<String, QuotaValue>,
}

/// Every quota set, ordered by entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientQuotas {
    #[serde(default)]
    pub entries: Vec<QuotaEntry>,
}

/// Checks one alteration: `None` removes the key. The error is what Kafka's
/// INVALID_REQUEST carries.
pub fn validate_op(key: &str, value: Option<f64>) -> Result<(), String> {
    let kind = QuotaKind::from_key(key).ok_or_else(|| {
        format!(
            "unknown quota key `{key}` (served: producer_byte_rate, consumer_byte_rate, \
             request_percentage)"
        )
    })?;
    let Some(v) = value else { return Ok(()) };
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{key} must be a positive number, not {v}"));
    }
    if kind != QuotaKind::Request && v.fract() != 0.0 {
        return Err(format!(
            "{key} is a whole number of bytes per second, not {v}"
        ));
    }
    Ok(())
}

/// Checks an entity: at least one component.
pub fn validate_entity(entity: &QuotaEntity) -> Result<(), String> {
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("a quota entity needs a user, a client id or both".into());
    }
    Ok(())
}

/// The quota that applies to a connection, and the bucket its usage is counted in:
/// every connection that resolves to the same entity and shares the components that
/// entity names (or defaults) shares one bucket, as Kafka's metric tags do.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub bound: f64,
    pub bucket: Bucket,
}

/// The usage counter a connection's traffic goes to: the user and client id kept
/// where the resolved entity has that component, empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub kind: QuotaKind,
    pub user: String,
    pub client_id: String,
}

impl ClientQuotas {
    pub fn get(&self, entity: &QuotaEntity) -> Option<&QuotaEntry> {
        self.entries.iter().find(|e| &e.entity == entity)
    }

    /// Applies alterations to one entity, all or nothing: `None` removes a key. An
    /// entity left with no quotas disappears.
    pub fn alter(
        &mut self,
        entity: &QuotaEntity,
        ops: &BTreeMap<String, Option<QuotaValue>>,
    ) -> Result<(), String> {
        validate_entity(entity)?;
        for (k, v) in ops {
            validate_op(k, v.map(|v| v.0))?;
        }
        let at = match self.entries.binary_search_by(|e| e.entity.cmp(entity)) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(
                    i,
                    QuotaEntry {
                        entity: entity.clone(),
                        values: BTreeMap::new(),
                    },
                );
                i
            }
        };
        let values = &mut self.entries[at].values;
        for (k, v) in ops {
            match v {
                Some(v) => values.insert(k.clone(), *v),
                None => values.remove(k),
            };
        }
        if values.is_empty() {
            self.entries.remove(at);
        }
        Ok(())
    }

    /// The quota of `kind` for `user` connecting as `client_id`, by Kafka's precedence
    /// (most specific first, each quota kind on its own):
    /// user+client, user+default client, user, default user+client, default
    /// user+default client, default user, client, default client.
    pub fn resolve(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<Resolved> {
        if self.entries.is_empty() {
            return None;
        }
        let named = |n: &str| Some(EntityName::Named(n.to_string()));
        let default = || Some(EntityName::Default);
        let order = [
            (named(user), named(client_id)),
            (named(user), default()),
            (named(user), None),
            (default(), named(client_id)),
            (default(), default()),
            (default(), None),
            (None, named(client_id)),
            (None, default()),
        ];
        order.into_iter().find_map(|(u, c)| {
            let entity = QuotaEntity {
                user: u,
                client_id: c,
            };
            let v = self.get(&entity)?.values.get(kind.key())?;
            Some(Resolved {
                bound: v.0,
                bucket: Bucket {
                    kind,
                    user: entity.user.map(|_| user.to_string()).unwrap_or_default(),
                    client_id: entity
                        .client_id
                        .map(|_| client_id.to_string())
                        .unwrap_or_default(),
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_wire),
            client_id: client.map(EntityName::from_wire),
        }
    }

    fn set(q: &mut ClientQuotas, e: QuotaEntity, key: &str, v: f64) {
        q.alter(
            &e,
            &BTreeMap::from([(key.to_string(), Some(QuotaValue(v)))]),
        )
        .unwrap();
    }

    #[test]
    fn the_most_specific_entity_wins_for_each_quota_kind_on_its_own() {
        let mut q = ClientQuotas::default();
        let p = "producer_byte_rate";
        set(&mut q, entity(None, Some(None)), p, 8.0);
        set(&mut q, entity(None, Some(Some("app"))), p, 7.0);
        set(&mut q, entity(Some(None), None), p, 6.0);
        set(&mut q, entity(Some(None), Some(None)), p, 5.0);
        set(&mut q, entity(Some(None), Some(Some("app"))), p, 4.0);
        set(&mut q, entity(Some(Some("alice")), None), p, 3.0);
        set(&mut q, entity(Some(Some("alice")), Some(None)), p, 2.0);
        set(
            &mut q,
            entity(Some(Some("alice")), Some(Some("app"))),
            p,
            1.0,
        );
        set(&mut q, entity(None, Some(None)), "consumer_byte_rate", 9.0);
        let bound = |q: &ClientQuotas, u, c| q.resolve(QuotaKind::Produce, u, c).map(|r| r.bound);
        // Remove the most specific one at a time and watch the next one take over.
        let order = [
            entity(Some(Some("alice")), Some(Some("app"))),
            entity(Some(Some("alice")), Some(None)),
            entity(Some(Some("alice")), None),
            entity(Some(None), Some(Some("app"))),
            entity(Some(None), Some(None)),
            entity(Some(None), None),
            entity(None, Some(Some("app"))),
            entity(None, Some(None)),
        ];
        for (i, e) in order.iter().enumerate() {
            assert_eq!(bound(&q, "alice", "app"), Some(i as f64 + 1.0), "{e:?}");
            q.alter(e, &BTreeMap::from([(p.to_string(), None)]))
                .unwrap();
        }
        assert_eq!(bound(&q, "alice", "app"), None);
        // The consumer quota was resolved on its own all along.
        let fetch = q.resolve(QuotaKind::Fetch, "alice", "app").unwrap();
        assert_eq!(fetch.bound, 9.0);
        assert_eq!(q.entries.len(), 1, "entities without quotas are dropped");
    }

    #[test]
    fn defaults_give_every_user_or_client_its_own_bucket() {
        let mut q = ClientQuotas::default();
        set(
            &mut q,
            entity(None, Some(None)),
            "producer_byte_rate",
            100.0,
        );
        set(
            &mut q,
            entity(Some(Some("bob")), None),
            "producer_byte_rate",
            50.0,
        );
        let a = q.resolve(QuotaKind::Produce, "ANONYMOUS", "a").unwrap();
        let b = q.resolve(QuotaKind::Produce, "ANONYMOUS", "b").unwrap();
        assert_eq!(
            (a.bucket.user.as_str(), a.bucket.client_id.as_str()),
            ("", "a")
        );
        assert_ne!(a.bucket, b.bucket);
        // A user quota is shared by all of that user's clients.
        let x = q.resolve(QuotaKind::Produce, "bob", "x").unwrap();
        let y = q.resolve(QuotaKind::Produce, "bob", "y").unwrap();
        assert_eq!(x.bucket, y.bucket);
        assert_eq!(x.bound, 50.0);
    }

    #[test]
    fn bad_alterations_are_refused_whole() {
        let mut q = ClientQuotas::default();
        let e = entity(Some(Some("u")), None);
        for (k, v) in [
            ("producer_byte_rate", -1.0),
            ("producer_byte_rate", 1.5),
            ("consumer_byte_rate", f64::NAN),
            ("controller_mutation_rate", 1.0),
        ] {
            let ops = BTreeMap::from([
                ("request_percentage".to_string(), Some(QuotaValue(10.0))),
                (k.to_string(), Some(QuotaValue(v))),
            ]);
            assert!(q.alter(&e, &ops).is_err(), "{k}={v}");
        }
        assert!(q.entries.is_empty());
        assert!(q.alter(&entity(None, None), &BTreeMap::new()).is_err());
        set(&mut q, e.clone(), "request_percentage", 12.5);
        assert_eq!(
            q.get(&e).unwrap().values["request_percentage"],
            QuotaValue(12.5)
        );
    }
}
