//! A real Jaeger v2 (built by `tests/jaeger/build.sh`, its path in
//! `$STRATA_CACHE/current-jaeger`) receiving OTLP/HTTP on loopback, and its query
//! API: what the e2e tests check exported traces against.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::broker::free_addr;

/// The Jaeger program, when built.
pub fn binary() -> Option<PathBuf> {
    let cache = std::env::var_os("STRATA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata")))?;
    let path = std::fs::read_to_string(cache.join("current-jaeger")).ok()?;
    let p = PathBuf::from(path.trim());
    p.exists().then_some(p)
}

/// A running Jaeger; killed when dropped.
pub struct Jaeger {
    child: Child,
    /// Where OTLP/HTTP goes (`http://{otlp}`).
    pub otlp: SocketAddr,
    query: SocketAddr,
}

impl Jaeger {
    /// Starts `binary` with the tests' configuration in `dir`, and waits until its
    /// query API answers.
    pub fn start(binary: &Path, dir: &Path) -> Jaeger {
        let (otlp, query, query_grpc) = (free_addr(), free_addr(), free_addr());
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/jaeger/config.yaml"),
        )
        .expect("tests/jaeger/config.yaml");
        let config = template
            .replace("{otlp}", &otlp.port().to_string())
            .replace("{query}", &query.port().to_string())
            .replace("{query_grpc}", &query_grpc.port().to_string());
        std::fs::create_dir_all(dir).expect("jaeger dir");
        let path = dir.join("jaeger.yaml");
        std::fs::write(&path, config).expect("jaeger config");
        let log = std::fs::File::create(dir.join("jaeger.log")).expect("jaeger log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start jaeger");
        let j = Jaeger { child, otlp, query };
        let started = Instant::now();
        while j.get("/api/services").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "jaeger never answered; see {}",
                dir.join("jaeger.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        j
    }

    /// The OTLP endpoint to give a process.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        let mut s = TcpStream::connect_timeout(&self.query, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.query
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.")
            .then_some(())
            .filter(|_| head.contains(" 200 "))?;
        serde_json::from_str(body).ok()
    }

    /// The traces of `service` holding an `operation` span (at most 50, the last hour).
    pub fn traces(&self, service: &str, operation: &str) -> Vec<serde_json::Value> {
        let q = format!(
            "/api/traces?service={service}&operation={}&limit=50&lookback=1h",
            operation.replace(' ', "%20")
        );
        self.get(&q)
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The operation names of a trace's spans.
pub fn operations(trace: &serde_json::Value) -> Vec<String> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["operationName"].as_str().map(String::from))
        .collect()
}
