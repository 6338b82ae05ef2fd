//! strata-e2e: a real local Kubernetes environment without containers.
//!
//! [`controlplane`] starts etcd, kube-apiserver and kube-controller-manager on
//! loopback from binaries that `e2e/setup.sh` builds once into a cache;
//! [`kubelet`] is a process kubelet that runs each pod's container as a local
//! process with its own 127.B.N.M address; [`s3`] starts SeaweedFS as the tier's
//! object store; [`env`] wires them together for tests and for `strata-e2e up`.

pub mod binaries;
pub mod controlplane;
pub mod env;
pub mod kubelet;
pub mod net;
pub mod pki;
pub mod process;
pub mod s3;
pub mod testing;

pub use env::{Env, EnvConfig};

use std::path::PathBuf;

/// Everything that can go wrong while building or running the environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "binary `{name}` not found at {path}; run `bash e2e/setup.sh` once (builds into {dir})"
    )]
    MissingBinary {
        name: String,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("port {port} on 127.0.0.1 is already taken (wanted by {owner})")]
    PortTaken { port: u16, owner: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Pki(String),
    #[error("{name} exited early ({status}); last log lines from {log}:\n{tail}")]
    ExitedEarly {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("pod network: {0}")]
    Network(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
