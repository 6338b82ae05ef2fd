//! The README's Kubernetes walk-through, run as written: the shell block between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` goes to bash in the
//! repository root, against an environment started the way `strata-e2e up`
//! starts it (its image map, an S3 bucket, an `env.sh`). Only the placeholder
//! `/tmp/strata-e2e-XXXX` is replaced by this environment's directory. Then the
//! test checks what the block claims: the record was read back, and the
//! consumer autoscaling path works through real Kubernetes plumbing (the
//! chart's metrics Service has an EndpointSlice with the operator pod's
//! address, the APIService is Available, the HPA reads the lag).
//!
//! Skips loudly without the setup binaries, unless `STRATA_E2E_REQUIRED=1`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::ListParams;
use kube::Api;
use strata_e2e::binaries::Binaries;
use strata_e2e::testing::{self, wait_for};
use strata_e2e::{Env, EnvConfig};

mod support;
use support::broker_binary;

const TEST_TIMEOUT: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shell block of the README between the walkthrough markers.
fn walkthrough(readme: &str) -> String {
    let begin = readme
        .find("<!-- walkthrough:begin -->")
        .expect("README has <!-- walkthrough:begin -->");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("README has <!-- walkthrough:end -->");
    let section = &readme[begin..end];
    let body = section
        .split_once("```sh\n")
        .map(|(_, rest)| rest)
        .expect("a ```sh block inside the walkthrough markers");
    body.split_once("```")
        .map(|(code, _)| code.to_string())
        .expect("the ```sh block ends before walkthrough:end")
}

#[test]
fn the_walkthrough_block_is_found_and_names_its_steps() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = walkthrough(&readme);
    for step in [
        "source /tmp/strata-e2e-XXXX/env.sh",
        "helm install strata helm/strata",
        "manifests/cluster.yaml",
        "manifests/consumer-group.yaml",
        "kubectl logs read",
    ] {
        assert!(block.contains(step), "walkthrough lacks {step:?}:\n{block}");
    }
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    testing::init_tracing();
    if !testing::binaries_present(
        "README walkthrough e2e",
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
    let mut images = strata_e2e::env::default_images();
    // The binaries this test was built with, whatever CARGO_TARGET_DIR says.
    let Some(broker) = broker_binary() else {
        let msg = "strata-broker not built (cargo build -p strata-broker)";
        if testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING README walkthrough e2e: {msg} !!!!!\n");
        return;
    };
    images.insert("ghcr.io/strata-dev/strata-broker".into(), broker);
    images.insert(
        "ghcr.io/strata-dev/strata-operator".into(),
        PathBuf::from(env!("CARGO_BIN_EXE_strata-operator")),
    );
    for image in ["kcat", "sh", "edenhill/kcat"] {
        if !images.contains_key(image) {
            let msg = format!("no program for image {image} (apt install kcat)");
            if testing::required() {
                panic!("{msg} (STRATA_E2E_REQUIRED=1)");
            }
            eprintln!("\n!!!!! SKIPPING README walkthrough e2e: {msg} !!!!!\n");
            return;
        }
    }
    let config = EnvConfig {
        images,
        s3_bucket: Some("strata-demo".into()),
        ..EnvConfig::default()
    };
    testing::with_env(
        "README walkthrough",
        config,
        TEST_TIMEOUT,
        |env| async move {
            scenario(&env).await;
            env
        },
    )
    .await;
}

async fn scenario(env: &Env) {
    let (env_file, _) = env.write_env_file().expect("env.sh");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let placeholder = "/tmp/strata-e2e-XXXX/env.sh";
    let script = walkthrough(&readme).replace(placeholder, &env_file.display().to_string());
    let bins = Binaries::from_env();
    let path = format!(
        "{}:{}",
        bins.dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = env.dir.join("helm-home");
    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-x", "-c", &script])
        .current_dir(repo())
        .env("PATH", path)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the walkthrough finishes within 600 s")
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README walkthrough failed ({}):\n--- stdout\n{stdout}\n--- stderr (bash -x)\n{stderr}",
        out.status
    );
    eprintln!("--- walkthrough output\n{stdout}");

    // `kubectl logs read` printed the record `hello` pod produced.
    assert!(
        stdout.lines().any(|l| l.trim() == "hello"),
        "no `hello` line in the output:\n{stdout}"
    );

    // The autoscaling path, through real Service plumbing: the chart's metrics
    // Service has an EndpointSlice holding the operator pod's (non-loopback) address.
    let client = env.client.clone();
    let operator_ip: std::net::Ipv4Addr = Api::<Pod>::namespaced(client.clone(), "strata-system")
        .list(&ListParams::default().labels("app.kubernetes.io/name=strata-operator"))
        .await
        .expect("operator pods")
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
        .expect("operator pod IP");
    assert!(!operator_ip.is_loopback(), "{operator_ip}");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "strata-system");
    let addrs: Vec<String> = slices
        .list(
            &ListParams::default().labels("kubernetes.io/service-name=strata-operator-metrics-api"),
        )
        .await
        .expect("EndpointSlices")
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
        .collect();
    assert_eq!(
        addrs,
        vec![operator_ip.to_string()],
        "metrics API endpoints"
    );
    let available = Api::<APIService>::all(client.clone())
        .get("v1beta1.external.metrics.k8s.io")
        .await
        .expect("APIService")
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    assert!(available, "APIService not Available");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let metric = wait_for(
        "the HPA's current lag metric",
        Duration::from_secs(60),
        || async {
            let st = hpas.get("orders-processor").await.ok()?.status?;
            st.current_metrics?.into_iter().next()?.external
        },
    )
    .await;
    assert_eq!(metric.metric.name, "strata_consumergroup_lag", "{metric:?}");
    // The operator's HPA targets an average value per replica.
    assert!(metric.current.average_value.is_some(), "{metric:?}");
}
