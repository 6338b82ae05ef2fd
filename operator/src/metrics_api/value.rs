//! The pure part of the External metrics API: the metric value (KEDA's Kafka
//! scaler semantics), label-selector parsing, and the JSON documents the
//! aggregation layer and the HPA controller read.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::consumergroup::hpa::{GROUP_LABEL, METRIC_NAME};

/// API group and version served.
pub const GROUP: &str = "external.metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The value reported for a group: the sum of its per-partition lag, capped at
/// `lagPerReplica × partitions` so that `ceil(value / lagPerReplica)` (what the
/// HPA computes from its AverageValue target) never exceeds the partition
/// count: consumers beyond it would sit idle. No cap while partitions are unknown.
pub fn metric_value(total_lag: i64, lag_per_replica: i64, partitions: i32) -> i64 {
    let lag = total_lag.max(0);
    if partitions <= 0 {
        return lag;
    }
    lag.min(lag_per_replica.max(1).saturating_mul(i64::from(partitions)))
}

/// Parses the equality terms of a label selector (`a=b,c==d`), the form the
/// HPA controller sends for `matchLabels`. Anything else is refused.
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))
            .ok_or_else(|| format!("unsupported selector term `{term}` (only key=value)"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The ConsumerGroup a metric selector names.
pub fn selected_group(selector: &BTreeMap<String, String>) -> Result<&str, String> {
    selector
        .get(GROUP_LABEL)
        .map(String::as_str)
        .filter(|g| !g.is_empty())
        .ok_or_else(|| {
            format!("the metric selector must name the ConsumerGroup with {GROUP_LABEL}")
        })
}

/// `ExternalMetricValueList` with one item.
pub fn value_list(labels: &BTreeMap<String, String>, value: i64, timestamp: &str) -> Value {
    json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": [{
            "metricName": METRIC_NAME,
            "metricLabels": labels,
            "timestamp": timestamp,
            "value": value.to_string(),
        }],
    })
}

/// Discovery of the group version (`/apis/external.metrics.k8s.io/v1beta1`).
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{
            "name": METRIC_NAME,
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }],
    })
}

/// Discovery of the group (`/apis/external.metrics.k8s.io`).
pub fn api_group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`: the one group this server has.
pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]})
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_the_lag_capped_at_one_replica_per_partition() {
        // Plenty of partitions: the plain sum.
        assert_eq!(metric_value(2500, 1000, 12), 2500);
        // HPA: ceil(2500 / 1000) = 3 replicas.
        // Few partitions: capped so the HPA asks for at most 4 replicas.
        assert_eq!(metric_value(1_000_000, 1000, 4), 4000);
        assert_eq!(metric_value(-3, 1000, 4), 0);
        assert_eq!(metric_value(5000, 1000, 0), 5000);
        assert_eq!(metric_value(i64::MAX, i64::MAX, 3), i64::MAX);
    }

    #[test]
    fn selectors_with_equality_terms_parse() {
        let s = parse_selector("strata.dev/consumergroup=orders, team==a").expect("parse");
        assert_eq!(s["strata.dev/consumergroup"], "orders");
        assert_eq!(s["team"], "a");
        assert_eq!(selected_group(&s), Ok("orders"));
        assert!(parse_selector("").expect("empty").is_empty());
        assert!(parse_selector("team!=a").is_err());
        assert!(parse_selector("team in (a,b)").is_err());
        assert!(selected_group(&parse_selector("team=a").expect("parse")).is_err());
    }

    #[test]
    fn documents_have_the_shapes_the_aggregator_and_hpa_read() {
        let labels = BTreeMap::from([(GROUP_LABEL.to_string(), "orders".to_string())]);
        let v = value_list(&labels, 4000, "2025-01-01T00:00:00Z");
        assert_eq!(v["kind"], "ExternalMetricValueList");
        assert_eq!(v["apiVersion"], "external.metrics.k8s.io/v1beta1");
        assert_eq!(v["items"][0]["metricName"], METRIC_NAME);
        assert_eq!(v["items"][0]["value"], "4000");
        assert_eq!(v["items"][0]["metricLabels"][GROUP_LABEL], "orders");
        let r = resource_list();
        assert_eq!(r["groupVersion"], "external.metrics.k8s.io/v1beta1");
        assert_eq!(r["resources"][0]["name"], METRIC_NAME);
        assert_eq!(r["resources"][0]["namespaced"], true);
        assert_eq!(api_group_list()["groups"][0]["name"], GROUP);
        assert_eq!(status(404, "NotFound", "x")["code"], 404);
    }
}
