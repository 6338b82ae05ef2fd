//! Helpers for integration tests that need the environment (this crate's and
//! other crates'): skip-or-fail when the setup binaries are missing, one
//! environment at a time per test process, a time bound, and log capture.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::kubelet::ImageMap;
use crate::{Env, EnvConfig};

/// Environments running at once in this process (at most one: 2-core machines).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// True when `STRATA_E2E_REQUIRED=1` (CI): missing binaries fail instead of skipping.
pub fn required() -> bool {
    std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// Ok when the named setup binaries exist; otherwise prints a loud SKIPPING
/// message and returns false, or panics when [`required`].
pub fn binaries_present(test: &str, names: &[&str]) -> bool {
    let bins = Binaries::from_env();
    let missing: Vec<&str> = bins
        .missing()
        .into_iter()
        .filter(|m| names.contains(m))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "strata-e2e binaries missing in {} ({}); run `bash e2e/setup.sh`",
        bins.dir.display(),
        missing.join(", ")
    );
    if required() {
        panic!("{test}: {msg} (STRATA_E2E_REQUIRED=1)");
    }
    // Written to the real stderr: the test harness captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPING {test}: {msg} !!!!!\n");
    false
}

/// The host's python3 (as the image `python`), for test workloads.
pub fn python_images() -> ImageMap {
    let mut images = ImageMap::new();
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
    {
        let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !exe.is_empty() {
            images.insert("python".into(), PathBuf::from(exe));
        }
    }
    images
}

/// Installs a test-friendly tracing subscriber once (`RUST_LOG` overrides).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client::client::builder=off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs `scenario` against a fresh environment built from `config`: skipped
/// (or failed, see [`required`]) without binaries, serialized with other
/// environments of this process, bounded by `timeout`, torn down afterwards.
/// The scenario hands the `Env` back for a graceful shutdown; on panic it is
/// dropped, which kills everything too.
pub async fn with_env<F, Fut>(name: &str, mut config: EnvConfig, timeout: Duration, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env>,
{
    use futures::FutureExt;

    init_tracing();
    let mut needed = vec!["etcd", "kube-apiserver", "kube-controller-manager"];
    if config.s3_bucket.is_some() {
        needed.push("weed");
    }
    if !binaries_present(name, &needed) {
        return;
    }
    let _guard = SERIAL.lock().await;
    let started = Instant::now();
    // The directory outlives the environment, so a failure can quote the pods' logs;
    // it is removed below unless the caller chose it or asked to keep it.
    let remove_dir = config.dir.is_none() && !config.keep_dir;
    config.keep_dir = true;
    let dir = std::sync::Mutex::new(None::<PathBuf>);
    let run = async {
        let env = match Env::start(config).await {
            Ok(env) => env,
            Err(e) => panic!("{name}: starting the environment: {e}"),
        };
        if let Ok(mut d) = dir.lock() {
            *d = Some(env.dir.clone());
        }
        eprintln!("[{name}] environment up in {:?}", started.elapsed());
        let env = scenario(env).await;
        env.shutdown().await;
    };
    let outcome =
        tokio::time::timeout(timeout, std::panic::AssertUnwindSafe(run).catch_unwind()).await;
    let dir = dir.lock().ok().and_then(|mut d| d.take());
    let failure = match &outcome {
        Ok(Ok(())) => None,
        Ok(Err(panic)) => Some(panic_message(panic.as_ref())),
        Err(_) => Some(format!("did not finish within {timeout:?}")),
    };
    if let (Some(why), Some(dir)) = (&failure, &dir) {
        // Last in the output, where a truncated CI log still shows it.
        eprintln!("{}", failure_report(&dir.join("kubelet").join("logs")));
        eprintln!("[{name}] FAILED: {why}");
        if !remove_dir {
            eprintln!("[{name}] environment kept in {}", dir.display());
        }
    }
    if let (true, Some(dir)) = (remove_dir, &dir) {
        let _ = std::fs::remove_dir_all(dir);
    }
    match outcome {
        Ok(Ok(())) => eprintln!("[{name}] done in {:?}", started.elapsed()),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{name} did not finish within {timeout:?}"),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(panic without a message)".into())
}

/// The newest warnings and errors of every pod's containers (the kubelet's log
/// directory, `<ns>_<pod>_<uid>/<container>.log`), a few lines each, for a failed
/// scenario's output.
pub fn failure_report(logs_dir: &std::path::Path) -> String {
    const PER_CONTAINER: usize = 6;
    const WIDTH: usize = 400;
    let mut files: Vec<PathBuf> = std::fs::read_dir(logs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|pod| {
            std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut out = String::from("----- warnings and errors in the pods' logs (newest last) -----");
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let notable: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
            .collect();
        if notable.is_empty() {
            continue;
        }
        let pod = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let container = f
            .file_stem()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{pod}/{container}: {} warnings/errors, the last:",
            notable.len()
        ));
        for l in &notable[notable.len().saturating_sub(PER_CONTAINER)..] {
            let l: String = l.chars().take(WIDTH).collect();
            out.push_str(&format!("\n  {l}"));
        }
    }
    out
}

/// Polls `f` every 250 ms until it yields a value; panics (naming `what`) after
/// `timeout`, so a scenario never waits forever.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `helm install RELEASE CHART --namespace NS --wait` against the environment,
/// with helm's caches inside its working directory; panics with helm's output
/// when it fails.
pub async fn helm_install(
    env: &Env,
    release: &str,
    chart: &std::path::Path,
    namespace: &str,
    extra: &[&str],
) {
    let helm = match Binaries::from_env().path("helm") {
        Ok(h) => h,
        Err(e) => panic!("helm: {e}"),
    };
    let home = env.dir.join("helm-home");
    let out = tokio::process::Command::new(&helm)
        .args(["install", release])
        .arg(chart)
        .args([
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
        ])
        .args(extra)
        .env("KUBECONFIG", env.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm install {release} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_report_quotes_the_newest_warnings_of_each_container() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("default_demo-0_uid");
        std::fs::create_dir_all(&pod).unwrap();
        let mut log = String::new();
        for i in 0..10 {
            log.push_str(&format!("2026-12-01T00:00:00Z  WARN strata: warning {i}\n"));
            log.push_str("2026-12-01T00:00:00Z  INFO strata: fine\n");
        }
        std::fs::write(pod.join("broker.log"), log).unwrap();
        let quiet = dir.path().join("default_quiet_uid");
        std::fs::create_dir_all(&quiet).unwrap();
        std::fs::write(quiet.join("kcat.log"), "all good\n").unwrap();

        let report = failure_report(dir.path());
        assert!(
            report.contains("default_demo-0_uid/broker: 10 warnings/errors"),
            "{report}"
        );
        assert!(
            report.contains("warning 9") && report.contains("warning 4"),
            "{report}"
        );
        assert!(
            !report.contains("warning 3") && !report.contains("fine"),
            "{report}"
        );
        assert!(!report.contains("quiet"), "{report}");
    }
}
