//! `strata-broker dev --brokers N`: the local cluster's brokers live and die with
//! the parent process, however it ends.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child processes of `pid` (Linux exposes them per thread; the main thread
/// spawns them all).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` still runs (an unreaped zombie does not: it holds no ports).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[test]
fn local_cluster_brokers_exit_when_the_parent_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_| strata_e2e::net::free_port().expect("free port");
    let [kafka, admin, metrics]: [u16; 3] = [0, 1, 2].map(port);
    let mut parent = Command::new(env!("CARGO_BIN_EXE_strata-broker"))
        .args(["dev", "--brokers", "2", "--data-dir"])
        .arg(dir.path())
        .args(["--kafka-port", &kafka.to_string()])
        .args(["--admin-port", &admin.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Both brokers started and listening for Kafka clients.
    let deadline = Instant::now() + Duration::from_secs(60);
    let kids = loop {
        let kids = children(parent.id());
        let listening = ["127.0.0.1", "127.0.0.2"].iter().all(|h| {
            TcpStream::connect_timeout(
                &format!("{h}:{kafka}").parse().unwrap(),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        if kids.len() == 2 && listening {
            break kids;
        }
        assert!(
            Instant::now() < deadline,
            "local cluster not listening: children {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    parent.kill().unwrap(); // SIGKILL: no chance to stop its children itself
    parent.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while kids.iter().any(|&k| running(k)) {
        assert!(
            Instant::now() < deadline,
            "brokers {kids:?} outlived their parent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Their ports are free for the next start.
    for h in ["127.0.0.1", "127.0.0.2"] {
        std::net::TcpListener::bind(format!("{h}:{kafka}"))
            .unwrap_or_else(|e| panic!("{h}:{kafka} still taken: {e}"));
    }
}
