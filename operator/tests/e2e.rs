//! The operator against a real control plane (etcd + kube-apiserver +
//! kube-controller-manager + the process kubelet from `strata-e2e`). The
//! operator runs in-process; broker pods run the real `strata-broker` binary
//! when it is built (`cargo build -p strata-broker`).
//!
//! Skips loudly without the setup binaries, unless `STRATA_E2E_REQUIRED=1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use strata_e2e::binaries::Binaries;
use strata_e2e::kubelet::ImageMap;
use strata_e2e::testing::wait_for;
use strata_e2e::{Env, EnvConfig};
use strata_operator::context::Settings;
use strata_operator::crd::{Cluster, Topic};
use strata_operator::leader::LeaseConfig;
use strata_operator::run::{run, Options};

mod support;
use support::{broker_binary, cluster_resource_versions, install_crds};

const NS: &str = "default";

/// One environment at a time (2 cores; each starts a control plane).
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> Option<EnvConfig> {
    let bins = Binaries::from_env();
    let missing: Vec<&str> = bins
        .missing()
        .into_iter()
        .filter(|b| ["etcd", "kube-apiserver", "kube-controller-manager"].contains(b))
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "control-plane binaries missing in {} ({}); run `bash e2e/setup.sh`",
            bins.dir.display(),
            missing.join(", ")
        );
        if std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING operator e2e test: {msg} !!!!!\n");
        return None;
    }
    let mut images = ImageMap::new();
    if let Some(broker) = broker_binary() {
        images.insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    } else {
        eprintln!(
            "!!!!! strata-broker not built: broker pods will not start; topic checks skipped !!!!!"
        );
    }
    Some(EnvConfig {
        bins,
        images,
        ..EnvConfig::default()
    })
}

fn start_operator(client: Client) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run(
        client,
        Options {
            namespaces: vec![],
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            lease: Some(LeaseConfig {
                namespace: NS.into(),
                name: "strata-operator".into(),
                identity: format!("test-{}", std::process::id()),
                duration: Duration::from_secs(15),
                renew: Duration::from_secs(2),
            }),
            settings: Settings {
                resync: Duration::from_secs(30),
                group_refresh: Duration::from_secs(2),
                finalizer_timeout: Duration::from_secs(20),
            },
            metrics_api: None,
        },
    ))
}

fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    cluster: &Cluster,
) -> bool {
    meta.owner_references.as_ref().is_some_and(|o| {
        o.iter().any(|r| {
            r.kind == "Cluster"
                && Some(&r.uid) == cluster.uid().as_ref()
                && r.controller == Some(true)
        })
    })
}

fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    }
}

async fn resource_versions(client: &Client) -> Vec<(String, Option<String>)> {
    cluster_resource_versions(client, NS).await
}

#[tokio::test]
async fn operator_reconciles_a_cluster_and_topics_on_a_real_control_plane() {
    strata_e2e::testing::init_tracing();
    let Some(cfg) = config() else { return };
    let _guard = LOCK.lock().await;
    let with_broker = broker_binary().is_some();
    let started = Instant::now();
    let env = Env::start(cfg).await.expect("environment");
    eprintln!("environment up in {:?}", started.elapsed());
    let client = env.client.clone();
    install_crds(&client).await;
    let operator = start_operator(client.clone());

    // A 1-broker Cluster becomes a StatefulSet, two Services, a ConfigMap and a PDB, all owned by it.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster: Cluster = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  replicas: 1\n  storage:\n    size: 1Gi\n  config:\n    auto_create_topics: \"false\"\n",
    )
    .expect("cluster yaml");
    let cluster = clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let sts = wait_for("StatefulSet demo", Duration::from_secs(30), || async {
        sts_api.get_opt("demo").await.ok()?
    })
    .await;
    assert!(
        owned_by(&sts.metadata, &cluster),
        "sts owner: {:?}",
        sts.metadata.owner_references
    );
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert!(sts.metadata.managed_fields.as_ref().is_some_and(|m| m
        .iter()
        .any(|f| f.manager.as_deref() == Some("strata-operator"))));
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    for name in ["demo-brokers", "demo-bootstrap"] {
        let s = wait_for(name, Duration::from_secs(10), || async {
            svcs.get_opt(name).await.ok()?
        })
        .await;
        assert!(owned_by(&s.metadata, &cluster), "{name}");
    }
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("demo-config")
        .await
        .expect("configmap");
    assert!(owned_by(&cm.metadata, &cluster));
    assert!(cm.data.as_ref().expect("data")["broker.toml"].contains("auto_create_topics = false"));
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get("demo")
        .await
        .expect("pdb");
    assert!(owned_by(&pdb.metadata, &cluster));

    let want_running = with_broker;
    let status = wait_for(
        "Cluster status",
        Duration::from_secs(if want_running { 120 } else { 30 }),
        || async {
            let c = clusters.get("demo").await.ok()?;
            let s = c.status?;
            let done = s.observed_generation == Some(1)
                && (!want_running
                    || s.phase == Some(strata_operator::crd::cluster::ClusterPhase::Running));
            done.then_some(s)
        },
    )
    .await;
    eprintln!("cluster status after {:?}: {status:?}", started.elapsed());
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=strata-broker")
    );

    // The API server rejects invalid specs with clear messages (CRD schema + CEL).
    let topics: Api<Topic> = Api::namespaced(client.clone(), NS);
    let rf0: Topic = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: bad-rf\nspec:\n  clusterRef: demo\n  partitions: 1\n  replicationFactor: 0\n",
    )
    .expect("yaml");
    let err = api_error(
        topics
            .create(&PostParams::default(), &rf0)
            .await
            .expect_err("RF 0 rejected"),
    );
    assert!(
        err.contains("spec.replicationFactor") && err.contains("greater than or equal to 1"),
        "{err}"
    );
    let unknown = serde_json::json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "bad-field"},
        "spec": {"clusterRef": "demo", "partitions": 1, "partitionz": 3},
    });
    let err = api_error(
        topics
            .patch(
                "bad-field",
                &PatchParams::apply("test").validation_strict(),
                &Patch::Apply(&unknown),
            )
            .await
            .expect_err("unknown field rejected"),
    );
    assert!(err.contains("partitionz"), "{err}");

    let orders: Topic = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: orders\nspec:\n  clusterRef: demo\n  partitions: 3\n  config:\n    retention.ms: \"3600000\"\n",
    )
    .expect("yaml");
    topics
        .create(&PostParams::default(), &orders)
        .await
        .expect("create topic");
    let err = api_error(
        topics
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"partitions": 2}})),
            )
            .await
            .expect_err("decrease rejected"),
    );
    assert!(err.contains("partitions may only increase"), "{err}");
    let err = api_error(
        topics
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"clusterRef": "other"}})),
            )
            .await
            .expect_err("clusterRef immutable"),
    );
    assert!(err.contains("clusterRef is immutable"), "{err}");

    if with_broker {
        let ready = |want_partitions: i32| {
            let topics = topics.clone();
            async move {
                let t = topics.get("orders").await.ok()?;
                let s = t.status?;
                let ok = s.partitions == Some(want_partitions)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.observed_generation == t.metadata.generation;
                ok.then_some(s)
            }
        };
        let s = wait_for(
            "topic orders Ready with 3 partitions",
            Duration::from_secs(60),
            || ready(3),
        )
        .await;
        assert!(
            s.topic_id.as_deref().is_some_and(|id| !id.is_empty()),
            "{s:?}"
        );
        let t = topics.get("orders").await.expect("orders");
        assert!(t.finalizers().iter().any(|f| f == "strata.dev/topic"));
        topics
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"partitions": 6}})),
            )
            .await
            .expect("grow partitions");
        wait_for(
            "topic orders with 6 partitions",
            Duration::from_secs(60),
            || ready(6),
        )
        .await;
        topics
            .delete("orders", &DeleteParams::default())
            .await
            .expect("delete topic");
        wait_for(
            "topic orders finalized",
            Duration::from_secs(60),
            || async { topics.get_opt("orders").await.ok()?.is_none().then_some(()) },
        )
        .await;
    } else {
        // Without brokers the topic reports why it is not ready.
        let t = wait_for(
            "topic orders not ready with a reason",
            Duration::from_secs(30),
            || async {
                let t = topics.get("orders").await.ok()?;
                let c = t.status.as_ref()?.conditions.first()?.clone();
                (c.status == "False").then_some(c)
            },
        )
        .await;
        assert!(
            ["ClusterUnreachable", "BrokerError"].contains(&t.reason.as_str()),
            "{t:?}"
        );
        // Unreachable cluster + allow-deletion annotation: the finalizer lets go.
        topics
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"strata.dev/allow-deletion": "true"}}})),
            )
            .await
            .expect("annotate");
        topics
            .delete("orders", &DeleteParams::default())
            .await
            .expect("delete topic");
        wait_for("topic orders released", Duration::from_secs(30), || async {
            topics.get_opt("orders").await.ok()?.is_none().then_some(())
        })
        .await;
    }

    // A restarted operator changes nothing that is already correct.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = resource_versions(&client).await;
    operator.abort();
    let _ = operator.await;
    let operator = start_operator(client.clone());
    // Long enough to take over the Lease (it expires 15 s after the last renewal) and reconcile.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let after = resource_versions(&client).await;
    assert_eq!(before, after, "restart caused updates");
    operator.abort();
    env.shutdown().await;
    eprintln!("done in {:?}", started.elapsed());
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `helm install` runs the real `strata-operator` binary as a pod with the
/// chart's ServiceAccount and RBAC; it must be able to do its whole job.
#[tokio::test]
async fn helm_installed_operator_runs_a_cluster_with_its_own_rbac() {
    strata_e2e::testing::init_tracing();
    let Some(mut cfg) = config() else { return };
    if cfg.bins.path("helm").is_err() {
        if std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("helm missing (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!(
            "\n!!!!! SKIPPING helm e2e test: helm not built; run `bash e2e/setup.sh` !!!!!\n"
        );
        return;
    }
    if broker_binary().is_none() {
        if std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("strata-broker not built (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING helm e2e test: build strata-broker first !!!!!\n");
        return;
    }
    cfg.images.insert(
        "ghcr.io/strata-dev/strata-operator".into(),
        PathBuf::from(env!("CARGO_BIN_EXE_strata-operator")),
    );
    let _guard = LOCK.lock().await;
    let started = Instant::now();
    let env = Env::start(cfg).await.expect("environment");
    let client = env.client.clone();
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/strata");
    strata_e2e::testing::helm_install(
        &env,
        "strata",
        &chart,
        "strata-system",
        &["--set", "logLevel=info\\,strata_operator=debug"],
    )
    .await;
    eprintln!("chart installed after {:?}", started.elapsed());

    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster: Cluster = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  replicas: 1\n  storage:\n    size: 1Gi\n",
    )
    .expect("cluster yaml");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    wait_for("Cluster demo Running", Duration::from_secs(120), || async {
        let s = clusters.get("demo").await.ok()?.status?;
        (s.phase == Some(strata_operator::crd::cluster::ClusterPhase::Running)).then_some(())
    })
    .await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), NS);
    let topic: Topic = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: events\nspec:\n  clusterRef: demo\n  partitions: 2\n",
    )
    .expect("topic yaml");
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("create topic");
    let status = wait_for("Topic events Ready", Duration::from_secs(60), || async {
        let s = topics.get("events").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(s)
    })
    .await;
    assert_eq!(status.partitions, Some(2));

    // The leader Lease is held by the operator pod, and its /metrics counts reconciles.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "strata-system");
    let lease = leases.get("strata-operator").await.expect("leader lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.starts_with("strata-operator-"), "holder {holder}");
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), "strata-system");
    let pod = pods.get(&holder).await.expect("operator pod");
    let ip = pod.status.and_then(|s| s.pod_ip).expect("pod ip");
    let metrics = http_get(&format!("{ip}:8080"), "/metrics")
        .await
        .expect("metrics answer");
    assert!(
        metrics.contains("strata_operator_reconciles_total{controller=\"topic\""),
        "{metrics}"
    );
    env.shutdown().await;
    eprintln!("done in {:?}", started.elapsed());
}
