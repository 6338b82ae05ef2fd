//! Issue #15's operator path on the local control plane: a Cluster with a
//! SASL_SSL (SCRAM-SHA-512) listener whose certificate comes from the CA the
//! operator creates, ACLs on, and the admin API behind the operator's token;
//! `User` resources whose Secrets kcat pods mount to produce and consume; a
//! User without ACLs and a wrong password refused; deleting a User removes its
//! credential and ACLs from the brokers.
//!
//! Skips loudly without the setup binaries, unless `STRATA_E2E_REQUIRED=1`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use strata_e2e::kubelet::ImageMap;
use strata_e2e::testing::{self, wait_for};
use strata_e2e::{Env, EnvConfig};
use strata_operator::admin::{connect, pb, AdminChannels};
use strata_operator::crd::cluster::InternalTls;
use strata_operator::crd::{Cluster, Topic, User};
use strata_operator::metrics::Metrics;
use strata_operator::run::run;

mod support;
use support::{broker_binary, install_crds, operator_options, pod_outcome};

const NS: &str = "default";
const TEST_TIMEOUT: Duration = Duration::from_secs(420);
const USER_MOUNT: &str = "/etc/kafka-user";

fn kcat_binary() -> Option<PathBuf> {
    ["/usr/bin/kcat", "/usr/local/bin/kcat"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn create<K>(client: &Client, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

/// Runs a kcat pod with `user`'s Secret mounted (and its username and password,
/// or `password` instead, in the environment) to completion; answers its phase
/// and its log.
async fn kcat_as(
    client: &Client,
    pod: &str,
    user: &str,
    password: Option<&str>,
    args: &[&str],
    records: Option<&str>,
) -> (String, String) {
    let key = |k: &str| serde_json::json!({"secretKeyRef": {"name": user, "key": k}});
    let mut env = vec![
        serde_json::json!({"name": "BOOTSTRAP", "valueFrom": key("bootstrap")}),
        serde_json::json!({"name": "PROTOCOL", "valueFrom": key("security.protocol")}),
        serde_json::json!({"name": "MECHANISM", "valueFrom": key("sasl.mechanism")}),
        serde_json::json!({"name": "USERNAME", "valueFrom": key("username")}),
    ];
    env.push(match password {
        Some(p) => serde_json::json!({"name": "PASSWORD", "value": p}),
        None => serde_json::json!({"name": "PASSWORD", "valueFrom": key("password")}),
    });
    let mut all_args: Vec<String> = [
        "-b",
        "$(BOOTSTRAP)",
        "-X",
        "security.protocol=$(PROTOCOL)",
        "-X",
        "sasl.mechanisms=$(MECHANISM)",
        "-X",
        "sasl.username=$(USERNAME)",
        "-X",
        "sasl.password=$(PASSWORD)",
        "-X",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all_args.push(format!("ssl.ca.location={USER_MOUNT}/ca.crt"));
    all_args.extend(args.iter().map(|s| s.to_string()));
    let mut volumes = vec![serde_json::json!({"name": "user", "secret": {"secretName": user}})];
    let mut mounts = vec![serde_json::json!({"name": "user", "mountPath": USER_MOUNT})];
    if let Some(text) = records {
        let _: ConfigMap = create(
            client,
            serde_json::json!({"metadata": {"name": pod}, "data": {"records.txt": text}}),
        )
        .await;
        volumes.push(serde_json::json!({"name": "data", "configMap": {"name": pod}}));
        mounts.push(serde_json::json!({"name": "data", "mountPath": "/data"}));
    }
    let _: Pod = create(
        client,
        serde_json::json!({
            "metadata": {"name": pod},
            "spec": {
                "restartPolicy": "Never",
                "volumes": volumes,
                "containers": [{
                    "name": "kcat", "image": "kcat", "command": ["kcat"],
                    "args": all_args, "env": env, "volumeMounts": mounts,
                }],
            },
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pod_outcome(&pods, pod, Duration::from_secs(120)).await
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    String::from_utf8(s.data.as_ref()?.get(key)?.0.clone()).ok()
}

#[tokio::test]
async fn users_with_scram_over_tls_and_acls_on_an_operator_secured_cluster() {
    testing::init_tracing();
    if !testing::binaries_present(
        "security e2e",
        &["etcd", "kube-apiserver", "kube-controller-manager"],
    ) {
        return;
    }
    let (Some(broker), Some(kcat)) = (broker_binary(), kcat_binary()) else {
        let msg = "strata-broker (cargo build -p strata-broker) or kcat (apt) missing";
        if testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING security e2e: {msg} !!!!!\n");
        return;
    };
    let mut images = ImageMap::new();
    images.insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    images.insert("kcat".into(), kcat);
    let config = EnvConfig {
        images,
        ..EnvConfig::default()
    };
    testing::with_env("security e2e", config, TEST_TIMEOUT, |env| async move {
        scenario(&env).await;
        env
    })
    .await;
}

async fn scenario(env: &Env) {
    let client = env.client.clone();
    install_crds(&client).await;
    let operator = tokio::spawn(run(client.clone(), operator_options(None)));

    eprintln!("1. a Cluster with a SASL_SSL listener and ACLs");
    let _: Cluster = create(
        &client,
        serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "sec"},
            "spec": {
                "replicas": 1,
                "storage": {"size": "1Gi"},
                "listeners": {"secure": {"port": 9094, "authentication": "scram-sha-512"}},
                "authorization": {},
            },
        }),
    )
    .await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster = wait_for("Cluster sec ready", Duration::from_secs(120), || async {
        let c = clusters.get("sec").await.ok()?;
        (c.status.as_ref()?.ready_replicas == 1).then_some(c)
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for name in [
        "sec-ca",
        "sec-broker-tls",
        "sec-admin-token",
        "sec-internal-tls",
    ] {
        assert!(
            secrets.get_opt(name).await.expect("get").is_some(),
            "the operator made Secret {name}"
        );
    }
    let tls = secrets.get("sec-broker-tls").await.expect("broker tls");
    let ca = secrets.get("sec-ca").await.expect("ca");
    assert_eq!(secret_value(&tls, "ca.crt"), secret_value(&ca, "ca.crt"));
    assert!(secret_value(&tls, "tls.key").is_some());

    // A new secured Cluster's admin listener speaks TLS from the start.
    assert_eq!(
        cluster.status.as_ref().and_then(|s| s.internal_tls),
        Some(InternalTls::Tls)
    );
    let internal = secrets.get("sec-internal-tls").await.expect("internal tls");
    assert_eq!(
        secret_value(&internal, "ca.crt"),
        secret_value(&ca, "ca.crt")
    );

    eprintln!("2. the admin API refuses clear text and a caller without the operator's token");
    let addr = strata_operator::cluster::status::admin_addresses(&cluster);
    let clear = match connect(&addr).await {
        Ok(mut c) => c
            .list_topics(pb::ListTopicsRequest::default())
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(clear.is_err(), "a clear-text call got through: {clear:?}");
    let tls = strata_operator::cluster::security::internal_client_tls(&client, &cluster)
        .await
        .expect("the CA");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", addr[0]))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls");
    let mut anonymous =
        pb::admin_client::AdminClient::new(endpoint.connect().await.expect("TLS admin reachable"));
    let refused = anonymous
        .list_topics(pb::ListTopicsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let pool = AdminChannels::with_tokens(Metrics::new().expect("metrics"), client.clone());
    let mut admin = pool.client(&cluster).await.expect("admin with token");
    admin
        .list_topics(pb::ListTopicsRequest::default())
        .await
        .expect("the token is accepted");

    eprintln!("3. a Topic and two Users, one with ACLs");
    let _: Topic = create(
        &client,
        serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders"},
            "spec": {"clusterRef": "sec", "partitions": 1, "replicationFactor": 1},
        }),
    )
    .await;
    let _: User = create(
        &client,
        serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "User",
            "metadata": {"name": "alice"},
            "spec": {
                "clusterRef": "sec",
                "authentication": {"type": "scram-sha-512"},
                "acls": [{"resource": {"type": "topic", "name": "ord", "patternType": "prefixed"},
                          "operations": ["Write", "Read", "Describe"]}],
                "quotas": {"producerByteRate": 1048576, "requestPercentage": 50.0},
            },
        }),
    )
    .await;
    let _: User = create(
        &client,
        serde_json::json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "User",
            "metadata": {"name": "bob"},
            "spec": {"clusterRef": "sec"},
        }),
    )
    .await;
    let users: Api<User> = Api::namespaced(client.clone(), NS);
    for name in ["alice", "bob"] {
        wait_for(
            &format!("User {name} ready"),
            Duration::from_secs(60),
            || async {
                let u = users.get(name).await.ok()?;
                let ready = u
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            },
        )
        .await;
    }
    let alice = secrets.get("alice").await.expect("alice's Secret");
    assert_eq!(
        secret_value(&alice, "bootstrap").as_deref(),
        Some("sec-bootstrap.default.svc:9094")
    );
    assert_eq!(
        secret_value(&alice, "security.protocol").as_deref(),
        Some("SASL_SSL")
    );
    assert!(secret_value(&alice, "sasl.jaas.config")
        .is_some_and(|j| j.contains("ScramLoginModule required username=\"alice\"")));
    let acls = admin
        .list_acls(pb::ListAclsRequest {
            principal: "User:alice".into(),
        })
        .await
        .expect("acls")
        .into_inner()
        .acls;
    assert_eq!(acls.len(), 3, "{acls:?}");
    let quotas = admin
        .get_user_quotas(pb::GetUserQuotasRequest {
            user: "alice".into(),
        })
        .await
        .expect("quotas")
        .into_inner()
        .quotas;
    assert_eq!(
        quotas
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        [
            ("producer_byte_rate".to_string(), 1048576.0),
            ("request_percentage".to_string(), 50.0)
        ]
        .into(),
        "alice's quotas are on the brokers"
    );
    let scram = admin
        .list_scram_users(pb::ListScramUsersRequest {})
        .await
        .expect("users")
        .into_inner()
        .users;
    assert!(scram
        .iter()
        .any(|u| u.name == "alice" && u.mechanisms == ["SCRAM-SHA-512"]));
    let alice_version = users
        .get("alice")
        .await
        .expect("alice")
        .status
        .and_then(|s| s.credential_version);

    eprintln!("4. alice produces and consumes over SASL_SSL with her Secret");
    let records = "k1:one\nk2:two\nk3:three\n";
    let produce = [
        "-P",
        "-t",
        "orders",
        "-K",
        ":",
        "-X",
        "acks=all",
        "-l",
        "/data/records.txt",
    ];
    let (phase, log) = kcat_as(
        &client,
        "alice-produce",
        "alice",
        None,
        &produce,
        Some(records),
    )
    .await;
    assert_eq!(phase, "Succeeded", "alice's producer:\n{log}");
    let consume = [
        "-C",
        "-t",
        "orders",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k=%s\\n",
    ];
    let (phase, log) = kcat_as(&client, "alice-consume", "alice", None, &consume, None).await;
    assert_eq!(phase, "Succeeded", "alice's consumer:\n{log}");
    for line in ["k1=one", "k2=two", "k3=three"] {
        assert!(log.lines().any(|l| l == line), "{line} consumed:\n{log}");
    }

    eprintln!("5. bob (no ACLs) is refused; a wrong password fails authentication");
    let (phase, log) = kcat_as(&client, "bob-produce", "bob", None, &produce, Some(records)).await;
    assert_eq!(phase, "Failed", "bob must not write:\n{log}");
    assert!(
        log.to_lowercase().contains("authorization"),
        "an authorization error:\n{log}"
    );
    let (phase, log) = kcat_as(
        &client,
        "alice-wrong",
        "alice",
        Some("not-her-password"),
        &["-L", "-t", "orders"],
        None,
    )
    .await;
    assert_eq!(phase, "Failed", "a wrong password must not pass:\n{log}");
    assert!(
        log.to_lowercase().contains("authentication"),
        "an authentication error:\n{log}"
    );

    eprintln!("6. a steady User is not rewritten");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = users.get("alice").await.expect("alice");
    assert_eq!(
        again.status.and_then(|s| s.credential_version),
        alice_version
    );

    eprintln!("7. deleting alice's Secret gives her a new password, and only it works");
    let old_password = secret_value(&alice, "password").expect("password");
    secrets
        .delete("alice", &DeleteParams::default())
        .await
        .expect("delete alice's Secret");
    wait_for(
        "alice's credential renewed",
        Duration::from_secs(60),
        || async {
            let s = secrets.get_opt("alice").await.ok()??;
            let fresh = secret_value(&s, "password")? != old_password;
            let u = users.get("alice").await.ok()?;
            let applied = u.status?.credential_version? == s.metadata.resource_version?;
            (fresh && applied).then_some(())
        },
    )
    .await;
    let (phase, log) = kcat_as(&client, "alice-again", "alice", None, &consume, None).await;
    assert_eq!(phase, "Succeeded", "the new password works:\n{log}");
    assert!(log.lines().any(|l| l == "k1=one"), "{log}");
    let (phase, log) = kcat_as(
        &client,
        "alice-old",
        "alice",
        Some(&old_password),
        &["-L", "-t", "orders"],
        None,
    )
    .await;
    assert_eq!(phase, "Failed", "the old password is gone:\n{log}");

    eprintln!("8. deleting alice removes her credential, ACLs and quotas");
    users
        .delete("alice", &DeleteParams::default())
        .await
        .expect("delete alice");
    wait_for(
        "alice gone from the brokers",
        Duration::from_secs(60),
        || {
            let mut admin = admin.clone();
            async move {
                let users = admin
                    .list_scram_users(pb::ListScramUsersRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .users;
                let acls = admin
                    .list_acls(pb::ListAclsRequest {
                        principal: "User:alice".into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .acls;
                let quotas = admin
                    .get_user_quotas(pb::GetUserQuotasRequest {
                        user: "alice".into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .quotas;
                (!users.iter().any(|u| u.name == "alice") && acls.is_empty() && quotas.is_empty())
                    .then_some(())
            }
        },
    )
    .await;
    assert!(
        users.get_opt("alice").await.expect("get").is_none()
            || users
                .get("alice")
                .await
                .is_ok_and(|u| u.metadata.deletion_timestamp.is_some()),
        "the finalizer let go"
    );
    operator.abort();
}
