//! The newcomer's path, end to end on the local control plane: `helm install`
//! the chart (the real `strata-operator` runs as a pod with the chart's RBAC),
//! `kubectl apply` the shipped `manifests/cluster.yaml` (3 real `strata-broker`
//! pods with a SeaweedFS tier) and `manifests/topic.yaml`, then produce and
//! consume with kcat pods that bootstrap from the `demo-bootstrap` Service name,
//! grow the topic, delete a broker pod under load, delete Topics under both
//! deletion policies, try invalid manifests, and restart the operator.
//!
//! Skips loudly without the setup binaries, unless `STRATA_E2E_REQUIRED=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use strata_e2e::binaries::Binaries;
use strata_e2e::kubelet::ImageMap;
use strata_e2e::testing::{self, wait_for};
use strata_e2e::{Env, EnvConfig};
use strata_operator::crd::cluster::ClusterPhase;
use strata_operator::crd::{Cluster, ConsumerGroup, Topic};

mod support;
use support::{broker_binary, cluster_resource_versions};

const NS: &str = "default";
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// What pods bootstrap from: the Service's name, resolved by the kubelet's cluster DNS.
const BOOTSTRAP_SVC: &str = "demo-bootstrap.default.svc:9092";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubectl` from PATH, or the one `e2e/setup.sh` built next to the control plane.
fn kubectl_binary() -> PathBuf {
    let built = Binaries::from_env().dir.join("kubectl");
    if built.exists() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

fn kcat_binary() -> Option<PathBuf> {
    ["/usr/bin/kcat", "/usr/local/bin/kcat"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs kubectl against the environment; returns (success, stdout+stderr).
async fn kubectl(env: &Env, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(kubectl_binary());
    cmd.args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    if let Some(mut s) = child.stdin.take() {
        if let Some(text) = stdin {
            s.write_all(text.as_bytes()).await.expect("kubectl stdin");
        }
    }
    let out = child.wait_with_output().await.expect("kubectl output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn kubectl_apply(env: &Env, manifest: &str) {
    let (ok, out) = kubectl(env, &["apply", "-f", "-"], Some(manifest)).await;
    assert!(
        ok,
        "kubectl apply failed:\n{out}\n--- manifest ---\n{manifest}"
    );
}

/// `kcat -L -J` metadata of the cluster, asked from the test host.
async fn metadata(kcat: &Path, broker: &str) -> Option<serde_json::Value> {
    let out = tokio::process::Command::new(kcat)
        .args(["-L", "-J", "-m", "5", "-b", broker])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Metadata from whichever broker pod is ready now (pod IPs change when a
/// broker pod is recreated, so none is remembered).
async fn cluster_metadata(pods: &Api<Pod>, kcat: &Path) -> Option<serde_json::Value> {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await
        .ok()?;
    for p in list.items.iter().filter(|p| is_ready(p)) {
        if let Some(md) = metadata(kcat, &format!("{}:9092", pod_ip(p)?)).await {
            return Some(md);
        }
    }
    None
}

/// topic → (partitions, replicas per partition, min ISR size) from kcat metadata.
fn topic_shape(md: &serde_json::Value, topic: &str) -> Option<(usize, usize, usize)> {
    let t = md["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic"] == topic && t.get("error").is_none())?;
    let parts = t["partitions"].as_array()?;
    let rf = parts
        .iter()
        .map(|p| p["replicas"].as_array().map_or(0, Vec::len))
        .min()?;
    let isr = parts
        .iter()
        .map(|p| p["isrs"].as_array().map_or(0, Vec::len))
        .min()?;
    Some((parts.len(), rf, isr))
}

/// broker id → replicas it holds, over every topic in the metadata.
fn replicas_per_broker(md: &serde_json::Value) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for t in md["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            for r in p["replicas"].as_array().into_iter().flatten() {
                if let Some(id) = r["id"].as_i64() {
                    *counts.entry(id).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Runs one kcat pod to completion (restartPolicy Never) and returns its log.
/// `records` (if any) is mounted from a ConfigMap at /data/records.txt.
async fn run_kcat_pod(client: &Client, name: &str, args: &[&str], records: Option<&str>) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut spec = serde_json::json!({
        "restartPolicy": "Never",
        "containers": [{"name": "kcat", "image": "kcat", "command": ["kcat"], "args": args}],
    });
    if let Some(text) = records {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"records.txt": text},
        }))
        .expect("configmap");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("records configmap");
        spec["volumes"] = serde_json::json!([{"name": "data", "configMap": {"name": name}}]);
        spec["containers"][0]["volumeMounts"] =
            serde_json::json!([{"name": "data", "mountPath": "/data"}]);
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "kcat"}}, "spec": spec,
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("kcat pod");
    let (phase, log) = support::pod_outcome(&pods, name, Duration::from_secs(120)).await;
    assert_eq!(phase, "Succeeded", "kcat pod {name} failed:\n{log}");
    log
}

/// Reads a topic from the beginning with a kcat pod: key → value.
async fn consume_topic(client: &Client, pod: &str, topic: &str) -> BTreeMap<String, String> {
    let args = [
        "-C",
        "-b",
        BOOTSTRAP_SVC,
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k=%s\\n",
    ];
    consumed(&run_kcat_pod(client, pod, &args, None).await)
}

/// Produces `records` (`key:value` lines) with a kcat pod, acks=all.
async fn produce_topic(client: &Client, pod: &str, topic: &str, records: &str) {
    // Batches of at most 500 records, so segment sizes (and so what tiering and
    // retention do) do not depend on how librdkafka happened to batch.
    let args = [
        "-P",
        "-b",
        BOOTSTRAP_SVC,
        "-t",
        topic,
        "-K",
        ":",
        "-X",
        "acks=all",
        "-X",
        "batch.num.messages=500",
        "-l",
        "/data/records.txt",
    ];
    run_kcat_pod(client, pod, &args, Some(records)).await;
}

/// `key=value` lines of a kcat consumer's log (the kubelet's banner lines excluded).
fn consumed(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter(|l| l.starts_with("key-"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An idempotent acks=all producer that runs for a bounded time at a bounded
/// rate and prints every acknowledged key (`acked <key>`), then a summary line.
const LOAD_PRODUCER: &str = r#"
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
# Optional: stop early once this topic exists (the test creates it when done).
stop_topic = sys.argv[5] if len(sys.argv) > 5 else None
acked, errors = [], []
def done(err, msg):
    if err is None:
        acked.append(msg.key().decode())
    else:
        errors.append(str(err))
p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "message.timeout.ms": 120000})
start, i, checked = time.time(), 0, time.time()
while time.time() - start < seconds:
    if stop_topic and time.time() - checked > 2:
        checked = time.time()
        try:
            if stop_topic in p.list_topics(timeout=2).topics:
                break
        except Exception:  # a broker restarting: look again later
            pass
    if i < (time.time() - start) * rate:
        p.produce(topic, key=b"load-%d" % i, value=b"v" * 200, on_delivery=done)
        i += 1
    p.poll(0.001)
left = p.flush(120)
for k in acked:
    print("acked", k)
print(json.dumps({"sent": i, "acked": len(acked), "unflushed": left, "errors": errors[:5]}))
"#;

/// The broker pods of `demo` that are not being deleted: name → uid.
async fn broker_uids(pods: &Api<Pod>) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("app.kubernetes.io/instance=demo");
    pods.list(&lp)
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

/// Watches a roll of the three brokers of `demo` (their pods were `old`) until every
/// pod was replaced, all are ready and the cluster is Running: the order the pods
/// were replaced in, the most brokers down at once, and the phases seen.
async fn watch_roll(
    pods: &Api<Pod>,
    clusters: &Api<Cluster>,
    old: &BTreeMap<String, String>,
) -> (Vec<String>, usize, std::collections::BTreeSet<String>) {
    let lp = ListParams::default().labels("app.kubernetes.io/instance=demo");
    let mut restarted: Vec<String> = Vec::new();
    let mut max_down = 0;
    let mut phases = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "roll did not finish: restarted {restarted:?}, phases {phases:?}"
        );
        let list = pods.list(&lp).await.expect("pods").items;
        let down = (0..3)
            .filter(|i| {
                !list
                    .iter()
                    .any(|p| p.name_any() == format!("demo-{i}") && is_ready(p))
            })
            .count();
        max_down = max_down.max(down);
        for p in list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let name = p.name_any();
            if old.get(&name) != p.uid().as_ref() && !restarted.contains(&name) {
                restarted.push(name);
            }
        }
        let status = clusters
            .get("demo")
            .await
            .expect("cluster")
            .status
            .unwrap_or_default();
        if let Some(p) = status.phase {
            phases.insert(format!("{p:?}"));
        }
        if restarted.len() == 3 && down == 0 && status.phase == Some(ClusterPhase::Running) {
            return (restarted, max_down, phases);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for the load producer pod `name` (LOAD_PRODUCER) to succeed and checks
/// that every record it was acknowledged is in `topic`: (records acknowledged, the
/// producer's summary line).
async fn check_load(client: &Client, pods: &Api<Pod>, name: &str, topic: &str) -> (usize, String) {
    let (phase, log) = support::pod_outcome(pods, name, Duration::from_secs(240)).await;
    assert_eq!(
        phase,
        "Succeeded",
        "{name} failed:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let acked: std::collections::BTreeSet<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("acked "))
        .map(String::from)
        .collect();
    let summary = log.lines().last().unwrap_or_default().to_string();
    assert!(acked.len() > 1000, "too little load from {name}: {summary}");
    let got = run_kcat_pod(
        client,
        &format!("consume-{topic}"),
        &[
            "-C",
            "-b",
            BOOTSTRAP_SVC,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\\n",
        ],
        None,
    )
    .await;
    let read: std::collections::BTreeSet<&str> =
        got.lines().filter(|l| l.starts_with("load-")).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !read.contains(k.as_str()))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged records of {name} lost: {lost:?} ({summary})"
    );
    (acked.len(), summary)
}

fn records(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("key-{i}:value-{i}-{}\n", "x".repeat(i % 50)))
        .collect()
}

/// `strata_operator_admin_connects_total` (all results) on the `/metrics` of
/// the operator pod `name` (its `http` port, 8080 in the chart).
async fn operator_admin_connects(client: &Client, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pods: Api<Pod> = Api::namespaced(client.clone(), "strata-system");
    let ip = pods
        .get(name)
        .await
        .expect("operator pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("operator pod IP");
    let mut s = tokio::net::TcpStream::connect((ip.as_str(), 8080))
        .await
        .expect("operator /metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("response");
    text.lines()
        .filter(|l| l.starts_with("strata_operator_admin_connects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn resource_versions(client: &Client) -> Vec<(String, Option<String>)> {
    let mut out = cluster_resource_versions(client, NS).await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), NS);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default();
    for t in topics.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        out.push((format!("topic {}", t.name_any()), t.resource_version()));
    }
    for g in groups.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        out.push((
            format!("consumergroup {}", g.name_any()),
            g.resource_version(),
        ));
    }
    out
}

/// Segment files (name → size) of every partition directory in a broker's volume.
fn segment_files(data: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(data) else {
        return out;
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().to_string();
        if !name.starts_with("orders-") {
            continue;
        }
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let fname = f.file_name().to_string_lossy().to_string();
            if fname.ends_with(".log") {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                out.insert(format!("{name}/{fname}"), size);
            }
        }
    }
    out
}

/// The admin addresses (`<pod IP>:9093`) of the demo cluster's broker pods.
async fn admin_addrs(pods: &Api<Pod>) -> Vec<String> {
    pods.list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await
        .map(|list| {
            list.items
                .iter()
                .filter_map(|p| Some(format!("{}:9093", pod_ip(p)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Partition 0 of topic `tiered` as each broker pod's admin API describes it.
async fn tiered_partition_views(
    pods: &Api<Pod>,
) -> Vec<(String, strata_operator::admin::pb::PartitionDescription)> {
    let mut views = Vec::new();
    for addr in admin_addrs(pods).await {
        let Ok(mut admin) = strata_operator::admin::connect(std::slice::from_ref(&addr)).await
        else {
            continue;
        };
        let request = strata_operator::admin::pb::DescribeTopicRequest {
            name: "tiered".into(),
        };
        if let Some(p) = admin
            .describe_topic(request)
            .await
            .ok()
            .and_then(|d| d.into_inner().partition_details.into_iter().next())
        {
            views.push((addr, p));
        }
    }
    views
}

/// Waits until the brokers' metadata shows `topic` with `shape` (partitions, RF,
/// replicas in sync everywhere).
async fn wait_topic_shape(
    pods: &Api<Pod>,
    kcat: &Path,
    topic: &str,
    shape: (usize, usize, usize),
    what: &str,
    timeout: Duration,
) {
    wait_for(what, timeout, || async {
        (topic_shape(&cluster_metadata(pods, kcat).await?, topic)? == shape).then_some(())
    })
    .await;
}

/// What the operator's rebalancer sees, asked of every broker: its admin API's
/// topics (replica counts per broker), the brokers it describes, and the moves the
/// planner makes of that (for a rebalance that stalls).
async fn planner_view(pods: &Api<Pod>) -> String {
    use strata_operator::admin::pb;
    use strata_operator::rebalance::{plan, Broker, Policy};
    let mut out = Vec::new();
    for addr in admin_addrs(pods).await {
        let Ok(mut admin) = strata_operator::admin::connect(std::slice::from_ref(&addr)).await
        else {
            out.push(format!("{addr}: unreachable"));
            continue;
        };
        let topics = admin
            .list_topics(pb::ListTopicsRequest {
                include_internal: true,
            })
            .await
            .map(|r| r.into_inner().topics)
            .unwrap_or_default();
        let brokers = admin
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .map(|r| r.into_inner().brokers)
            .unwrap_or_default();
        let current = strata_operator::cluster::rebalancer::partition_replicas(&topics);
        let mut counts = BTreeMap::new();
        for r in current.iter().flat_map(|p| &p.replicas) {
            *counts.entry(*r).or_insert(0) += 1;
        }
        let eligible: Vec<Broker> = brokers
            .iter()
            .map(|b| Broker {
                id: b.id,
                rack: (!b.rack.is_empty()).then(|| b.rack.clone()),
            })
            .collect();
        let moves = plan(&current, &eligible, &Policy { max_moves: 32 });
        out.push(format!(
            "{addr}: {} topics, {} partitions, replicas per broker {counts:?}, brokers {:?}, planner moves {}",
            topics.len(),
            current.len(),
            brokers.iter().map(|b| (b.id, b.state, b.rack.clone())).collect::<Vec<_>>(),
            moves.len()
        ));
    }
    format!("admin views: {}", out.join(" | "))
}

#[tokio::test]
async fn newcomer_path_from_helm_install_to_consuming_through_the_bootstrap_service() {
    testing::init_tracing();
    if !testing::binaries_present(
        "manifests e2e",
        &[
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "helm",
            "weed",
        ],
    ) {
        return;
    }
    let (Some(broker), Some(kcat)) = (broker_binary(), kcat_binary()) else {
        let msg = "strata-broker (cargo build -p strata-broker) or kcat (apt) missing";
        if testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING manifests e2e: {msg} !!!!!\n");
        return;
    };
    let mut images = ImageMap::new();
    images.insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    images.insert(
        "ghcr.io/strata-dev/strata-operator".into(),
        PathBuf::from(env!("CARGO_BIN_EXE_strata-operator")),
    );
    images.insert("kcat".into(), kcat.clone());
    // A python with confluent-kafka (the test venv) for the load producer pod.
    let Some(client_python) = support::kafka_python() else {
        let msg = "no python with confluent_kafka (run scripts/setup.sh)";
        if testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING manifests e2e: {msg} !!!!!\n");
        return;
    };
    images.insert("strata-client".into(), client_python);
    let config = EnvConfig {
        images,
        s3_bucket: Some("strata-demo".into()),
        ..EnvConfig::default()
    };
    testing::with_env("manifests e2e", config, TEST_TIMEOUT, |env| async move {
        scenario(&env, &kcat).await;
        env
    })
    .await;
}

async fn scenario(env: &Env, kcat: &Path) {
    let started = Instant::now();
    let client = env.client.clone();
    let step = |what: &str| eprintln!("[{:>6.1?}] {what}", started.elapsed());

    // A real Jaeger receives the operator's and the brokers' traces (checked in 12).
    let jaeger = match support::jaeger::binary() {
        Some(bin) => Some(support::jaeger::Jaeger::start(
            &bin,
            &env.dir.join("jaeger"),
        )),
        None if testing::required() => {
            panic!("no Jaeger: run scripts/setup.sh (STRATA_E2E_REQUIRED=1)")
        }
        None => {
            eprintln!("\n!!!!! SKIPPING the trace checks: no Jaeger (scripts/setup.sh) !!!!!\n");
            None
        }
    };
    // Pods have network namespaces of their own: let them reach Jaeger's OTLP
    // port on the host's loopback.
    if let Some(j) = &jaeger {
        env.expose_host_port(j.otlp.port())
            .expect("expose Jaeger to pods");
    }
    let tracing_set = jaeger
        .as_ref()
        .map(|j| format!("tracing.otlpEndpoint={}", j.endpoint()));
    let helm_args: Vec<&str> = match &tracing_set {
        Some(set) => vec!["--set", set.as_str()],
        None => Vec::new(),
    };

    // 1. helm install: CRDs, operator Deployment, RBAC, metrics APIService.
    testing::helm_install(
        env,
        "strata",
        &repo().join("helm/strata"),
        "strata-system",
        &helm_args,
    )
    .await;
    step("chart installed");

    // 2. The shipped cluster manifest, pointed at this environment's S3 server.
    let s3 = env.s3_info().expect("s3");
    let manifest =
        std::fs::read_to_string(repo().join("manifests/cluster.yaml")).expect("cluster.yaml");
    let tracing_spec = jaeger.as_ref().map_or(String::new(), |j| {
        format!("  tracing:\n    otlpEndpoint: {}\n", j.endpoint())
    });
    let manifest = manifest
        .replace(
            "  name: demo\nspec:\n",
            &format!("  name: demo\nspec:\n{tracing_spec}"),
        )
        .replace("http://seaweedfs.storage.svc:8333", &s3.endpoint)
        .replace(
            "AWS_ACCESS_KEY_ID: strata",
            &format!("AWS_ACCESS_KEY_ID: {}", s3.access_key),
        )
        .replace(
            "AWS_SECRET_ACCESS_KEY: change-me",
            &format!("AWS_SECRET_ACCESS_KEY: {}", s3.secret_key),
        )
        .replace("bucket: strata-demo", &format!("bucket: {}", s3.bucket))
        // Upload closed segments and apply local retention every 2 s instead of
        // every 30 s / 5 min, so the test need not wait.
        .replace(
            "    log_retention_ms: \"604800000\"",
            "    tier_upload_interval_ms: \"2000\"\n    retention_check_interval_ms: \"2000\"\n    log_retention_ms: \"604800000\"",
        );
    kubectl_apply(env, &manifest).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let status = wait_for(
        "Cluster demo Running with 3 ready brokers",
        Duration::from_secs(180),
        || async {
            let s = clusters.get("demo").await.ok()?.status?;
            (s.phase == Some(ClusterPhase::Running) && s.ready_replicas == 3).then_some(s)
        },
    )
    .await;
    assert_eq!(status.controller_voters, Some(3), "{status:?}");
    let broker_pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await
        .expect("broker pods");
    assert_eq!(broker_pods.items.iter().filter(|p| is_ready(p)).count(), 3);
    // One cluster, not three: each broker's metadata lists all three.
    let ips: Vec<String> = broker_pods.items.iter().filter_map(pod_ip).collect();
    let mut md = serde_json::Value::Null;
    for ip in &ips {
        let addr = format!("{ip}:9092");
        md = wait_for(
            &format!("3 brokers in the metadata of {addr}"),
            Duration::from_secs(60),
            || async {
                let md = metadata(kcat, &addr).await?;
                (md["brokers"].as_array()?.len() == 3).then_some(md)
            },
        )
        .await;
    }
    step(&format!("cluster running: {}", md["brokers"]));

    // 3. The shipped topic manifest, first with 3 partitions, then edited to 6.
    let topic_manifest =
        std::fs::read_to_string(repo().join("manifests/topic.yaml")).expect("topic.yaml");
    assert!(
        topic_manifest.contains("partitions: 6"),
        "manifest changed: adapt the test"
    );
    kubectl_apply(
        env,
        &topic_manifest.replace("partitions: 6", "partitions: 3"),
    )
    .await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), NS);
    let topic_ready = |partitions: i32| {
        let topics = topics.clone();
        async move {
            let t = topics.get("orders").await.ok()?;
            let s = t.status?;
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready
                && s.partitions == Some(partitions)
                && s.observed_generation == t.metadata.generation)
                .then_some(())
        }
    };
    wait_for(
        "Topic orders Ready with 3 partitions",
        Duration::from_secs(60),
        || topic_ready(3),
    )
    .await;
    let shape = wait_for(
        "orders on the brokers: 3 partitions, RF 3, full ISR",
        Duration::from_secs(60),
        || async {
            let s = topic_shape(&cluster_metadata(&pods, kcat).await?, "orders")?;
            (s == (3, 3, 3)).then_some(s)
        },
    )
    .await;
    step(&format!("topic orders (partitions, RF, ISR) = {shape:?}"));

    // 4. Produce and consume through the bootstrap Service's name (kcat pods;
    // the name resolves through the process kubelet's cluster DNS).
    produce_topic(&client, "produce-a", "orders", &records(0, 1000)).await;
    let got = consume_topic(&client, "consume-a", "orders").await;
    assert_eq!(got.len(), 1000, "consumed {} of 1000", got.len());
    assert_eq!(got["key-7"], format!("value-7-{}", "x".repeat(7)));
    step("1000 records produced and consumed through demo-bootstrap");

    // 5. Edit partitions 3 → 6 (the manifest as shipped).
    kubectl_apply(env, &topic_manifest).await;
    wait_for(
        "Topic orders Ready with 6 partitions",
        Duration::from_secs(60),
        || topic_ready(6),
    )
    .await;
    wait_for(
        "orders has 6 partitions on the brokers",
        Duration::from_secs(60),
        || async {
            let s = topic_shape(&cluster_metadata(&pods, kcat).await?, "orders")?;
            (s.0 == 6 && s.1 == 3).then_some(())
        },
    )
    .await;
    step("orders grown to 6 partitions");

    // Replication factor 3 → 2 → 3 by editing the Topic: the brokers move replicas.
    for rf in [2, 3] {
        topics
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicationFactor": rf}})),
            )
            .await
            .expect("patch replicationFactor");
        wait_topic_shape(
            &pods,
            kcat,
            "orders",
            (6, rf, rf),
            &format!("orders at replication factor {rf} with a full ISR"),
            Duration::from_secs(90),
        )
        .await;
        wait_for(
            &format!("Topic orders InSync at replication factor {rf}"),
            Duration::from_secs(60),
            || async {
                let t = topics.get("orders").await.ok()?;
                let s = t.status?;
                (s.replication_factor == Some(rf as i32)
                    && s.observed_generation == t.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "InSync"))
                .then_some(())
            },
        )
        .await;
    }
    step("orders' replication factor changed 3 → 2 → 3 through the Topic");

    // Tiering on the operator's cluster: small segments, 128 KiB kept locally; the
    // rest is read back from the SeaweedFS bucket.
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: tiered\nspec:\n  clusterRef: demo\n  partitions: 1\n  replicationFactor: 3\n  config:\n    remote.storage.enable: \"true\"\n    segment.bytes: \"65536\"\n    local.retention.bytes: \"131072\"\n",
    )
    .await;
    wait_topic_shape(
        &pods,
        kcat,
        "tiered",
        (1, 3, 3),
        "topic tiered on the brokers",
        Duration::from_secs(60),
    )
    .await;
    produce_topic(&client, "produce-tiered", "tiered", &records(0, 12_000)).await;
    // Each broker's view of the partition: the remote log comes from the quorum,
    // the local start from that broker's own replica.
    let (local_start, remote_bytes) = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let views = tiered_partition_views(&pods).await;
            if let Some(found) = views.iter().find_map(|(_, p)| {
                (p.remote_start_offset == 0
                    && p.local_start_offset > 0
                    && p.remote_end_offset >= p.local_start_offset)
                    .then_some((p.local_start_offset, p.remote_size_bytes))
            }) {
                break found;
            }
            let seen: String = views
                .iter()
                .map(|(addr, p)| {
                    format!(
                        "\n  {addr}: leader {} epoch {} isr {:?} local [{}, {}) hw {} remote [{}, {}) {} bytes",
                        p.leader,
                        p.leader_epoch,
                        p.isr,
                        p.local_start_offset,
                        p.log_end_offset,
                        p.high_watermark,
                        p.remote_start_offset,
                        p.remote_end_offset,
                        p.remote_size_bytes
                    )
                })
                .collect();
            assert!(
                Instant::now() < deadline,
                "timed out after 120s waiting for tiered: old segments only in the bucket; last seen:{seen}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let got = consume_topic(&client, "consume-tiered", "tiered").await;
    assert_eq!(
        got.len(),
        12_000,
        "read back {} of 12000 (local start {local_start})",
        got.len()
    );
    assert_eq!(got["key-5"], format!("value-5-{}", "x".repeat(5)));
    step(&format!(
        "tiered: offsets below {local_start} served from the bucket ({remote_bytes} bytes remote), all 12000 read back"
    ));
    // Done with it: deleting the Topic (policy Delete) removes it and its bucket prefix.
    let (ok, out) = kubectl(
        env,
        &["delete", "topic", "tiered", "--wait=true", "--timeout=60s"],
        None,
    )
    .await;
    assert!(ok, "{out}");

    // 6. Invalid manifests are rejected by the API server with clear messages.
    let invalid = [
        (
            topic_manifest.replace("partitions: 6", "partitions: 2"),
            "partitions may only increase",
        ),
        (
            topic_manifest
                .replace("name: orders", "name: bad-rf")
                .replace("replicationFactor: 3", "replicationFactor: 0"),
            "spec.replicationFactor",
        ),
        (
            topic_manifest
                .replace("name: orders", "name: bad-field")
                .replace("partitions: 6", "partitions: 6\n  partitionz: 6"),
            "partitionz",
        ),
    ];
    for (manifest, message) in &invalid {
        let (ok, out) = kubectl(env, &["apply", "-f", "-"], Some(manifest)).await;
        assert!(!ok && out.contains(message), "expected `{message}`: {out}");
    }
    step("invalid manifests rejected");

    // 7. Delete a broker pod while records are being produced: it comes back on
    // its own volume and rejoins the ISR; nothing acknowledged is lost.
    let data1 = env.pvc_dir(NS, "data-demo-1").join("data");
    let before = segment_files(&data1);
    assert!(!before.is_empty(), "no segments in {}", data1.display());
    let old_uid = pods.get("demo-1").await.expect("demo-1").uid();
    pods.delete("demo-1", &DeleteParams::default())
        .await
        .expect("delete demo-1");
    produce_topic(&client, "produce-b", "orders", &records(1000, 3000)).await;
    let new = wait_for(
        "demo-1 recreated and Ready",
        Duration::from_secs(180),
        || async {
            let p = pods.get_opt("demo-1").await.ok()??;
            (p.uid() != old_uid && is_ready(&p)).then_some(p)
        },
    )
    .await;
    let after = segment_files(&data1);
    for (file, size) in &before {
        assert!(
            after.get(file).is_some_and(|s| s >= size),
            "{file}: {size} → {:?}",
            after.get(file)
        );
    }
    wait_topic_shape(
        &pods,
        kcat,
        "orders",
        (6, 3, 3),
        "all 6 partitions back to a full ISR",
        Duration::from_secs(120),
    )
    .await;
    step(&format!(
        "demo-1 back on {:?} with its data, ISR full",
        pod_ip(&new)
    ));
    let got = consume_topic(&client, "consume-b", "orders").await;
    let missing: Vec<String> = (0..3000)
        .map(|i| format!("key-{i}"))
        .filter(|k| !got.contains_key(k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged records lost: {missing:?} ({} of 3000 read)",
        got.len()
    );
    wait_for(
        "Cluster demo Running again",
        Duration::from_secs(60),
        || async {
            let s = clusters.get("demo").await.ok()?.status?;
            (s.phase == Some(ClusterPhase::Running)).then_some(())
        },
    )
    .await;
    step("3000 acknowledged records all consumed");

    // 8. Deletion policies: Retain keeps the broker topic, Delete removes it.
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: scratch\nspec:\n  clusterRef: demo\n  partitions: 1\n  replicationFactor: 2\n  deletionPolicy: Delete\n",
    )
    .await;
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: events\nspec:\n  clusterRef: demo\n  partitions: 2\n",
    )
    .await;
    wait_for(
        "scratch and events on the brokers",
        Duration::from_secs(60),
        || async {
            let md = cluster_metadata(&pods, kcat).await?;
            (topic_shape(&md, "scratch")?.1 == 2 && topic_shape(&md, "events")?.0 == 2)
                .then_some(())
        },
    )
    .await;
    let (ok, out) = kubectl(
        env,
        &[
            "delete",
            "topic",
            "orders",
            "scratch",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    )
    .await;
    assert!(ok, "{out}");
    let md = wait_for(
        "scratch deleted from the brokers",
        Duration::from_secs(60),
        || async {
            let md = cluster_metadata(&pods, kcat).await?;
            topic_shape(&md, "scratch").is_none().then_some(md)
        },
    )
    .await;
    assert_eq!(
        topic_shape(&md, "orders").map(|s| s.0),
        Some(6),
        "Retain kept orders"
    );
    step("Topic deletion: orders retained, scratch deleted");

    // 9. A config change rolls the brokers one at a time, highest ordinal first,
    // each only once the cluster is healthy again.
    produce_topic(&client, "produce-events", "events", &records(0, 1000)).await;
    let old = broker_uids(&pods).await;
    let (ok, out) = kubectl(
        env,
        &[
            "patch",
            "strata",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"config":{"default_partitions":"2"}}}"#,
        ],
        None,
    )
    .await;
    assert!(ok, "{out}");
    let (restarted, max_down, phases) = watch_roll(&pods, &clusters, &old).await;
    assert_eq!(restarted, ["demo-2", "demo-1", "demo-0"], "roll order");
    assert!(max_down <= 1, "{max_down} brokers were down at once");
    assert!(phases.contains("RollingRestart"), "{phases:?}");
    // One broker restarting at a time is a roll, not a degraded cluster.
    assert!(!phases.contains("Degraded"), "{phases:?}");
    let got = consume_topic(&client, "consume-events", "events").await;
    assert_eq!(
        got.len(),
        1000,
        "events after the roll: {} of 1000",
        got.len()
    );
    step(&format!(
        "rolled one broker at a time ({restarted:?}, phases {phases:?})"
    ));

    // 10. Under produce load (an idempotent acks=all producer pod, min.insync.replicas=2):
    // scale out to 4 brokers (the rebalancer moves replicas onto broker 3), then
    // back in (broker 3 is drained before its pod goes). No acknowledged record is lost.
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: load\nspec:\n  clusterRef: demo\n  partitions: 4\n  replicationFactor: 3\n  config:\n    min.insync.replicas: \"2\"\n",
    )
    .await;
    wait_topic_shape(
        &pods,
        kcat,
        "load",
        (4, 3, 3),
        "topic load on the brokers",
        Duration::from_secs(60),
    )
    .await;
    let load_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "load-producer"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "producer", "image": "strata-client",
            "command": ["python3", "-c", LOAD_PRODUCER, BOOTSTRAP_SVC, "load", "40", "300"],
        }]},
    }))
    .expect("load pod");
    pods.create(&PostParams::default(), &load_pod)
        .await
        .expect("load producer");

    let (ok, out) = kubectl(env, &["scale", "strata/demo", "--replicas=4"], None).await;
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = clusters
            .get("demo")
            .await
            .expect("cluster")
            .status
            .unwrap_or_default();
        let md = cluster_metadata(&pods, kcat).await.unwrap_or_default();
        let n = md["brokers"].as_array().map_or(0, Vec::len);
        if s.phase == Some(ClusterPhase::Running) && s.ready_replicas == 4 && n == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "4 brokers not ready and in the metadata: phase {:?}, ready {}, {n} brokers in metadata, conditions {:?}",
            s.phase, s.ready_replicas, s.conditions
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The rebalancer gives the new broker its share of the existing partitions.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (counts, rebalance) = loop {
        let rb = clusters
            .get("demo")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.rebalance);
        let md = cluster_metadata(&pods, kcat).await.unwrap_or_default();
        let counts = replicas_per_broker(&md);
        let balanced = counts.len() == 4
            && counts
                .values()
                .max()
                .zip(counts.values().min())
                .is_some_and(|(max, min)| max - min <= 1);
        if let Some(rb) = rb.as_ref().filter(|r| r.phase == "Done" && balanced) {
            break (counts, rb.clone());
        }
        if Instant::now() > deadline {
            // What is stuck: partitions whose ISR is short of their replicas.
            let short: Vec<String> = md["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| {
                    let name = t["topic"].as_str().unwrap_or_default().to_string();
                    t["partitions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(move |p| {
                            let r = p["replicas"].as_array().map_or(0, Vec::len);
                            let i = p["isrs"].as_array().map_or(0, Vec::len);
                            (r != i).then(|| {
                                format!(
                                    "{name}-{}: replicas {} isr {}",
                                    p["partition"], p["replicas"], p["isrs"]
                                )
                            })
                        })
                })
                .collect();
            let planner = planner_view(&pods).await;
            panic!("replicas not evened out over 4 brokers: rebalance {rb:?}, replicas per broker {counts:?}, short ISR: {short:?}; {planner}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(rebalance.total_moves > 0, "{rebalance:?}");
    wait_topic_shape(
        &pods,
        kcat,
        "orders",
        (6, 3, 3),
        "orders with a full ISR after the rebalance",
        Duration::from_secs(60),
    )
    .await;
    step(&format!(
        "rebalanced onto the new broker: replicas per broker {counts:?} ({} moves)",
        rebalance.total_moves
    ));
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: spread\nspec:\n  clusterRef: demo\n  partitions: 4\n  replicationFactor: 3\n",
    )
    .await;
    let on_broker_3 = |md: &serde_json::Value| -> usize {
        md["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["topic"] == "spread")
            .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
            .filter(|p| {
                p["replicas"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["id"] == 3))
            })
            .count()
    };
    let md = wait_for("spread on the brokers", Duration::from_secs(60), || async {
        let md = cluster_metadata(&pods, kcat).await?;
        (topic_shape(&md, "spread")? == (4, 3, 3)).then_some(md)
    })
    .await;
    assert!(
        on_broker_3(&md) > 0,
        "the new broker got no replicas: {}",
        md["topics"]
    );
    produce_topic(&client, "produce-spread", "spread", &records(0, 1000)).await;
    let (ok, out) = kubectl(env, &["scale", "strata/demo", "--replicas=3"], None).await;
    assert!(ok, "{out}");
    let mut draining_seen = false;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "scale-in did not finish");
        let s = clusters
            .get("demo")
            .await
            .expect("cluster")
            .status
            .unwrap_or_default();
        let demo3 = pods.get_opt("demo-3").await.expect("get demo-3");
        if s.phase == Some(ClusterPhase::Draining) {
            draining_seen = true;
            assert!(demo3.is_some(), "demo-3 removed while still draining");
        }
        if demo3.is_none() && s.phase == Some(ClusterPhase::Running) && s.ready_replicas == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(draining_seen, "the operator never reported Draining");
    let md = wait_for(
        "spread off broker 3 with a full ISR",
        Duration::from_secs(60),
        || async {
            let md = cluster_metadata(&pods, kcat).await?;
            (topic_shape(&md, "spread")? == (4, 3, 3)).then_some(md)
        },
    )
    .await;
    assert_eq!(on_broker_3(&md), 0, "{}", md["topics"]);
    let counts = replicas_per_broker(&md);
    assert!(
        !counts.contains_key(&3),
        "replicas left on broker 3: {counts:?}"
    );
    let got = consume_topic(&client, "consume-spread", "spread").await;
    assert_eq!(
        got.len(),
        1000,
        "spread after the scale-in: {} of 1000",
        got.len()
    );
    step("scaled 3 → 4 → 3; broker 3 drained before its pod was removed");
    // Once fenced, the gone broker is unregistered: out of the metadata (and so of
    // the quorum's learners).
    let registered = wait_for(
        "broker 3 unregistered after the scale-in",
        Duration::from_secs(90),
        || async {
            let addrs = admin_addrs(&pods).await;
            let mut admin = strata_operator::admin::connect(&addrs).await.ok()?;
            let d = admin
                .describe_cluster(strata_operator::admin::pb::DescribeClusterRequest {})
                .await
                .ok()?
                .into_inner();
            let ids: Vec<i32> = d.brokers.iter().map(|b| b.id).collect();
            (ids == [0, 1, 2]).then_some(ids)
        },
    )
    .await;
    step(&format!("broker 3 unregistered; brokers {registered:?}"));
    // Settled again (the rebalancer may even out the three brokers once more).
    wait_for(
        "cluster settled after the scale-in",
        Duration::from_secs(120),
        || async {
            let s = clusters.get("demo").await.ok()?.status?;
            let settled = s.phase == Some(ClusterPhase::Running)
                && s.rebalance.as_ref().is_none_or(|r| r.phase == "Done");
            settled.then_some(())
        },
    )
    .await;

    let (acked, summary) = check_load(&client, &pods, "load-producer", "load").await;
    step(&format!(
        "{acked} records acknowledged under scaling, all read back ({summary})"
    ));

    // 11. An upgrade: a new broker image rolls the brokers one at a time, as a config
    // change does, under an acks=all producer (min.insync.replicas=2) that runs until
    // the roll is over; nothing it was acknowledged is lost. (The harness maps the
    // `:next` tag to the same program: what is tested is the operator's roll.)
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: upgrade\nspec:\n  clusterRef: demo\n  partitions: 3\n  replicationFactor: 3\n  config:\n    min.insync.replicas: \"2\"\n",
    )
    .await;
    wait_topic_shape(
        &pods,
        kcat,
        "upgrade",
        (3, 3, 3),
        "topic upgrade on the brokers",
        Duration::from_secs(60),
    )
    .await;
    let upgrade_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "upgrade-producer"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "producer", "image": "strata-client",
            "command": ["python3", "-c", LOAD_PRODUCER, BOOTSTRAP_SVC, "upgrade", "600", "400",
                        "upgrade-done"],
        }]},
    }))
    .expect("upgrade pod");
    pods.create(&PostParams::default(), &upgrade_pod)
        .await
        .expect("upgrade producer");
    wait_for(
        "upgrade producer running",
        Duration::from_secs(60),
        || async {
            let phase = pods.get("upgrade-producer").await.ok()?.status?.phase?;
            (phase == "Running").then_some(())
        },
    )
    .await;
    let old = broker_uids(&pods).await;
    let next_image = "ghcr.io/strata-dev/strata-broker:next";
    let patch = serde_json::json!({"spec": {"image": next_image}});
    clusters
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch image");
    let (restarted, max_down, phases) = watch_roll(&pods, &clusters, &old).await;
    assert_eq!(restarted, ["demo-2", "demo-1", "demo-0"], "upgrade order");
    assert!(max_down <= 1, "{max_down} brokers were down at once");
    for i in 0..3 {
        let pod = pods.get(&format!("demo-{i}")).await.expect("broker pod");
        let image = pod
            .spec
            .and_then(|s| s.containers.into_iter().find(|c| c.name == "broker"))
            .and_then(|c| c.image);
        assert_eq!(image.as_deref(), Some(next_image), "demo-{i}");
    }
    let phase = pods
        .get("upgrade-producer")
        .await
        .ok()
        .and_then(|p| p.status?.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Running"),
        "the producer stopped before the roll was over"
    );
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: upgrade-done\nspec:\n  clusterRef: demo\n  partitions: 1\n  replicationFactor: 1\n",
    )
    .await;
    let (acked, summary) = check_load(&client, &pods, "upgrade-producer", "upgrade").await;
    step(&format!(
        "upgraded to {next_image} one broker at a time ({restarted:?}, phases {phases:?}); \
         {acked} records acknowledged during the roll, all read back ({summary})"
    ));

    // 12. Traces: the acks=all produce requests of the steps above, from the request
    // to the wait for the followers, and the operator's reconciles, are in Jaeger.
    if let Some(j) = &jaeger {
        let produce = wait_for(
            "a broker's acks=all produce trace in Jaeger",
            Duration::from_secs(60),
            || async {
                j.traces("strata-broker", "kafka.Produce")
                    .into_iter()
                    .find(|t| {
                        let ops = support::jaeger::operations(t);
                        ops.iter().any(|o| o == "produce.append")
                            && ops.iter().any(|o| o == "produce.await_replication")
                    })
            },
        )
        .await;
        let reconciles = wait_for(
            "the operator's reconcile traces in Jaeger",
            Duration::from_secs(60),
            || async {
                let c = j.traces("strata-operator", "reconcile Cluster");
                let t = j.traces("strata-operator", "reconcile Topic");
                (!c.is_empty() && !t.is_empty()).then_some(c.len() + t.len())
            },
        )
        .await;
        step(&format!(
            "traces in Jaeger: a produce trace {:?}; {reconciles} reconcile traces",
            support::jaeger::operations(&produce)
        ));
    }

    // 13. Storage: a larger size is an expansion of the claims (refused here: the
    // harness's volumes are pre-bound, not from a StorageClass that can expand), a
    // smaller one an invalid spec; the StatefulSet's claim template never changes.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let stss: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), NS);
    let template_size = || async {
        let sts = stss.get("demo").await.ok()?;
        let t = strata_operator::cluster::storage::claim_template(&sts)?;
        strata_operator::cluster::storage::claim_request(t).0
    };
    let original = template_size().await.expect("claim template size");
    let set_size = |size: &str| {
        let patch = serde_json::json!({"spec": {"storage": {"size": size}}});
        let clusters = clusters.clone();
        async move {
            clusters
                .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch storage size")
        }
    };
    set_size("100Gi").await;
    // The claims' growth is attempted: refused by the API server here (no StorageClass
    // that can expand), accepted where one exists.
    let refusal = wait_for(
        "a VolumeExpansionFailed (or VolumeExpanding) event",
        Duration::from_secs(60),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    matches!(
                        e.reason.as_deref(),
                        Some("VolumeExpansionFailed" | "VolumeExpanding")
                    )
                })
                .and_then(|e| e.message)
        },
    )
    .await;
    assert!(refusal.contains("data-demo-"), "{refusal}");
    assert_eq!(template_size().await.as_deref(), Some(original.as_str()));
    set_size("1Gi").await;
    let why = wait_for(
        "InvalidSpec for a shrink",
        Duration::from_secs(60),
        || async {
            let s = clusters.get("demo").await.ok()?.status?;
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
                .map(|c| c.message.clone())
        },
    )
    .await;
    assert!(why.contains("cannot shrink"), "{why}");
    set_size(&original).await;
    wait_for("Cluster Ready again", Duration::from_secs(60), || async {
        let s = clusters.get("demo").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    step(&format!(
        "storage: growth attempted on the claims ({refusal}), a shrink refused as InvalidSpec"
    ));

    // 12. A restarted operator (a new pod takes the Lease) changes nothing, and a
    // steady state is written to by nobody: every Topic, the ConsumerGroup (whose
    // lag is read every refresh) and the Cluster's objects keep their versions.
    kubectl_apply(
        env,
        "apiVersion: strata.dev/v1alpha1\nkind: ConsumerGroup\nmetadata:\n  name: events-readers\nspec:\n  clusterRef: demo\n  groupId: consume-events\n",
    )
    .await;
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), NS);
    wait_for(
        "the ConsumerGroup observed",
        Duration::from_secs(60),
        || async {
            groups
                .get("events-readers")
                .await
                .ok()?
                .status?
                .state
                .map(drop)
        },
    )
    .await;
    // The restart is compared against a steady state: the old operator has
    // stopped writing (the upgrade roll just ended; its rebalance round and the
    // status it reports may still be settling). Bounded: a state that never
    // settles fails here, with the objects that kept changing.
    let mut before = resource_versions(&client).await;
    let quiet_since = Instant::now();
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(10) {
        assert!(
            quiet_since.elapsed() < Duration::from_secs(90),
            "objects kept changing for 90 s before the operator restart: {before:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = resource_versions(&client).await;
        if now != before {
            before = now;
            last_change = Instant::now();
        }
    }
    step(&format!(
        "steady before the operator restart (waited {:.0?})",
        quiet_since.elapsed()
    ));
    let cluster_before = clusters.get("demo").await.expect("cluster");
    let op_pods: Api<Pod> = Api::namespaced(client.clone(), "strata-system");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "strata-system");
    let holder = leases
        .get("strata-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("holder");
    op_pods
        .delete(&holder, &DeleteParams::default())
        .await
        .expect("delete operator pod");
    let new_holder = wait_for(
        "a new operator pod holds the Lease",
        Duration::from_secs(90),
        || async {
            let h = leases
                .get("strata-operator")
                .await
                .ok()?
                .spec?
                .holder_identity?;
            (h != holder && h.starts_with("strata-operator-")).then_some(h)
        },
    )
    .await;
    // Long enough for the new leader's first full reconcile of everything.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = resource_versions(&client).await;
    if before != after {
        let cluster_after = clusters.get("demo").await.expect("cluster");
        panic!(
            "the restarted operator updated objects:\nbefore {before:?}\nafter  {after:?}\nCluster status before: {}\nCluster status after:  {}\nmetadata before: {:?}\nmetadata after:  {:?}",
            serde_json::to_string(&cluster_before.status).unwrap_or_default(),
            serde_json::to_string(&cluster_after.status).unwrap_or_default(),
            cluster_before.metadata.managed_fields.as_ref().map(|m| m.iter().map(|f| (f.manager.clone(), f.operation.clone(), f.subresource.clone(), f.time.clone())).collect::<Vec<_>>()),
            cluster_after.metadata.managed_fields.as_ref().map(|m| m.iter().map(|f| (f.manager.clone(), f.operation.clone(), f.subresource.clone(), f.time.clone())).collect::<Vec<_>>()),
        );
    }
    let connects = operator_admin_connects(&client, &new_holder).await;
    // Longer than the ConsumerGroup refresh (15 s) and a Topic/Cluster requeue.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let later = resource_versions(&client).await;
    assert_eq!(after, later, "objects written in a steady state");
    // Each refresh reads the brokers on the cluster's pooled admin connection.
    let connects_later = operator_admin_connects(&client, &new_holder).await;
    assert!(connects >= 1, "the operator never connected to the brokers");
    assert_eq!(
        connects, connects_later,
        "admin connections opened in a steady state"
    );
    step(&format!(
        "operator restarted without spurious updates; no writes to {} objects and no new admin connection ({connects} open) in 20 s of steady state",
        later.len()
    ));
}
