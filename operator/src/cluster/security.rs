//! What `spec.listeners.secure` and `spec.authorization` make of the brokers:
//! a second named Kafka listener with TLS and/or SASL next to the brokers' own
//! PLAINTEXT one, the certificate files it reads (from the cluster CA the
//! operator keeps, or a Secret of the user's), the ACL authorizer, and the admin
//! API's bearer token (Secret `<cluster>-admin-token`, mounted into the brokers
//! and sent by the operator), and TLS on the admin/internal listener (Secret
//! `<cluster>-internal-tls` from the cluster CA: brokers authenticate each other
//! with it and the operator verifies them against the CA; see
//! [`next_internal_tls`] for how a running Cluster is switched). Pure builders
//! plus [`ensure_secrets`], which creates or renews those Secrets and writes
//! nothing when they are good.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{EnvVar, Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

use super::certs::{self, Leaf};
use super::validate::ValidatedCluster;
use crate::crd::cluster::{InternalTls, ListenerAuthentication, SecureListenerSpec};
use crate::crd::Cluster;
use crate::{Error, Result};

/// Name of the brokers' own listener (PLAINTEXT: the `kafka` port).
pub const INTERNAL: &str = "INTERNAL";
/// Name of the client listener of `spec.listeners.secure`.
pub const SECURE: &str = "SECURE";
/// Where the listener's certificate files are mounted in a broker.
pub const TLS_MOUNT: &str = "/etc/strata/tls";
/// Where the admin listener's certificate files are mounted in a broker.
pub const INTERNAL_TLS_MOUNT: &str = "/etc/strata/internal-tls";
/// Where the admin token is mounted in a broker.
pub const TOKEN_MOUNT: &str = "/etc/strata/admin-token";
/// Key of the token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// The principal the operator (and brokers calling each other) act as with the
/// admin token: a super user of every Cluster the operator secures.
pub const OPERATOR_PRINCIPAL: &str = "User:strata-operator";
/// Principal mapping of client certificates: `CN=alice` is `User:alice`.
pub const CN_RULE: &str = "RULE:^CN=([^,]+)$/$1/,DEFAULT";

pub fn ca_secret(cluster: &str) -> String {
    format!("{cluster}-ca")
}

pub fn admin_token_secret(cluster: &str) -> String {
    format!("{cluster}-admin-token")
}

pub fn internal_tls_secret(cluster: &str) -> String {
    format!("{cluster}-internal-tls")
}

/// The name the brokers' admin certificate carries and every client verifies
/// (brokers dial each other by pod IP, which one shared certificate cannot
/// name): the bootstrap Service's `<svc>.<ns>.svc`.
pub fn internal_peer_name(cluster: &str, namespace: &str) -> String {
    format!(
        "{}.{namespace}.svc",
        super::Names::new(cluster).bootstrap_service()
    )
}

/// The principal the brokers' admin certificate maps to (subject
/// `CN=<cluster>-broker,O=strata`; neither DEFAULT nor [`CN_RULE`] shortens it).
pub fn broker_principal(cluster: &str) -> String {
    format!("User:CN={cluster}-broker,O=strata")
}

/// The next step of the admin listener's switch to TLS. `current` is the
/// status's; `brokers_exist`: the StatefulSet is there; `rolled`: every broker
/// runs the pod template built for `current` and is ready. A new secured Cluster
/// starts on TLS; a running one goes through the two intermediate steps, one
/// complete roll each. Once on, TLS is never switched off again by the operator.
pub fn next_internal_tls(
    current: Option<InternalTls>,
    secured: bool,
    brokers_exist: bool,
    rolled: bool,
) -> Option<InternalTls> {
    match current {
        None if !secured => None,
        None if brokers_exist => Some(InternalTls::AcceptingTls),
        None => Some(InternalTls::Tls),
        Some(InternalTls::AcceptingTls) if rolled => Some(InternalTls::CallingWithTls),
        Some(InternalTls::CallingWithTls) if rolled => Some(InternalTls::Tls),
        other => other,
    }
}

/// Whether the operator calls the brokers with TLS: once every broker serves it.
pub fn operator_uses_tls(step: Option<InternalTls>) -> bool {
    matches!(
        step,
        Some(InternalTls::CallingWithTls) | Some(InternalTls::Tls)
    )
}

/// The Secret with the brokers' `tls.crt`, `tls.key` and `ca.crt`, when the
/// secure listener uses TLS.
pub fn broker_tls_secret(cluster: &ValidatedCluster) -> Option<String> {
    let s = cluster.spec.listeners.secure.as_ref().filter(|s| s.tls)?;
    Some(
        s.certificate_secret
            .clone()
            .unwrap_or_else(|| format!("{}-broker-tls", cluster.name)),
    )
}

/// Whether the admin API is protected by the operator's token (every Cluster
/// with a secure listener or authorization, or whose admin listener was
/// switched to TLS: that stays).
pub fn secured(cluster: &ValidatedCluster) -> bool {
    wants_security(&cluster.spec) || cluster.internal_tls.is_some()
}

/// What the spec alone asks for.
pub fn wants_security(spec: &crate::crd::cluster::ClusterSpec) -> bool {
    spec.listeners.secure.is_some() || spec.authorization.is_some()
}

/// Kafka's security protocol of the secure listener.
pub fn protocol(s: &SecureListenerSpec) -> &'static str {
    let sasl = matches!(
        s.authentication,
        ListenerAuthentication::ScramSha256 | ListenerAuthentication::ScramSha512
    );
    match (s.tls, sasl) {
        (true, true) => "SASL_SSL",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (false, false) => "PLAINTEXT",
    }
}

/// Checks what the spec alone can tell.
pub fn validate(secure: Option<&SecureListenerSpec>, ports: &[i32]) -> Result<(), String> {
    if let Some(s) = secure {
        if s.authentication == ListenerAuthentication::Tls && !s.tls {
            return Err("spec.listeners.secure.authentication tls needs tls: true".into());
        }
        if ports.contains(&s.port) {
            return Err(format!(
                "spec.listeners.secure.port {} is already used by another listener",
                s.port
            ));
        }
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The broker config lines of the secure listener and the authorizer (the
/// files' paths are in the environment, see [`listener_env`]).
pub fn broker_config(cluster: &ValidatedCluster) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {}\n", toml_string(v)));
    if let Some(s) = &cluster.spec.listeners.secure {
        line(
            "listener_security_protocol_map",
            &format!("{INTERNAL}:PLAINTEXT,{SECURE}:{}", protocol(s)),
        );
        line("inter_broker_listener_name", INTERNAL);
        match s.authentication {
            ListenerAuthentication::ScramSha256 => line("sasl_enabled_mechanisms", "SCRAM-SHA-256"),
            ListenerAuthentication::ScramSha512 => line("sasl_enabled_mechanisms", "SCRAM-SHA-512"),
            ListenerAuthentication::Tls => {
                line("ssl_client_auth", "required");
                line("ssl_principal_mapping_rules", CN_RULE);
            }
            ListenerAuthentication::None => {}
        }
    }
    if let Some(step) = cluster.internal_tls {
        // The files' paths are in the environment (see [`listener_env`]). The operator authenticates with the token, the brokers with certificates.
        line("admin_ssl_client_auth", "requested");
        line(
            "admin_ssl_peer_name",
            &internal_peer_name(&cluster.name, &cluster.namespace),
        );
        let (accept, connect) = match step {
            InternalTls::AcceptingTls => (true, true),
            InternalTls::CallingWithTls => (true, false),
            InternalTls::Tls => (false, false),
        };
        out.push_str(&format!(
            "admin_ssl_accept_plaintext = {accept}\nadmin_ssl_connect_plaintext = {connect}\n"
        ));
    }
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {}\n", toml_string(v)));
    if let Some(a) = &cluster.spec.authorization {
        line("authorizer_class_name", "acl");
        let mut supers = vec![OPERATOR_PRINCIPAL.to_string()];
        if cluster.internal_tls.is_some() {
            supers.push(broker_principal(&cluster.name));
        }
        supers.extend(a.super_users.iter().cloned());
        line("super_users", &supers.join(";"));
    }
    if secured(cluster) {
        line("admin_token_principal", OPERATOR_PRINCIPAL);
    }
    if cluster
        .spec
        .authorization
        .as_ref()
        .is_some_and(|a| a.allow_everyone_if_no_acl_found)
    {
        out.push_str("allow_everyone_if_no_acl_found = true\n");
    }
    out
}

/// `STRATA_LISTENERS` / `STRATA_ADVERTISED_LISTENERS` of a broker (after
/// `POD_IP`, `POD_NAME` and `POD_NAMESPACE` in the env list): clients of the
/// secure listener reach each broker by its DNS name, which its certificate
/// names. The mounted files' paths too, as the data directory's are (where a
/// volume is mounted belongs to the pod spec, not to the shared config file).
pub fn listener_env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    let env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut out = Vec::new();
    if secured(cluster) {
        out.push(env(
            "STRATA_ADMIN_TOKEN_FILE",
            format!("{TOKEN_MOUNT}/{TOKEN_KEY}"),
        ));
    }
    if cluster.internal_tls.is_some() {
        for (var, file) in [
            ("STRATA_ADMIN_SSL_CERTIFICATE_LOCATION", "tls.crt"),
            ("STRATA_ADMIN_SSL_KEY_LOCATION", "tls.key"),
            ("STRATA_ADMIN_SSL_CA_LOCATION", "ca.crt"),
        ] {
            out.push(env(var, format!("{INTERNAL_TLS_MOUNT}/{file}")));
        }
    }
    let Some(s) = &cluster.spec.listeners.secure else {
        return out;
    };
    if s.tls {
        out.push(env(
            "STRATA_SSL_CERTIFICATE_LOCATION",
            format!("{TLS_MOUNT}/tls.crt"),
        ));
        out.push(env(
            "STRATA_SSL_KEY_LOCATION",
            format!("{TLS_MOUNT}/tls.key"),
        ));
    }
    if s.authentication == ListenerAuthentication::Tls {
        out.push(env("STRATA_SSL_CA_LOCATION", format!("{TLS_MOUNT}/ca.crt")));
    }
    let kafka = cluster.spec.listeners.kafka;
    let host = format!(
        "$(POD_NAME).{}.$(POD_NAMESPACE).svc.cluster.local",
        cluster.names.headless_service()
    );
    out.extend([
        env(
            "STRATA_LISTENERS",
            format!(
                "{INTERNAL}://$(POD_IP):{kafka},{SECURE}://$(POD_IP):{}",
                s.port
            ),
        ),
        env(
            "STRATA_ADVERTISED_LISTENERS",
            format!(
                "{INTERNAL}://$(POD_IP):{kafka},{SECURE}://{host}:{}",
                s.port
            ),
        ),
    ]);
    out
}

/// The brokers' volumes and mounts for the certificate and the token.
pub fn volumes(cluster: &ValidatedCluster) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut add = |name: &str, secret: String, path: &str| {
        volumes.push(Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    };
    if let Some(secret) = broker_tls_secret(cluster) {
        add("tls", secret, TLS_MOUNT);
    }
    if cluster.internal_tls.is_some() {
        add(
            "internal-tls",
            internal_tls_secret(&cluster.name),
            INTERNAL_TLS_MOUNT,
        );
    }
    if secured(cluster) {
        add(
            "admin-token",
            admin_token_secret(&cluster.name),
            TOKEN_MOUNT,
        );
    }
    (volumes, mounts)
}

/// A Secret's value as text.
pub fn secret_data(secret: &Secret, key: &str) -> Option<String> {
    let v = secret.data.as_ref()?.get(key)?;
    String::from_utf8(v.0.clone()).ok()
}

fn owned_secret(cluster: &ValidatedCluster, name: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: super::build::object_meta(cluster, name.to_string()),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// Random bytes from the operating system, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `secret` (create, or replace when `existing`) and answers what was
/// written; conflicts surface as errors and the reconcile retries.
pub async fn put(
    api: &Api<Secret>,
    existing: Option<&Secret>,
    mut secret: Secret,
) -> Result<Secret> {
    Ok(match existing {
        None => api.create(&PostParams::default(), &secret).await?,
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            let name = secret.metadata.name.clone().unwrap_or_default();
            api.replace(&name, &PostParams::default(), &secret).await?
        }
    })
}

/// The cluster CA (created once) and its key, PEM.
pub async fn cluster_ca(api: &Api<Secret>, cluster: &ValidatedCluster) -> Result<certs::Pem> {
    let name = ca_secret(&cluster.name);
    let existing = api.get_opt(&name).await?;
    if let Some(s) = &existing {
        if let (Some(cert), Some(key)) = (secret_data(s, "ca.crt"), secret_data(s, "ca.key")) {
            return Ok(certs::Pem { cert, key });
        }
    }
    let ca = certs::new_ca(&cluster.name, &cluster.namespace, SystemTime::now())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    put(
        api,
        existing.as_ref(),
        owned_secret(
            cluster,
            &name,
            BTreeMap::from([
                ("ca.crt".to_string(), ca.cert.clone()),
                ("ca.key".to_string(), ca.key.clone()),
            ]),
        ),
    )
    .await?;
    tracing::info!(cluster = %cluster.name, "cluster CA created");
    Ok(ca)
}

/// Creates the admin token, the CA and the brokers' certificate when they are
/// missing, and renews the certificate when it is due (a third of its life
/// left) or lacks a broker name. Brokers reload the renewed files by themselves.
pub async fn ensure_secrets(cluster: &ValidatedCluster, client: &kube::Client) -> Result<()> {
    if !secured(cluster) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let token_name = admin_token_secret(&cluster.name);
    let token = api.get_opt(&token_name).await?;
    if token
        .as_ref()
        .and_then(|s| secret_data(s, TOKEN_KEY))
        .is_none()
    {
        let data = BTreeMap::from([(TOKEN_KEY.to_string(), random_hex(32)?)]);
        put(
            &api,
            token.as_ref(),
            owned_secret(cluster, &token_name, data),
        )
        .await?;
        tracing::info!(cluster = %cluster.name, "admin token created");
    }
    let names = certs::broker_names(&cluster.name, &cluster.namespace);
    if cluster.internal_tls.is_some() {
        let ca = cluster_ca(&api, cluster).await?;
        let name = internal_tls_secret(&cluster.name);
        ensure_broker_certificate(&api, cluster, &ca, &name, &names).await?;
    }
    let issued_here = cluster
        .spec
        .listeners
        .secure
        .as_ref()
        .is_some_and(|s| s.tls && s.certificate_secret.is_none());
    if !issued_here {
        return Ok(());
    }
    let Some(name) = broker_tls_secret(cluster) else {
        return Ok(());
    };
    let ca = cluster_ca(&api, cluster).await?;
    ensure_broker_certificate(&api, cluster, &ca, &name, &names).await
}

/// Issues Secret `name` (the brokers' `tls.crt`, `tls.key`, `ca.crt`) when it is
/// missing, due for renewal, from another CA, or lacks one of `names`.
async fn ensure_broker_certificate(
    api: &Api<Secret>,
    cluster: &ValidatedCluster,
    ca: &certs::Pem,
    name: &str,
    names: &[String],
) -> Result<()> {
    let now = SystemTime::now();
    let existing = api.get_opt(name).await?;
    let good = existing.as_ref().is_some_and(|s| {
        secret_data(s, "ca.crt").as_deref() == Some(ca.cert.as_str())
            && secret_data(s, "tls.crt").is_some_and(|c| certs::still_good(&c, names, now))
    });
    if good {
        return Ok(());
    }
    let leaf = certs::issue(
        &cluster.name,
        &cluster.namespace,
        &ca.key,
        Leaf::Server(names),
        now,
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let data = BTreeMap::from([
        ("tls.crt".to_string(), leaf.cert),
        ("tls.key".to_string(), leaf.key),
        ("ca.crt".to_string(), ca.cert.clone()),
    ]);
    put(api, existing.as_ref(), owned_secret(cluster, name, data)).await?;
    tracing::info!(cluster = %cluster.name, secret = %name, "broker certificate issued");
    Ok(())
}

/// The admin token of a Cluster the operator secured, if it has one yet.
pub async fn admin_token(client: &kube::Client, cluster: &Cluster) -> Result<Option<String>> {
    let switched = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.internal_tls.is_some());
    if !wants_security(&cluster.spec) && !switched {
        return Ok(None);
    }
    let ns = kube::ResourceExt::namespace(cluster).unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let name = admin_token_secret(&kube::ResourceExt::name_any(cluster));
    Ok(api
        .get_opt(&name)
        .await?
        .and_then(|s| secret_data(&s, TOKEN_KEY)))
}

/// How the operator verifies a Cluster's brokers on their TLS admin listener:
/// against the cluster CA (Secret `<cluster>-ca`), for the shared peer name.
pub async fn internal_client_tls(
    client: &kube::Client,
    cluster: &Cluster,
) -> Result<tonic::transport::ClientTlsConfig> {
    let ns = kube::ResourceExt::namespace(cluster).unwrap_or_default();
    let name = kube::ResourceExt::name_any(cluster);
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca = api
        .get_opt(&ca_secret(&name))
        .await?
        .and_then(|s| secret_data(&s, "ca.crt"))
        .ok_or_else(|| Error::Invalid(format!("Secret {} has no ca.crt yet", ca_secret(&name))))?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name(internal_peer_name(&name, &ns)))
}

/// Bytes of a Secret value.
pub fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;
    use crate::cluster::validate;

    #[test]
    fn a_scram_listener_over_tls_with_acls() {
        let v = validate(&cluster(
            "listeners:\n  secure:\n    port: 9094\nauthorization:\n  superUsers: [\"User:ops\"]",
        ))
        .expect("valid");
        let toml = broker_config(&v);
        assert!(
            toml.contains(
                "listener_security_protocol_map = \"INTERNAL:PLAINTEXT,SECURE:SASL_SSL\""
            ),
            "{toml}"
        );
        assert!(toml.contains("sasl_enabled_mechanisms = \"SCRAM-SHA-512\""));
        assert!(toml.contains("authorizer_class_name = \"acl\""));
        assert!(toml.contains("super_users = \"User:strata-operator;User:ops\""));
        assert!(toml.contains("admin_token_principal = \"User:strata-operator\""));
        let env: BTreeMap<String, String> = listener_env(&v)
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env["STRATA_SSL_CERTIFICATE_LOCATION"],
            "/etc/strata/tls/tls.crt"
        );
        assert_eq!(
            env["STRATA_ADMIN_TOKEN_FILE"],
            "/etc/strata/admin-token/token"
        );
        assert!(
            !env.contains_key("STRATA_SSL_CA_LOCATION"),
            "no client certificates"
        );
        assert_eq!(
            env["STRATA_LISTENERS"],
            "INTERNAL://$(POD_IP):9092,SECURE://$(POD_IP):9094"
        );
        assert_eq!(
            Some(env["STRATA_ADVERTISED_LISTENERS"].as_str()),
            Some("INTERNAL://$(POD_IP):9092,SECURE://$(POD_NAME).demo-brokers.$(POD_NAMESPACE).svc.cluster.local:9094")
        );
        let (vols, mounts) = volumes(&v);
        assert_eq!(vols.len(), 2);
        assert_eq!(
            vols[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("demo-broker-tls")
        );
        assert_eq!(mounts[1].mount_path, TOKEN_MOUNT);
    }

    #[test]
    fn the_admin_listener_switches_to_tls_in_three_complete_rolls() {
        use InternalTls::*;
        // A new secured Cluster starts on TLS; a plain one stays in clear text.
        assert_eq!(next_internal_tls(None, true, false, false), Some(Tls));
        assert_eq!(next_internal_tls(None, false, true, true), None);
        // A running one starts the switch, and moves on only after a whole roll.
        assert_eq!(
            next_internal_tls(None, true, true, true),
            Some(AcceptingTls)
        );
        assert_eq!(
            next_internal_tls(Some(AcceptingTls), true, true, false),
            Some(AcceptingTls)
        );
        assert_eq!(
            next_internal_tls(Some(AcceptingTls), true, true, true),
            Some(CallingWithTls)
        );
        assert_eq!(
            next_internal_tls(Some(CallingWithTls), true, true, false),
            Some(CallingWithTls)
        );
        assert_eq!(
            next_internal_tls(Some(CallingWithTls), true, true, true),
            Some(Tls)
        );
        assert_eq!(next_internal_tls(Some(Tls), true, true, true), Some(Tls));
        // Removing the secure listener does not switch TLS off again.
        assert_eq!(next_internal_tls(Some(Tls), false, true, true), Some(Tls));
        // The operator calls with TLS once every broker serves it.
        assert!(!operator_uses_tls(None) && !operator_uses_tls(Some(AcceptingTls)));
        assert!(operator_uses_tls(Some(CallingWithTls)) && operator_uses_tls(Some(Tls)));
    }

    #[test]
    fn each_step_configures_the_admin_listener() {
        let mut v = validate(&cluster("authorization: {}")).expect("valid");
        for (step, accept, connect) in [
            (InternalTls::AcceptingTls, true, true),
            (InternalTls::CallingWithTls, true, false),
            (InternalTls::Tls, false, false),
        ] {
            v.internal_tls = Some(step);
            let toml = broker_config(&v);
            assert!(
                toml.contains(&format!("admin_ssl_accept_plaintext = {accept}\n")),
                "{toml}"
            );
            assert!(
                toml.contains(&format!("admin_ssl_connect_plaintext = {connect}\n")),
                "{toml}"
            );
            assert!(
                toml.contains("admin_ssl_client_auth = \"requested\""),
                "{toml}"
            );
            assert!(
                toml.contains("admin_ssl_peer_name = \"demo-bootstrap.kafka.svc\""),
                "{toml}"
            );
            // The brokers' certificate principal may call the internal API.
            assert!(
                toml.contains(
                    "super_users = \"User:strata-operator;User:CN=demo-broker,O=strata\""
                ),
                "{toml}"
            );
            let env: BTreeMap<String, String> = listener_env(&v)
                .into_iter()
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect();
            assert_eq!(
                env["STRATA_ADMIN_SSL_CA_LOCATION"],
                "/etc/strata/internal-tls/ca.crt"
            );
            let (vols, mounts) = volumes(&v);
            assert!(vols
                .iter()
                .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    == Some("demo-internal-tls")));
            assert!(mounts.iter().any(|m| m.mount_path == INTERNAL_TLS_MOUNT));
        }
        // The peer name is one of the names the brokers' certificate carries.
        assert!(certs::broker_names("demo", "kafka").contains(&internal_peer_name("demo", "kafka")));
    }

    #[test]
    fn a_plain_cluster_gets_nothing_and_tls_auth_needs_tls() {
        let v = validate(&cluster("replicas: 1")).expect("valid");
        assert_eq!(broker_config(&v), "");
        assert!(listener_env(&v).is_empty());
        assert!(volumes(&v).0.is_empty());
        let mtls = validate(&cluster(
            "listeners:\n  secure:\n    authentication: tls\n    certificateSecret: mine",
        ))
        .expect("valid");
        let toml = broker_config(&mtls);
        assert!(toml.contains(":SSL\""), "{toml}");
        assert!(toml.contains("ssl_client_auth = \"required\""));
        assert!(listener_env(&mtls)
            .iter()
            .any(|e| e.name == "STRATA_SSL_CA_LOCATION"));
        assert_eq!(broker_tls_secret(&mtls).as_deref(), Some("mine"));
        assert!(validate(&cluster(
            "listeners:\n  secure:\n    tls: false\n    authentication: tls"
        ))
        .is_err());
        assert!(validate(&cluster("listeners:\n  secure:\n    port: 9093")).is_err());
        let plain_sasl = validate(&cluster(
            "listeners:\n  secure:\n    tls: false\n    authentication: scram-sha-256",
        ))
        .expect("valid");
        assert!(broker_config(&plain_sasl).contains("SECURE:SASL_PLAINTEXT"));
        assert!(broker_tls_secret(&plain_sasl).is_none());
    }
}
