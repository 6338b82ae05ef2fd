//! Running readiness and liveness probes against a pod's address (exec probes
//! run inside the pod, see the worker's `enter_pod`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Instant;

use super::plan::{ProbeAction, ProbePlan};
use crate::net;

/// Runs one probe; true on success. HTTP succeeds on 200..400 like the kubelet.
/// `enter` makes an exec probe's command run inside the pod.
pub async fn run(
    p: &ProbePlan,
    ip: Ipv4Addr,
    env: &[(String, String)],
    enter: impl FnOnce(&mut tokio::process::Command) -> Result<(), String>,
) -> bool {
    match &p.action {
        ProbeAction::Http { port, path } => {
            let addr = SocketAddr::new(IpAddr::V4(ip), *port);
            matches!(net::http_get_status(addr, path, p.timeout).await, Some(s) if (200..400).contains(&s))
        }
        ProbeAction::Tcp { port } => {
            net::tcp_open(SocketAddr::new(IpAddr::V4(ip), *port), p.timeout).await
        }
        ProbeAction::Exec { argv } => {
            let Some((prog, args)) = argv.split_first() else {
                return false;
            };
            let mut cmd = tokio::process::Command::new(prog);
            cmd.args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            if enter(&mut cmd).is_err() {
                return false;
            }
            let Ok(mut child) = cmd.spawn() else {
                return false;
            };
            matches!(tokio::time::timeout(p.timeout, child.wait()).await, Ok(Ok(s)) if s.success())
        }
    }
}

/// Consecutive-result bookkeeping for one probe.
#[derive(Debug)]
pub struct ProbeState {
    pub plan: ProbePlan,
    pub next_at: Instant,
    successes: u32,
    failures: u32,
    /// Current verdict after thresholds.
    pub passing: bool,
}

impl ProbeState {
    pub fn new(plan: ProbePlan, started: Instant, initially_passing: bool) -> Self {
        let next_at = started + plan.initial_delay;
        ProbeState {
            plan,
            next_at,
            successes: 0,
            failures: 0,
            passing: initially_passing,
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Records a result; returns true when the verdict changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> bool {
        self.next_at = now + self.plan.period;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if !self.passing && self.successes >= self.plan.success_threshold {
                self.passing = true;
                return true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.passing && self.failures >= self.plan.failure_threshold {
                self.passing = false;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan(success: u32, failure: u32) -> ProbePlan {
        ProbePlan {
            action: ProbeAction::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn verdict_flips_only_after_thresholds() {
        let now = Instant::now();
        let mut s = ProbeState::new(plan(2, 3), now, false);
        assert!(!s.record(true, now));
        assert!(s.record(true, now));
        assert!(s.passing);
        assert!(!s.record(false, now));
        assert!(!s.record(false, now));
        assert!(s.record(false, now));
        assert!(!s.passing);
    }
}
