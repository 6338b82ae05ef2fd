//! ConsumerGroup autoscaling and offset resets on the real control plane, with
//! the operator the Helm chart installs: kube-controller-manager's HPA
//! controller reads `strata_consumergroup_lag` from the operator through the
//! aggregation layer (the chart's APIService → its Service → the EndpointSlice
//! with the operator pod's address → the operator's HTTPS listener) and scales
//! a Deployment of real consumers (python + confluent-kafka, as pods of the
//! process kubelet) up while they lag and down once they caught up.
//!
//! Skips loudly without the setup binaries, the broker binary or the test
//! venv, unless `STRATA_E2E_REQUIRED=1`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use strata_e2e::testing::{required, wait_for, with_env};
use strata_e2e::{Env, EnvConfig};
use strata_operator::crd::consumergroup::OffsetResetPhase;
use strata_operator::crd::{Cluster, ConsumerGroup, Topic};

mod support;
use support::{broker_binary, kafka_python, wait_topic_ready};

const NS: &str = "default";
const PARTITIONS: i32 = 4;
const RECORDS: usize = 2000;
const LAG_PER_REPLICA: i64 = 100;

/// A consumer that processes about 20 records a second, so the group lags
/// long enough for the HPA to see it; offsets are auto-committed every 500 ms
/// and it leaves the group on SIGTERM, as a well-behaved consumer does.
/// (`max.poll.interval.ms` is the rebalance timeout: the broker waits that long
/// for members to rejoin a rebalance, also for ones that were just killed.)
const CONSUMER: &str = r#"
import os, signal, time
from confluent_kafka import Consumer
running = True
def stop(*_):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
c = Consumer({
    "bootstrap.servers": os.environ["BOOTSTRAP"],
    "group.id": "workers",
    "auto.offset.reset": "earliest",
    "auto.commit.interval.ms": 500,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "max.poll.interval.ms": 10000,
})
c.subscribe(["work"])
while running:
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        time.sleep(0.05)
c.close()
"#;

const PRODUCER: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
n = int(sys.argv[2])
for i in range(n):
    p.produce("work", str(i).encode(), partition=i % 4)
    p.poll(0)
left = p.flush(30)
sys.exit(1 if left else 0)
"#;

fn skip(msg: &str) {
    if required() {
        panic!("{msg} (STRATA_E2E_REQUIRED=1)");
    }
    eprintln!("\n!!!!! SKIPPING autoscaling e2e test: {msg} !!!!!\n");
}

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_yaml::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

async fn create<K>(client: &Client, obj: &K) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("create {obj:?}: {e}"))
}

/// The external metric as the HPA controller reads it, through kube-apiserver.
async fn external_metric(client: &Client) -> Option<String> {
    let req = axum::http::Request::get(format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/strata_consumergroup_lag?labelSelector=strata.dev%2Fconsumergroup%3Dworkers"
    ))
    .body(Vec::new())
    .ok()?;
    let v: serde_json::Value = client.request(req).await.ok()?;
    v["items"][0]["value"].as_str().map(str::to_string)
}

async fn deployment_replicas(client: &Client) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get("consumer")
        .await
        .ok()?
        .spec?
        .replicas
}

async fn group_status(client: &Client) -> Option<strata_operator::crd::ConsumerGroupStatus> {
    Api::<ConsumerGroup>::namespaced(client.clone(), NS)
        .get("workers")
        .await
        .ok()?
        .status
}

#[tokio::test]
async fn hpa_scales_consumers_on_lag_served_through_the_aggregation_layer() {
    // A workspace build links two rustls crypto providers; pick one, as main() does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(broker) = broker_binary() else {
        return skip("strata-broker not built (cargo build -p strata-broker)");
    };
    let Some(python) = kafka_python() else {
        return skip("no test venv with confluent_kafka (bash scripts/setup.sh)");
    };
    let mut config = EnvConfig::default();
    config
        .images
        .insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    config.images.insert(
        "ghcr.io/strata-dev/strata-operator".into(),
        env!("CARGO_BIN_EXE_strata-operator").into(),
    );
    config.images.insert("python".into(), python.clone());
    with_env(
        "consumergroup autoscaling",
        config,
        Duration::from_secs(900),
        |env| scenario(env, python),
    )
    .await;
}

async fn scenario(env: Env, python: std::path::PathBuf) -> Env {
    let started = Instant::now();
    let client = env.client.clone();

    // The operator as the chart installs it: a pod of its own, its metrics API
    // behind the chart's Service and APIService. kube-apiserver's aggregation
    // layer reaches it at the Service's endpoint, the operator pod's address.
    strata_e2e::testing::helm_install(
        &env,
        "strata",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/strata"),
        "strata-system",
        &["--set", "groupRefreshSeconds=2"],
    )
    .await;
    let apiservices: Api<APIService> = Api::all(client.clone());
    wait_for(
        "APIService v1beta1.external.metrics.k8s.io Available",
        Duration::from_secs(90),
        || async {
            let a = apiservices
                .get("v1beta1.external.metrics.k8s.io")
                .await
                .ok()?;
            a.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    eprintln!("APIService available after {:?}", started.elapsed());

    // One broker and a 4-partition topic.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    create::<Cluster>(
        &client,
        &yaml("apiVersion: strata.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec:\n  replicas: 1\n  storage: {size: 1Gi}\n  config: {auto_create_topics: \"false\"}"),
    )
    .await;
    wait_for("Cluster demo Running", Duration::from_secs(120), || async {
        let s = clusters.get("demo").await.ok()?.status?;
        (s.phase == Some(strata_operator::crd::cluster::ClusterPhase::Running)).then_some(())
    })
    .await;
    create::<Topic>(
        &client,
        &yaml(&format!("apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata: {{name: work}}\nspec: {{clusterRef: demo, partitions: {PARTITIONS}}}")),
    )
    .await;
    wait_topic_ready(&client, NS, "work").await;
    let broker_ip = Api::<Pod>::namespaced(client.clone(), NS)
        .get("demo-0")
        .await
        .expect("broker pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("broker pod IP");
    let bootstrap = format!("{broker_ip}:9092");
    let out = tokio::process::Command::new(&python)
        .args(["-c", PRODUCER, &bootstrap, &RECORDS.to_string()])
        .output()
        .await
        .expect("run producer");
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{RECORDS} records produced after {:?}", started.elapsed());

    // The group does not exist yet: an offset reset to Earliest creates its
    // commits at 0, so the whole topic is lag. The HPA appears with it.
    create::<ConsumerGroup>(
        &client,
        &yaml(&format!(
            "apiVersion: strata.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {{name: workers}}\nspec:\n  clusterRef: demo\n  groupId: workers\n  topics: [work]\n  offsetReset: {{target: Earliest, requestId: r1}}\n  autoscaling:\n    targetRef: {{name: consumer}}\n    lagPerReplica: {LAG_PER_REPLICA}\n    scaleDownStabilizationSeconds: 0"
        )),
    )
    .await;
    let st = wait_for(
        "offset reset r1 Succeeded with the whole topic as lag",
        Duration::from_secs(60),
        || async {
            let s = group_status(&client).await?;
            let r = s.offset_reset.as_ref()?;
            assert_ne!(r.phase, OffsetResetPhase::Failed, "{s:?}");
            (r.request_id == "r1"
                && r.phase == OffsetResetPhase::Succeeded
                && s.total_lag == Some(RECORDS as i64))
            .then_some(s)
        },
    )
    .await;
    assert_eq!(st.partitions, Some(PARTITIONS), "{st:?}");
    assert_eq!(st.hpa.as_deref(), Some("workers"));
    assert_eq!(st.desired_replicas, Some(PARTITIONS));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    let hpa = hpas.get("workers").await.expect("HPA");
    let spec = hpa.spec.expect("HPA spec");
    assert_eq!(spec.max_replicas, PARTITIONS, "maxReplicas = partitions");
    assert_eq!(spec.scale_target_ref.name, "consumer");
    // Through kube-apiserver and the aggregation layer: the lag, capped at
    // lagPerReplica x partitions (2000 records of lag → 400, i.e. 4 replicas).
    let v = wait_for(
        "external metric through the API server",
        Duration::from_secs(30),
        || external_metric(&client),
    )
    .await;
    assert_eq!(v, (LAG_PER_REPLICA * PARTITIONS as i64).to_string());

    // Real consumers, one replica to start with.
    create::<Deployment>(
        &client,
        &yaml(&format!(
            "metadata: {{name: consumer}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: consumer}}}}\n  template:\n    metadata: {{labels: {{app: consumer}}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: consumer\n        image: python\n        command: [python3, -u, -c, {}]\n        env: [{{name: BOOTSTRAP, value: \"{bootstrap}\"}}]",
            serde_json::to_string(CONSUMER).expect("json string")
        )),
    )
    .await;
    let t = Instant::now();
    wait_for(
        "HPA scales the consumers up to the partition count",
        Duration::from_secs(120),
        || async { (deployment_replicas(&client).await? == PARTITIONS).then_some(()) },
    )
    .await;
    eprintln!(
        "scaled up to {PARTITIONS} replicas {:?} after the consumers started",
        t.elapsed()
    );
    let hpa = hpas.get("workers").await.expect("HPA");
    let metric = hpa
        .status
        .and_then(|s| s.current_metrics)
        .and_then(|m| m.into_iter().next())
        .and_then(|m| m.external)
        .map(|e| e.current);
    eprintln!("HPA current metric at scale-up: {metric:?}");

    // They catch up; the HPA scales back to minReplicas.
    let t = Instant::now();
    wait_for(
        "consumers catch up (lag 0)",
        Duration::from_secs(240),
        || async {
            let s = group_status(&client).await?;
            (s.total_lag == Some(0) && s.state.as_deref() == Some("Stable")).then_some(())
        },
    )
    .await;
    eprintln!("caught up after {:?}", t.elapsed());
    let t = Instant::now();
    wait_for(
        "HPA scales the consumers down to 1",
        Duration::from_secs(120),
        || async { (deployment_replicas(&client).await? == 1).then_some(()) },
    )
    .await;
    eprintln!(
        "scaled down to 1 replica {:?} after catching up",
        t.elapsed()
    );
    assert_eq!(external_metric(&client).await.as_deref(), Some("0"));
    // r1 ran once: still the same recorded outcome.
    let s = group_status(&client).await.expect("status");
    let r1 = s.offset_reset.expect("reset status");
    assert_eq!(
        (r1.request_id.as_str(), r1.phase),
        ("r1", OffsetResetPhase::Succeeded)
    );
    assert_eq!(
        r1.completion_time,
        st.offset_reset.and_then(|r| r.completion_time)
    );

    // A reset while consumers run waits; removing autoscaling deletes the HPA;
    // with the consumers stopped the group is Empty and the reset runs.
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), NS);
    groups
        .patch(
            "workers",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "offsetReset": {"target": "Earliest", "requestId": "r2"},
                "autoscaling": null,
            }})),
        )
        .await
        .expect("patch group");
    wait_for(
        "offset reset r2 Pending while the group is Stable",
        Duration::from_secs(30),
        || async {
            let r = group_status(&client).await?.offset_reset?;
            (r.request_id == "r2" && r.phase == OffsetResetPhase::Pending).then_some(())
        },
    )
    .await;
    wait_for("HPA deleted", Duration::from_secs(30), || async {
        hpas.get_opt("workers").await.ok()?.is_none().then_some(())
    })
    .await;
    Api::<Deployment>::namespaced(client.clone(), NS)
        .patch(
            "consumer",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale consumers to 0");
    let s = wait_for(
        "offset reset r2 Succeeded once the group is Empty",
        Duration::from_secs(90),
        || async {
            let s = group_status(&client).await?;
            let r = s.offset_reset.as_ref()?;
            (r.request_id == "r2" && r.phase == OffsetResetPhase::Succeeded).then_some(s)
        },
    )
    .await;
    assert_eq!(s.total_lag, Some(RECORDS as i64), "{s:?}");
    assert_eq!(s.hpa, None);

    eprintln!("autoscaling scenario done in {:?}", started.elapsed());
    env
}
