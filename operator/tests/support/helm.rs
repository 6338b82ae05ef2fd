//! Running the chart through `helm lint` / `helm template`, with the helm binary
//! that `e2e/setup.sh` builds.

use std::path::PathBuf;
use std::process::Command;

/// The helm binary; `None` (after a loud SKIPPING message) when it is missing,
/// a panic instead when `STRATA_E2E_REQUIRED=1`.
pub fn helm() -> Option<PathBuf> {
    let path = strata_e2e::binaries::Binaries::from_env().path("helm").ok();
    if path.is_none() {
        let msg = "helm not found; run `bash e2e/setup.sh`";
        if strata_e2e::testing::required() {
            panic!("{msg} (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING helm chart test: {msg} !!!!!\n");
    }
    path
}

pub fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/strata")
}

/// `helm template` of the chart into namespace strata-system with `--set` values.
pub fn template(helm: &PathBuf, sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "strata",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        "strata-system",
        "--kube-version",
        "1.34.0",
    ];
    for v in sets {
        args.extend(["--set", v]);
    }
    run(helm, &args)
}

/// The documents of a `helm template` output, as JSON values.
pub fn documents(rendered: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(rendered)
        .map(|d| serde_json::Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn run(helm: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("strata-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("strata-helm-config"),
        )
        .output()
        .expect("running helm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
