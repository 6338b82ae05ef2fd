//! Smoke scenarios against a real local control plane and the process kubelet.
//!
//! Each test starts its own environment; a process-wide lock runs them one at a
//! time (2 cores). Without the setup binaries they skip loudly, unless
//! `STRATA_E2E_REQUIRED=1` (CI), where they fail.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use strata_e2e::binaries::Binaries;
use strata_e2e::kubelet::ImageMap;
use strata_e2e::{Env, EnvConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the smoke tests");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// None (after a loud message) when the setup binaries are missing and not required.
fn config() -> Option<EnvConfig> {
    let bins = Binaries::from_env();
    let missing = bins.missing();
    if !missing.is_empty() {
        let msg = format!(
            "strata-e2e binaries missing in {} ({}); run `bash e2e/setup.sh`",
            bins.dir.display(),
            missing.join(", ")
        );
        if std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING e2e smoke test: {msg} !!!!!\n");
        return None;
    }
    let mut images = ImageMap::new();
    images.insert("python".into(), python());
    Some(EnvConfig {
        bins,
        images,
        ..EnvConfig::default()
    })
}

/// Runs `scenario` with a fresh environment, serialized and time-bounded.
async fn with_env<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env>,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client::client::builder=off".into()),
        )
        .with_test_writer()
        .try_init();
    let Some(config) = config() else { return };
    let _guard = LOCK.lock().await;
    let started = Instant::now();
    let run = async {
        let env = Env::start(config).await.expect("starting the environment");
        eprintln!("[{name}] environment up in {:?}", started.elapsed());
        let env = scenario(env).await;
        env.shutdown().await;
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {TEST_TIMEOUT:?}"));
    eprintln!("[{name}] done in {:?}", started.elapsed());
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

/// GET over plain HTTP/1.0; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn from_yaml<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid manifest")
}

#[tokio::test]
async fn api_server_answers_kubectl_get_ns() {
    with_env("get_ns", |env| async move {
        let out = tokio::process::Command::new("kubectl")
            .args(["get", "ns", "-o", "name"])
            .env("KUBECONFIG", env.kubeconfig())
            .output()
            .await;
        match out {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "kubectl failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(stdout.contains("namespace/default"), "{stdout}");
                assert!(stdout.contains("namespace/kube-system"), "{stdout}");
            }
            Err(e) => eprintln!("kubectl not runnable ({e}); checking through the API client only"),
        }
        let ns: Api<Namespace> = Api::all(env.client.clone());
        let names: BTreeSet<String> = ns
            .list(&ListParams::default())
            .await
            .expect("listing namespaces")
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        assert!(
            names.contains("default") && names.contains("kube-system"),
            "{names:?}"
        );
        env
    })
    .await;
}

const ECHO_SERVER: &str = r#"
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = {k: os.environ.get(k) for k in ["POD_NAME", "POD_NAMESPACE", "POD_IP", "GREETING", "PASSWORD", "KUBECONFIG"]}
        data["file"] = open(os.path.join(os.environ["CONFIG_DIR"], "index.html")).read()
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"#;

#[tokio::test]
async fn deployment_pod_runs_as_a_ready_process_reachable_on_its_pod_ip() {
    with_env("deployment", |env| async move {
        let ns = "default";
        let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
        cms.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "web-config"},
            "data": {"greeting": "hi", "index.html": "<h1>from a configmap</h1>"},
        })))
        .await
        .expect("configmap");
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), ns);
        secrets.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "web-secret"},
            "stringData": {"password": "s3cret"},
        })))
        .await
        .expect("secret");
        let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
        deploys.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "python:3.11",
                            "command": ["python3", "-c", ECHO_SERVER],
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-config", "key": "greeting"}}},
                                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "password"}}},
                                {"name": "CONFIG_DIR", "value": "/etc/web"},
                            ],
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
                            "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1},
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
                    }
                }
            }
        })))
        .await
        .expect("deployment");

        let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
        let pod = wait_for("a Ready web pod", Duration::from_secs(90), || async {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.into_iter().find(is_ready)
        })
        .await;
        let ip = pod_ip(&pod).expect("pod IP");
        assert!(ip.starts_with("127.") && ip != "127.0.0.1", "pod IP {ip}");
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
        let (status, body) = http_get(addr, "/").await.expect("pod answers on its pod IP");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(v["POD_NAME"], pod.name_any());
        assert_eq!(v["POD_NAMESPACE"], ns);
        assert_eq!(v["POD_IP"], ip);
        assert_eq!(v["GREETING"], "hi");
        assert_eq!(v["PASSWORD"], "s3cret");
        assert_eq!(v["file"], "<h1>from a configmap</h1>");
        // `kubectl logs` reaches the kubelet's log endpoint through the API server.
        if let Ok(out) = tokio::process::Command::new("kubectl")
            .args(["logs", &pod.name_any()])
            .env("KUBECONFIG", env.kubeconfig())
            .output()
            .await
        {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("=== strata-e2e: starting"),
                "kubectl logs: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The pod's kubeconfig authenticates as its ServiceAccount (RBAC then forbids listing).
        let kubeconfig = PathBuf::from(v["KUBECONFIG"].as_str().expect("KUBECONFIG exported to the pod"));
        let sa_client = strata_e2e::controlplane::client_from_kubeconfig(&kubeconfig)
            .await
            .expect("pod kubeconfig");
        let err = Api::<Pod>::namespaced(sa_client, ns)
            .list(&ListParams::default())
            .await
            .expect_err("the default ServiceAccount may not list pods");
        assert!(
            err.to_string().contains("system:serviceaccount:default:default"),
            "{err}"
        );
        let deploy = wait_for("deployment available", Duration::from_secs(30), || async {
            let d = deploys.get("web").await.ok()?;
            (d.status.as_ref()?.available_replicas? == 1).then_some(d)
        })
        .await;
        assert_eq!(deploy.name_any(), "web");
        env
    })
    .await;
}

const STATEFUL_SERVER: &str = r#"
import http.server, os, uuid
path = os.path.join(os.environ["DATA_DIR"], "identity")
if not os.path.exists(path):
    with open(path, "w") as f:
        f.write(os.environ["POD_NAME"] + ":" + uuid.uuid4().hex)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(path).read().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"#;

#[tokio::test]
async fn statefulset_pods_keep_their_data_dir_when_recreated() {
    with_env("statefulset", |env| async move {
        let ns = "default";
        let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), ns);
        sts.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{
                            "name": "db",
                            "image": "python",
                            "command": ["python3", "-c", STATEFUL_SERVER],
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "DATA_DIR", "value": "/var/lib/db"},
                            ],
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }],
                    }
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }],
            }
        })))
        .await
        .expect("statefulset");

        let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
        let ready = wait_for("3 Ready db pods", Duration::from_secs(120), || async {
            let list = pods.list(&ListParams::default().labels("app=db")).await.ok()?;
            let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == 3).then_some(ready)
        })
        .await;
        let ips: BTreeSet<String> = ready.iter().filter_map(pod_ip).collect();
        assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");
        let mut identities = Vec::new();
        for i in 0..3 {
            let file = env.pvc_dir(ns, &format!("data-db-{i}")).join("identity");
            let id = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(id.starts_with(&format!("db-{i}:")), "{id}");
            identities.push(id);
        }

        let old = pods.get("db-1").await.expect("db-1");
        let old_uid = old.uid();
        pods.delete("db-1", &DeleteParams::default()).await.expect("delete db-1");
        let new = wait_for("db-1 recreated and Ready", Duration::from_secs(90), || async {
            let p = pods.get_opt("db-1").await.ok()??;
            (p.uid() != old_uid && is_ready(&p)).then_some(p)
        })
        .await;
        let addr: SocketAddr = format!("{}:8080", pod_ip(&new).expect("ip")).parse().expect("addr");
        let (status, body) = wait_for("db-1 serving", Duration::from_secs(20), || http_get(addr, "/")).await;
        assert_eq!(status, 200);
        assert_eq!(body, identities[1], "db-1 came back with different data");
        env
    })
    .await;
}

#[tokio::test]
async fn helm_installs_a_trivial_chart() {
    with_env("helm", |env| async move {
        let helm = Binaries::from_env().path("helm").expect("helm");
        let home = env.dir.join("helm-home");
        let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/hello-chart");
        let out = tokio::process::Command::new(&helm)
            .args(["install", "hello"])
            .arg(&chart)
            .args(["--namespace", "default", "--wait", "--timeout", "90s"])
            .env("KUBECONFIG", env.kubeconfig())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .await
            .expect("running helm");
        assert!(
            out.status.success(),
            "helm install failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
        let cm = cms.get("hello-greeting").await.expect("chart's configmap");
        assert_eq!(
            cm.data
                .unwrap_or_default()
                .get("greeting")
                .map(String::as_str),
            Some("hello from helm")
        );
        let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
        let d = deploys.get("hello-web").await.expect("chart's deployment");
        assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(1));
        env
    })
    .await;
}
