//! Pure translation of a Pod into what the process kubelet will do: which
//! program to run with which argv/env/cwd, which files to materialise for its
//! volumes, which probes to run, and which pod features it is ignoring.
//!
//! Path rule: a container sees its volumes through *path substitution*. Every
//! occurrence of a `volumeMounts[].mountPath` (at a path boundary) in `command`,
//! `args`, env values and `workingDir` is replaced by the host directory backing
//! that volume. Programs that hard-code mount paths will not find their files.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

pub use super::volumes::KUBECONFIG_VOLUME;
use super::volumes::{lookup, plan_volume, pod_kubeconfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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

/// Value of a downward-API field path, or None if unsupported.
pub fn field_value(
    pod: &Pod,
    path: &str,
    pod_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    node: &str,
) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let indexed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "status.podIP" => Some(pod_ip.to_string()),
        "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
        "spec.nodeName" => Some(node.to_string()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        _ => indexed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| indexed("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// Expands `$(VAR)` references like the kubelet does; `$$(VAR)` escapes.
/// Unknown variables are left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
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
        "hostNetwork (the pod still gets its own 127.B.N.M)",
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

fn container_env(
    pod: &Pod,
    c: &Container,
    inp: &PlanInputs<'_>,
    mounts: &[(String, PathBuf)],
    kubeconfig: Option<&Path>,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut env: Vec<(String, String)> = inp.base_env.to_vec();
    if let Some(api) = inp.api {
        let hostport = api.server.trim_start_matches("https://");
        if let Some((host, port)) = hostport.rsplit_once(':') {
            env.push(("KUBERNETES_SERVICE_HOST".into(), host.to_string()));
            env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
        }
    }
    if let Some(k) = kubeconfig {
        env.push(("KUBECONFIG".into(), k.display().to_string()));
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    env.push(("HOSTNAME".into(), name));
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(ek, _)| ek != &k);
        env.push((k, v));
    };
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &ef.config_map_ref {
            lookup(
                "configmap",
                inp.config_maps,
                &r.name,
                r.optional.unwrap_or(false),
            )?
        } else if let Some(r) = &ef.secret_ref {
            lookup("secret", inp.secrets, &r.name, r.optional.unwrap_or(false))?
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            set(
                &mut env,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                field_value(pod, &f.field_path, inp.pod_ip, inp.host_ip, inp.node_name).ok_or_else(
                    || PlanError::Unsupported(format!("env {}: fieldRef {}", e.name, f.field_path)),
                )?
            } else if let Some(r) = &vf.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match lookup("configmap", inp.config_maps, &r.name, optional)?
                    .and_then(|d| d.get(&r.key))
                {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(PlanError::MissingKey {
                            kind: "configmap",
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(r) = &vf.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match lookup("secret", inp.secrets, &r.name, optional)?.and_then(|d| d.get(&r.key))
                {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(PlanError::MissingKey {
                            kind: "secret",
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else {
                return Err(PlanError::Unsupported(format!(
                    "env {}: resourceFieldRef/fileKeyRef",
                    e.name
                )));
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &env)
        };
        let value = substitute_mounts(&value, mounts);
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn images() -> ImageMap {
        let mut m = ImageMap::new();
        m.insert("strata-broker".into(), PathBuf::from("/bin/broker"));
        m.insert("registry:5000/team/app".into(), PathBuf::from("/bin/app"));
        m
    }

    #[test]
    fn images_resolve_exactly_or_without_tag_and_digest() {
        let m = images();
        assert_eq!(
            resolve_image(&m, "strata-broker").unwrap(),
            PathBuf::from("/bin/broker")
        );
        assert_eq!(
            resolve_image(&m, "strata-broker:0.1").unwrap(),
            PathBuf::from("/bin/broker")
        );
        assert_eq!(
            resolve_image(&m, "registry:5000/team/app:v2@sha256:abc").unwrap(),
            PathBuf::from("/bin/app")
        );
        let err = resolve_image(&m, "nginx:1").unwrap_err();
        assert_eq!(err.reason(), "ErrImageNotMapped");
        assert!(err.to_string().contains("strata-broker"), "{err}");
    }

    #[test]
    fn args_naming_the_program_of_a_cmd_only_image_are_not_repeated() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "image": "strata-broker", "args": ["broker", "-v"]},
                {"name": "b", "image": "strata-broker", "args": ["serve", "-v"]},
                {"name": "c", "image": "strata-broker", "command": ["x", "run"], "args": ["-v"]},
            ]}
        }));
        let images = images();
        let empty = BTreeMap::new();
        let inp = PlanInputs {
            pod_ip: Ipv4Addr::new(127, 0, 0, 2),
            host_ip: Ipv4Addr::LOCALHOST,
            node_name: "n",
            images: &images,
            config_maps: &empty,
            secrets: &empty,
            sa_token: None,
            pod_dir: Path::new("/p"),
            data_root: Path::new("/d"),
            base_env: &[],
            api: None,
        };
        let plan = plan(&p, &inp).unwrap();
        let args: Vec<Vec<String>> = plan.containers.iter().map(|c| c.args.clone()).collect();
        assert_eq!(
            args,
            vec![vec!["-v"], vec!["serve", "-v"], vec!["run", "-v"]]
        );
    }

    #[test]
    fn dollar_references_expand_like_the_kubelet() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &env), "1-x");
        assert_eq!(expand("$$(A) $(C) $5", &env), "$(A) $(C) $5");
        assert_eq!(expand("tail $(", &env), "tail $(");
    }

    #[test]
    fn mount_paths_are_substituted_only_at_path_boundaries() {
        let mounts = vec![
            ("/etc/app/certs".to_string(), PathBuf::from("/h/certs")),
            ("/etc/app".to_string(), PathBuf::from("/h/app")),
        ];
        assert_eq!(
            substitute_mounts("--config=/etc/app/app.toml", &mounts),
            "--config=/h/app/app.toml"
        );
        assert_eq!(
            substitute_mounts("/etc/app/certs/ca.pem", &mounts),
            "/h/certs/ca.pem"
        );
        assert_eq!(
            substitute_mounts("/etc/application", &mounts),
            "/etc/application"
        );
        assert_eq!(substitute_mounts("/etc/app", &mounts), "/h/app");
    }

    #[test]
    fn plans_env_volumes_argv_and_probes() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "b-0", "namespace": "ns", "uid": "u1", "labels": {"app": "b"}},
            "spec": {
                "containers": [{
                    "name": "broker", "image": "strata-broker:latest",
                    "command": ["strata-broker"],
                    "args": ["--data=/var/lib/strata", "--id=$(POD_NAME)", "--config=/etc/strata/broker.toml"],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                        {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                        {"name": "ADDR", "value": "$(POD_IP):9092"},
                    ],
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/var/lib/strata"},
                        {"name": "config", "mountPath": "/etc/strata"},
                    ],
                    "ports": [{"name": "kafka", "containerPort": 9092}],
                    "readinessProbe": {"tcpSocket": {"port": "kafka"}},
                }],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-b-0"}},
                    {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "toml", "path": "broker.toml"}]}},
                ],
            }
        }));
        let mut cms = BTreeMap::new();
        cms.insert(
            "cfg".to_string(),
            Data::from([
                ("level".to_string(), b"debug".to_vec()),
                ("toml".to_string(), b"x = 1".to_vec()),
            ]),
        );
        let images = images();
        let inp = PlanInputs {
            pod_ip: Ipv4Addr::new(127, 0, 0, 7),
            host_ip: Ipv4Addr::LOCALHOST,
            node_name: "n",
            images: &images,
            config_maps: &cms,
            secrets: &BTreeMap::new(),
            sa_token: None,
            pod_dir: Path::new("/k/pods/ns_b-0_u1"),
            data_root: Path::new("/k/data"),
            base_env: &[("PATH".to_string(), "/usr/bin".to_string())],
            api: None,
        };
        let plan = plan(&p, &inp).unwrap();
        assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
        let c = &plan.containers[0];
        assert_eq!(c.program, PathBuf::from("/bin/broker"));
        assert_eq!(
            c.args,
            vec![
                "--data=/k/data/ns/data-b-0",
                "--id=b-0",
                "--config=/k/pods/ns_b-0_u1/volumes/config/broker.toml"
            ]
        );
        let env: BTreeMap<_, _> = c.env.iter().cloned().collect();
        assert_eq!(env["POD_IP"], "127.0.0.7");
        assert_eq!(env["APP"], "b");
        assert_eq!(env["LEVEL"], "debug");
        assert_eq!(env["ADDR"], "127.0.0.7:9092");
        assert_eq!(env["HOSTNAME"], "b-0");
        assert_eq!(env["PATH"], "/usr/bin");
        assert!(!env.contains_key("MISSING"));
        assert_eq!(
            c.readiness.as_ref().unwrap().action,
            ProbeAction::Tcp { port: 9092 }
        );
        let config = plan.volumes.iter().find(|v| v.name == "config").unwrap();
        assert_eq!(
            config.files,
            vec![(PathBuf::from("broker.toml"), b"x = 1".to_vec())]
        );
    }

    #[test]
    fn missing_config_and_unsupported_features_block_the_pod() {
        let base = |extra: serde_json::Value| {
            let mut spec =
                serde_json::json!({"containers": [{"name": "c", "image": "strata-broker"}]});
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            pod(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
        };
        let images = images();
        let empty = BTreeMap::new();
        let inp = PlanInputs {
            pod_ip: Ipv4Addr::new(127, 0, 0, 2),
            host_ip: Ipv4Addr::LOCALHOST,
            node_name: "n",
            images: &images,
            config_maps: &empty,
            secrets: &empty,
            sa_token: None,
            pod_dir: Path::new("/p"),
            data_root: Path::new("/d"),
            base_env: &[],
            api: None,
        };
        let e = plan(
            &base(serde_json::json!({"volumes": [{"name": "v", "configMap": {"name": "gone"}}]})),
            &inp,
        );
        assert_eq!(e.unwrap_err(), PlanError::MissingConfigMap("gone".into()));
        let e = plan(
            &base(serde_json::json!({"initContainers": [{"name": "i", "image": "strata-broker"}]})),
            &inp,
        );
        assert!(matches!(e.unwrap_err(), PlanError::Unsupported(_)));
        let e = plan(
            &base(
                serde_json::json!({"volumes": [{"name": "v", "nfs": {"server": "s", "path": "/"}}]}),
            ),
            &inp,
        );
        assert!(matches!(e.unwrap_err(), PlanError::Unsupported(_)));
        let ok = plan(&base(serde_json::json!({"nodeSelector": {"a": "b"}})), &inp).unwrap();
        assert_eq!(ok.ignored, vec!["nodeSelector (single node)".to_string()]);
    }
}
