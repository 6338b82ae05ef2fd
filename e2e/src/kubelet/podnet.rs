//! Pod networking as a CNI plugin would set it up, so pod addresses are ones
//! Kubernetes accepts in EndpointSlices (it refuses loopback addresses):
//!
//! - one Linux bridge per kubelet, `strbr<B>`, holding 10.B.0.1/16 on the host
//!   side (B is drawn per kubelet, clear of every route the host has);
//! - one network namespace per pod, `strata-<B>-<n>` (n counts the kubelet's
//!   pods), with `lo` up and an `eth0` (a veth whose host end `s<B>-<n>` is a
//!   port of the bridge) holding the pod's 10.B.x.y/16, default route via the
//!   bridge address. Addresses are handed out round-robin, so a recreated pod
//!   does not inherit the address of the one it replaces while ARP caches and
//!   connections still name it.
//!
//! Pods reach each other over the bridge and the host (the API server's
//! aggregation layer, the tests, probes) reaches them through the bridge's
//! connected route; nothing is forwarded or NATed, and no host sysctl changes.
//!
//! The host's own services (API server, S3, a test's trace collector) listen on
//! host loopback addresses, which a pod namespace cannot see. For each of a
//! set of host ports the kubelet listens on 127.0.0.1:<port> *inside* each pod
//! namespace (a socket bound by a thread that entered the namespace) and
//! forwards connections to 127.0.0.1:<port> on the host, so the addresses the
//! host uses (`https://127.0.0.1:<api port>`, `$AWS_ENDPOINT_URL`) work
//! unchanged in pods. [`PodNetwork::expose_host_port`] adds ports later, also to
//! running pods.
//!
//! Everything is created with `ip` (iproute2) and removed when the pod stops or
//! the kubelet is dropped; a pid file per bridge under `/run/strata-e2e` lets the
//! next kubelet remove what a killed one left behind.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::task::JoinHandle;

use super::ip::IpAllocator;

const STATE_DIR: &str = "/run/strata-e2e";
const NETNS_DIR: &str = "/run/netns";

/// The kubelet's bridge and address block.
pub struct PodNetwork {
    block: u8,
    /// Numbers the sandboxes (their names must not repeat: a deleted namespace
    /// lingers in the kernel while sockets in it are still closing).
    seq: std::sync::atomic::AtomicU32,
    bridge: String,
    ips: Mutex<IpAllocator>,
    ports: Mutex<BTreeSet<u16>>,
    sandboxes: Mutex<Vec<Weak<Sandbox>>>,
    pid_file: PathBuf,
}

/// One pod's network namespace. Dropping it stops its forwarders and deletes
/// the namespace (which removes the veth pair).
pub struct Sandbox {
    pub ip: Ipv4Addr,
    name: String,
    veth: String,
    forwards: Mutex<HashMap<u16, JoinHandle<()>>>,
    network: Weak<PodNetwork>,
}

impl Sandbox {
    /// `/run/netns/<name>`, the file `setns` takes.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(mut f) = self.forwards.lock() {
            for (_, t) in f.drain() {
                t.abort();
            }
        }
        // The veth first: deleting it takes both ends down at once, while the
        // namespace itself may linger until its last socket is closed.
        let _ = ip_sync(&["link", "del", &self.veth]);
        if let Err(e) = ip_sync(&["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "removing pod network namespace");
        }
        if let Some(n) = self.network.upgrade() {
            if let Ok(mut a) = n.ips.lock() {
                a.release(self.ip);
            }
        }
    }
}

impl PodNetwork {
    /// Creates the bridge in a block clear of the host's routes; first removes
    /// what kubelets that are no longer running left behind.
    pub fn create(host_ports: impl IntoIterator<Item = u16>) -> Result<Arc<PodNetwork>, String> {
        std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("creating {STATE_DIR}: {e}"))?;
        remove_stale();
        let routes = ip_sync(&["-4", "route", "show", "table", "all"])?;
        let links = ip_sync(&["-br", "link"])?;
        let taken = |b: u8| {
            let net = (Ipv4Addr::new(10, b, 0, 0), 16);
            links.contains(&format!("strbr{b} "))
                || route_networks(&routes).any(|r| overlaps(r, net))
        };
        let start = super::ip::random_block();
        let block = (0..235u16)
            .map(|i| 16 + u8::try_from((u16::from(start - 16) + i) % 235).unwrap_or(0))
            .find(|b| !taken(*b))
            .ok_or("no free 10.B.0.0/16 block for pod addresses")?;
        let bridge = format!("strbr{block}");
        let pid_file = Path::new(STATE_DIR).join(format!("{bridge}.pid"));
        std::fs::write(&pid_file, std::process::id().to_string())
            .map_err(|e| format!("writing {}: {e}", pid_file.display()))?;
        let gw = format!("10.{block}.0.1/16");
        let setup = ip_sync(&["link", "add", &bridge, "type", "bridge"])
            .and_then(|_| ip_sync(&["addr", "add", &gw, "dev", &bridge]))
            .and_then(|_| ip_sync(&["link", "set", &bridge, "up"]));
        if let Err(e) = setup {
            let _ = ip_sync(&["link", "del", &bridge]);
            let _ = std::fs::remove_file(&pid_file);
            return Err(e);
        }
        tracing::info!(%bridge, pods = %format!("10.{block}.0.0/16"), "pod network ready");
        Ok(Arc::new(PodNetwork {
            block,
            seq: std::sync::atomic::AtomicU32::new(0),
            bridge,
            ips: Mutex::new(IpAllocator::in_network([10, block])),
            ports: Mutex::new(host_ports.into_iter().collect()),
            sandboxes: Mutex::new(Vec::new()),
            pid_file,
        }))
    }

    /// The host's address on the bridge (the pods' default gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.block, 0, 1)
    }

    /// A network namespace with a fresh address, attached to the bridge, with
    /// the host-port forwarders running.
    pub async fn attach(self: &Arc<Self>) -> Result<Arc<Sandbox>, String> {
        let ip = self
            .ips
            .lock()
            .map_err(|_| "address allocator poisoned")?
            .allocate()
            .ok_or("no pod address left")?;
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let veth = format!("s{}-{n}", self.block);
        let sandbox = Arc::new(Sandbox {
            ip,
            name: format!("strata-{}-{n}", self.block),
            veth: veth.clone(),
            forwards: Mutex::new(HashMap::new()),
            network: Arc::downgrade(self),
        });
        let ns = sandbox.name.clone();
        let addr = format!("{ip}/16");
        let gw = self.gateway().to_string();
        let bridge = self.bridge.clone();
        // Any failure drops `sandbox`, which deletes the namespace again.
        tokio::task::spawn_blocking(move || {
            ip_sync(&["netns", "add", &ns])?;
            ip_sync(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip_sync(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip_sync(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip_sync(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip_sync(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip_sync(&["-n", &ns, "route", "add", "default", "via", &gw])?;
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| format!("pod network setup task: {e}"))??;
        let ports: Vec<u16> = self
            .ports
            .lock()
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        for port in ports {
            start_forward(&sandbox, port)?;
        }
        if let Ok(mut s) = self.sandboxes.lock() {
            s.retain(|w| w.strong_count() > 0);
            s.push(Arc::downgrade(&sandbox));
        }
        Ok(sandbox)
    }

    /// Makes host 127.0.0.1:`port` reachable at 127.0.0.1:`port` in every pod,
    /// the running ones included.
    pub fn expose_host_port(&self, port: u16) -> Result<(), String> {
        let new = self
            .ports
            .lock()
            .map_err(|_| "port set poisoned")?
            .insert(port);
        if !new {
            return Ok(());
        }
        let live: Vec<Arc<Sandbox>> = self
            .sandboxes
            .lock()
            .map(|s| s.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for s in live {
            start_forward(&s, port)?;
        }
        Ok(())
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(e) = ip_sync(&["link", "del", &self.bridge]) {
            tracing::warn!(bridge = %self.bridge, error = %e, "removing pod bridge");
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Binds 127.0.0.1:`port` inside the sandbox and forwards each connection to the
/// host's 127.0.0.1:`port`.
fn start_forward(sandbox: &Sandbox, port: u16) -> Result<(), String> {
    let path = sandbox.path();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let std_listener = std::thread::spawn(move || -> Result<std::net::TcpListener, String> {
        // This thread alone enters the namespace; it ends right after binding.
        let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {}: {e}", path.display()))?;
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(l)
    })
    .join()
    .map_err(|_| "namespace bind thread panicked".to_string())??;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
    let netns = sandbox.name.clone();
    // The connections live in a JoinSet owned by the accept task: aborting it
    // (when the pod goes) closes them all, so the namespace can go too.
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                Some(_) = conns.join_next() => continue,
            };
            let Ok((mut inbound, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let netns = netns.clone();
            conns.spawn(async move {
                match tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                    Ok(mut out) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                    Err(e) => {
                        tracing::debug!(%netns, port, error = %e, "host port not reachable")
                    }
                }
            });
        }
    });
    if let Ok(mut f) = sandbox.forwards.lock() {
        if let Some(old) = f.insert(port, task) {
            old.abort();
        }
    }
    Ok(())
}

/// Removes bridges (and their pods' namespaces) whose kubelet process is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(bridge) = file.strip_suffix(".pid") else {
            continue;
        };
        let alive = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
        if alive {
            continue;
        }
        if let Some(block) = bridge.strip_prefix("strbr") {
            let prefix = format!("strata-{block}-");
            for ns in std::fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
                let name = ns.file_name().to_string_lossy().to_string();
                if name.starts_with(&prefix) {
                    let _ = ip_sync(&["netns", "del", &name]);
                }
            }
        }
        let _ = ip_sync(&["link", "del", bridge]);
        let _ = std::fs::remove_file(e.path());
        tracing::info!(%bridge, "removed a stale pod network");
    }
}

fn ip_sync(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every IPv4 network named in `ip route` output (a bare address is a /32).
fn route_networks(routes: &str) -> impl Iterator<Item = (Ipv4Addr, u8)> + '_ {
    routes.split_whitespace().filter_map(|t| {
        let (a, len) = t.split_once('/').unwrap_or((t, "32"));
        Some((a.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?))
    })
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_containment_either_way() {
        let n = |s: &str, l| (s.parse().unwrap(), l);
        assert!(overlaps(n("10.5.0.0", 16), n("10.5.3.4", 32)));
        assert!(overlaps(n("10.0.0.0", 8), n("10.5.0.0", 16)));
        assert!(!overlaps(n("10.6.0.0", 16), n("10.5.0.0", 16)));
        assert!(overlaps(n("0.0.0.0", 0), n("10.5.0.0", 16)));
    }

    #[test]
    fn route_output_yields_its_networks() {
        let out = "default via 192.0.2.1 dev eth0\n10.20.0.0/16 dev strbr20 proto kernel scope link src 10.20.0.1\nlocal 127.0.0.0/8 dev lo table local";
        let nets: Vec<_> = route_networks(out).collect();
        assert!(nets.contains(&("192.0.2.1".parse().unwrap(), 32)));
        assert!(nets.contains(&("10.20.0.0".parse().unwrap(), 16)));
        assert!(nets.contains(&("127.0.0.0".parse().unwrap(), 8)));
        assert!(!nets.iter().any(|(_, l)| *l > 32));
    }
}
