//! The process kubelet: a kube-rs client that plays node and scheduler for one
//! Node. It binds every unscheduled pod to its node, runs each bound pod's
//! containers as local processes (see [`plan`] for the pod → process mapping
//! and [`worker`] for the lifecycle), and keeps the Node Ready with a Lease.
//!
//! Concurrency: one task per pod (keyed by UID) owns that pod's processes; the
//! watch loop only forwards the latest desired state to it over a `watch` channel.

pub mod dns;
pub mod ip;
mod logs;
pub mod node;
pub mod plan;
pub mod podnet;
pub mod probe;
mod volumes;
mod worker;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Pod, Service};
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use plan::ImageMap;

use crate::Result;

/// Configuration of the process kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Name of the Node it registers.
    pub node_name: String,
    /// image → program; see [`plan::resolve_image`].
    pub images: ImageMap,
    /// Holds `pods/` (volumes), `data/` (PVCs, kept across pod recreation) and `logs/`.
    pub root_dir: PathBuf,
    /// Host environment variables passed to every container (values from this process).
    pub inherit_env: Vec<String>,
    /// API server address and CA given to pods (in-cluster kubeconfig); None: pods get none.
    pub api: Option<plan::ApiAccess>,
    /// Host loopback ports pods reach at 127.0.0.1 from their own network
    /// namespaces (the API server's, S3's); see [`podnet`].
    pub host_ports: Vec<u16>,
}

impl KubeletConfig {
    pub fn new(root_dir: impl Into<PathBuf>, images: ImageMap) -> Self {
        KubeletConfig {
            node_name: "strata-e2e-node".into(),
            images,
            root_dir: root_dir.into(),
            inherit_env: [
                "PATH",
                "HOME",
                "LANG",
                "USER",
                "TMPDIR",
                "RUST_LOG",
                "RUST_BACKTRACE",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            api: None,
            host_ports: Vec::new(),
        }
    }
}

/// What the watch loop tells a pod worker.
#[derive(Debug, Clone)]
pub(crate) enum Desired {
    Run(Box<Pod>),
    /// The pod has a deletionTimestamp: stop gracefully, then delete it.
    Terminate(Box<Pod>),
    /// The pod object is gone: kill now.
    Gone,
    /// The kubelet is shutting down.
    Shutdown,
}

pub(crate) struct Shared {
    client: Client,
    /// Publishes the kubelet's Events (Started, Killing, Unhealthy, unsupported features).
    recorder: kube::runtime::events::Recorder,
    config: KubeletConfig,
    host_ip: Ipv4Addr,
    base_env: Vec<(String, String)>,
    ips: Mutex<ip::IpAllocator>,
    /// Pods and Services as cluster DNS sees them, and the hosts files kept from them.
    dns: Mutex<dns::Registry>,
    /// Whether containers get their own mount namespace with the kubelet's
    /// `/etc/hosts` (needs root; without it pods have the host's resolver only).
    pod_hosts: bool,
    /// Network namespaces for pods (needs root); None: pods get loopback addresses.
    net: Option<Arc<podnet::PodNetwork>>,
}

impl Shared {
    fn allocate_ip(&self) -> Option<Ipv4Addr> {
        self.ips.lock().ok()?.allocate()
    }

    fn release_ip(&self, ip: Ipv4Addr) {
        if let Ok(mut a) = self.ips.lock() {
            a.release(ip);
        }
    }

    fn with_dns<T>(&self, f: impl FnOnce(&mut dns::Registry) -> T) -> Option<T> {
        self.dns.lock().ok().map(|mut d| f(&mut d))
    }
}

struct WorkerHandle {
    tx: watch::Sender<Desired>,
    task: Option<JoinHandle<()>>,
}

impl Drop for WorkerHandle {
    // An aborted worker drops its processes, whose guards SIGKILL them.
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A running process kubelet. [`Kubelet::shutdown`] stops every pod process;
/// dropping it without shutdown aborts the tasks, whose process guards SIGKILL.
pub struct Kubelet {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    log_server: JoinHandle<()>,
    net: Option<Arc<podnet::PodNetwork>>,
    pub root_dir: PathBuf,
}

pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Kubelet {
    /// Registers the node and starts the heartbeat and pod loops.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Kubelet> {
        for d in ["pods", "data", "logs"] {
            let p = config.root_dir.join(d);
            std::fs::create_dir_all(&p)
                .map_err(|e| crate::Error::io(format!("creating {}", p.display()), e))?;
        }
        let (log_port, log_server) = logs::start(config.root_dir.join("logs")).await?;
        node::register(&client, &config.node_name, log_port).await?;
        let base_env = config
            .inherit_env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect();
        let reporter = kube::runtime::events::Reporter {
            controller: "strata-e2e-kubelet".into(),
            instance: Some(config.node_name.clone()),
        };
        let root = nix::unistd::geteuid().is_root();
        let net = if root {
            match podnet::PodNetwork::create(config.host_ports.iter().copied()) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the pod network: pods get loopback addresses, which Kubernetes leaves out of EndpointSlices");
                    None
                }
            }
        } else {
            tracing::warn!("not running as root: pods get loopback addresses, which Kubernetes leaves out of EndpointSlices");
            None
        };
        let shared = Arc::new(Shared {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client: client.clone(),
            config: config.clone(),
            host_ip: Ipv4Addr::LOCALHOST,
            base_env,
            ips: Mutex::new(ip::IpAllocator::default()),
            dns: Mutex::new(dns::Registry::default()),
            pod_hosts: root,
            net: net.clone(),
        });
        if !shared.pod_hosts {
            tracing::warn!("not running as root: pods get no mount namespace, so no kubelet-managed /etc/hosts (cluster DNS names will not resolve)");
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(shared, stop_rx));
        tracing::info!(node = %config.node_name, root = %config.root_dir.display(), "process kubelet started");
        Ok(Kubelet {
            stop,
            task: Some(task),
            log_server,
            net,
            root_dir: config.root_dir,
        })
    }

    /// Makes the host's 127.0.0.1:`port` reachable at 127.0.0.1:`port` from pods
    /// (a no-op when pods share the host's network namespace).
    pub fn expose_host_port(&self, port: u16) -> Result<()> {
        match &self.net {
            Some(n) => n.expose_host_port(port).map_err(|e| {
                crate::Error::Network(format!("exposing host port {port} to pods: {e}"))
            }),
            None => Ok(()),
        }
    }

    /// Stops all pods (SIGTERM, then SIGKILL after 5 s) and the loops.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.log_server.abort();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let hb_client = shared.client.clone();
    let node_name = shared.config.node_name.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(node::HEARTBEAT);
        loop {
            tick.tick().await;
            if let Err(e) = node::heartbeat(&hb_client, &node_name).await {
                tracing::warn!(error = %e, "node heartbeat failed");
            }
        }
    });
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default()).boxed();
    let services: Api<Service> = Api::all(shared.client.clone());
    let mut service_events = watcher::watcher(services, watcher::Config::default()).boxed();
    let mut seen_in_init: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = service_events.next() => {
                let Some(ev) = ev else { break };
                let changed = match ev {
                    Ok(Event::Apply(svc)) | Ok(Event::InitApply(svc)) => shared
                        .with_dns(|d| d.set_service(dns::ServiceRecord::from_service(&svc), false)),
                    Ok(Event::Delete(svc)) => shared
                        .with_dns(|d| d.set_service(dns::ServiceRecord::from_service(&svc), true)),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "service watch error; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        None
                    }
                };
                if changed == Some(true) {
                    shared.with_dns(|d| d.refresh());
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Apply(pod)) => {
                        track_dns(&shared, &pod, false);
                        handle(&shared, &mut workers, pod).await
                    }
                    Ok(Event::InitApply(pod)) => {
                        seen_in_init.push(pod.uid().unwrap_or_default());
                        track_dns(&shared, &pod, false);
                        handle(&shared, &mut workers, pod).await;
                    }
                    Ok(Event::Delete(pod)) => {
                        track_dns(&shared, &pod, true);
                        if let Some(w) = workers.remove(&pod.uid().unwrap_or_default()) {
                            let _ = w.tx.send(Desired::Gone);
                        }
                    }
                    Ok(Event::Init) => seen_in_init.clear(),
                    Ok(Event::InitDone) => {
                        // Pods that vanished while the watch was down.
                        shared.with_dns(|d| {
                            d.retain_pods(&seen_in_init);
                            d.refresh();
                        });
                        let gone: Vec<String> = workers.keys().filter(|k| !seen_in_init.contains(k)).cloned().collect();
                        for uid in gone {
                            if let Some(w) = workers.remove(&uid) {
                                let _ = w.tx.send(Desired::Gone);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                workers.retain(|_, w| w.task.as_ref().is_some_and(|t| !t.is_finished()));
            }
        }
    }
    heartbeat.abort();
    for w in workers.values() {
        let _ = w.tx.send(Desired::Shutdown);
    }
    for (_, mut w) in workers.drain() {
        if let Some(t) = w.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }
}

/// Keeps the DNS view of a pod current; terminating pods leave DNS at once.
fn track_dns(shared: &Shared, pod: &Pod, deleted: bool) {
    let uid = pod.uid().unwrap_or_default();
    let record = (!deleted && pod.metadata.deletion_timestamp.is_none())
        .then(|| dns::PodRecord::from_pod(pod));
    if shared.with_dns(|d| d.set_pod(&uid, record)) == Some(true) {
        shared.with_dns(|d| d.refresh());
    }
}

async fn handle(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>, pod: Pod) {
    let uid = pod.uid().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    match node {
        None => {
            if pod.metadata.deletion_timestamp.is_none() {
                bind(shared, &pod).await;
            }
        }
        Some(n) if n == shared.config.node_name => {
            if let Some(w) = workers.get(&uid) {
                let desired = if pod.metadata.deletion_timestamp.is_some() {
                    Desired::Terminate(Box::new(pod))
                } else {
                    Desired::Run(Box::new(pod))
                };
                let _ = w.tx.send(desired);
            } else if pod.metadata.deletion_timestamp.is_some() || terminal {
                if pod.metadata.deletion_timestamp.is_some() {
                    // Not ours to run (or already finished): just remove it.
                    let api: Api<Pod> = Api::namespaced(
                        shared.client.clone(),
                        &pod.namespace().unwrap_or_default(),
                    );
                    let dp = kube::api::DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    let _ = api.delete(&pod.name_any(), &dp).await;
                }
            } else {
                let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
                let (ip, sandbox) = match &shared.net {
                    Some(net) if !host_network => match net.attach().await {
                        Ok(sb) => (sb.ip, Some(sb)),
                        Err(e) => {
                            // Retried at the pod's next watch event.
                            tracing::error!(pod = %pod.name_any(), error = %e, "cannot set up the pod's network");
                            return;
                        }
                    },
                    _ => {
                        let Some(ip) = shared.allocate_ip() else {
                            tracing::error!(pod = %pod.name_any(), "no loopback address left");
                            return;
                        };
                        (ip, None)
                    }
                };
                let (tx, rx) = watch::channel(Desired::Run(Box::new(pod.clone())));
                let w = worker::PodWorker::new(shared.clone(), rx, pod, ip, sandbox);
                let task = tokio::spawn(w.run());
                workers.insert(
                    uid,
                    WorkerHandle {
                        tx,
                        task: Some(task),
                    },
                );
            }
        }
        Some(_) => {}
    }
}

/// Plays scheduler: binds the pod to this node through `pods/binding`.
async fn bind(shared: &Arc<Shared>, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let binding: Binding = match serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": shared.config.node_name},
    })) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "building Binding");
            return;
        }
    };
    let res: kube::Result<serde_json::Value> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match res {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), node = %shared.config.node_name, "bound")
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
    }
}
