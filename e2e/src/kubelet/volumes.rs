//! Volumes of the process kubelet's plan: what each volume's host directory
//! is and which files to write into it (ConfigMap, Secret, downward API,
//! projected sources, PVC data dirs), plus the pod's in-cluster kubeconfig.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::plan::{field_value, ApiAccess, Data, PlanError, PlanInputs, VolumePlan};

/// Name of the pseudo-volume holding a pod's in-cluster kubeconfig.
pub const KUBECONFIG_VOLUME: &str = "strata-e2e-kubeconfig";

pub(super) fn pod_kubeconfig(api: &ApiAccess, token_file: &Path, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: service-account
  user:
    tokenFile: {token}
contexts:
- name: in-cluster
  context:
    cluster: in-cluster
    user: service-account
    namespace: {namespace}
current-context: in-cluster
",
        server = api.server,
        ca = api.ca_file.display(),
        token = token_file.display(),
    )
}

fn key_files(
    kind: &'static str,
    name: &str,
    data: &Data,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Vec<(PathBuf, Vec<u8>)>, PlanError> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.clone()))
            .collect()),
        Some(items) => {
            let mut files = Vec::new();
            for it in items {
                match data.get(&it.key) {
                    Some(v) => files.push((PathBuf::from(&it.path), v.clone())),
                    None if optional => {}
                    None => {
                        return Err(PlanError::MissingKey {
                            kind,
                            name: name.to_string(),
                            key: it.key.clone(),
                        })
                    }
                }
            }
            Ok(files)
        }
    }
}

pub(super) fn lookup<'a>(
    kind: &'static str,
    objects: &'a BTreeMap<String, Data>,
    name: &str,
    optional: bool,
) -> Result<Option<&'a Data>, PlanError> {
    match objects.get(name) {
        Some(d) => Ok(Some(d)),
        None if optional => Ok(None),
        None if kind == "configmap" => Err(PlanError::MissingConfigMap(name.to_string())),
        None => Err(PlanError::MissingSecret(name.to_string())),
    }
}

pub(super) fn plan_volume(
    pod: &Pod,
    v: &Volume,
    inp: &PlanInputs<'_>,
    ignored: &mut Vec<String>,
) -> Result<VolumePlan, PlanError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let own_dir = inp.pod_dir.join("volumes").join(&v.name);
    let mut files = Vec::new();
    let host_dir = if v.empty_dir.is_some() {
        own_dir
    } else if let Some(pvc) = &v.persistent_volume_claim {
        inp.data_root.join(ns).join(&pvc.claim_name)
    } else if let Some(hp) = &v.host_path {
        PathBuf::from(&hp.path)
    } else if let Some(cm) = &v.config_map {
        let optional = cm.optional.unwrap_or(false);
        if let Some(data) = lookup("configmap", inp.config_maps, &cm.name, optional)? {
            files = key_files("configmap", &cm.name, data, cm.items.as_ref(), optional)?;
        }
        own_dir
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        if let Some(data) = lookup("secret", inp.secrets, &name, optional)? {
            files = key_files("secret", &name, data, s.items.as_ref(), optional)?;
        }
        own_dir
    } else if let Some(d) = &v.downward_api {
        for item in d.items.iter().flatten() {
            files.push((
                PathBuf::from(&item.path),
                downward_file(pod, item, inp, ignored),
            ));
        }
        own_dir
    } else if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let optional = cm.optional.unwrap_or(false);
                if let Some(data) = lookup("configmap", inp.config_maps, &cm.name, optional)? {
                    files.extend(key_files(
                        "configmap",
                        &cm.name,
                        data,
                        cm.items.as_ref(),
                        optional,
                    )?);
                }
            }
            if let Some(s) = &src.secret {
                let optional = s.optional.unwrap_or(false);
                if let Some(data) = lookup("secret", inp.secrets, &s.name, optional)? {
                    files.extend(key_files(
                        "secret",
                        &s.name,
                        data,
                        s.items.as_ref(),
                        optional,
                    )?);
                }
            }
            if let Some(d) = &src.downward_api {
                for item in d.items.iter().flatten() {
                    files.push((
                        PathBuf::from(&item.path),
                        downward_file(pod, item, inp, ignored),
                    ));
                }
            }
            if let Some(t) = &src.service_account_token {
                match inp.sa_token {
                    Some(tok) => files.push((PathBuf::from(&t.path), tok.as_bytes().to_vec())),
                    None => ignored.push(format!(
                        "volume {}: service-account token could not be issued",
                        v.name
                    )),
                }
            }
            if src.cluster_trust_bundle.is_some() || src.pod_certificate.is_some() {
                ignored.push(format!(
                    "volume {}: clusterTrustBundle/podCertificate projections",
                    v.name
                ));
            }
        }
        own_dir
    } else if v.ephemeral.is_some() {
        ignored.push(format!(
            "volume {}: ephemeral volume treated as emptyDir",
            v.name
        ));
        own_dir
    } else {
        return Err(PlanError::Unsupported(format!(
            "volume {} has an unsupported type",
            v.name
        )));
    };
    Ok(VolumePlan {
        name: v.name.clone(),
        host_dir,
        files,
    })
}

fn downward_file(
    pod: &Pod,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
    inp: &PlanInputs<'_>,
    ignored: &mut Vec<String>,
) -> Vec<u8> {
    if let Some(f) = &item.field_ref {
        if let Some(v) = field_value(pod, &f.field_path, inp.pod_ip, inp.host_ip, inp.node_name) {
            return v.into_bytes();
        }
        ignored.push(format!("downward API field {:?}", f.field_path));
    }
    if item.resource_field_ref.is_some() {
        ignored.push(format!("downward API resourceFieldRef for {}", item.path));
    }
    Vec::new()
}
