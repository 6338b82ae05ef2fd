//! A running, secured 3-broker Cluster whose admin/internal listener is in clear
//! text gets `spec.listeners.adminTls: true`: the operator switches it to TLS in
//! three one-broker-at-a-time rolls (`status.internalTls` AcceptingTls →
//! CallingWithTls → Tls) while a producer keeps writing with acks=all; every
//! acknowledged record is read back once, the brokers end up accepting each
//! other's certificates, and clear text is refused.
//!
//! Skips loudly without the setup binaries, unless `STRATA_E2E_REQUIRED=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use strata_e2e::kubelet::ImageMap;
use strata_e2e::testing::{self, wait_for};
use strata_e2e::{Env, EnvConfig};
use strata_operator::admin::{connect, pb};
use strata_operator::crd::cluster::{ClusterPhase, InternalTls};
use strata_operator::crd::{Cluster, Topic};
use strata_operator::run::run;

mod support;
use support::{broker_binary, install_crds, kafka_python, operator_options, wait_topic_ready};

const NS: &str = "default";
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
const BATCH: usize = 200;

const PRODUCER: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all", "enable.idempotence": True,
              "message.timeout.ms": 90000})
start, n = int(sys.argv[2]), int(sys.argv[3])
errors = []
for i in range(start, start + n):
    p.produce("switch", str(i).encode(), partition=i % 3,
              on_delivery=lambda e, m: errors.append(e) if e else None)
    p.poll(0)
left = p.flush(120)
print(f"left={left} errors={errors[:3]}")
sys.exit(1 if left or errors else 0)
"#;

/// Prints how many records the topic holds and how many distinct values.
const CONSUMER: &str = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "check",
              "enable.auto.commit": False, "auto.offset.reset": "earliest"})
values = []
for p in range(3):
    low, high = c.get_watermark_offsets(TopicPartition("switch", p), timeout=30)
    c.assign([TopicPartition("switch", p, low)])
    nxt, deadline = low, time.time() + 60
    while nxt < high and time.time() < deadline:
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        values.append(int(m.value()))
        nxt = m.offset() + 1
    assert nxt >= high, f"partition {p}: read stopped at {nxt} of {high}"
print(len(values), len(set(values)), max(values) + 1 if values else 0)
"#;

async fn bootstrap(pods: &Api<Pod>) -> String {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=tls"))
        .await
        .expect("broker pods");
    list.items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .map(|ip| format!("{ip}:9092"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn produce(python: &Path, pods: &Api<Pod>, start: usize) {
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            PRODUCER,
            &bootstrap(pods).await,
            &start.to_string(),
            &BATCH.to_string(),
        ])
        .output()
        .await
        .expect("run producer");
    assert!(
        out.status.success(),
        "records {start}..{} not all acknowledged: {}{}",
        start + BATCH,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_running_cluster_switches_its_admin_listener_to_tls_while_writing() {
    testing::init_tracing();
    if !testing::binaries_present(
        "internal TLS e2e",
        &["etcd", "kube-apiserver", "kube-controller-manager"],
    ) {
        return;
    }
    let (Some(broker), Some(python)) = (broker_binary(), kafka_python()) else {
        let msg = "strata-broker (cargo build -p strata-broker) or the test venv (scripts/setup.sh) missing";
        if testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING internal TLS e2e: {msg} !!!!!\n");
        return;
    };
    let mut images = ImageMap::new();
    images.insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    let config = EnvConfig {
        images,
        ..EnvConfig::default()
    };
    testing::with_env("internal TLS e2e", config, TEST_TIMEOUT, |env| async move {
        scenario(&env, &python).await;
        env
    })
    .await;
}

async fn scenario(env: &Env, python: &PathBuf) {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1?}] {what}", started.elapsed());
    let client: Client = env.client.clone();
    install_crds(&client).await;
    let operator = tokio::spawn(run(client.clone(), operator_options(None)));

    // Secured (token, SCRAM listener), admin listener still in clear text.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "tls"},
        "spec": {
            "replicas": 3,
            "storage": {"size": "1Gi"},
            "listeners": {"secure": {"port": 9094}, "adminTls": false},
        },
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    let running = || async {
        let c = clusters.get("tls").await.ok()?;
        let s = c.status.as_ref()?;
        (s.phase == Some(ClusterPhase::Running) && s.ready_replicas == 3).then_some(c)
    };
    let c = wait_for("Cluster tls running", Duration::from_secs(180), running).await;
    assert_eq!(c.status.as_ref().and_then(|s| s.internal_tls), None);
    let topic: Topic = serde_json::from_value(serde_json::json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "switch"},
        "spec": {"clusterRef": "tls", "partitions": 3, "replicationFactor": 3,
                 "config": {"min.insync.replicas": "2"}},
    }))
    .expect("topic");
    let topics: Api<Topic> = Api::namespaced(client.clone(), NS);
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("create topic");
    wait_topic_ready(&client, NS, "switch").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut written = 0;
    produce(python, &pods, written).await;
    written += BATCH;
    step("cluster running in clear text; first records written");

    clusters
        .patch(
            "tls",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"listeners": {"adminTls": true}}})),
        )
        .await
        .expect("turn adminTls on");
    // Write a batch per round until every broker runs TLS only; note each step.
    let mut seen: Vec<InternalTls> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        assert!(
            Instant::now() < deadline,
            "the switch did not finish in 420 s; steps seen {seen:?}"
        );
        produce(python, &pods, written).await;
        written += BATCH;
        let c = clusters.get("tls").await.expect("cluster");
        let s = c.status.clone().unwrap_or_default();
        if let Some(now) = s.internal_tls {
            if seen.last() != Some(&now) {
                step(&format!("status.internalTls {now:?}"));
                seen.push(now);
            }
        }
        let settled = s.phase == Some(ClusterPhase::Running) && s.ready_replicas == 3;
        if s.internal_tls == Some(InternalTls::Tls) && settled {
            let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> =
                Api::namespaced(client.clone(), NS);
            let set = sts.get("tls").await.expect("statefulset");
            let st = set.status.clone().unwrap_or_default();
            if st.current_revision == st.update_revision && st.updated_replicas == Some(3) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        seen,
        vec![
            InternalTls::AcceptingTls,
            InternalTls::CallingWithTls,
            InternalTls::Tls
        ]
    );
    produce(python, &pods, written).await;
    written += BATCH;
    step(&format!("switched; {written} records acknowledged"));

    // Every acknowledged record, once.
    let out = tokio::process::Command::new(python)
        .args(["-c", CONSUMER, &bootstrap(&pods).await])
        .output()
        .await
        .expect("run consumer");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text,
        format!("{written} {written} {written}"),
        "count, distinct, max+1"
    );

    // Clear text is refused now; the brokers accepted each other's certificates.
    let c = clusters.get("tls").await.expect("cluster");
    let addr = strata_operator::cluster::status::admin_addresses(&c);
    let clear = match connect(&addr).await {
        Ok(mut a) => a
            .list_topics(pb::ListTopicsRequest::default())
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(clear.is_err(), "a clear-text call got through: {clear:?}");
    let mut accepted = 0;
    for dir in std::fs::read_dir(env.pod_logs_dir())
        .expect("pod logs")
        .flatten()
    {
        if !dir
            .file_name()
            .to_string_lossy()
            .starts_with("default_tls-")
        {
            continue;
        }
        let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
        if log.contains("admin client certificate accepted")
            && log.contains("principal=User:CN=tls-broker,O=strata")
        {
            accepted += 1;
        }
    }
    assert!(
        accepted >= 3,
        "only {accepted} broker logs show a peer's certificate accepted"
    );
    operator.abort();
    step("done");
}
