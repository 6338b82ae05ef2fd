//! The pure part of the User controller: the ACL bindings a spec asks for and
//! how they differ from the brokers', the SCRAM salted password, and the
//! Secret an application mounts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;

use crate::admin::pb;
use crate::crd::cluster::{ListenerAuthentication, SecureListenerSpec};
use crate::crd::user::{
    AclPatternType, AclPermission, AclResourceType, UserAuthenticationType, UserSpec,
};
use crate::crd::Cluster;

/// Iterations of a SCRAM credential the operator makes (Kafka's tool uses 4096;
/// the broker accepts 4096..=16384).
pub const SCRAM_ITERATIONS: u32 = 8192;

/// The principal of a User: `User:<name>`.
pub fn principal(name: &str) -> String {
    format!("User:{name}")
}

fn resource_type(t: AclResourceType) -> &'static str {
    match t {
        AclResourceType::Topic => "TOPIC",
        AclResourceType::Group => "GROUP",
        AclResourceType::Cluster => "CLUSTER",
        AclResourceType::TransactionalId => "TRANSACTIONAL_ID",
    }
}

/// The bindings `spec.acls` stands for: one per operation, in a stable order.
/// Operation names are normalised to Kafka's (`DescribeConfigs` is
/// `DESCRIBE_CONFIGS`); an unknown one is an error naming it.
pub fn desired_acls(spec: &UserSpec, principal: &str) -> Result<Vec<pb::AclBinding>, String> {
    let mut out = BTreeSet::new();
    for (i, acl) in spec.acls.iter().enumerate() {
        let (name, pattern) = match acl.resource.kind {
            AclResourceType::Cluster => ("kafka-cluster".to_string(), "LITERAL"),
            _ => {
                let name = acl
                    .resource
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("spec.acls[{i}].resource.name is required"))?;
                let pattern = match acl.resource.pattern_type {
                    AclPatternType::Literal => "LITERAL",
                    AclPatternType::Prefixed => "PREFIXED",
                };
                (name, pattern)
            }
        };
        for op in &acl.operations {
            let operation = operation_name(op)
                .ok_or_else(|| format!("spec.acls[{i}].operations: unknown operation {op:?}"))?;
            out.insert(Key {
                resource_type: resource_type(acl.resource.kind),
                resource_name: name.clone(),
                pattern_type: pattern,
                host: acl.host.clone(),
                operation,
                permission: match acl.permission {
                    AclPermission::Allow => "ALLOW",
                    AclPermission::Deny => "DENY",
                },
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|k| pb::AclBinding {
            resource_type: k.resource_type.into(),
            resource_name: k.resource_name,
            pattern_type: k.pattern_type.into(),
            principal: principal.to_string(),
            host: k.host,
            operation: k.operation.into(),
            permission: k.permission.into(),
        })
        .collect())
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource_type: &'static str,
    resource_name: String,
    pattern_type: &'static str,
    host: String,
    operation: &'static str,
    permission: &'static str,
}

const OPERATIONS: &[&str] = &[
    "ALL",
    "READ",
    "WRITE",
    "CREATE",
    "DELETE",
    "ALTER",
    "DESCRIBE",
    "CLUSTER_ACTION",
    "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS",
    "IDEMPOTENT_WRITE",
];

fn operation_name(op: &str) -> Option<&'static str> {
    let squash = |s: &str| s.replace('_', "").to_ascii_uppercase();
    let wanted = squash(op);
    OPERATIONS.iter().copied().find(|o| squash(o) == wanted)
}

/// The broker quotas `spec.quotas` stands for, by Kafka's config keys.
pub fn desired_quotas(spec: &UserSpec) -> HashMap<String, f64> {
    let Some(q) = &spec.quotas else {
        return HashMap::new();
    };
    [
        ("producer_byte_rate", q.producer_byte_rate.map(|v| v as f64)),
        ("consumer_byte_rate", q.consumer_byte_rate.map(|v| v as f64)),
        ("request_percentage", q.request_percentage),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
    .collect()
}

/// `(to create, to delete)` so that the brokers' bindings of the principal
/// become `desired`.
pub fn acl_changes(
    desired: &[pb::AclBinding],
    actual: &[pb::AclBinding],
) -> (Vec<pb::AclBinding>, Vec<pb::AclBinding>) {
    let create = desired
        .iter()
        .filter(|d| !actual.contains(d))
        .cloned()
        .collect();
    let delete = actual
        .iter()
        .filter(|a| !desired.contains(a))
        .cloned()
        .collect();
    (create, delete)
}

/// RFC 5802 `SaltedPassword` = PBKDF2(HMAC-H, password, salt, iterations).
pub fn salted_password(mechanism: &str, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let (alg, len) = if mechanism == "SCRAM-SHA-256" {
        (ring::pbkdf2::PBKDF2_HMAC_SHA256, 32)
    } else {
        (ring::pbkdf2::PBKDF2_HMAC_SHA512, 64)
    };
    let mut out = vec![0u8; len];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(alg, iterations, salt, password.as_bytes(), &mut out);
    out
}

/// `host:port` clients bootstrap from: the bootstrap Service's secure port (or
/// the plain one without a secure listener).
pub fn bootstrap(cluster: &Cluster, namespace: &str) -> String {
    let names = crate::cluster::Names::new(&kube::ResourceExt::name_any(cluster));
    let l = &cluster.spec.listeners;
    let port = l.secure.as_ref().map_or(l.kafka, |s| s.port);
    format!("{}.{namespace}.svc:{port}", names.bootstrap_service())
}

/// Kafka's security protocol a client of `cluster` uses.
pub fn client_protocol(secure: Option<&SecureListenerSpec>) -> &'static str {
    secure.map_or("PLAINTEXT", crate::cluster::security::protocol)
}

/// Why a User cannot authenticate on its Cluster as configured, if it cannot.
pub fn mismatch(
    kind: UserAuthenticationType,
    secure: Option<&SecureListenerSpec>,
) -> Option<String> {
    let listener = secure.map(|s| s.authentication);
    let fits = matches!(
        (kind, listener),
        (
            UserAuthenticationType::ScramSha256,
            Some(ListenerAuthentication::ScramSha256)
        ) | (
            UserAuthenticationType::ScramSha512,
            Some(ListenerAuthentication::ScramSha512)
        ) | (
            UserAuthenticationType::Tls,
            Some(ListenerAuthentication::Tls)
        )
    );
    if fits {
        return None;
    }
    Some(format!(
        "the Cluster's secure listener authenticates with {} but this user is {}",
        listener.map_or("nothing (no spec.listeners.secure)".to_string(), |a| {
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        }),
        serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    ))
}

/// The credential part of a User's Secret.
pub enum Credential<'a> {
    Scram {
        mechanism: &'static str,
        password: &'a str,
    },
    Certificate {
        cert: &'a str,
        key: &'a str,
    },
}

/// The Secret an application mounts: `bootstrap`, `security.protocol`, the CA
/// (`ca.crt`, when the listener uses TLS) and the credential (`username`,
/// `password`, `sasl.mechanism`, `sasl.jaas.config`; or `tls.crt`, `tls.key`).
pub fn secret_data(
    username: &str,
    bootstrap: &str,
    protocol: &str,
    ca: Option<&str>,
    credential: Credential<'_>,
) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([
        ("bootstrap".to_string(), bootstrap.to_string()),
        ("security.protocol".to_string(), protocol.to_string()),
        ("username".to_string(), username.to_string()),
    ]);
    if let Some(ca) = ca {
        d.insert("ca.crt".into(), ca.to_string());
    }
    match credential {
        Credential::Scram {
            mechanism,
            password,
        } => {
            d.insert("password".into(), password.to_string());
            d.insert("sasl.mechanism".into(), mechanism.to_string());
            d.insert(
                "sasl.jaas.config".into(),
                format!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{username}\" password=\"{password}\";"
                ),
            );
        }
        Credential::Certificate { cert, key } => {
            d.insert("tls.crt".into(), cert.to_string());
            d.insert("tls.key".into(), key.to_string());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> UserSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn quotas_map_to_kafkas_keys() {
        assert!(desired_quotas(&spec("clusterRef: demo")).is_empty());
        let q = desired_quotas(&spec(
            "clusterRef: demo
quotas: {producerByteRate: 1048576, requestPercentage: 12.5}
",
        ));
        assert_eq!(
            q.into_iter().collect::<BTreeMap<_, _>>(),
            [
                ("producer_byte_rate".to_string(), 1048576.0),
                ("request_percentage".to_string(), 12.5)
            ]
            .into()
        );
    }

    #[test]
    fn acls_expand_to_one_binding_per_operation() {
        let s = spec(
            "clusterRef: demo
acls:
- resource: {type: topic, name: orders, patternType: prefixed}
  operations: [Read, write, DescribeConfigs, Read]
- resource: {type: cluster}
  operations: [IdempotentWrite]
  permission: deny
  host: 10.0.0.1
",
        );
        let b = desired_acls(&s, "User:alice").expect("valid");
        let ops: Vec<(&str, &str, &str)> = b
            .iter()
            .map(|b| {
                (
                    b.resource_type.as_str(),
                    b.operation.as_str(),
                    b.permission.as_str(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                ("CLUSTER", "IDEMPOTENT_WRITE", "DENY"),
                ("TOPIC", "DESCRIBE_CONFIGS", "ALLOW"),
                ("TOPIC", "READ", "ALLOW"),
                ("TOPIC", "WRITE", "ALLOW"),
            ],
            "sorted, deduplicated, Kafka's names"
        );
        assert_eq!(b[0].resource_name, "kafka-cluster");
        assert_eq!(b[0].host, "10.0.0.1");
        assert_eq!(b[1].pattern_type, "PREFIXED");
        assert_eq!(b.len(), 4, "Read twice is one binding");
        assert!(b.iter().all(|b| b.principal == "User:alice"));
        let bad = spec(
            "clusterRef: demo\nacls:\n- resource: {type: topic, name: x}\n  operations: [Fly]",
        );
        assert!(desired_acls(&bad, "User:a").unwrap_err().contains("Fly"));
        let nameless =
            spec("clusterRef: demo\nacls:\n- resource: {type: group}\n  operations: [Read]");
        assert!(desired_acls(&nameless, "User:a")
            .unwrap_err()
            .contains("name"));
    }

    #[test]
    fn only_the_difference_is_changed() {
        let s = spec(
            "clusterRef: demo\nacls:\n- resource: {type: topic, name: t}\n  operations: [Read, Write]",
        );
        let desired = desired_acls(&s, "User:a").expect("valid");
        let mut stray = desired[0].clone();
        stray.operation = "DELETE".into();
        let actual = vec![desired[0].clone(), stray.clone()];
        let (create, delete) = acl_changes(&desired, &actual);
        assert_eq!(create, vec![desired[1].clone()]);
        assert_eq!(delete, vec![stray]);
        assert_eq!(acl_changes(&desired, &desired), (vec![], vec![]));
    }

    #[test]
    fn salted_password_gives_rfc_7677s_client_proof() {
        // RFC 7677 section 3: user "user", password "pencil", salt
        // W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations, and the ClientProof that
        // follows from the SaltedPassword and the exchange's AuthMessage.
        use ring::{digest, hmac};
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ];
        let sp = salted_password("SCRAM-SHA-256", "pencil", &salt, 4096);
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &sp), b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth.as_bytes(),
        );
        let proof: String = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| format!("{:02x}", a ^ b))
            .collect();
        // base64 dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=
        assert_eq!(
            proof,
            "747cdb65aa56224e2352137e52d7bdcad6a0f738df30782caa69a2cfb0277554"
        );
        assert_eq!(
            salted_password("SCRAM-SHA-512", "pencil", &salt, 4096).len(),
            64
        );
    }

    #[test]
    fn the_secret_has_what_a_client_needs() {
        let d = secret_data(
            "alice",
            "demo-bootstrap.ns.svc:9094",
            "SASL_SSL",
            Some("CA"),
            Credential::Scram {
                mechanism: "SCRAM-SHA-512",
                password: "pw",
            },
        );
        assert_eq!(d["bootstrap"], "demo-bootstrap.ns.svc:9094");
        assert_eq!(d["ca.crt"], "CA");
        assert_eq!(d["sasl.mechanism"], "SCRAM-SHA-512");
        assert!(d["sasl.jaas.config"].contains("username=\"alice\" password=\"pw\";"));
        let t = secret_data(
            "bob",
            "b:1",
            "SSL",
            Some("CA"),
            Credential::Certificate {
                cert: "C",
                key: "K",
            },
        );
        assert_eq!((t["tls.crt"].as_str(), t["tls.key"].as_str()), ("C", "K"));
        assert!(!t.contains_key("password"));
    }

    #[test]
    fn a_user_must_fit_the_listener() {
        let scram: SecureListenerSpec =
            serde_yaml::from_str("authentication: scram-sha-512").expect("listener");
        assert!(mismatch(UserAuthenticationType::ScramSha512, Some(&scram)).is_none());
        let why = mismatch(UserAuthenticationType::Tls, Some(&scram)).expect("mismatch");
        assert!(
            why.contains("scram-sha-512") && why.contains("tls"),
            "{why}"
        );
        assert!(mismatch(UserAuthenticationType::ScramSha256, None).is_some());
    }
}
