//! Where `e2e/setup.sh` puts the control-plane binaries, and checks that they exist.
//!
//! Keep the versions here in step with `e2e/setup.sh`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Kubernetes release that `setup.sh` builds (kube-apiserver, kube-controller-manager).
pub const K8S_VERSION: &str = "1.34.4";

/// Root of the build cache: `$STRATA_CACHE`, else `$HOME/.cache/strata`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache").join("strata")
}

/// Directory holding the binaries: `$STRATA_E2E_BIN_DIR`, else `<cache>/k8s-<version>/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    cache_dir().join(format!("k8s-{K8S_VERSION}")).join("bin")
}

/// The binaries `setup.sh` provides.
pub const ALL: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "helm",
    "weed",
];

/// Resolved paths of the binaries in one directory.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Binaries { dir: dir.into() }
    }

    /// The default location (see [`bin_dir`]).
    pub fn from_env() -> Self {
        Binaries::new(bin_dir())
    }

    /// Path of `name`, or [`Error::MissingBinary`] saying how to build it.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::MissingBinary {
                name: name.to_string(),
                path,
                dir: self.dir.clone(),
            })
        }
    }

    /// Names of the binaries that are absent.
    pub fn missing(&self) -> Vec<&'static str> {
        ALL.iter()
            .copied()
            .filter(|n| !is_executable(&self.dir.join(n)))
            .collect()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_names_the_setup_script() {
        let dir = tempfile::tempdir().unwrap();
        let b = Binaries::new(dir.path());
        let err = b.path("etcd").unwrap_err().to_string();
        assert!(err.contains("e2e/setup.sh"), "{err}");
        assert_eq!(b.missing().len(), ALL.len());
    }
}
