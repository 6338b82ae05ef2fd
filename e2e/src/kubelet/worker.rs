//! One task per pod: prepares its directories and volumes, runs its containers
//! as processes, probes them, restarts them per `restartPolicy`, reports status,
//! and on deletion kills them (SIGTERM, SIGKILL after the grace period) before
//! removing the pod with grace period 0.
//!
//! Getting a pod ready to start is in `prepare`, starting one container process in
//! `spawn`, and the status it reports in `status`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::watch;

use super::plan::ContainerPlan;
use super::probe::{self, ProbeState};
use super::{now_rfc3339, Desired, Shared};
use prepare::PrepareError;

mod prepare;
mod spawn;
mod status;

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
    /// The pod's network namespace; None: a loopback address in the host's.
    sandbox: Option<Arc<super::podnet::Sandbox>>,
}

impl PodWorker {
    pub(super) fn new(
        shared: Arc<Shared>,
        updates: watch::Receiver<Desired>,
        pod: Pod,
        ip: Ipv4Addr,
        sandbox: Option<Arc<super::podnet::Sandbox>>,
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
            sandbox,
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
                    let ok =
                        probe::run(&r.plan, self.ip, &c.plan.env, |cmd| self.enter_pod(cmd)).await;
                    if r.record(ok, Instant::now()) {
                        tracing::info!(pod = %self.key(), container = %c.plan.name, ready = r.passing, "readiness changed");
                    }
                }
            }
            let mut kill = false;
            if let Some(l) = c.liveness.as_mut() {
                if l.due(now) {
                    let ok =
                        probe::run(&l.plan, self.ip, &c.plan.env, |cmd| self.enter_pod(cmd)).await;
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
        // A sandbox returns its address when it is dropped, with the worker.
        if self.sandbox.is_none() {
            self.shared.release_ip(self.ip);
        }
    }
}

fn nix_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}
