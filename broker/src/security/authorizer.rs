//! The authorizer (`authorizer_class_name`): when configured, every request is
//! checked against the ACLs of the metadata quorum ([`acl::decide`]), each
//! decision counted (`strata_authorization_decisions`, by decision, operation and
//! resource type) and each denial logged (principal, host, operation, resource:
//! never a secret). Without one every request is allowed, as before ACLs existed.

use std::net::IpAddr;

use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tracing::{debug, info};

use super::acl::{self, Acls, AuthorizerSettings, Decision, Operation, ResourceType};
use super::ClientContext;
use crate::config::{BrokerConfig, ConfigError};

/// The names `authorizer_class_name` accepts for the ACL authorizer: ours, and
/// Kafka's class names so a copied `server.properties` value works.
const ACL_AUTHORIZER: &[&str] = &[
    "acl",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// The authorizer settings of `cfg`, or None when no authorizer is configured.
pub fn settings(cfg: &BrokerConfig) -> Result<Option<AuthorizerSettings>, ConfigError> {
    let name = cfg.authorizer_class_name.trim();
    let super_users =
        AuthorizerSettings::parse_super_users(&cfg.super_users).map_err(|reason| {
            ConfigError::Invalid {
                key: "super_users",
                reason,
            }
        })?;
    if name.is_empty() {
        return Ok(None);
    }
    if !ACL_AUTHORIZER.contains(&name) {
        return Err(ConfigError::Invalid {
            key: "authorizer_class_name",
            reason: format!("`{name}` is not an authorizer: use `acl` (or empty for none)"),
        });
    }
    Ok(Some(AuthorizerSettings {
        super_users,
        allow_everyone_if_no_acl_found: cfg.allow_everyone_if_no_acl_found,
    }))
}

/// The configured authorizer and its metrics.
#[derive(Debug)]
pub struct Authorizer {
    pub settings: AuthorizerSettings,
    decisions: Counter<u64>,
}

/// The host an ACL names for a client: its address, IPv4-mapped IPv6 unmapped.
pub fn host_of(ctx: &ClientContext) -> String {
    match ctx.peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        ip => ip.to_string(),
    }
}

impl Authorizer {
    pub fn new(settings: AuthorizerSettings, meter: &opentelemetry::metrics::Meter) -> Self {
        let decisions = meter
            .u64_counter("strata_authorization_decisions")
            .with_description(
                "Authorization decisions, by decision (allowed/denied), operation and resource type",
            )
            .build();
        decisions.add(0, &[KeyValue::new("decision", "allowed")]);
        decisions.add(0, &[KeyValue::new("decision", "denied")]);
        Authorizer {
            settings,
            decisions,
        }
    }

    fn count(&self, allowed: bool, op: Operation, rt: ResourceType) {
        self.decisions.add(
            1,
            &[
                KeyValue::new("decision", if allowed { "allowed" } else { "denied" }),
                KeyValue::new("operation", op.name()),
                KeyValue::new("resource_type", rt.name()),
            ],
        );
    }

    /// Whether the client may perform `op` on resource `name` of type `rt`.
    /// `log_denial`: false where a denial is expected and not an event (Metadata
    /// listing every topic filters the ones the client may not describe).
    #[allow(clippy::too_many_arguments)]
    pub fn authorize(
        &self,
        acls: &Acls,
        ctx: &ClientContext,
        host: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
        log_denial: bool,
    ) -> bool {
        let principal = ctx.principal.to_string();
        let d = acl::decide(&self.settings, acls, &principal, host, op, rt, name);
        let allowed = d.allowed();
        self.count(allowed, op, rt);
        if !allowed && log_denial {
            info!(%principal, host, operation = %op, resource_type = %rt, resource = name,
                reason = ?d, "authorization denied");
        } else if d == Decision::NoAclAllowed {
            debug!(%principal, host, operation = %op, resource_type = %rt, resource = name,
                "allowed: no ACL found for the resource");
        }
        allowed
    }

    /// Whether the client may perform `op` on at least one resource of type `rt`.
    pub fn authorize_any(
        &self,
        acls: &Acls,
        ctx: &ClientContext,
        host: &str,
        op: Operation,
        rt: ResourceType,
    ) -> bool {
        let principal = ctx.principal.to_string();
        let allowed = acl::allows_any(&self.settings, acls, &principal, host, op, rt);
        self.count(allowed, op, rt);
        if !allowed {
            info!(%principal, host, operation = %op, resource_type = %rt,
                "authorization denied on every resource of the type");
        }
        allowed
    }
}
