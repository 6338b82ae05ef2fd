//! The example manifests in `manifests/` parse into the CRD types without
//! unknown fields and pass the operator's own validation.

use std::path::PathBuf;

use serde::Deserialize;
use strata_operator::crd::{Cluster, ConsumerGroup, Topic, User};

fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every field of `input` must survive a round trip (no field the type does not know).
fn assert_known_fields(input: &serde_json::Value, output: &serde_json::Value, path: &str) {
    match (input, output) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in a {
                let child = format!("{path}.{k}");
                let other = b.get(k).unwrap_or_else(|| panic!("unknown field {child}"));
                assert_known_fields(v, other, &child);
            }
        }
        (serde_json::Value::Array(a), serde_json::Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_known_fields(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &serde_json::Value) -> T {
    let t: T = serde_json::from_value(v.clone()).expect("typed");
    let back = serde_json::to_value(&t).expect("json");
    assert_known_fields(&v["spec"], &back["spec"], "spec");
    t
}

#[test]
fn cluster_manifest_is_valid() {
    let all = docs("cluster.yaml");
    let cluster = all
        .iter()
        .find(|d| d["kind"] == "Cluster")
        .expect("a Cluster");
    let mut c: Cluster = typed(cluster);
    assert_eq!(c.spec.replicas, 3);
    assert!(c.spec.tiered_storage.is_some());
    // What the API server would add before the operator sees it.
    c.metadata.namespace = Some("default".into());
    c.metadata.uid = Some("uid".into());
    strata_operator::cluster::validate(&c).expect("operator validation");
    assert!(all.iter().any(|d| d["kind"] == "Secret"));
}

#[test]
fn topic_and_group_manifests_are_valid() {
    let t: Topic = typed(&docs("topic.yaml")[0]);
    assert_eq!(t.spec.cluster_ref, "demo");
    let g: ConsumerGroup = typed(&docs("consumer-group.yaml")[0]);
    assert_eq!(g.spec.group_id, "orders-processor");
    let a = g.spec.autoscaling.expect("autoscaling");
    assert_eq!(a.target_ref.name, "orders-consumer");
    assert_eq!(a.scale_down_stabilization_seconds, Some(120));
    let d = &docs("consumer-deployment.yaml")[0];
    assert_eq!(d["metadata"]["name"], "orders-consumer");
}

#[test]
fn user_manifest_is_valid() {
    let u: User = typed(&docs("user.yaml")[0]);
    assert_eq!(u.spec.cluster_ref, "demo");
    let bindings =
        strata_operator::user::plan::desired_acls(&u.spec, "User:orders-app").expect("valid ACLs");
    assert_eq!(bindings.len(), 4, "{bindings:?}");
    let quotas = strata_operator::user::plan::desired_quotas(&u.spec);
    assert_eq!(quotas.get("producer_byte_rate"), Some(&10485760.0));
    assert_eq!(quotas.get("consumer_byte_rate"), Some(&20971520.0));
    assert_eq!(quotas.len(), 2);
}
