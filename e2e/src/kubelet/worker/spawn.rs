//! Starting one container as a local process: a banner in its log file, only the
//! planned environment, its own process group (so a kill reaches its children), and,
//! when the host allows it, the pod's network namespace and a mount namespace of its
//! own with the pod's `/etc/hosts`.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use nix::unistd::Pid;

use super::{PodWorker, Proc};
use crate::kubelet::now_rfc3339;
use crate::kubelet::plan::ContainerPlan;
use crate::process::{isolate_tokio, log_stdio};

impl PodWorker {
    pub(super) fn spawn(
        &self,
        plan: &ContainerPlan,
        log: &Path,
        restarts: i32,
    ) -> Result<Proc, String> {
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
        self.enter_pod(&mut cmd)?;
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
}

impl PodWorker {
    /// Makes `cmd` run inside the pod: in its network namespace (when it has
    /// one) and in a mount namespace of its own with the pod's `/etc/hosts`
    /// (when the kubelet manages one). Exec probes run the same way.
    pub(super) fn enter_pod(&self, cmd: &mut tokio::process::Command) -> Result<(), String> {
        if let Some(sb) = &self.sandbox {
            enter_netns(cmd, &sb.path())?;
        }
        if let Some(hosts) = &self.hosts {
            with_hosts_file(cmd, hosts)?;
        }
        Ok(())
    }
}

/// Runs the process in the network namespace at `path` (`/run/netns/<name>`).
fn enter_netns(cmd: &mut tokio::process::Command, path: &Path) -> Result<(), String> {
    // Opened before the fork (close-on-exec, so the program never sees it).
    let ns = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: between fork and exec only the setns syscall runs on an fd opened before.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    Ok(())
}

/// Runs the process in a mount namespace of its own with `hosts` bind-mounted
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
