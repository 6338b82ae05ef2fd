//! A real single-node `strata-broker` (`dev` mode) on free loopback ports, for
//! the tests that talk to a broker without a Kubernetes API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free `127.0.0.1` address.
pub fn free_addr() -> SocketAddr {
    let port = strata_e2e::net::free_port().expect("free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The broker process, killed when dropped (a failing test leaves no broker).
pub struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a dev broker with its data in `data`, Kafka on `kafka` and admin gRPC
/// on `admin`, and waits until both ports accept connections.
pub fn start(binary: &Path, data: &Path, kafka: SocketAddr, admin: SocketAddr) -> Broker {
    let metrics = free_addr();
    let child = Command::new(binary)
        .args(["dev", "--data-dir"])
        .arg(data)
        .env("STRATA_KAFKA_LISTEN", kafka.to_string())
        .env("STRATA_ADMIN_LISTEN", admin.to_string())
        .env("STRATA_METRICS_LISTEN", metrics.to_string())
        .env("STRATA_OFFSETS_TOPIC_PARTITIONS", "1")
        .env("STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata-broker");
    let broker = Broker(child);
    let started = Instant::now();
    for addr in [admin, kafka] {
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "broker port {addr} not open in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    broker
}

/// A Cluster object whose status names one Ready broker at 127.0.0.1 with the
/// admin port of `admin` (what the operator's controllers connect to).
pub fn cluster(admin: SocketAddr) -> strata_operator::crd::Cluster {
    serde_yaml::from_str(&format!(
        "apiVersion: strata.dev/v1alpha1
kind: Cluster
metadata: {{name: demo, namespace: ns}}
spec:
  listeners: {{admin: {port}}}
status:
  brokers:
  - {{id: 0, pod: demo-0, state: Ready, address: 127.0.0.1}}
",
        port = admin.port()
    ))
    .expect("cluster")
}
