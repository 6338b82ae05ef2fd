//! The kubelet's Node object and its heartbeat: the node is created Ready and
//! its Lease in `kube-node-lease` is renewed every [`HEARTBEAT`], so the
//! node-lifecycle controller never taints it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::binaries::K8S_VERSION;
use crate::Result;

pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Node status; `log_port` (first registration only) also sets the transition
/// times and the kubelet endpoint that `kubectl logs` goes through.
fn node_status(now: &str, log_port: Option<u16>) -> serde_json::Value {
    let cond = |t: &str, s: &str, reason: &str| {
        let mut c = json!({"type": t, "status": s, "reason": reason, "message": "strata-e2e process kubelet",
               "lastHeartbeatTime": now});
        if log_port.is_some() {
            c["lastTransitionTime"] = json!(now);
        }
        c
    };
    json!({
        "status": {
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("NetworkUnavailable", "False", "RouteCreated"),
            ],
            // No Hostname address: the API server would then dial "localhost", maybe ::1.
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"},
            "nodeInfo": {
                "kubeletVersion": format!("v{K8S_VERSION}"),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
                "containerRuntimeVersion": "process://strata-e2e",
                "osImage": "strata-e2e process kubelet",
                "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
        }
    })
    .as_object()
    .map(|o| {
        let mut v = serde_json::Value::Object(o.clone());
        if let Some(port) = log_port {
            v["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
        }
        v
    })
    .unwrap_or_default()
}

/// Creates (or takes over) the Node and sets it Ready; creates its Lease.
pub async fn register(client: &Client, name: &str, log_port: u16) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH, "type": "strata-e2e-process"}},
        "spec": {},
    }))
    .map_err(|e| crate::Error::Config(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let now = crate::kubelet::now_rfc3339();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(node_status(&now, Some(log_port))),
        )
        .await?;
    heartbeat(client, name).await
}

/// Renews the Lease and refreshes the Ready condition once.
pub async fn heartbeat(client: &Client, name: &str) -> Result<()> {
    let now = Timestamp::now();
    let now_str = crate::kubelet::now_rfc3339();
    let nodes: Api<Node> = Api::all(client.clone());
    // Strategic merge keys conditions by type, so transition times are kept.
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(node_status(&now_str, None)),
        )
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(now)},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("strata-e2e-kubelet").force(),
            &Patch::Apply(lease),
        )
        .await?;
    Ok(())
}
