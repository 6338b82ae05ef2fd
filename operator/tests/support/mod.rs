//! Shared by the operator's environment tests: where the broker binary and a
//! Kafka-capable python are, and installing the CRDs.

#![allow(dead_code)] // each test crate uses a subset

pub mod broker;
pub mod helm;
pub mod jaeger;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use strata_e2e::testing::wait_for;

/// Waits until Topic `name` in `namespace` is Ready.
pub async fn wait_topic_ready(client: &Client, namespace: &str, name: &str) {
    let topics: Api<strata_operator::crd::Topic> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("Topic {name} Ready"),
        Duration::from_secs(60),
        || async {
            let s = topics.get(name).await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// The `strata-broker` binary of this build, when built.
pub fn broker_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug").join("strata-broker");
    p.exists().then_some(p)
}

/// The python of the test venv (`scripts/setup.sh` writes its path to
/// `$STRATA_CACHE/current-venv`), when it can import confluent_kafka.
pub fn kafka_python() -> Option<PathBuf> {
    let cache = std::env::var_os("STRATA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata")))?;
    let venv = std::fs::read_to_string(cache.join("current-venv")).ok()?;
    let python = PathBuf::from(venv.trim()).join("bin").join("python3");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

/// Creates the four CRDs from `crds/` and waits until they are Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for name in [
        "cluster.yaml",
        "topic.yaml",
        "consumergroup.yaml",
        "user.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).expect("crd yaml");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("crd parses");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        let crd_name = crd.name_any();
        wait_for(
            &format!("CRD {crd_name} established"),
            Duration::from_secs(30),
            || async {
                let c = crds.get(&crd_name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// The resourceVersion of one named object (to prove nothing was rewritten).
pub async fn rv<K>(client: &Client, namespace: &str, name: &str) -> Option<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
        .resource_version()
}

/// resourceVersions of the Cluster `demo` in `namespace` and everything it owns.
pub async fn cluster_resource_versions(
    client: &Client,
    namespace: &str,
) -> Vec<(String, Option<String>)> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    vec![
        (
            "statefulset".into(),
            rv::<StatefulSet>(client, namespace, "demo").await,
        ),
        (
            "configmap".into(),
            rv::<ConfigMap>(client, namespace, "demo-config").await,
        ),
        (
            "bootstrap".into(),
            rv::<Service>(client, namespace, "demo-bootstrap").await,
        ),
        (
            "headless".into(),
            rv::<Service>(client, namespace, "demo-brokers").await,
        ),
        (
            "pdb".into(),
            rv::<PodDisruptionBudget>(client, namespace, "demo").await,
        ),
        (
            "cluster".into(),
            rv::<strata_operator::crd::Cluster>(client, namespace, "demo").await,
        ),
    ]
}

/// Waits up to `timeout` for pod `name` to end (restartPolicy Never) and answers
/// its phase (`Succeeded` or `Failed`) and its log.
pub async fn pod_outcome(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    timeout: Duration,
) -> (String, String) {
    let phase = wait_for(&format!("pod {name} finished"), timeout, || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        ["Succeeded", "Failed"]
            .contains(&phase.as_str())
            .then_some(phase)
    })
    .await;
    let log = pods
        .logs(name, &kube::api::LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"));
    (phase, log)
}

/// Options of an operator run in the test process: every namespace, no leader
/// Lease, quick resyncs and group refreshes.
pub fn operator_options(
    metrics_api: Option<strata_operator::metrics_api::MetricsApiOptions>,
) -> strata_operator::run::Options {
    strata_operator::run::Options {
        namespaces: vec![],
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        lease: None,
        settings: strata_operator::context::Settings {
            resync: Duration::from_secs(30),
            group_refresh: Duration::from_secs(2),
            finalizer_timeout: Duration::from_secs(20),
        },
        metrics_api,
    }
}
