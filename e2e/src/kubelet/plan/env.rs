//! A container's environment, as the kubelet builds it: the harness's inherited
//! variables, the in-cluster API address and kubeconfig, `HOSTNAME`, then `envFrom`
//! and `env` in order (later wins) with downward-API `fieldRef`s, ConfigMap and
//! Secret keys and `$(VAR)` expansion; values get the mount paths substituted like
//! argv (see the path rule in [`super`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{substitute_mounts, PlanError, PlanInputs};
use crate::kubelet::volumes::lookup;

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

pub(super) fn container_env(
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
