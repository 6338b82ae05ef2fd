//! What a pod needs before its first container starts: its ConfigMaps and Secrets
//! fetched, a service-account token issued (TokenRequest), a pre-bound PV for each
//! claim, the plan (see [`crate::kubelet::plan`]), the volume files written, and its
//! `/etc/hosts`. Anything missing keeps the pod Pending with a [`PrepareError`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, ServiceAccount,
};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use super::PodWorker;
use crate::kubelet::plan::{self, Data, PlanError, PlanInputs, PodPlan};

impl PodWorker {
    /// Writes the pod's `/etc/hosts` (see [`crate::kubelet::dns`]) and registers it for
    /// updates; None when containers cannot get a mount namespace.
    pub(super) fn prepare_hosts_file(&self) -> Option<PathBuf> {
        if !self.shared.pod_hosts {
            return None;
        }
        let path = self.pod_dir.join("etc-hosts");
        let own = crate::kubelet::dns::PodRecord::from_pod(&self.pod);
        match self
            .shared
            .with_dns(|d| d.register(&self.uid, path.clone(), own, self.ip))
        {
            Some(Ok(())) => Some(path),
            Some(Err(e)) => {
                tracing::warn!(pod = %self.key(), error = %e, "cannot write the pod's hosts file; it gets the host's");
                None
            }
            None => None,
        }
    }

    /// Fetches referenced objects, plans the pod and materialises its volumes.
    pub(super) async fn prepare(&self) -> Result<PodPlan, PrepareError> {
        let (cm_names, secret_names) = plan::referenced_objects(&self.pod);
        let mut config_maps = BTreeMap::new();
        let cms: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &self.ns);
        for n in cm_names {
            if let Some(cm) = cms.get_opt(&n).await.map_err(other)? {
                let mut d: Data = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                d.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                config_maps.insert(n, d);
            }
        }
        let mut secrets = BTreeMap::new();
        let sapi: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.ns);
        for n in secret_names {
            if let Some(s) = sapi.get_opt(&n).await.map_err(other)? {
                let d: Data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                secrets.insert(n, d);
            }
        }
        let token = match plan::token_request(&self.pod) {
            Some((aud, exp)) => self.issue_token(aud, exp).await,
            None => None,
        };
        let inputs = PlanInputs {
            pod_ip: self.ip,
            host_ip: self.shared.host_ip,
            node_name: &self.shared.config.node_name,
            images: &self.shared.config.images,
            config_maps: &config_maps,
            secrets: &secrets,
            sa_token: token.as_deref(),
            pod_dir: &self.pod_dir,
            data_root: &self.shared.config.root_dir.join("data"),
            base_env: &self.shared.base_env,
            api: self.shared.config.api.as_ref(),
        };
        let plan = plan::plan(&self.pod, &inputs).map_err(PrepareError::Plan)?;
        for v in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            if let Some(pvc) = &v.persistent_volume_claim {
                let dir = inputs.data_root.join(&self.ns).join(&pvc.claim_name);
                self.ensure_pv(&pvc.claim_name, &dir).await?;
            }
        }
        for v in &plan.volumes {
            std::fs::create_dir_all(&v.host_dir).map_err(|e| {
                PrepareError::Other(format!("creating {}: {e}", v.host_dir.display()))
            })?;
            for (rel, bytes) in &v.files {
                let path = v.host_dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        PrepareError::Other(format!("creating {}: {e}", parent.display()))
                    })?;
                }
                std::fs::write(&path, bytes)
                    .map_err(|e| PrepareError::Other(format!("writing {}: {e}", path.display())))?;
            }
        }
        Ok(plan)
    }

    /// Gives the claim a pre-bound, Retain-policy hostPath PV at its data dir, so
    /// the controller-manager's binder marks the PVC Bound. A missing PVC blocks
    /// the pod (like the kubelet); a failure to create the PV is only logged.
    async fn ensure_pv(&self, claim: &str, dir: &Path) -> Result<(), PrepareError> {
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.shared.client.clone(), &self.ns);
        let Some(pvc) = pvcs.get_opt(claim).await.map_err(other)? else {
            return Err(PrepareError::Other(format!(
                "persistentvolumeclaim {claim:?} not found"
            )));
        };
        let spec = pvc.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty()) {
            return Ok(());
        }
        let mut name = format!("strata-e2e-{}-{claim}", self.ns);
        name.truncate(253);
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"strata-e2e/local": "true"}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": self.ns, "name": claim, "uid": pvc.metadata.uid},
            }
        }))
        .map_err(|e| PrepareError::Other(format!("building PV: {e}")))?;
        let pvs: Api<PersistentVolume> = Api::all(self.shared.client.clone());
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(pod = %self.key(), claim, pv = %name, "created pre-bound PV"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.key(), claim, error = %e, "could not create a PV; the PVC stays Pending")
            }
        }
        Ok(())
    }

    async fn issue_token(
        &self,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Option<String> {
        let sa_name = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &self.ns);
        let req: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": expiration.unwrap_or(3607).max(600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            }
        })).ok()?;
        match api
            .create_token_request(&sa_name, &PostParams::default(), &req)
            .await
        {
            Ok(tr) => tr.status.map(|s| s.token),
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "TokenRequest failed; the token volume will lack a token");
                None
            }
        }
    }
}

#[derive(Debug)]
pub(super) enum PrepareError {
    Plan(PlanError),
    Other(String),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Plan(e) => write!(f, "{e}"),
            PrepareError::Other(m) => f.write_str(m),
        }
    }
}

fn other(e: kube::Error) -> PrepareError {
    PrepareError::Other(e.to_string())
}
