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
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use strata_e2e::testing::{self, wait_for};
use strata_e2e::{Env, EnvConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs `scenario` in a fresh environment with the `python` image (see strata_e2e::testing).
async fn with_env<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env>,
{
    let config = EnvConfig {
        images: testing::python_images(),
        ..EnvConfig::default()
    };
    testing::with_env(name, config, TEST_TIMEOUT, scenario).await;
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
        // An address of the kubelet's pod network, which EndpointSlices accept.
        let parsed: std::net::Ipv4Addr = ip.parse().expect("IPv4 pod IP");
        assert!(parsed.octets()[0] == 10 && !parsed.is_loopback(), "pod IP {ip}");
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
        // The kubelet reports what it did as Events on the pod.
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), ns);
        let pod_name = pod.name_any();
        wait_for("a Started event", Duration::from_secs(20), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Started") && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod_name.as_str()))
                .then_some(())
        })
        .await;
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
        if self.path.startswith("/resolve/"):
            # Cluster DNS as this process sees it (the kubelet's /etc/hosts).
            import socket
            try:
                infos = socket.getaddrinfo(self.path[len("/resolve/"):], 80, socket.AF_INET, socket.SOCK_STREAM)
                body = ",".join(sorted({i[4][0] for i in infos})).encode()
            except OSError as e:
                body = ("error: " + str(e)).encode()
        else:
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
        // A headless Service names the pods (it publishes them before they are
        // ready); a ClusterIP one resolves to the ready backends.
        let services: Api<Service> = Api::namespaced(env.client.clone(), ns);
        for (name, headless) in [("db", true), ("db-client", false)] {
            let mut spec = serde_json::json!({
                "selector": {"app": "db"},
                "ports": [{"name": "http", "port": 8080}],
            });
            if headless {
                spec["clusterIP"] = "None".into();
                spec["publishNotReadyAddresses"] = true.into();
            }
            services
                .create(&PostParams::default(), &from_yaml(serde_json::json!({"metadata": {"name": name}, "spec": spec})))
                .await
                .expect("service");
        }
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
        let ip_of = |name: &str| {
            ready
                .iter()
                .find(|p| p.name_any() == name)
                .and_then(pod_ip)
                .unwrap_or_default()
        };
        let db0: SocketAddr = format!("{}:8080", ip_of("db-0")).parse().expect("addr");
        for name in ["db-2.db.default.svc.cluster.local", "db-2.db.default.svc", "db-2.db"] {
            let (_, resolved) = http_get(db0, &format!("/resolve/{name}")).await.expect("resolve");
            assert_eq!(resolved, ip_of("db-2"), "{name} as seen from db-0");
        }
        let all: Vec<String> = ips.iter().cloned().collect();
        let (_, resolved) = wait_for("db-client resolves to 3 ready pods", Duration::from_secs(20), || async {
            let (_, r) = http_get(db0, "/resolve/db-client").await?;
            (r == all.join(",")).then_some(((), r))
        })
        .await;
        assert_eq!(resolved, all.join(","));

        // The kubelet gives each claim a pre-bound PV, so the binder marks them Bound.
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(env.client.clone(), ns);
        wait_for("3 Bound PVCs", Duration::from_secs(60), || async {
            let list = pvcs.list(&ListParams::default()).await.ok()?;
            let bound = list
                .items
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .count();
            (bound == 3).then_some(())
        })
        .await;

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
        // Its stable name follows it to whatever address it has now.
        let new_ip = pod_ip(&new).expect("ip");
        wait_for("db-1.db resolves to the new pod", Duration::from_secs(20), || async {
            let (_, r) = http_get(db0, "/resolve/db-1.db").await?;
            (r == new_ip).then_some(())
        })
        .await;
        env
    })
    .await;
}

#[tokio::test]
async fn helm_installs_a_trivial_chart() {
    with_env("helm", |env| async move {
        let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/hello-chart");
        testing::helm_install(&env, "hello", &chart, "default", &[]).await;
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

#[tokio::test]
async fn containers_restart_per_policy_and_are_killed_after_the_grace_period() {
    with_env("lifecycle", |env| async move {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let pod_with = |name: &str, policy: &str, code: &str, extra: serde_json::Value| -> Pod {
            let mut spec = serde_json::json!({
                "restartPolicy": policy,
                "containers": [{"name": "c", "image": "python", "command": ["python3", "-c", code]}],
            });
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            from_yaml(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
        };
        let pp = PostParams::default();
        pods.create(&pp, &pod_with("crashy", "OnFailure", "import sys; sys.exit(3)", serde_json::json!({})))
            .await
            .expect("crashy");
        pods.create(&pp, &pod_with("once", "Never", "import sys; sys.exit(3)", serde_json::json!({})))
            .await
            .expect("once");
        // Ignores SIGTERM: only the SIGKILL after the 2 s grace period stops it.
        let stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)";
        pods.create(&pp, &pod_with("stubborn", "Always", stubborn, serde_json::json!({"terminationGracePeriodSeconds": 2})))
            .await
            .expect("stubborn");

        let restarts = |p: &Pod| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).map(|c| c.restart_count)
        };
        wait_for("crashy restarted twice", Duration::from_secs(60), || async {
            let p = pods.get("crashy").await.ok()?;
            (restarts(&p)? >= 2).then_some(())
        })
        .await;
        let once = wait_for("once Failed", Duration::from_secs(30), || async {
            let p = pods.get("once").await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
        })
        .await;
        let term = once.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first())
            .and_then(|c| c.state.as_ref()).and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
        assert_eq!(term, Some(3));
        assert_eq!(restarts(&once), Some(0));

        wait_for("stubborn running", Duration::from_secs(30), || async {
            let p = pods.get("stubborn").await.ok()?;
            is_ready(&p).then_some(())
        })
        .await;
        let t0 = Instant::now();
        pods.delete("stubborn", &DeleteParams::default()).await.expect("delete stubborn");
        wait_for("stubborn gone", Duration::from_secs(30), || async {
            matches!(pods.get_opt("stubborn").await, Ok(None)).then_some(())
        })
        .await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(1900), "SIGTERM was not ignored? took {took:?}");
        assert!(took < Duration::from_secs(15), "grace period not enforced: {took:?}");
        env
    })
    .await;
}

/// An HTTPS server answering every GET with the JSON in `$BODY` (a stand-in for
/// an aggregated API server such as the operator's external metrics API).
const HTTPS_SERVER: &str = r#"
import http.server, os, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["BODY"].encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[tokio::test]
async fn aggregation_layer_proxies_an_apiservice_to_a_pod_behind_a_service() {
    with_env("apiservice", |env| async move {
        let group = "metrics.strata.test";
        let discovery = serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"),
            "resources": [{"name": "things", "singularName": "thing", "namespaced": true, "kind": "Thing", "verbs": ["get", "list"]}],
        });
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["local-metrics.default.svc".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
        secrets.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "local-metrics-tls"},
            "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()},
        })))
        .await
        .expect("secret");
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        pods.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "local-metrics", "labels": {"app": "local-metrics"}},
            "spec": {
                "containers": [{
                    "name": "api", "image": "python:3.11",
                    "command": ["python3", "-c", HTTPS_SERVER],
                    "env": [{"name": "BODY", "value": discovery.to_string()}],
                    "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                    "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                }],
                "volumes": [{"name": "tls", "secret": {"secretName": "local-metrics-tls"}}],
            },
        })))
        .await
        .expect("pod");
        let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
        svcs.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": "local-metrics"},
            "spec": {"selector": {"app": "local-metrics"}, "ports": [{"port": 443, "targetPort": 8443}]},
        })))
        .await
        .expect("service");
        // kube-controller-manager publishes the ready pod's address in an EndpointSlice
        // (it leaves loopback addresses out, hence the kubelet's network namespaces).
        let pod = wait_for("a Ready local-metrics pod", Duration::from_secs(60), || async {
            pods.get("local-metrics").await.ok().filter(is_ready)
        })
        .await;
        let ip = pod_ip(&pod).expect("pod IP");
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(env.client.clone(), "default");
        wait_for("the Service's EndpointSlice holds the pod", Duration::from_secs(60), || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=local-metrics"))
                .await
                .ok()?;
            list.items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .any(|e| e.addresses.contains(&ip))
                .then_some(())
        })
        .await;
        let apiservices: Api<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService> =
            Api::all(env.client.clone());
        apiservices.create(&PostParams::default(), &from_yaml(serde_json::json!({
            "metadata": {"name": format!("v1.{group}")},
            "spec": {
                "group": group, "version": "v1", "insecureSkipTLSVerify": true,
                "groupPriorityMinimum": 100, "versionPriority": 100,
                "service": {"namespace": "default", "name": "local-metrics", "port": 443},
            },
        })))
        .await
        .expect("apiservice");
        wait_for("APIService Available", Duration::from_secs(60), || async {
            let a = apiservices.get(&format!("v1.{group}")).await.ok()?;
            a.status?.conditions?.iter().any(|c| c.type_ == "Available" && c.status == "True").then_some(())
        })
        .await;
        let req = http::Request::get(format!("/apis/{group}/v1")).body(Vec::new()).expect("request");
        let text = env.client.request_text(req).await.expect("proxied discovery");
        assert!(text.contains("things"), "{text}");
        env
    })
    .await;
}
