//! The pod status the worker reports: phase, conditions and container statuses
//! (state, last state, restarts, readiness), merge-patched only when it changed, with
//! the transition times of unchanged conditions kept.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Container, PodWorker, State};
use crate::kubelet::now_rfc3339;

impl PodWorker {
    pub(super) fn conditions(&self, initialized: bool, ready: bool) -> serde_json::Value {
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

    pub(super) fn status(
        &self,
        containers: &[Container],
        restart_policy: &str,
    ) -> serde_json::Value {
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
    pub(super) async fn patch_status(&mut self, mut status: serde_json::Value) {
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
