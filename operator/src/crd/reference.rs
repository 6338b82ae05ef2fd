//! Renders `docs/crds.md` from the generated CRD schemas, so the reference
//! cannot drift from the types (the staleness test covers it like the YAML).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;
use serde_json::Value;

use super::{Cluster, ConsumerGroup, Topic, User};

const INTRO: &str = "# CRD reference

Generated from the Rust types by `cargo run -p strata-operator --bin crdgen`; do not edit.
All resources are in API group `strata.dev`, version `v1alpha1`, and namespaced.
Rules marked *CEL* are enforced by the API server when an object is created or updated;
the operator reports everything else in the `Ready` condition of the status.
";

/// The whole markdown document.
pub fn markdown() -> String {
    let mut out = String::from(INTRO);
    for crd in [
        Cluster::crd(),
        Topic::crd(),
        ConsumerGroup::crd(),
        User::crd(),
    ] {
        render_crd(&crd, &mut out);
        if let Some(notes) = notes(&crd.spec.names.kind) {
            out.push_str(notes);
        }
    }
    out
}

/// Prose that the schema cannot carry, after a kind's field tables.
fn notes(kind: &str) -> Option<&'static str> {
    match kind {
        "ConsumerGroup" => Some(CONSUMER_GROUP_NOTES),
        _ => None,
    }
}

const CONSUMER_GROUP_NOTES: &str = "
### Autoscaling (`spec.autoscaling`)

The operator owns an `autoscaling/v2` HorizontalPodAutoscaler with the
ConsumerGroup's name: `scaleTargetRef` = `targetRef` (apps/v1),
`minReplicas`, `maxReplicas` (default: `status.partitions`, the partition count
of the group's topics), one `External` metric `strata_consumergroup_lag` with
selector `strata.dev/consumergroup=<name>` and target `AverageValue:
lagPerReplica`, and `behavior.scaleDown.stabilizationWindowSeconds` =
`scaleDownStabilizationSeconds` when set. The operator serves the metric
itself (`external.metrics.k8s.io/v1beta1`, APIService in the chart): the sum of
the per-partition lag, capped at `lagPerReplica × partitions` (KEDA's Kafka
scaler semantics with `scaleToZeroOnInvalidOffset`; see
[operations.md](operations.md#keda) for where KEDA's defaults differ), so the HPA never asks for more replicas than partitions.
`status.desiredReplicas` shows the replica count the current lag asks for,
`status.hpa` the HPA's name. Removing `spec.autoscaling` deletes the HPA.

### Offset reset (`spec.offsetReset`)

A command, not a state: each new `requestId` asks for one reset of the
committed offsets of `spec.topics` (or of every topic with commits) to
`target` (`Earliest`, `Latest`, an offset, or an RFC 3339 timestamp). It runs
only while the group is Empty (no members); until then `status.offsetReset`
is `Pending`. `Running` is recorded before the broker call; `Succeeded` and
`Failed` are final. A `requestId` never runs twice: one found `Running` (the
operator stopped mid-call) becomes `Failed` with an unknown outcome.
See [operations.md](operations.md#resetting-a-groups-offsets).
";

fn render_crd(crd: &CustomResourceDefinition, out: &mut String) {
    let names = &crd.spec.names;
    out.push_str(&format!("\n## {}\n\n", names.kind));
    let short = names.short_names.clone().unwrap_or_default().join(", ");
    out.push_str(&format!(
        "`kubectl get {}` (short name: `{short}`)\n",
        names.plural
    ));
    let Some(version) = crd.spec.versions.first() else {
        return;
    };
    if let Some(sub) = &version.subresources {
        let mut list = Vec::new();
        if sub.status.is_some() {
            list.push("status");
        }
        if sub.scale.is_some() {
            list.push("scale (`kubectl scale`, HPA)");
        }
        out.push_str(&format!("\nSubresources: {}.\n", list.join(", ")));
    }
    if let Some(cols) = &version.additional_printer_columns {
        let cols: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        out.push_str(&format!("\nColumns: {}.\n", cols.join(", ")));
    }
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    for part in ["spec", "status"] {
        let node = &schema["properties"][part];
        if node.is_null() {
            continue;
        }
        out.push_str(&format!(
            "\n### {part}\n\n| Field | Type | Default | Description |\n|---|---|---|---|\n"
        ));
        walk(node, part, out);
    }
}

fn type_of(node: &Value) -> String {
    if node.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    match node["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&node["items"])),
        Some("object") if node.get("additionalProperties").is_some() => {
            format!("map[string]{}", type_of(&node["additionalProperties"]))
        }
        Some(t) => t.to_string(),
        None => "object".into(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn walk(node: &Value, path: &str, out: &mut String) {
    let Some(props) = node["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = node["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, child) in props {
        let field = format!("{path}.{name}");
        let mut desc = child["description"].as_str().unwrap_or("").to_string();
        if required.contains(&name.as_str()) {
            desc.push_str(" **Required.**");
        }
        if let Some(e) = child["enum"].as_array() {
            let vals: Vec<String> = e.iter().map(|v| v.to_string().replace('"', "")).collect();
            desc.push_str(&format!(" One of: {}.", vals.join(", ")));
        }
        for (key, label) in [
            ("minimum", "min"),
            ("maximum", "max"),
            ("minLength", "min length"),
        ] {
            if let Some(v) = child.get(key).and_then(Value::as_f64) {
                desc.push_str(&format!(" {label} {v}."));
            }
        }
        if let Some(rules) = child["x-kubernetes-validations"].as_array() {
            for r in rules {
                desc.push_str(&format!(
                    " *CEL:* `{}` ({}).",
                    r["rule"].as_str().unwrap_or(""),
                    r["message"].as_str().unwrap_or("")
                ));
            }
        }
        let default = child
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{field}` | {} | {} | {} |\n",
            type_of(child),
            cell(&default),
            cell(desc.trim())
        ));
        // Kubernetes' own types (resources, conditions) are documented upstream.
        let upstream = ["resources", "conditions"].contains(&name.as_str());
        if !upstream {
            if child["type"] == "array" {
                walk(&child["items"], &format!("{field}[]"), out);
            } else {
                walk(child, &field, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_lists_fields_rules_and_defaults() {
        let md = markdown();
        assert!(md.contains("## Cluster"));
        assert!(md.contains("| `spec.tieredStorage.bucket` | string |"));
        assert!(md.contains("*CEL:* `self >= oldSelf` (partitions may only increase)"));
        assert!(md.contains("| `spec.replicas` | integer | `3` |"));
        assert!(md.contains("`status.lag[].lag`"));
        assert!(md.contains("### Autoscaling (`spec.autoscaling`)"));
        assert!(md.contains("| `spec.autoscaling.scaleDownStabilizationSeconds` | integer |"));
        assert!(md.contains("One of: Pending, Running, Succeeded, Failed."));
    }

    #[test]
    fn docs_crds_md_is_current() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/crds.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == markdown(),
            "{} is stale; run `cargo run -p strata-operator --bin crdgen`",
            path.display()
        );
    }
}
