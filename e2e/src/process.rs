//! Child processes the harness owns (etcd, kube-apiserver, kube-controller-manager,
//! SeaweedFS): spawned in their own process group with output in a log file, and
//! stopped with SIGTERM then SIGKILL when their guard is dropped, also on panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::{Error, Result};

/// Puts the child in its own process group and asks the kernel to SIGKILL it
/// if the spawning thread dies, so a crashed test run leaves nothing behind.
pub fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Same as [`isolate`] for tokio commands.
pub fn isolate_tokio(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
    // SAFETY: as in `isolate`.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Opens (appending) a log file for a child's stdout and stderr.
pub fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening log {}", log.display()), e))
    };
    Ok((Stdio::from(open()?), Stdio::from(open()?)))
}

/// Last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::from("<no log>");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM to a process group, waits up to `grace`, then SIGKILLs it.
/// `exited` polls whether the group leader is gone.
pub fn terminate_group(pid: u32, grace: Duration, mut exited: impl FnMut() -> bool) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let pgid = Pid::from_raw(raw);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if exited() {
            // The leader is gone; make sure its helpers are too.
            let _ = killpg(pgid, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long-running component of the environment. Dropping it stops it.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl ManagedProcess {
    /// Spawns `program args` with stdout/stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        grace: Duration,
    ) -> Result<Self> {
        let (out, err) = log_stdio(log)?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        isolate(&mut cmd);
        tracing::info!(%name, program = %program.display(), log = %log.display(), "starting");
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {name} ({})", program.display()), e))?;
        Ok(ManagedProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with [`Error::ExitedEarly`] (including the log tail) if the process died.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::ExitedEarly {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(Error::io(format!("waiting for {}", self.name), e)),
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace period).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        tracing::info!(name = %self.name, "stopping");
        let pid = self.child.id();
        let child = &mut self.child;
        terminate_group(pid, self.grace, || {
            matches!(child.try_wait(), Ok(Some(_)) | Err(_))
        });
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
