//! One task per pod: prepares its directories and volumes, runs its containers
//! as processes, probes them, restarts them per `restartPolicy`, reports status,
//! and on deletion kills them (SIGTERM, SIGKILL after the grace period) before
//! removing the pod with grace period 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Api;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::watch;

use super::plan::{self, ContainerPlan, Data, PlanError, PlanInputs, PodPlan};
use super::probe::{self, ProbeState};
use super::{now_rfc3339, Desired, Shared};
use crate::process::{isolate_tokio, log_stdio};

/// How often the worker checks processes, probes and updates.
const TICK: Duration = Duration::from_millis(200);
/// Restart back-off: doubles from 1 s up to this cap (the real kubelet: 10 s to 5 min).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A running container process. Dropping it SIGKILLs its process group.
struct Proc {
    child: tokio::process::Child,
    pgid: Option<Pid>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pg) = self.pgid {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

struct Container {
    plan: ContainerPlan,
    proc_: Option<Proc>,
    state: State,
    last_state: Option<State>,
    restarts: i32,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    restart_at: Option<Instant>,
    backoff: Duration,
    log: PathBuf,
    done: bool,
}

impl Container {
    fn ready(&self) -> bool {
        matches!(self.state, State::Running { .. })
            && self.readiness.as_ref().is_none_or(|r| r.passing)
    }
}

pub(super) struct PodWorker {
    shared: Arc<Shared>,
    updates: watch::Receiver<Desired>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    pod_dir: PathBuf,
    log_dir: PathBuf,
    start_time: String,
    /// Last status sent, to avoid redundant patches.
    last_status: Option<serde_json::Value>,
    /// The kubelet-managed `/etc/hosts` bind-mounted into the containers.
    hosts: Option<PathBuf>,
}

impl PodWorker {
    pub(super) fn new(
        shared: Arc<Shared>,
        updates: watch::Receiver<Desired>,
        pod: Pod,
        ip: Ipv4Addr,
    ) -> Self {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir_name = format!("{ns}_{name}_{uid}");
        let pod_dir = shared.config.root_dir.join("pods").join(&dir_name);
        let log_dir = shared.config.root_dir.join("logs").join(&dir_name);
        PodWorker {
            shared,
            updates,
            pod,
            ns,
            name,
            uid,
            ip,
            pod_dir,
            log_dir,
            start_time: now_rfc3339(),
            last_status: None,
            hosts: None,
        }
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), &self.ns)
    }

    /// The pod's fate as last reported by the main loop.
    fn desired(&mut self) -> Desired {
        let d = self.updates.borrow_and_update().clone();
        if let Desired::Run(p) | Desired::Terminate(p) = &d {
            // Terminate carries deletionGracePeriodSeconds (e.g. `--grace-period=1`).
            self.pod = p.as_ref().clone();
        }
        d
    }

    pub(super) async fn run(mut self) {
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), ip = %self.ip, "starting pod");
        let mut last_wait = String::new();
        let plan = loop {
            match self.desired() {
                Desired::Run(_) => {}
                other => return self.finish(other, Vec::new()).await,
            }
            match self.prepare().await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "pod cannot start yet");
                    let (reason, msg) = match &e {
                        PrepareError::Plan(p) => (p.reason().to_string(), p.to_string()),
                        PrepareError::Other(m) => ("CreateContainerError".to_string(), m.clone()),
                    };
                    if msg != last_wait {
                        self.event(true, &reason, msg.clone()).await;
                        last_wait = msg.clone();
                    }
                    let waiting: Vec<_> = self.spec_containers().into_iter().map(|(n, img)| {
                        json!({"name": n, "image": img, "imageID": "", "ready": false, "restartCount": 0, "started": false,
                               "state": {"waiting": {"reason": reason, "message": msg}}})
                    }).collect();
                    self.patch_status(json!({"phase": "Pending", "conditions": self.conditions(false, false),
                        "hostIP": self.shared.host_ip.to_string(), "containerStatuses": waiting, "startTime": self.start_time})).await;
                    self.sleep_or_update(Duration::from_secs(2)).await;
                }
            }
        };
        self.hosts = self.prepare_hosts_file();
        if !plan.ignored.is_empty() {
            tracing::warn!(pod = %self.key(), ignored = ?plan.ignored, "pod uses features the process kubelet does not implement; ignoring them");
            let note = format!("the process kubelet ignores: {}", plan.ignored.join("; "));
            self.event(true, "UnsupportedFeaturesIgnored", note).await;
        }
        let mut containers: Vec<Container> = plan
            .containers
            .iter()
            .map(|c| Container {
                log: self.log_dir.join(format!("{}.log", c.name)),
                plan: c.clone(),
                proc_: None,
                state: State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
                last_state: None,
                restarts: 0,
                readiness: None,
                liveness: None,
                restart_at: Some(Instant::now()),
                backoff: Duration::from_secs(1),
                done: false,
            })
            .collect();
        let restart_policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());

        loop {
            match self.desired() {
                Desired::Run(_) => {}
                other => return self.finish(other, containers).await,
            }
            let now = Instant::now();
            for c in containers.iter_mut() {
                self.step_container(c, now, &restart_policy).await;
            }
            let status = self.status(&containers, &restart_policy);
            self.patch_status(status).await;
            self.sleep_or_update(TICK).await;
        }
    }

    /// Publishes an Event about this pod; failures are only logged.
    async fn event(&self, warning: bool, reason: &str, mut note: String) {
        use kube::runtime::events::{Event, EventType};
        use kube::Resource;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self
            .shared
            .recorder
            .publish(&ev, &self.pod.object_ref(&()))
            .await
        {
            tracing::debug!(pod = %self.key(), error = %e, "publishing event failed");
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn spec_containers(&self) -> Vec<(String, String)> {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect()
    }

    async fn sleep_or_update(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.updates.changed()).await;
    }

    /// Starts, checks, probes and restarts one container.
    async fn step_container(&self, c: &mut Container, now: Instant, restart_policy: &str) {
        // Exit check.
        if let Some(p) = c.proc_.as_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                let code = status.code().unwrap_or(128 + nix_signal(&status));
                tracing::info!(pod = %self.key(), container = %c.plan.name, code, "container exited");
                let started_at = match &c.state {
                    State::Running { started_at } => started_at.clone(),
                    _ => now_rfc3339(),
                };
                c.state = State::Terminated {
                    exit_code: code,
                    reason: if code == 0 {
                        "Completed".into()
                    } else {
                        "Error".into()
                    },
                    started_at,
                    finished_at: now_rfc3339(),
                };
                c.proc_ = None;
                c.readiness = None;
                c.liveness = None;
                let restart = match restart_policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if restart {
                    c.restart_at = Some(now + c.backoff);
                    c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                } else {
                    c.done = true;
                }
            }
        }
        // (Re)start.
        if c.proc_.is_none() && !c.done {
            if let Some(at) = c.restart_at {
                if now >= at {
                    c.restart_at = None;
                    let first = matches!(c.state, State::Waiting { .. });
                    match self.spawn(&c.plan, &c.log, c.restarts) {
                        Ok(p) => {
                            let pid = p.child.id().unwrap_or(0);
                            let note =
                                format!("Started container {} as process {pid}", c.plan.name);
                            self.event(false, "Started", note).await;
                            if !first {
                                c.restarts += 1;
                                c.last_state = Some(c.state.clone());
                            }
                            c.proc_ = Some(p);
                            c.state = State::Running {
                                started_at: now_rfc3339(),
                            };
                            c.readiness = c
                                .plan
                                .readiness
                                .clone()
                                .map(|p| ProbeState::new(p, now, false));
                            c.liveness = c
                                .plan
                                .liveness
                                .clone()
                                .map(|p| ProbeState::new(p, now, true));
                        }
                        Err(e) => {
                            tracing::warn!(pod = %self.key(), container = %c.plan.name, error = %e, "cannot start container");
                            c.state = State::Waiting {
                                reason: "RunContainerError".into(),
                                message: e,
                            };
                            c.restart_at = Some(now + c.backoff);
                            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
        }
        // Probes.
        if c.proc_.is_some() {
            if let Some(r) = c.readiness.as_mut() {
                if r.due(now) {
                    let ok = probe::run(&r.plan, self.ip, &c.plan.env).await;
                    if r.record(ok, Instant::now()) {
                        tracing::info!(pod = %self.key(), container = %c.plan.name, ready = r.passing, "readiness changed");
                    }
                }
            }
            let mut kill = false;
            if let Some(l) = c.liveness.as_mut() {
                if l.due(now) {
                    let ok = probe::run(&l.plan, self.ip, &c.plan.env).await;
                    if l.record(ok, Instant::now()) && !l.passing {
                        tracing::warn!(pod = %self.key(), container = %c.plan.name, "liveness probe failed; restarting");
                        let note = format!(
                            "Liveness probe failed; container {} will be restarted",
                            c.plan.name
                        );
                        self.event(true, "Unhealthy", note).await;
                        kill = true;
                    }
                }
            }
            if kill {
                // Dropping the process kills its group; the exit is seen on the next tick.
                if let Some(p) = c.proc_.as_mut() {
                    if let Some(pg) = p.pgid {
                        let _ = killpg(pg, Signal::SIGKILL);
                    }
                }
            }
        }
    }

    fn spawn(&self, plan: &ContainerPlan, log: &Path, restarts: i32) -> Result<Proc, String> {
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| format!("creating {}: {e}", self.log_dir.display()))?;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(
                f,
                "=== strata-e2e: starting {} {:?} (restart {restarts}) at {} ===",
                plan.program.display(),
                plan.args,
                now_rfc3339()
            );
        }
        let (out, err) = log_stdio(log).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&plan.program);
        cmd.args(&plan.args)
            .env_clear()
            .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&plan.cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        isolate_tokio(&mut cmd);
        if let Some(hosts) = &self.hosts {
            with_hosts_file(&mut cmd, hosts)?;
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", plan.program.display()))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        tracing::info!(pod = %self.key(), container = %plan.name, pid = ?child.id(), "container started");
        Ok(Proc { child, pgid })
    }

    /// Writes the pod's `/etc/hosts` (see [`super::dns`]) and registers it for
    /// updates; None when containers cannot get a mount namespace.
    fn prepare_hosts_file(&self) -> Option<PathBuf> {
        if !self.shared.pod_hosts {
            return None;
        }
        let path = self.pod_dir.join("etc-hosts");
        let own = super::dns::PodRecord::from_pod(&self.pod);
        match self
            .shared
            .with_dns(|d| d.register(&self.uid, path.clone(), own, self.ip))
        {
            Some(Ok(())) => Some(path),
            Some(Err(e)) => {
                tracing::warn!(pod = %self.key(), error = %e, "cannot write the pod's hosts file; it gets the host's");
                None
            }
            None => None,
        }
    }

    /// Fetches referenced objects, plans the pod and materialises its volumes.
    async fn prepare(&self) -> Result<PodPlan, PrepareError> {
        let (cm_names, secret_names) = plan::referenced_objects(&self.pod);
        let mut config_maps = BTreeMap::new();
        let cms: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &self.ns);
        for n in cm_names {
            if let Some(cm) = cms.get_opt(&n).await.map_err(other)? {
                let mut d: Data = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                d.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                config_maps.insert(n, d);
            }
        }
        let mut secrets = BTreeMap::new();
        let sapi: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.ns);
        for n in secret_names {
            if let Some(s) = sapi.get_opt(&n).await.map_err(other)? {
                let d: Data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                secrets.insert(n, d);
            }
        }
        let token = match plan::token_request(&self.pod) {
            Some((aud, exp)) => self.issue_token(aud, exp).await,
            None => None,
        };
        let inputs = PlanInputs {
            pod_ip: self.ip,
            host_ip: self.shared.host_ip,
            node_name: &self.shared.config.node_name,
            images: &self.shared.config.images,
            config_maps: &config_maps,
            secrets: &secrets,
            sa_token: token.as_deref(),
            pod_dir: &self.pod_dir,
            data_root: &self.shared.config.root_dir.join("data"),
            base_env: &self.shared.base_env,
            api: self.shared.config.api.as_ref(),
        };
        let plan = plan::plan(&self.pod, &inputs).map_err(PrepareError::Plan)?;
        for v in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            if let Some(pvc) = &v.persistent_volume_claim {
                let dir = inputs.data_root.join(&self.ns).join(&pvc.claim_name);
                self.ensure_pv(&pvc.claim_name, &dir).await?;
            }
        }
        for v in &plan.volumes {
            std::fs::create_dir_all(&v.host_dir).map_err(|e| {
                PrepareError::Other(format!("creating {}: {e}", v.host_dir.display()))
            })?;
            for (rel, bytes) in &v.files {
                let path = v.host_dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        PrepareError::Other(format!("creating {}: {e}", parent.display()))
                    })?;
                }
                std::fs::write(&path, bytes)
                    .map_err(|e| PrepareError::Other(format!("writing {}: {e}", path.display())))?;
            }
        }
        Ok(plan)
    }

    /// Gives the claim a pre-bound, Retain-policy hostPath PV at its data dir, so
    /// the controller-manager's binder marks the PVC Bound. A missing PVC blocks
    /// the pod (like the kubelet); a failure to create the PV is only logged.
    async fn ensure_pv(&self, claim: &str, dir: &Path) -> Result<(), PrepareError> {
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.shared.client.clone(), &self.ns);
        let Some(pvc) = pvcs.get_opt(claim).await.map_err(other)? else {
            return Err(PrepareError::Other(format!(
                "persistentvolumeclaim {claim:?} not found"
            )));
        };
        let spec = pvc.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty()) {
            return Ok(());
        }
        let mut name = format!("strata-e2e-{}-{claim}", self.ns);
        name.truncate(253);
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"strata-e2e/local": "true"}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": self.ns, "name": claim, "uid": pvc.metadata.uid},
            }
        }))
        .map_err(|e| PrepareError::Other(format!("building PV: {e}")))?;
        let pvs: Api<PersistentVolume> = Api::all(self.shared.client.clone());
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(pod = %self.key(), claim, pv = %name, "created pre-bound PV"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.key(), claim, error = %e, "could not create a PV; the PVC stays Pending")
            }
        }
        Ok(())
    }

    async fn issue_token(
        &self,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Option<String> {
        let sa_name = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &self.ns);
        let req: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": expiration.unwrap_or(3607).max(600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            }
        })).ok()?;
        match api
            .create_token_request(&sa_name, &PostParams::default(), &req)
            .await
        {
            Ok(tr) => tr.status.map(|s| s.token),
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "TokenRequest failed; the token volume will lack a token");
                None
            }
        }
    }

    fn conditions(&self, initialized: bool, ready: bool) -> serde_json::Value {
        let now = now_rfc3339();
        let c = |t: &str, ok: bool| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastTransitionTime": now, "lastProbeTime": null});
        json!([
            c("PodReadyToStartContainers", initialized),
            c("Initialized", true),
            c("ContainersReady", ready),
            c("Ready", ready),
            c("PodScheduled", true),
        ])
    }

    fn status(&self, containers: &[Container], restart_policy: &str) -> serde_json::Value {
        let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready());
        let all_done = containers.iter().all(|c| c.done);
        let phase = if all_done {
            let failed = containers
                .iter()
                .any(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0));
            if failed && restart_policy != "Always" {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if containers
            .iter()
            .any(|c| c.restarts > 0 || !matches!(c.state, State::Waiting { .. }))
        {
            "Running"
        } else {
            "Pending"
        };
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| {
                let mut s = json!({
                    "name": c.plan.name, "image": c.plan.image,
                    "imageID": format!("process://{}", c.plan.program.display()),
                    "containerID": format!("process://{}/{}", self.uid, c.plan.name),
                    "ready": c.ready(), "started": matches!(c.state, State::Running { .. }),
                    "restartCount": c.restarts, "state": state_json(&c.state),
                });
                if let Some(ls) = &c.last_state {
                    s["lastState"] = state_json(ls);
                }
                s
            })
            .collect();
        let ip = self.ip.to_string();
        json!({
            "phase": phase,
            "conditions": self.conditions(true, all_ready && !all_done),
            "hostIP": self.shared.host_ip.to_string(), "hostIPs": [{"ip": self.shared.host_ip.to_string()}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        })
    }

    /// Sends the status when it differs (ignoring timestamps) from the last one sent.
    async fn patch_status(&mut self, mut status: serde_json::Value) {
        let fingerprint = strip_times(status.clone());
        if self.last_status.as_ref() == Some(&fingerprint) {
            return;
        }
        if let Some(conds) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            // Keep transition times stable for conditions that did not change.
            let old = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for c in conds.iter_mut() {
                let (Some(t), Some(s)) = (c["type"].as_str(), c["status"].as_str()) else {
                    continue;
                };
                if let Some(o) = old.iter().find(|o| o.type_ == t && o.status == s) {
                    if let Some(ts) = &o.last_transition_time {
                        c["lastTransitionTime"] = json!(ts);
                    }
                }
            }
        }
        match self
            .api()
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(p) => {
                self.pod.status = p.status;
                self.last_status = Some(fingerprint);
            }
            Err(e) => {
                tracing::debug!(pod = %self.key(), error = %e, "status patch failed; will retry")
            }
        }
    }

    /// Stops every process, then removes the pod (grace period 0) unless it is gone.
    async fn finish(self, why: Desired, mut containers: Vec<Container>) {
        let grace = match &why {
            Desired::Terminate(_) => self
                .pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30),
            Desired::Shutdown => 5,
            _ => 0,
        };
        let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        tracing::info!(pod = %self.key(), ?grace, "stopping pod");
        if let Desired::Terminate(_) = why {
            self.event(
                false,
                "Killing",
                format!("Stopping all containers (SIGTERM, SIGKILL after {grace:?})"),
            )
            .await;
        }
        for c in containers.iter() {
            if let Some(pg) = c.proc_.as_ref().and_then(|p| p.pgid) {
                let _ = killpg(pg, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let running = containers
                .iter_mut()
                .filter_map(|c| c.proc_.as_mut())
                .any(|p| matches!(p.child.try_wait(), Ok(None)));
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Dropping the processes SIGKILLs their groups.
        for c in containers.iter_mut() {
            if let Some(mut p) = c.proc_.take() {
                if let Some(pg) = p.pgid {
                    let _ = killpg(pg, Signal::SIGKILL);
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
            }
        }
        if let Desired::Terminate(_) = why {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.api().delete(&self.name, &dp).await {
                Ok(_) => tracing::info!(pod = %self.key(), "pod removed"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.key(), error = %e, "final pod delete failed"),
            }
        }
        self.shared.with_dns(|d| d.unregister(&self.uid));
        self.shared.release_ip(self.ip);
    }
}

/// Runs the container in a mount namespace of its own with `hosts` bind-mounted
/// on `/etc/hosts`, as the kubelet does for a pod's containers.
fn with_hosts_file(cmd: &mut tokio::process::Command, hosts: &Path) -> Result<(), String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let source = CString::new(hosts.as_os_str().as_bytes())
        .map_err(|_| format!("hosts file path {} has a NUL byte", hosts.display()))?;
    // SAFETY: between fork and exec only syscalls run (unshare, mount); the paths
    // were allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::mount::{mount, MsFlags};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            // Keep our bind mount from propagating back to the host's namespace.
            mount(
                None::<&std::ffi::CStr>,
                c"/",
                None::<&std::ffi::CStr>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&std::ffi::CStr>,
            )?;
            mount(
                Some(source.as_c_str()),
                c"/etc/hosts",
                None::<&std::ffi::CStr>,
                MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
            )?;
            Ok(())
        });
    }
    Ok(())
}

fn nix_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

fn state_json(s: &State) -> serde_json::Value {
    match s {
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at}}),
    }
}

fn strip_times(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}

#[derive(Debug)]
enum PrepareError {
    Plan(PlanError),
    Other(String),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Plan(e) => write!(f, "{e}"),
            PrepareError::Other(m) => f.write_str(m),
        }
    }
}

fn other(e: kube::Error) -> PrepareError {
    PrepareError::Other(e.to_string())
}
