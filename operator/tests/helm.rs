//! `helm lint` and `helm template` on the chart, with the helm binary that
//! `e2e/setup.sh` builds. Skips loudly when it is missing, unless
//! `STRATA_E2E_REQUIRED=1`.

mod support;

use std::path::PathBuf;

use support::helm::{chart, helm, run, template};

fn kinds(rendered: &str) -> Vec<String> {
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn chart_lints_clean() {
    let Some(helm) = helm() else { return };
    let chart = chart();
    let out = run(
        &helm,
        &["lint", "--strict", chart.to_str().expect("utf-8 path")],
    );
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn chart_renders_cluster_wide_rbac_by_default() {
    let Some(helm) = helm() else { return };
    let out = template(&helm, &[]);
    let kinds = kinds(&out);
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert!(out.contains("command: [\"strata-operator\"]"), "{out}");
    assert!(out.contains("resources: [\"leases\"]"));
    // The External metrics API for ConsumerGroup HPAs, and what it needs.
    assert!(kinds.iter().any(|k| k == "APIService"), "{kinds:?}");
    assert!(out.contains("name: v1beta1.external.metrics.k8s.io"));
    assert!(out.contains("name: strata-operator-metrics-api"));
    assert!(out.contains("name: extension-apiserver-authentication-reader"));
    assert!(out.contains("STRATA_OPERATOR_METRICS_API_LISTEN"));
    assert!(out.contains("resources: [\"horizontalpodautoscalers\"]"));
    // Never more than the operator needs. Secrets: it writes the cluster CA,
    // broker certificates, admin tokens and Users' credentials (and reads them
    // back); nothing more, and no wildcard rules.
    assert!(
        out.contains(
            "resources: [\"secrets\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"update\", \"delete\"]"
        ),
        "{out}"
    );
    assert!(!out.contains("\"*\""), "no wildcard RBAC");
}

#[test]
fn chart_with_watch_namespaces_uses_roles_only() {
    let Some(helm) = helm() else { return };
    let out = template(
        &helm,
        &["watchNamespaces={team-a,team-b}", "logLevel=debug"],
    );
    let kinds = kinds(&out);
    assert!(!kinds.iter().any(|k| k == "ClusterRole"), "{kinds:?}");
    // One Role per watched namespace plus the leader-election Role.
    assert_eq!(
        kinds.iter().filter(|k| *k == "Role").count(),
        3,
        "{kinds:?}"
    );
    assert!(out.contains("namespace: team-a") && out.contains("namespace: team-b"));
    assert!(out.contains("value: \"team-a,team-b\""), "{out}");
    assert!(out.contains("value: \"debug\""));
}

#[test]
fn chart_without_the_metrics_api_has_no_apiservice() {
    let Some(helm) = helm() else { return };
    let out = template(&helm, &["metricsApi.enabled=false"]);
    assert!(!kinds(&out).iter().any(|k| k == "APIService"));
    assert!(!out.contains("METRICS_API"), "{out}");
    assert!(!out.contains("namespace: kube-system"), "{out}");
}

#[test]
fn chart_crds_match_the_generated_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in [
        "cluster.yaml",
        "topic.yaml",
        "consumergroup.yaml",
        "user.yaml",
    ] {
        let a = std::fs::read_to_string(root.join("crds").join(name)).expect("crds/");
        let b =
            std::fs::read_to_string(root.join("helm/strata/crds").join(name)).expect("chart crds/");
        assert_eq!(
            a, b,
            "{name}: run `cargo run -p strata-operator --bin crdgen`"
        );
    }
}
