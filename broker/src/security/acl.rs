//! Kafka's ACL model: bindings (a resource pattern and an entry: principal, host,
//! operation, permission), the filters of DescribeAcls / DeleteAcls, and the pure
//! decision function the authorizer applies ([`decide`]), with Kafka's semantics:
//!
//! * an ACL applies to a resource when its resource type is the same and its
//!   pattern is the literal name, the literal wildcard `*`, or a prefix of the name
//!   (`PREFIXED`); to a principal when it names it or is `User:*`; to a host when it
//!   names the client's address or is `*`;
//! * a DENY that applies (its operation the one asked for, or ALL) wins over any
//!   ALLOW;
//! * an ALLOW applies to its operation, to every operation when it is ALL, and to
//!   the operations it implies: READ, WRITE, DELETE and ALTER imply DESCRIBE;
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS;
//! * nothing applying is a denial, unless `allow.everyone.if.no.acl.found` is set
//!   and no ACL at all (any principal, host, operation) exists for the resource.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal pattern that matches every resource name, and the wildcard of
/// principals (`User:*`) and hosts.
pub const WILDCARD: &str = "*";

macro_rules! codes {
    ($(#[$m:meta])* $name:ident { $($v:ident = $c:expr, $s:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($v),* }
        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$v),*];
            /// The protocol code.
            pub fn code(self) -> i8 { match self { $($name::$v => $c),* } }
            pub fn from_code(c: i8) -> Option<Self> {
                match c { $($c => Some($name::$v),)* _ => None }
            }
            /// Kafka's name (`DESCRIBE_CONFIGS`).
            pub fn name(self) -> &'static str { match self { $($name::$v => $s),* } }
            /// The value named `s`, in any case, with or without underscores
            /// (`DESCRIBE_CONFIGS`, `DescribeConfigs`).
            pub fn from_name(s: &str) -> Option<Self> {
                let squash = |n: &str| n.replace('_', "").to_ascii_uppercase();
                let wanted = squash(s);
                Self::ALL_VALUES.iter().copied().find(|v| squash(v.name()) == wanted)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }
    };
}

codes!(
    /// Kafka's `ResourceType` (ANY only in filters).
    ResourceType {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

codes!(
    /// Kafka's `PatternType` (ANY and MATCH only in filters).
    PatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

codes!(
    /// Kafka's `AclOperation` (ANY only in filters).
    Operation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

codes!(
    /// Kafka's `AclPermissionType` (ANY only in filters).
    Permission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// One ACL, as CreateAcls adds it and the quorum stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:name` or `User:*`.
    pub principal: String,
    /// An address or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The ACLs of the cluster (`ClusterState::acls`).
pub type Acls = BTreeSet<AclBinding>;

impl AclBinding {
    /// Why this binding cannot be stored, if it cannot (CreateAcls answers
    /// INVALID_REQUEST with it, as Kafka does).
    pub fn invalid(&self) -> Option<String> {
        if self.resource_type == ResourceType::Any {
            return Some("Invalid resourceType ANY".into());
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Some(format!("Invalid patternType {}", self.pattern_type));
        }
        if self.operation == Operation::Any {
            return Some("Invalid operation ANY".into());
        }
        if self.permission == Permission::Any {
            return Some("Invalid permissionType ANY".into());
        }
        if self.resource_name.is_empty() {
            return Some("Resource name should not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return Some(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Some(format!("Could not parse principal {}", self.principal)),
        }
        if self.host.is_empty() {
            return Some("Invalid host: empty".into());
        }
        None
    }

    /// Whether this binding's pattern covers resource `name` of type `rt`.
    pub fn covers(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
                _ => false,
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == WILDCARD)
    }
}

/// A DescribeAcls / DeleteAcls filter: `None` strings match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// Whether `b` matches, as Kafka's `AclBindingFilter.matches`: ANY pattern type
    /// compares names exactly whatever the pattern type; MATCH selects every
    /// binding whose pattern covers the name (literal, wildcard, prefixes).
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        let pattern_ok = match (self.pattern_type, &self.resource_name) {
            (PatternType::Any, None) | (PatternType::Match, None) => true,
            (PatternType::Any, Some(n)) => &b.resource_name == n,
            (PatternType::Match, Some(n)) => match b.pattern_type {
                PatternType::Literal => &b.resource_name == n || b.resource_name == WILDCARD,
                PatternType::Prefixed => n.starts_with(b.resource_name.as_str()),
                _ => false,
            },
            (p, n) => p == b.pattern_type && n.as_ref().is_none_or(|n| &b.resource_name == n),
        };
        pattern_ok
            && self.principal.as_ref().is_none_or(|p| &b.principal == p)
            && self.host.as_ref().is_none_or(|h| &b.host == h)
            && (self.operation == Operation::Any || self.operation == b.operation)
            && (self.permission == Permission::Any || self.permission == b.permission)
    }
}

/// Whether an ALLOW of `granted` allows `asked`.
fn allow_covers(granted: Operation, asked: Operation) -> bool {
    granted == asked
        || granted == Operation::All
        || match asked {
            Operation::Describe => matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ),
            Operation::DescribeConfigs => granted == Operation::AlterConfigs,
            _ => false,
        }
}

/// Why a request was allowed or denied (logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A super user.
    SuperUser,
    /// An ALLOW ACL matched.
    Allowed,
    /// No ACL exists for the resource and `allow.everyone.if.no.acl.found` is set.
    NoAclAllowed,
    /// A DENY ACL matched.
    Denied,
    /// No ALLOW ACL matched.
    NoMatch,
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(
            self,
            Decision::SuperUser | Decision::Allowed | Decision::NoAclAllowed
        )
    }
}

/// The authorizer's settings: `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    pub super_users: BTreeSet<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerSettings {
    /// Parses `super.users` (`User:a;User:b`).
    pub fn parse_super_users(s: &str) -> Result<BTreeSet<String>, String> {
        let mut out = BTreeSet::new();
        for p in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match p.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    out.insert(p.to_string());
                }
                _ => return Err(format!("`{p}` is not a principal (User:name)")),
            }
        }
        Ok(out)
    }
}

/// Decides whether `principal` (`User:name`) connecting from `host` may perform
/// `op` on resource `name` of type `rt`, given the cluster's `acls`.
pub fn decide(
    settings: &AuthorizerSettings,
    acls: &Acls,
    principal: &str,
    host: &str,
    op: Operation,
    rt: ResourceType,
    name: &str,
) -> Decision {
    if settings.super_users.contains(principal) {
        return Decision::SuperUser;
    }
    let mut any_for_resource = false;
    let mut allowed = false;
    for b in acls.iter().filter(|b| b.covers(rt, name)) {
        any_for_resource = true;
        if !b.applies_to(principal, host) {
            continue;
        }
        match b.permission {
            Permission::Deny if b.operation == op || b.operation == Operation::All => {
                return Decision::Denied
            }
            Permission::Allow if allow_covers(b.operation, op) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allowed
    } else if !any_for_resource && settings.allow_everyone_if_no_acl_found {
        Decision::NoAclAllowed
    } else {
        Decision::NoMatch
    }
}

/// Whether `principal` may perform `op` on at least one resource of type `rt`
/// (Kafka's `authorizeByResourceType`, used for IDEMPOTENT_WRITE by WRITE on any
/// topic, KIP-679): some ALLOW applies that no DENY of the same principal and host
/// shadows (a DENY on the wildcard, on the same literal, or on a prefix of it).
pub fn allows_any(
    settings: &AuthorizerSettings,
    acls: &Acls,
    principal: &str,
    host: &str,
    op: Operation,
    rt: ResourceType,
) -> bool {
    if settings.super_users.contains(principal) {
        return true;
    }
    let mine: Vec<&AclBinding> = acls
        .iter()
        .filter(|b| b.resource_type == rt && b.applies_to(principal, host))
        .collect();
    let denies = |b: &AclBinding| {
        mine.iter().any(|d| {
            d.permission == Permission::Deny
                && (d.operation == op || d.operation == Operation::All)
                && match d.pattern_type {
                    PatternType::Literal => {
                        d.resource_name == WILDCARD
                            || (b.pattern_type == PatternType::Literal
                                && d.resource_name == b.resource_name)
                    }
                    PatternType::Prefixed => b.resource_name.starts_with(d.resource_name.as_str()),
                    _ => false,
                }
        })
    };
    if mine
        .iter()
        .any(|b| b.permission == Permission::Allow && allow_covers(b.operation, op) && !denies(b))
    {
        return true;
    }
    settings.allow_everyone_if_no_acl_found && !acls.iter().any(|b| b.resource_type == rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        host: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    fn topic(
        name: &str,
        pt: PatternType,
        who: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        acl(ResourceType::Topic, name, pt, who, "*", op, perm)
    }

    fn set(v: &[AclBinding]) -> Acls {
        v.iter().cloned().collect()
    }

    const NO_SETTINGS: AuthorizerSettings = AuthorizerSettings {
        super_users: BTreeSet::new(),
        allow_everyone_if_no_acl_found: false,
    };

    fn ok(acls: &Acls, who: &str, op: Operation, name: &str) -> bool {
        decide(
            &NO_SETTINGS,
            acls,
            who,
            "127.0.0.1",
            op,
            ResourceType::Topic,
            name,
        )
        .allowed()
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        let acls = set(&[
            topic("orders", Literal, "User:alice", Read, Allow),
            topic("pay-", Prefixed, "User:bob", Write, Allow),
            topic("*", Literal, "User:carol", Describe, Allow),
        ]);
        assert!(ok(&acls, "User:alice", Read, "orders"));
        assert!(!ok(&acls, "User:alice", Read, "orders2"));
        assert!(!ok(&acls, "User:alice", Write, "orders"));
        assert!(ok(&acls, "User:bob", Write, "pay-eu"));
        assert!(ok(&acls, "User:bob", Write, "pay-"));
        assert!(!ok(&acls, "User:bob", Write, "pa"));
        assert!(ok(&acls, "User:carol", Describe, "anything"));
        assert!(!ok(&acls, "User:dave", Describe, "orders"));
        // The resource type must agree.
        assert!(!decide(
            &NO_SETTINGS,
            &acls,
            "User:alice",
            "h",
            Read,
            ResourceType::Group,
            "orders"
        )
        .allowed());
    }

    #[test]
    fn deny_wins_and_all_matches_every_operation() {
        let acls = set(&[
            topic("t", Literal, "User:*", All, Allow),
            topic("t", Literal, "User:mallory", Write, Deny),
            topic("s", Prefixed, "User:eve", All, Deny),
            topic("secret", Literal, "User:eve", Read, Allow),
        ]);
        assert!(ok(&acls, "User:anyone", Write, "t"));
        assert!(ok(&acls, "User:anyone", AlterConfigs, "t"));
        assert!(ok(&acls, "User:mallory", Read, "t"));
        assert_eq!(
            decide(
                &NO_SETTINGS,
                &acls,
                "User:mallory",
                "h",
                Write,
                ResourceType::Topic,
                "t"
            ),
            Decision::Denied
        );
        assert!(!ok(&acls, "User:eve", Read, "secret"));
        assert!(!ok(&acls, "User:eve", Describe, "secret"));
    }

    #[test]
    fn implied_operations() {
        for (granted, implied, not) in [
            (Read, Describe, Write),
            (Write, Describe, Read),
            (Delete, Describe, Alter),
            (Alter, Describe, AlterConfigs),
            (AlterConfigs, DescribeConfigs, Describe),
        ] {
            let acls = set(&[topic("t", Literal, "User:u", granted, Allow)]);
            assert!(
                ok(&acls, "User:u", implied, "t"),
                "{granted} implies {implied}"
            );
            assert!(
                !ok(&acls, "User:u", not, "t"),
                "{granted} does not imply {not}"
            );
        }
        // A DENY of READ does not deny DESCRIBE.
        let acls = set(&[
            topic("t", Literal, "User:u", Describe, Allow),
            topic("t", Literal, "User:u", Read, Deny),
        ]);
        assert!(ok(&acls, "User:u", Describe, "t"));
        assert!(!ok(&acls, "User:u", Read, "t"));
    }

    #[test]
    fn hosts_super_users_and_no_acl_found() {
        let acls = set(&[acl(
            ResourceType::Topic,
            "t",
            Literal,
            "User:u",
            "10.0.0.1",
            Read,
            Allow,
        )]);
        let d = |s: &AuthorizerSettings, who: &str, host: &str, name: &str| {
            decide(s, &acls, who, host, Read, ResourceType::Topic, name)
        };
        assert!(d(&NO_SETTINGS, "User:u", "10.0.0.1", "t").allowed());
        assert!(!d(&NO_SETTINGS, "User:u", "10.0.0.2", "t").allowed());
        let open = AuthorizerSettings {
            super_users: ["User:admin".to_string()].into(),
            allow_everyone_if_no_acl_found: true,
        };
        assert_eq!(d(&open, "User:admin", "x", "t"), Decision::SuperUser);
        // An ACL exists for `t` (for someone else): no fallback.
        assert_eq!(d(&open, "User:v", "10.0.0.1", "t"), Decision::NoMatch);
        // No ACL for `other`: everyone is allowed.
        assert_eq!(
            d(&open, "User:v", "10.0.0.1", "other"),
            Decision::NoAclAllowed
        );
        assert_eq!(d(&NO_SETTINGS, "User:v", "h", "other"), Decision::NoMatch);
    }

    #[test]
    fn allows_any_topic_for_idempotent_write() {
        let any = |acls: &Acls| {
            allows_any(
                &NO_SETTINGS,
                acls,
                "User:u",
                "h",
                Write,
                ResourceType::Topic,
            )
        };
        assert!(!any(&set(&[])));
        assert!(any(&set(&[topic("a", Literal, "User:u", Write, Allow)])));
        assert!(any(&set(&[topic("a", Prefixed, "User:u", All, Allow)])));
        assert!(!any(&set(&[topic("a", Literal, "User:u", Read, Allow)])));
        assert!(!any(&set(&[
            topic("ab", Literal, "User:u", Write, Allow),
            topic("a", Prefixed, "User:u", Write, Deny),
        ])));
        assert!(!any(&set(&[
            topic("ab", Prefixed, "User:u", Write, Allow),
            topic("*", Literal, "User:*", All, Deny),
        ])));
        assert!(any(&set(&[
            topic("ab", Literal, "User:u", Write, Allow),
            topic("x", Literal, "User:u", Write, Deny),
        ])));
    }

    #[test]
    fn filters_match_as_kafka() {
        let lit = topic("orders", Literal, "User:a", Read, Allow);
        let pre = topic("ord", Prefixed, "User:a", Read, Allow);
        let wild = topic("*", Literal, "User:b", Write, Deny);
        let f = |rt, name: Option<&str>, pt| AclFilter {
            resource_type: rt,
            resource_name: name.map(str::to_string),
            pattern_type: pt,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        };
        let m = |flt: &AclFilter| [&lit, &pre, &wild].map(|b| flt.matches(b));
        assert_eq!(
            m(&f(ResourceType::Any, None, PatternType::Any)),
            [true, true, true]
        );
        assert_eq!(
            m(&f(ResourceType::Group, None, PatternType::Any)),
            [false, false, false]
        );
        assert_eq!(
            m(&f(ResourceType::Topic, Some("orders"), PatternType::Any)),
            [true, false, false]
        );
        assert_eq!(
            m(&f(ResourceType::Topic, Some("orders"), Match)),
            [true, true, true]
        );
        assert_eq!(
            m(&f(ResourceType::Topic, Some("ord"), Prefixed)),
            [false, true, false]
        );
        assert_eq!(
            m(&f(ResourceType::Topic, None, Literal)),
            [true, false, true]
        );
        let mut by_who = f(ResourceType::Any, None, PatternType::Any);
        by_who.principal = Some("User:b".into());
        by_who.permission = Permission::Deny;
        assert_eq!(m(&by_who), [false, false, true]);
        by_who.operation = Operation::Read;
        assert_eq!(m(&by_who), [false, false, false]);
    }

    #[test]
    fn invalid_bindings_are_named() {
        let good = topic("t", Literal, "User:a", Read, Allow);
        assert_eq!(good.invalid(), None);
        let mut b = good.clone();
        b.pattern_type = Match;
        assert!(b.invalid().is_some());
        let mut b = good.clone();
        b.principal = "alice".into();
        assert!(b.invalid().is_some());
        let mut b = good.clone();
        b.resource_type = ResourceType::Cluster;
        assert!(b.invalid().is_some());
        b.resource_name = CLUSTER_NAME.into();
        assert_eq!(b.invalid(), None);
        assert!(
            AuthorizerSettings::parse_super_users("User:a;User:b")
                .unwrap()
                .len()
                == 2
        );
        assert!(AuthorizerSettings::parse_super_users("alice").is_err());
    }
}
