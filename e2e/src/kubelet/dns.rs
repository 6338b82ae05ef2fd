//! Cluster DNS for pod processes, the way the process kubelet can offer it:
//! every container runs in its own mount namespace with a kubelet-managed
//! `/etc/hosts` bind-mounted over the host's (the real kubelet manages a pod's
//! `/etc/hosts` too). Besides the pod's own hostname and its `hostAliases`, the
//! file carries the names cluster DNS would answer:
//!
//! - `<hostname>.<subdomain>.<ns>.svc.cluster.local` for pods whose `subdomain`
//!   names a headless Service (StatefulSet pods), while ready — or always when
//!   the Service publishes not-ready addresses;
//! - `<service>.<ns>.svc.cluster.local` → the IPs of the ready pods its selector
//!   matches. For a ClusterIP Service real DNS answers the virtual IP; there is no
//!   kube-proxy here, so the name resolves to the backing pods directly (like a
//!   headless Service). ExternalName Services are not resolved.
//!
//! plus the short forms a pod's resolv.conf search path (`<ns>.svc.cluster.local
//! svc.cluster.local cluster.local`) would expand. glibc reads `/etc/hosts` on
//! every lookup, so rewriting the file in place (same inode, which the bind mount
//! keeps) is seen by running processes at their next resolution.
//!
//! This module is the pure part (records → file text); `Registry` keeps the
//! records and rewrites the per-pod files; the mount happens in the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;

pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What DNS needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ip: Option<Ipv4Addr>,
    pub ready: bool,
    /// `spec.hostAliases`: (ip, hostnames).
    pub host_aliases: Vec<(String, Vec<String>)>,
}

impl PodRecord {
    pub fn from_pod(pod: &Pod) -> PodRecord {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        PodRecord {
            namespace: pod.namespace().unwrap_or_else(|| "default".into()),
            name: pod.name_any(),
            hostname: spec
                .and_then(|s| s.hostname.clone())
                .unwrap_or_else(|| pod.name_any()),
            subdomain: spec.and_then(|s| s.subdomain.clone()),
            labels: pod.labels().clone(),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            host_aliases: spec
                .and_then(|s| s.host_aliases.as_ref())
                .map(|a| {
                    a.iter()
                        .map(|h| (h.ip.clone(), h.hostnames.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// What DNS needs to know about a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    /// None: a Service without selector (or ExternalName), not resolved here.
    pub selector: Option<BTreeMap<String, String>>,
    pub headless: bool,
    pub publish_not_ready: bool,
}

impl ServiceRecord {
    pub fn from_service(svc: &Service) -> ServiceRecord {
        let spec = svc.spec.as_ref();
        let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        ServiceRecord {
            namespace: svc.namespace().unwrap_or_else(|| "default".into()),
            name: svc.name_any(),
            selector: spec
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty() && !external),
            headless: spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            publish_not_ready: spec
                .and_then(|s| s.publish_not_ready_addresses)
                .unwrap_or(false),
        }
    }

    fn selects(&self, pod: &PodRecord) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|sel| sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
    }
}

/// Fully qualified names → addresses, for the whole cluster.
pub fn cluster_records(
    pods: &[PodRecord],
    services: &[ServiceRecord],
) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut out: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for svc in services {
        for pod in pods.iter().filter(|p| svc.selects(p)) {
            let Some(ip) = pod.ip else { continue };
            if !(pod.ready || svc.publish_not_ready) {
                continue;
            }
            out.entry(format!(
                "{}.{}.svc.{CLUSTER_DOMAIN}",
                svc.name, svc.namespace
            ))
            .or_default()
            .insert(ip);
            if svc.headless && pod.subdomain.as_deref() == Some(svc.name.as_str()) {
                out.entry(format!(
                    "{}.{}.{}.svc.{CLUSTER_DOMAIN}",
                    pod.hostname, svc.name, svc.namespace
                ))
                .or_default()
                .insert(ip);
            }
        }
    }
    out
}

/// The names a pod in `namespace` can use for a fully qualified service name:
/// the FQDN and what its search path expands.
fn name_forms(fqdn: &str, namespace: &str) -> Vec<String> {
    let mut forms = vec![fqdn.to_string()];
    if let Some(rest) = fqdn.strip_suffix(&format!(".{CLUSTER_DOMAIN}")) {
        // <x>.<ns>.svc
        forms.push(rest.to_string());
        if let Some(x_ns) = rest.strip_suffix(".svc") {
            // <x>.<ns>
            forms.push(x_ns.to_string());
            if let Some(x) = x_ns.strip_suffix(&format!(".{namespace}")) {
                // <x>, inside its own namespace
                forms.push(x.to_string());
            }
        }
    }
    forms
}

/// The `/etc/hosts` of one pod.
pub fn hosts_file(
    own: &PodRecord,
    own_ip: Ipv4Addr,
    records: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> String {
    let mut out = String::from(
        "# Managed by the strata-e2e process kubelet (cluster DNS for this pod).\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let mut own_names = vec![own.hostname.clone()];
    if let Some(sub) = &own.subdomain {
        own_names.insert(
            0,
            format!(
                "{}.{sub}.{}.svc.{CLUSTER_DOMAIN}",
                own.hostname, own.namespace
            ),
        );
    }
    out.push_str(&format!("{own_ip}\t{}\n", own_names.join(" ")));
    for (ip, names) in &own.host_aliases {
        if !names.is_empty() {
            out.push_str(&format!("# hostAliases\n{ip}\t{}\n", names.join(" ")));
        }
    }
    for (fqdn, ips) in records {
        let names = name_forms(fqdn, &own.namespace).join(" ");
        for ip in ips {
            out.push_str(&format!("{ip}\t{names}\n"));
        }
    }
    out
}

/// The kubelet's view of pods and Services, and the hosts files it maintains.
#[derive(Debug, Default)]
pub struct Registry {
    pods: BTreeMap<String, PodRecord>,
    services: BTreeMap<(String, String), ServiceRecord>,
    /// Running pods' hosts files: uid → (path, own record, own ip, last content).
    files: BTreeMap<String, HostsFile>,
}

#[derive(Debug)]
struct HostsFile {
    path: PathBuf,
    own: PodRecord,
    ip: Ipv4Addr,
    written: String,
}

impl Registry {
    pub fn set_pod(&mut self, uid: &str, record: Option<PodRecord>) -> bool {
        match record {
            Some(r) => self.pods.insert(uid.to_string(), r.clone()) != Some(r),
            None => self.pods.remove(uid).is_some(),
        }
    }

    /// Drops pods not in `uids` (after a watch restart).
    pub fn retain_pods(&mut self, uids: &[String]) {
        self.pods.retain(|uid, _| uids.contains(uid));
    }

    pub fn set_service(&mut self, record: ServiceRecord, deleted: bool) -> bool {
        let key = (record.namespace.clone(), record.name.clone());
        if deleted {
            self.services.remove(&key).is_some()
        } else {
            self.services.insert(key, record.clone()) != Some(record)
        }
    }

    fn records(&self) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
        let pods: Vec<PodRecord> = self.pods.values().cloned().collect();
        let services: Vec<ServiceRecord> = self.services.values().cloned().collect();
        cluster_records(&pods, &services)
    }

    /// Registers (and writes) the hosts file of a pod about to start.
    pub fn register(
        &mut self,
        uid: &str,
        path: PathBuf,
        own: PodRecord,
        ip: Ipv4Addr,
    ) -> std::io::Result<()> {
        let text = hosts_file(&own, ip, &self.records());
        std::fs::write(&path, &text)?;
        self.files.insert(
            uid.to_string(),
            HostsFile {
                path,
                own,
                ip,
                written: text,
            },
        );
        Ok(())
    }

    pub fn unregister(&mut self, uid: &str) {
        self.files.remove(uid);
    }

    /// Rewrites every hosts file whose content changed (in place: the bind
    /// mounts follow the inode).
    pub fn refresh(&mut self) {
        let records = self.records();
        for f in self.files.values_mut() {
            let text = hosts_file(&f.own, f.ip, &records);
            if text == f.written {
                continue;
            }
            match std::fs::write(&f.path, &text) {
                Ok(()) => f.written = text,
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), error = %e, "cannot rewrite hosts file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, sub: Option<&str>, ip: Option<[u8; 4]>, ready: bool) -> PodRecord {
        PodRecord {
            namespace: "ns".into(),
            name: name.into(),
            hostname: name.into(),
            subdomain: sub.map(Into::into),
            labels: BTreeMap::from([("app".to_string(), "db".to_string())]),
            ip: ip.map(Ipv4Addr::from),
            ready,
            host_aliases: vec![],
        }
    }

    fn svc(name: &str, headless: bool, publish: bool) -> ServiceRecord {
        ServiceRecord {
            namespace: "ns".into(),
            name: name.into(),
            selector: Some(BTreeMap::from([("app".to_string(), "db".to_string())])),
            headless,
            publish_not_ready: publish,
        }
    }

    #[test]
    fn statefulset_pods_get_stable_names_before_ready_when_the_service_publishes_them() {
        let pods = [
            pod("db-0", Some("db-hl"), Some([127, 0, 0, 2]), false),
            pod("db-1", Some("db-hl"), Some([127, 0, 0, 3]), true),
            pod("db-2", Some("db-hl"), None, false),
        ];
        let r = cluster_records(&pods, &[svc("db-hl", true, true), svc("db", false, false)]);
        let ip = |s: &str| r.get(s).cloned().unwrap_or_default();
        assert_eq!(
            ip("db-0.db-hl.ns.svc.cluster.local"),
            BTreeSet::from([Ipv4Addr::new(127, 0, 0, 2)])
        );
        assert!(
            !r.contains_key("db-2.db-hl.ns.svc.cluster.local"),
            "no ip yet"
        );
        // The ClusterIP service resolves to ready backends only.
        assert_eq!(
            ip("db.ns.svc.cluster.local"),
            BTreeSet::from([Ipv4Addr::new(127, 0, 0, 3)])
        );
        // A pod is named under a headless service only if its subdomain says so.
        assert!(!r.contains_key("db-1.db.ns.svc.cluster.local"));
    }

    #[test]
    fn not_ready_pods_are_left_out_unless_published() {
        let pods = [pod("db-0", Some("db-hl"), Some([127, 0, 0, 2]), false)];
        let r = cluster_records(&pods, &[svc("db-hl", true, false)]);
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn hosts_file_has_own_name_aliases_and_search_path_forms() {
        let mut own = pod("db-0", Some("db-hl"), None, false);
        own.host_aliases = vec![("10.1.1.1".into(), vec!["foo.local".into()])];
        let records = BTreeMap::from([
            (
                "db.ns.svc.cluster.local".to_string(),
                BTreeSet::from([Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)]),
            ),
            (
                "api.other.svc.cluster.local".to_string(),
                BTreeSet::from([Ipv4Addr::new(127, 0, 0, 9)]),
            ),
        ]);
        let text = hosts_file(&own, Ipv4Addr::new(127, 0, 0, 2), &records);
        assert!(text.contains("127.0.0.2\tdb-0.db-hl.ns.svc.cluster.local db-0\n"));
        assert!(text.contains("10.1.1.1\tfoo.local\n"));
        assert!(text.contains("127.0.0.3\tdb.ns.svc.cluster.local db.ns.svc db.ns db\n"));
        assert!(text.contains("127.0.0.4\tdb.ns.svc.cluster.local db.ns.svc db.ns db\n"));
        // Another namespace's service has no bare short name here.
        assert!(text.contains("127.0.0.9\tapi.other.svc.cluster.local api.other.svc api.other\n"));
    }

    #[test]
    fn registry_rewrites_files_only_when_records_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let mut reg = Registry::default();
        reg.set_service(svc("db-hl", true, true), false);
        reg.register(
            "u0",
            path.clone(),
            pod("db-0", Some("db-hl"), None, false),
            Ipv4Addr::new(127, 0, 0, 2),
        )
        .unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("db-1"));
        assert!(reg.set_pod(
            "u1",
            Some(pod("db-1", Some("db-hl"), Some([127, 0, 0, 3]), false))
        ));
        // Same record again: no change reported.
        assert!(!reg.set_pod(
            "u1",
            Some(pod("db-1", Some("db-hl"), Some([127, 0, 0, 3]), false))
        ));
        reg.refresh();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("127.0.0.3\tdb-1.db-hl.ns.svc.cluster.local"));
        reg.set_pod("u1", None);
        reg.refresh();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("db-1"));
    }
}
