//! DescribeClientQuotas and AlterClientQuotas (what `kafka-configs --entity-type
//! users|clients` and the AdminClient send): quota values by user and client id, kept
//! in the metadata quorum ([`Command::AlterClientQuotas`]) and enforced by every
//! broker (`crate::quota`). The SCRAM credentials `kafka-configs --entity-type users`
//! also shows are in `scram_users`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::Command;
use crate::quota::config::{validate_entity, validate_op};
use crate::quota::{ClientQuotas, EntityName, QuotaEntity, QuotaValue};

const USER: &str = "user";
const CLIENT_ID: &str = "client-id";

/// Kafka's match types of a describe filter component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// Which of an entity's components a filter constrains, and how.
#[derive(Debug, Clone, PartialEq)]
enum Match {
    /// This name (or the default, for `Some(EntityName::Default)`).
    Is(EntityName),
    /// Any name, not the default.
    Specified,
}

/// A parsed describe filter: per entity type, how it must match; `strict` also
/// excludes entities with components the filter does not name.
#[derive(Debug, Default)]
struct Filter {
    user: Option<Match>,
    client_id: Option<Match>,
    strict: bool,
}

fn parse_filter(req: &DescribeClientQuotasRequest) -> Result<Filter, String> {
    let mut f = Filter {
        strict: req.strict,
        ..Filter::default()
    };
    for c in &req.components {
        let slot = match c.entity_type.as_str() {
            USER => &mut f.user,
            CLIENT_ID => &mut f.client_id,
            other => return Err(unsupported_entity_type(other)),
        };
        let m = match (c.match_type, c._match.as_ref()) {
            (MATCH_EXACT, Some(name)) => Match::Is(EntityName::Named(name.to_string())),
            (MATCH_DEFAULT, None) => Match::Is(EntityName::Default),
            (MATCH_SPECIFIED, None) => Match::Specified,
            (t, m) => {
                return Err(format!(
                    "invalid filter component: match type {t} with match {m:?}"
                ))
            }
        };
        if slot.replace(m).is_some() {
            return Err(format!(
                "entity type {} appears more than once in the filter",
                c.entity_type.as_str()
            ));
        }
    }
    Ok(f)
}

fn unsupported_entity_type(t: &str) -> String {
    if t == "ip" {
        "ip quotas (connection_creation_rate) are not supported; quotas are by user and client-id"
            .into()
    } else {
        format!("unknown quota entity type `{t}` (served: user, client-id)")
    }
}

fn component_matches(have: &Option<EntityName>, want: &Option<Match>, strict: bool) -> bool {
    match (want, have) {
        (None, Some(_)) => !strict,
        (None, None) => true,
        (Some(_), None) => false,
        (Some(Match::Is(w)), Some(h)) => w == h,
        (Some(Match::Specified), Some(h)) => matches!(h, EntityName::Named(_)),
    }
}

fn describe_entries(quotas: &ClientQuotas, f: &Filter) -> Vec<EntryData> {
    quotas
        .entries
        .iter()
        .filter(|e| {
            component_matches(&e.entity.user, &f.user, f.strict)
                && component_matches(&e.entity.client_id, &f.client_id, f.strict)
        })
        .map(|e| {
            let mut entry = EntryData::default();
            for (t, name) in [(USER, &e.entity.user), (CLIENT_ID, &e.entity.client_id)] {
                if let Some(name) = name {
                    let mut d = EntityData::default();
                    d.entity_type = str_bytes(t);
                    d.entity_name = name.to_wire().map(str_bytes);
                    entry.entity.push(d);
                }
            }
            entry.values = e
                .values
                .iter()
                .map(|(k, v)| {
                    let mut d = ValueData::default();
                    d.key = str_bytes(k.as_str());
                    d.value = v.0;
                    d
                })
                .collect();
            entry
        })
        .collect()
}

pub async fn describe(
    broker: &Arc<Broker>,
    req: DescribeClientQuotasRequest,
    _version: i16,
) -> DescribeClientQuotasResponse {
    let mut resp = DescribeClientQuotasResponse::default();
    match parse_filter(&req) {
        Ok(f) => resp.entries = Some(describe_entries(&broker.cluster().client_quotas, &f)),
        Err(why) => {
            resp.error_code = ResponseError::InvalidRequest.code();
            resp.error_message = Some(str_bytes(why));
        }
    }
    resp
}

/// One alteration entry, checked: the entity and its operations.
type Alteration = (QuotaEntity, BTreeMap<String, Option<QuotaValue>>);

fn parse_alteration(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<Alteration, String> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for c in &entry.entity {
        let slot = match c.entity_type.as_str() {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            other => return Err(unsupported_entity_type(other)),
        };
        let name = EntityName::from_wire(c.entity_name.as_deref());
        if slot.replace(name).is_some() {
            return Err(format!(
                "entity type {} appears more than once",
                c.entity_type.as_str()
            ));
        }
    }
    validate_entity(&entity)?;
    let mut ops = BTreeMap::new();
    for op in &entry.ops {
        let value = (!op.remove).then_some(op.value);
        validate_op(op.key.as_str(), value)?;
        if ops
            .insert(op.key.to_string(), value.map(QuotaValue))
            .is_some()
        {
            return Err(format!(
                "quota key {} appears more than once",
                op.key.as_str()
            ));
        }
    }
    Ok((entity, ops))
}

pub async fn alter(
    broker: &Arc<Broker>,
    req: AlterClientQuotasRequest,
    _version: i16,
) -> AlterClientQuotasResponse {
    let mut resp = AlterClientQuotasResponse::default();
    let mut last_index = None;
    for entry in &req.entries {
        let mut out = AlteredEntry::default();
        out.entity = entry
            .entity
            .iter()
            .map(|c| {
                let mut d = AlteredEntity::default();
                d.entity_type = c.entity_type.clone();
                d.entity_name = c.entity_name.clone();
                d
            })
            .collect();
        let result = match parse_alteration(entry) {
            Err(why) => Err((ResponseError::InvalidRequest, why)),
            Ok(_) if req.validate_only => Ok(()),
            Ok((entity, ops)) => {
                let cmd = Command::AlterClientQuotas {
                    entity: entity.clone(),
                    ops: ops.clone(),
                };
                match broker.quorum.propose(cmd).await {
                    Ok((index, _)) => {
                        info!(?entity, ?ops, "client quotas altered");
                        last_index = Some(index);
                        Ok(())
                    }
                    Err(e) => Err((metadata_error_code(&e), e.to_string())),
                }
            }
        };
        if let Err((code, why)) = result {
            out.error_code = code.code();
            out.error_message = Some(str_bytes(why));
        }
        resp.entries.push(out);
    }
    // Answer once this broker applies the change, so a describe sent here next sees it.
    if let Some(index) = last_index {
        broker.wait_reconciled(index).await;
    }
    resp
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;

    use super::*;

    fn quotas() -> ClientQuotas {
        let mut q = ClientQuotas::default();
        let one = |k: &str| BTreeMap::from([(k.to_string(), Some(QuotaValue(1024.0)))]);
        for (user, client) in [
            (Some(EntityName::Named("alice".into())), None),
            (Some(EntityName::Default), None),
            (None, Some(EntityName::Named("app".into()))),
            (
                Some(EntityName::Named("alice".into())),
                Some(EntityName::Default),
            ),
        ] {
            q.alter(
                &QuotaEntity {
                    user,
                    client_id: client,
                },
                &one("producer_byte_rate"),
            )
            .unwrap();
        }
        q
    }

    fn filter(components: &[(&str, i8, Option<&str>)], strict: bool) -> Filter {
        let mut req = DescribeClientQuotasRequest::default();
        req.strict = strict;
        req.components = components
            .iter()
            .map(|(t, m, name)| {
                let mut c = ComponentData::default();
                c.entity_type = str_bytes(*t);
                c.match_type = *m;
                c._match = name.map(str_bytes);
                c
            })
            .collect();
        parse_filter(&req).unwrap()
    }

    fn names(entries: &[EntryData]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                e.entity
                    .iter()
                    .map(|d| {
                        format!(
                            "{}={}",
                            d.entity_type.as_str(),
                            d.entity_name.as_deref().unwrap_or("<default>")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn filters_match_as_kafka_describes_them() {
        let q = quotas();
        let all = describe_entries(&q, &filter(&[], false));
        assert_eq!(all.len(), 4);
        // kafka-configs --describe --entity-type users: named users only, nothing else.
        let users = describe_entries(&q, &filter(&[(USER, MATCH_SPECIFIED, None)], true));
        assert_eq!(names(&users), ["user=alice"]);
        let default = describe_entries(&q, &filter(&[(USER, MATCH_DEFAULT, None)], true));
        assert_eq!(names(&default), ["user=<default>"]);
        // Not strict: alice's entities with a client component too.
        let alice = describe_entries(&q, &filter(&[(USER, MATCH_EXACT, Some("alice"))], false));
        assert_eq!(
            names(&alice),
            ["user=alice", "user=alice,client-id=<default>"]
        );
        let clients = describe_entries(&q, &filter(&[(CLIENT_ID, MATCH_SPECIFIED, None)], true));
        assert_eq!(names(&clients), ["client-id=app"]);
        assert_eq!(all[0].values[0].value, 1024.0);
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        let mut req = DescribeClientQuotasRequest::default();
        let mut c = ComponentData::default();
        c.entity_type = str_bytes("ip");
        c.match_type = MATCH_SPECIFIED;
        c._match = None;
        req.components = vec![c.clone()];
        assert!(parse_filter(&req).unwrap_err().contains("ip quotas"));
        c.entity_type = str_bytes(USER);
        c.match_type = MATCH_EXACT;
        req.components = vec![c];
        assert!(parse_filter(&req).is_err(), "exact match without a name");
    }
}
