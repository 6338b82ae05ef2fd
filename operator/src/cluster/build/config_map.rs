//! The broker config file (`broker.toml`), shared by every broker of a cluster.
//! Per-broker values come from environment variables instead (see `statefulset`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::ConfigMap;

use super::object_meta;
use crate::cluster::validate::render_config;
use crate::cluster::ValidatedCluster;

/// Key of the config file inside the ConfigMap.
pub const CONFIG_FILE: &str = "broker.toml";

pub fn build(cluster: &ValidatedCluster) -> ConfigMap {
    let mut toml =
        String::from("# Managed by strata-operator; edit spec.config of the Cluster instead.\n");
    toml.push_str(&format!(
        "cluster_id = {}\n",
        serde_json::Value::String(cluster.cluster_id.clone())
    ));
    toml.push_str(&crate::cluster::security::broker_config(cluster));
    toml.push_str(&render_config(&cluster.spec.config));
    ConfigMap {
        metadata: object_meta(cluster, cluster.names.config_map()),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), toml)])),
        ..ConfigMap::default()
    }
}

/// Stable hash of the ConfigMap data; a change rolls the brokers (pod template annotation).
pub fn content_hash(cm: &ConfigMap) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    if let Some(data) = &cm.data {
        for (k, v) in data {
            parts.push(k.as_bytes());
            parts.push(v.as_bytes());
        }
    }
    stable_hash(&parts)
}

/// FNV-1a over length-prefixed parts, as 16 hex digits: stable across Rust
/// releases, unlike `DefaultHasher`'s algorithm.
pub fn stable_hash(parts: &[&[u8]]) -> String {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for p in parts {
        p.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;
    use crate::cluster::validate;

    #[test]
    fn config_file_holds_cluster_id_and_user_keys() {
        let v = validate(&cluster("config:\n  default_partitions: \"6\"")).expect("valid");
        let cm = build(&v);
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-config"));
        let toml = &cm.data.as_ref().expect("data")[CONFIG_FILE];
        assert!(toml.contains("cluster_id = \"7c0b6a4e-1111-2222-3333-444455556666\"\n"));
        assert!(toml.contains("default_partitions = 6\n"));
        assert!(
            !toml.contains("node_id"),
            "node_id comes from the pod ordinal"
        );
    }

    #[test]
    fn hash_changes_with_config_only() {
        let a = build(&validate(&cluster("replicas: 1")).expect("valid"));
        let b = build(&validate(&cluster("replicas: 5")).expect("valid"));
        let c =
            build(&validate(&cluster("config:\n  log_segment_bytes: \"1024\"")).expect("valid"));
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
    }
}
