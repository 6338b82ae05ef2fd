//! Pure translation of a Pod into what the process kubelet will do: which
//! program to run with which argv/env/cwd, which files to materialise for its
//! volumes, which probes to run, and which pod features it is ignoring.
//!
//! Path rule: a container sees its volumes through *path substitution*. Every
//! occurrence of a `volumeMounts[].mountPath` (at a path boundary) in `command`,
//! `args`, env values and `workingDir` is replaced by the host directory backing
//! that volume. Programs that hard-code mount paths will not find their files.
//!
//! A container's environment (`envFrom`, `env`, `$(VAR)`) is built in `env`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

pub use super::volumes::KUBECONFIG_VOLUME;
use super::volumes::{plan_volume, pod_kubeconfig};
use env::container_env;
pub use env::{expand, field_value};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

mod env;

/// image name → local program. Lookup is exact first, then without tag/digest.
pub type ImageMap = BTreeMap<String, PathBuf>;

/// Key/value data of a ConfigMap or Secret (binary values allowed).
pub type Data = BTreeMap<String, Vec<u8>>;

/// Everything outside the Pod object that the plan depends on; the shell
/// fetches it from the API server first.
pub struct PlanInputs<'a> {
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub node_name: &'a str,
    pub images: &'a ImageMap,
    pub config_maps: &'a BTreeMap<String, Data>,
    pub secrets: &'a BTreeMap<String, Data>,
    /// Service-account token for `projected.serviceAccountToken` sources.
    pub sa_token: Option<&'a str>,
    /// Per-pod directory (`<root>/pods/<ns>_<name>_<uid>`).
    pub pod_dir: &'a Path,
    /// Root of persistent data; a PVC `c` in namespace `ns` lives at `<data_root>/<ns>/<c>`.
    pub data_root: &'a Path,
    /// Environment inherited from the host (PATH, HOME, ...), before the pod's own.
    pub base_env: &'a [(String, String)],
    /// How processes reach the API server; when set (and a token was issued)
    /// each pod gets a kubeconfig with its service-account token, exported as
    /// `KUBECONFIG`, plus `KUBERNETES_SERVICE_HOST/PORT`.
    pub api: Option<&'a ApiAccess>,
}

/// The API server as seen from pods.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAccess {
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// PEM CA bundle the server's certificate chains to.
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub volumes: Vec<VolumePlan>,
    pub containers: Vec<ContainerPlan>,
    /// Pod features present but not implemented; logged by the shell.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    pub name: String,
    pub host_dir: PathBuf,
    /// Files to (re)write, relative to `host_dir`.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Why a pod cannot be started (yet). Shown as the container's Waiting reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("image {image:?} is not in the kubelet's image map (known: {known})")]
    ImageNotMapped { image: String, known: String },
    #[error("configmap {0:?} not found")]
    MissingConfigMap(String),
    #[error("secret {0:?} not found")]
    MissingSecret(String),
    #[error("key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported by the process kubelet: {0}")]
    Unsupported(String),
}

impl PlanError {
    /// Short CamelCase reason for the container status.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::ImageNotMapped { .. } => "ErrImageNotMapped",
            PlanError::Unsupported(_) => "Unsupported",
            _ => "CreateContainerConfigError",
        }
    }
}

/// ConfigMaps and Secrets a pod references (for env and volumes).
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in &spec.containers {
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(r) = &vf.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &vf.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for ef in c.env_from.iter().flatten() {
            if let Some(r) = &ef.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &ef.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// The service-account token request a pod needs: (audience, expiration seconds).
pub fn token_request(pod: &Pod) -> Option<(Option<String>, Option<i64>)> {
    let spec = pod.spec.as_ref()?;
    spec.volumes
        .iter()
        .flatten()
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .find_map(|s| s.service_account_token.as_ref())
        .map(|t| (t.audience.clone(), t.expiration_seconds))
}

/// Resolves an image to its program.
pub fn resolve_image(images: &ImageMap, image: &str) -> Result<PathBuf, PlanError> {
    if let Some(p) = images.get(image) {
        return Ok(p.clone());
    }
    let without_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' starts the tag (a ':' before it is a registry port).
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let base = match without_digest[last_slash..].find(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    images
        .get(base)
        .cloned()
        .ok_or_else(|| PlanError::ImageNotMapped {
            image: image.to_string(),
            known: images.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// Replaces container mount paths by host directories (longest mount first),
/// only where the mount path ends at a path boundary.
pub fn substitute_mounts(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = s.to_string();
    for (mount, host) in mounts {
        if mount.is_empty() || mount == "/" {
            continue;
        }
        let host = host.display().to_string();
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(mount.as_str()) {
            let end = i + mount.len();
            let boundary_after = rest[end..].chars().next().is_none_or(|c| {
                c == '/' || !c.is_alphanumeric() && c != '-' && c != '_' && c != '.'
            });
            let boundary_before = i == 0
                || !rest[..i].ends_with(|c: char| {
                    c.is_alphanumeric() || c == '/' || c == '-' || c == '_' || c == '.'
                });
            result.push_str(&rest[..i]);
            if boundary_after && boundary_before {
                result.push_str(&host);
            } else {
                result.push_str(mount);
            }
            rest = &rest[end..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

fn port_number(c: &Container, port: &IntOrString) -> Result<u16, PlanError> {
    match port {
        IntOrString::Int(p) => {
            u16::try_from(*p).map_err(|_| PlanError::Unsupported(format!("probe port {p}")))
        }
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| PlanError::Unsupported(format!("probe names unknown port {name:?}"))),
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
}

fn plan_probe(
    c: &Container,
    p: &Probe,
    what: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<ProbePlan>, PlanError> {
    let action = if let Some(h) = &p.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err(PlanError::Unsupported(format!("{what} probe over HTTPS")));
        }
        if h.host.is_some() || h.http_headers.is_some() {
            ignored.push(format!(
                "container {}: {what} probe host/httpHeaders",
                c.name
            ));
        }
        ProbeAction::Http {
            port: port_number(c, &h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp {
            port: port_number(c, &t.port)?,
        }
    } else if let Some(e) = &p.exec {
        ProbeAction::Exec {
            argv: e.command.clone().unwrap_or_default(),
        }
    } else {
        ignored.push(format!(
            "container {}: {what} probe kind (gRPC) — treated as always succeeding",
            c.name
        ));
        return Ok(None);
    };
    Ok(Some(ProbePlan {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: u32::try_from(p.success_threshold.unwrap_or(1))
            .unwrap_or(1)
            .max(1),
        failure_threshold: u32::try_from(p.failure_threshold.unwrap_or(3))
            .unwrap_or(3)
            .max(1),
    }))
}

fn ignored_pod_features(pod: &Pod, ignored: &mut Vec<String>) -> Result<(), PlanError> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(PlanError::Unsupported("initContainers".into()));
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(PlanError::Unsupported("ephemeralContainers".into()));
    }
    let mut note = |present: bool, what: &str| {
        if present {
            ignored.push(what.to_string());
        }
    };
    note(spec.affinity.is_some(), "affinity (single node)");
    note(
        spec.host_network == Some(true),
        "hostNetwork (the pod gets a 127.B.N.M of its own in the host's network namespace, not the node's address)",
    );
    note(spec.node_selector.is_some(), "nodeSelector (single node)");
    note(
        spec.topology_spread_constraints.is_some(),
        "topologySpreadConstraints (single node)",
    );
    note(
        spec.security_context
            .as_ref()
            .is_some_and(|s| *s != Default::default()),
        "pod securityContext (processes run as the harness user)",
    );
    note(
        spec.dns_config.is_some(),
        "dnsConfig (names resolve through the kubelet's /etc/hosts)",
    );
    note(
        spec.active_deadline_seconds.is_some(),
        "activeDeadlineSeconds",
    );
    note(spec.readiness_gates.is_some(), "readinessGates");
    note(spec.resource_claims.is_some(), "resourceClaims");
    note(spec.runtime_class_name.is_some(), "runtimeClassName");
    for c in &spec.containers {
        let n = &c.name;
        note(
            c.resources.as_ref().is_some_and(|r| r.limits.is_some()),
            &format!("container {n}: resource limits not enforced"),
        );
        note(
            c.security_context
                .as_ref()
                .is_some_and(|s| *s != Default::default()),
            &format!("container {n}: securityContext"),
        );
        note(
            c.lifecycle.is_some(),
            &format!("container {n}: lifecycle hooks (postStart/preStop)"),
        );
        note(
            c.startup_probe.is_some(),
            &format!("container {n}: startupProbe"),
        );
        note(
            c.stdin.unwrap_or(false) || c.tty.unwrap_or(false),
            &format!("container {n}: stdin/tty"),
        );
        note(
            c.volume_devices.is_some(),
            &format!("container {n}: volumeDevices"),
        );
        note(
            c.ports.iter().flatten().any(|p| p.host_port.is_some()),
            &format!("container {n}: hostPort (processes bind their pod IP)"),
        );
    }
    Ok(())
}

/// Builds the plan for a pod.
pub fn plan(pod: &Pod, inp: &PlanInputs<'_>) -> Result<PodPlan, PlanError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PlanError::Unsupported("pod without spec".into()))?;
    let mut ignored = Vec::new();
    ignored_pod_features(pod, &mut ignored)?;

    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        volumes.push(plan_volume(pod, v, inp, &mut ignored)?);
    }
    let kubeconfig = match (inp.api, inp.sa_token) {
        (Some(api), Some(token)) => {
            let dir = inp.pod_dir.join(KUBECONFIG_VOLUME);
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let text = pod_kubeconfig(api, &dir.join("token"), ns);
            volumes.push(VolumePlan {
                name: KUBECONFIG_VOLUME.into(),
                host_dir: dir.clone(),
                files: vec![
                    (PathBuf::from("token"), token.as_bytes().to_vec()),
                    (PathBuf::from("kubeconfig"), text.into_bytes()),
                ],
            });
            Some(dir.join("kubeconfig"))
        }
        _ => None,
    };

    let mut containers = Vec::new();
    for c in &spec.containers {
        let image = c.image.clone().unwrap_or_default();
        let program = resolve_image(inp.images, &image)?;

        // Mount path -> host path, longest first so nested mounts win.
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let vol = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| {
                PlanError::Unsupported(format!("mount of undeclared volume {}", m.name))
            })?;
            let mut host = vol.host_dir.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
            }
            if m.sub_path_expr.is_some() {
                ignored.push(format!("container {}: subPathExpr", c.name));
            }
            mounts.push((m.mount_path.trim_end_matches('/').to_string(), host));
        }
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

        let env = container_env(pod, c, inp, &mounts, kubeconfig.as_deref())?;
        let cmd = c.command.clone().unwrap_or_default();
        let args_in = c.args.clone().unwrap_or_default();
        // An image is one program: command[0] names it and is replaced by the mapped path.
        // Without a command, args[0] naming the program (CMD-only images such as
        // `python`, e.g. `kubectl run --image=python -- python3 ...`) is dropped too.
        let program_name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let args_name_program = cmd.is_empty()
            && args_in.first().is_some_and(|a| {
                Some(a.rsplit('/').next().unwrap_or(a).to_string()) == program_name
            });
        let skip_args = usize::from(args_name_program);
        let raw_args: Vec<String> = cmd
            .iter()
            .skip(1)
            .chain(args_in.iter().skip(skip_args))
            .cloned()
            .collect();
        let args = raw_args
            .iter()
            .map(|a| substitute_mounts(&expand(a, &env), &mounts))
            .collect();
        let cwd = match &c.working_dir {
            Some(w) => PathBuf::from(substitute_mounts(w, &mounts)),
            None => inp.pod_dir.to_path_buf(),
        };
        let readiness = match &c.readiness_probe {
            Some(p) => plan_probe(c, p, "readiness", &mut ignored)?,
            None => None,
        };
        let liveness = match &c.liveness_probe {
            Some(p) => plan_probe(c, p, "liveness", &mut ignored)?,
            None => None,
        };
        containers.push(ContainerPlan {
            name: c.name.clone(),
            image,
            program,
            args,
            env,
            cwd,
            readiness,
            liveness,
        });
    }
    Ok(PodPlan {
        volumes,
        containers,
        ignored,
    })
}

#[cfg(test)]
mod tests;
