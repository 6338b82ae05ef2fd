//! The chart's monitoring: the dashboard and the alert rules use only metrics
//! Strata exports, and the ServiceMonitors/PodMonitors select what the operator
//! and the chart actually run.
//!
//! The metric check renders the chart with every monitoring flag on, takes each
//! metric name out of the PromQL of the dashboard's panels and variables and of
//! the alert rules, then scrapes
//! - a real `strata-broker` process, after producing to a tiered topic, letting
//!   the tier take its segments, reading them back from the tier and committing
//!   offsets for two groups (many series only appear once something happened);
//! - the operator's `/metrics` endpoint (its real axum router) over the
//!   operator's real registry, after one reconcile and one failed reconcile
//!   are recorded on it the way the controllers record them. The rest of the
//!   operator is not started: it needs a kube API server (the e2e harness takes
//!   minutes here), and its metric names do not depend on one — they are all
//!   registered in `operator/src/metrics.rs`;
//!
//! and asserts every name used is exported.
//!
//! Needs helm (`bash e2e/setup.sh`), the broker binary (`cargo build -p
//! strata-broker`) and the test venv with confluent_kafka (`bash
//! scripts/setup.sh`); skips loudly without them unless `STRATA_E2E_REQUIRED=1`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Service};
use serde_json::Value;
use support::helm::{documents, helm, run, template};
use support::{broker_binary, kafka_python};

/// Every monitoring flag on.
const ALL_ON: &[&str] = &[
    "monitoring.dashboards.enabled=true",
    "monitoring.alerts.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
];

// ---------------------------------------------------------------------------
// PromQL: which metrics an expression reads.

/// Keywords followed by a parenthesised list of label names, not expressions.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the string literal that starts at `i` (a quote character).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        // Backquoted strings are raw in PromQL; the others have escapes.
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Index just past the `close` that ends the group opened at `i`, skipping
/// string literals (a label value may contain the closing character).
fn skip_group(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => j = skip_string(chars, j),
            c if c == close => return j + 1,
            _ => j += 1,
        }
    }
    j
}

/// The `strata_*` metric names a PromQL expression selects. A small tokenizer,
/// not a parser: it drops what may hold identifiers that are not metrics —
/// string literals, label matchers `{...}`, ranges and subqueries `[...]`, and
/// the label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`
/// — and keeps every remaining identifier that starts with `strata_` (function
/// names never do). Histogram series keep their `_bucket`/`_sum`/`_count`
/// suffix: those are the names Prometheus stores and the scrape shows.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '(' && label_list_next {
            i = skip_group(&chars, i, ')');
            label_list_next = false;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                label_list_next = true;
            } else {
                label_list_next = false;
                if ident.starts_with("strata_") {
                    names.insert(ident);
                }
            }
        } else {
            if !c.is_whitespace() {
                label_list_next = false;
            }
            i += 1;
        }
    }
    names
}

/// The PromQL inside a Grafana variable query: `label_values(<expr>, <label>)`
/// reads `<expr>`; `label_values(<label>)` reads no metric; other queries are
/// taken as PromQL (`query_result(...)` included).
fn variable_promql(query: &str) -> Option<String> {
    let q = query.trim();
    let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    else {
        return Some(q.to_string());
    };
    // The last comma outside braces and strings separates the label name.
    let chars: Vec<char> = inner.chars().collect();
    let mut last_comma = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '}'),
            '(' => i = skip_group(&chars, i, ')'),
            ',' => {
                last_comma = Some(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    last_comma.map(|c| chars[..c].iter().collect())
}

/// Metric name → where it is used ("dashboard: <panel>", "alert: <name>").
type Uses = BTreeMap<String, BTreeSet<String>>;

fn add_uses(uses: &mut Uses, expr: &str, source: &str) {
    for name in metric_names(expr) {
        uses.entry(name).or_default().insert(source.to_string());
    }
}

fn dashboard_uses(dashboard: &Value, uses: &mut Uses) {
    fn panels(list: &Value, uses: &mut Uses) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    add_uses(uses, expr, &format!("dashboard panel {title:?}"));
                }
            }
            // Collapsed rows carry their panels inside.
            panels(&panel["panels"], uses);
        }
    }
    panels(&dashboard["panels"], uses);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]
            .as_str()
            .or_else(|| var["query"]["query"].as_str())
            .unwrap_or_default();
        if let Some(expr) = variable_promql(query) {
            let name = var["name"].as_str().unwrap_or("?");
            add_uses(uses, &expr, &format!("dashboard variable ${name}"));
        }
    }
}

fn rule_uses(rule: &Value, uses: &mut Uses) {
    for group in rule["spec"]["groups"].as_array().into_iter().flatten() {
        for r in group["rules"].as_array().into_iter().flatten() {
            let name = r["alert"]
                .as_str()
                .or_else(|| r["record"].as_str())
                .unwrap_or("?");
            let expr = r["expr"].as_str().expect("every rule has an expr");
            add_uses(uses, expr, &format!("alert {name}"));
        }
    }
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The chart's dashboard, parsed from the ConfigMap the sidecar loads.
fn rendered_dashboard(docs: &[Value]) -> Value {
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard=1");
    let json = cm["data"]["strata.json"]
        .as_str()
        .expect("data.strata.json");
    serde_json::from_str(json).expect("the dashboard is JSON")
}

/// Every metric the rendered dashboard and alert rules use.
fn chart_uses(helm: &PathBuf) -> Uses {
    let docs = documents(&template(helm, ALL_ON));
    let mut uses = Uses::new();
    dashboard_uses(&rendered_dashboard(&docs), &mut uses);
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rule_uses(rules[0], &mut uses);
    uses
}

/// The used metrics that `exported` lacks, with where each is used.
fn missing(uses: &Uses, exported: &BTreeSet<String>) -> Vec<String> {
    uses.iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, sources)| format!("{name} (used by {sources:?})"))
        .collect()
}

/// Series names of a Prometheus text exposition (histograms with their
/// `_bucket`, `_sum` and `_count` series).
fn series_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The value of the first sample of `name` whose labels contain `label`.
fn sample(exposition: &str, name: &str, label: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------------------
// Unit tests of the extraction itself.

#[test]
fn metric_names_skip_labels_strings_ranges_and_grouping() {
    let expr = r#"sum by (strata_cluster, le) (rate(strata_request_duration_seconds_bucket{strata_cluster=~"strata_x", api!="a}b"}[$__rate_interval])) / on (pod) group_left (strata_cluster) strata_data_dir_capacity_bytes > 0.5"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from([
            "strata_request_duration_seconds_bucket".to_string(),
            "strata_data_dir_capacity_bytes".to_string(),
        ])
    );
    assert!(metric_names("up == 0").is_empty());
}

#[test]
fn variable_queries_read_the_metric_not_the_label() {
    assert_eq!(
        variable_promql(
            r#"label_values(strata_cluster_partitions{namespace=~"$a,b"}, strata_cluster)"#
        )
        .as_deref(),
        Some(r#"strata_cluster_partitions{namespace=~"$a,b"}"#)
    );
    assert_eq!(variable_promql("label_values(strata_cluster)"), None);
}

#[test]
fn a_metric_nobody_exports_is_reported() {
    let mut uses = Uses::new();
    add_uses(
        &mut uses,
        "rate(strata_topic_bytes_in_total[5m]) + strata_bogus_total",
        "a panel",
    );
    let exported = BTreeSet::from(["strata_topic_bytes_in_total".to_string()]);
    assert_eq!(
        missing(&uses, &exported),
        vec![r#"strata_bogus_total (used by {"a panel"})"#.to_string()]
    );
}

// ---------------------------------------------------------------------------
// A real broker and the operator's endpoint.

fn skip(msg: &str) {
    if strata_e2e::testing::required() {
        panic!("{msg} (STRATA_E2E_REQUIRED=1)");
    }
    eprintln!("\n!!!!! SKIPPING observability metrics test: {msg} !!!!!\n");
}

fn free_addr() -> SocketAddr {
    let port = strata_e2e::net::free_port().expect("free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One HTTP/1.0 GET; `(status line, body)`, or `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert!(status.contains(" 200"), "{status}\n{body}");
    body
}

/// The broker process; killed when dropped, so a failing test leaves no broker.
struct BrokerProcess {
    child: Child,
    log: PathBuf,
}

impl BrokerProcess {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Kafka side of the scenario, with confluent_kafka: `produce` creates the
/// tiered topic `obs` with tiny segments that leave local disk as soon as the
/// tier has them, then produces 1000 records; `consume <group> <n>` reads `n`
/// records from the start (by then only in the tier) and commits them.
const CLIENT: &str = r#"
import sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, cmd = sys.argv[1], sys.argv[2]
if cmd == "produce":
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic("obs", num_partitions=1, replication_factor=1, config={
        "remote.storage.enable": "true",
        "segment.bytes": "4096",
        "local.retention.bytes": "1",
    })
    for f in admin.create_topics([topic]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "batch.size": 2048})
    for i in range(1000):
        p.produce("obs", value=b"x" * 100, key=str(i).encode())
        p.poll(0)
    assert p.flush(30) == 0, "unflushed records"
    print("produced 1000")
else:
    group, n = sys.argv[3], int(sys.argv[4])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["obs"])
    got, first, deadline = 0, None, time.time() + 60
    while got < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        if first is None:
            first = m.offset()
        got += 1
    assert got >= n, f"consumed only {got} of {n}"
    c.commit(asynchronous=False)
    c.close()
    print(f"first={first} consumed={got}")
"#;

fn python(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(CLIENT)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the scenario against a real broker and returns its final scrape.
fn scrape_busy_broker(binary: &Path, py: &Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kafka, admin, http) = (free_addr(), free_addr(), free_addr());
    let log = dir.path().join("broker.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(binary)
        .args(["dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("STRATA_KAFKA_LISTEN", kafka.to_string())
        .env("STRATA_ADMIN_LISTEN", admin.to_string())
        .env("STRATA_METRICS_LISTEN", http.to_string())
        .env("STRATA_OFFSETS_TOPIC_PARTITIONS", "1")
        .env("STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        // Upload and delete within a second, not the dev defaults' 5 s and 30 s.
        .env("STRATA_TIER_UPLOAD_INTERVAL_MS", "300")
        .env("STRATA_RETENTION_CHECK_INTERVAL_MS", "300")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start strata-broker");
    let broker = BrokerProcess { child, log };

    let started = Instant::now();
    while !http_get(http, "/readyz").is_some_and(|(s, _)| s.contains(" 200")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "broker not ready in 60 s:\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bootstrap = kafka.to_string();
    python(py, &[&bootstrap, "produce"]);

    // The tier takes the closed segments and local retention drops them.
    let started = Instant::now();
    loop {
        let text = metrics(http);
        let uploaded = sample(
            &text,
            "strata_tier_uploaded_segments_total",
            "topic=\"obs\"",
        );
        let deleted = sample(&text, "strata_log_segments_deleted_total", "topic=\"obs\"");
        if uploaded.is_some_and(|v| v > 0.0) && deleted.is_some_and(|v| v > 0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload and local deletion in 60 s (uploaded {uploaded:?}, deleted {deleted:?}):\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two groups read from offset 0, which only the tier still holds: the first
    // fills the chunk cache, the second reads through it.
    for (group, n) in [("obs-a", "500"), ("obs-b", "200")] {
        let out = python(py, &[&bootstrap, "consume", group, n]);
        assert!(
            out.contains("first=0 "),
            "{group} did not start at 0: {out}"
        );
    }
    metrics(http)
}

/// The operator's `/metrics`, served by its own router over its own registry,
/// after one reconcile, one failure and a Lease acquisition are recorded.
fn scrape_operator() -> String {
    use strata_operator::metrics::Metrics;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let m = Metrics::new().expect("operator metrics");
    m.start("topic").finish(&m);
    m.failed("topic", "broker");
    m.leader.record(1, &[]);
    m.metric_request("ok");
    let addr = free_addr();
    rt.spawn(strata_operator::http::serve(
        addr,
        m,
        strata_operator::http::Readiness::default(),
    ));
    let started = Instant::now();
    loop {
        if let Some((status, body)) = http_get(addr, "/metrics") {
            assert!(status.contains(" 200"), "{status}\n{body}");
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "operator /metrics never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let Some(helm) = helm() else { return };
    let uses = chart_uses(&helm);
    // The extraction found the panels and rules at all.
    assert!(
        uses.len() >= 25,
        "only {} metrics found: {uses:?}",
        uses.len()
    );
    assert!(uses.keys().any(|n| n.starts_with("strata_operator_")));
    let Some(broker) = broker_binary() else {
        return skip("strata-broker not built (cargo build -p strata-broker)");
    };
    let Some(py) = kafka_python() else {
        return skip("no test venv with confluent_kafka (bash scripts/setup.sh)");
    };
    let broker_text = scrape_busy_broker(&broker, &py);
    let operator_text = scrape_operator();
    let broker_series = series_names(&broker_text);
    let operator_series = series_names(&operator_text);
    // Each side answers for its own prefix, so an operator metric the broker
    // happened to export (or the reverse) would still be caught.
    let (operator_uses, broker_uses): (Uses, Uses) = uses
        .into_iter()
        .partition(|(name, _)| name.starts_with("strata_operator_"));
    let mut absent = missing(&broker_uses, &broker_series);
    absent.extend(missing(&operator_uses, &operator_series));
    assert!(
        absent.is_empty(),
        "used by the chart but not exported:\n  {}\n\nbroker exports: {broker_series:?}\noperator exports: {operator_series:?}",
        absent.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The monitors select what runs.

#[test]
fn chart_renders_no_monitoring_by_default() {
    let Some(helm) = helm() else { return };
    let docs = documents(&template(&helm, &[]));
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    assert!(
        !of_kind(&docs, "ConfigMap")
            .iter()
            .any(|c| c["metadata"]["labels"].get("grafana_dashboard").is_some()),
        "no dashboard ConfigMap by default"
    );
}

#[test]
fn chart_lints_clean_with_every_monitoring_flag() {
    let Some(helm) = helm() else { return };
    let chart = support::helm::chart();
    let mut args = vec!["lint", "--strict", chart.to_str().expect("utf-8 path")];
    for v in ALL_ON {
        args.extend(["--set", v]);
    }
    let out = run(&helm, &args);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn each_monitoring_flag_renders_only_its_objects() {
    let Some(helm) = helm() else { return };
    let kinds_with = |flag: &str| -> Vec<String> {
        let mut k: Vec<String> = documents(&template(&helm, &[flag]))
            .iter()
            .filter_map(|d| {
                let kind = d["kind"].as_str()?;
                matches!(
                    kind,
                    "ServiceMonitor" | "PodMonitor" | "PrometheusRule" | "ConfigMap"
                )
                .then(|| kind.to_string())
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds_with("monitoring.dashboards.enabled=true"),
        ["ConfigMap"]
    );
    assert_eq!(
        kinds_with("monitoring.alerts.enabled=true"),
        ["PrometheusRule"]
    );
    assert_eq!(
        kinds_with("monitoring.serviceMonitor.enabled=true"),
        ["ServiceMonitor", "ServiceMonitor"]
    );
    assert_eq!(
        kinds_with("monitoring.podMonitor.enabled=true"),
        ["PodMonitor", "PodMonitor"]
    );
}

#[test]
fn dashboard_label_namespace_and_alert_thresholds_come_from_values() {
    let Some(helm) = helm() else { return };
    let docs = documents(&template(
        &helm,
        &[
            "monitoring.dashboards.enabled=true",
            "monitoring.dashboards.label=my_dashboards",
            "monitoring.dashboards.labelValue=yes",
            "monitoring.dashboards.namespace=grafana",
            "monitoring.alerts.enabled=true",
            "monitoring.alerts.consumerLagThreshold=5000",
            "monitoring.alerts.labels.release=prom",
            "monitoring.alerts.ruleLabels.team=streaming",
        ],
    ));
    let cm = of_kind(&docs, "ConfigMap")[0];
    assert_eq!(cm["metadata"]["labels"]["my_dashboards"], "yes");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    let rule = of_kind(&docs, "PrometheusRule")[0];
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    let lag = rules
        .iter()
        .find(|r| r["alert"] == "StrataConsumerLagGrowing")
        .expect("lag alert");
    assert!(
        lag["expr"].as_str().is_some_and(|e| e.contains("> 5000")),
        "{lag}"
    );
    for r in &rules {
        assert_eq!(r["labels"]["team"], "streaming", "{r}");
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{r}"
        );
        assert!(r["annotations"]["description"].is_string(), "{r}");
    }
}

/// Does `selector` (matchLabels) select an object with `labels`?
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    selector["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

/// `__meta_kubernetes_pod_label_<x>` → the label names it can stand for.
fn relabel_sources_exist(endpoint: &Value, pod_labels: &BTreeMap<String, String>) {
    let sanitized: BTreeSet<String> = pod_labels
        .keys()
        .map(|k| k.replace(['.', '/', '-'], "_"))
        .collect();
    for r in endpoint["relabelings"].as_array().expect("relabelings") {
        for src in r["sourceLabels"].as_array().expect("sourceLabels") {
            let src = src.as_str().expect("a label name");
            let label = src
                .strip_prefix("__meta_kubernetes_pod_label_")
                .unwrap_or_else(|| panic!("unexpected relabel source {src}"));
            // The StatefulSet controller adds the pod index; the builder sets the rest.
            assert!(
                sanitized.contains(label) || label == "apps_kubernetes_io_pod_index",
                "relabel source {src}: the broker pods have {pod_labels:?}"
            );
        }
    }
}

fn port_names(c: &Container) -> Vec<String> {
    c.ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect()
}

fn service_port_names(s: &Service) -> Vec<String> {
    s.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.name.clone())
        .collect()
}

#[test]
fn monitors_select_the_pods_and_ports_that_run() {
    let Some(helm) = helm() else { return };
    let docs = documents(&template(&helm, ALL_ON));
    let named = |kind: &str, suffix: &str| -> Value {
        of_kind(&docs, kind)
            .into_iter()
            .find(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("{kind} *{suffix}"))
            .clone()
    };

    // Brokers: what the operator's builders produce for a Cluster.
    let cluster: strata_operator::crd::Cluster = serde_yaml::from_str(
        "apiVersion: strata.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo, namespace: kafka, uid: u-1}\nspec: {replicas: 3, storage: {size: 1Gi}}",
    )
    .expect("cluster");
    let desired = strata_operator::cluster::build::build(
        &strata_operator::cluster::validate(&cluster).expect("valid cluster"),
    );
    let template = desired.statefulset.spec.expect("statefulset spec").template;
    let pod_labels = template
        .metadata
        .and_then(|m| m.labels)
        .expect("pod labels");
    let broker = &template.spec.expect("pod spec").containers[0];

    let pm = named("PodMonitor", "-brokers");
    assert!(
        selects(&pm["spec"]["selector"], &pod_labels),
        "{pm} vs {pod_labels:?}"
    );
    assert_eq!(pm["spec"]["namespaceSelector"]["any"], true);
    for ep in pm["spec"]["podMetricsEndpoints"].as_array().expect("eps") {
        let port = ep["port"].as_str().expect("port name");
        assert!(port_names(broker).iter().any(|p| p == port), "{port}");
        relabel_sources_exist(ep, &pod_labels);
    }

    let sm = named("ServiceMonitor", "-brokers");
    let headless_labels = desired.headless_service.metadata.labels.clone();
    let bootstrap_labels = desired.bootstrap_service.metadata.labels.clone();
    assert!(selects(
        &sm["spec"]["selector"],
        &headless_labels.expect("labels")
    ));
    for ep in sm["spec"]["endpoints"].as_array().expect("eps") {
        let port = ep["port"].as_str().expect("port name");
        assert!(
            service_port_names(&desired.headless_service)
                .iter()
                .any(|p| p == port),
            "headless Service has no port {port}"
        );
        // The bootstrap Service matches the selector too; without the port it
        // yields no targets, so no broker is scraped twice.
        assert!(selects(
            &sm["spec"]["selector"],
            bootstrap_labels.as_ref().expect("labels")
        ));
        assert!(!service_port_names(&desired.bootstrap_service)
            .iter()
            .any(|p| p == port));
        relabel_sources_exist(ep, &pod_labels);
    }

    // The operator: the chart's own Deployment and metrics Service.
    let deploy = named("Deployment", "-operator");
    let op_pod_labels: BTreeMap<String, String> =
        serde_json::from_value(deploy["spec"]["template"]["metadata"]["labels"].clone())
            .expect("operator pod labels");
    let op_container: Container =
        serde_json::from_value(deploy["spec"]["template"]["spec"]["containers"][0].clone())
            .expect("operator container");
    let pm = named("PodMonitor", "-operator");
    assert!(selects(&pm["spec"]["selector"], &op_pod_labels));
    let port = pm["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .expect("port");
    assert!(
        port_names(&op_container).iter().any(|p| p == port),
        "{port}"
    );

    let sm = named("ServiceMonitor", "-operator");
    let svc: Service =
        serde_json::from_value(named("Service", "-operator-metrics")).expect("metrics Service");
    let svc_labels = svc.metadata.labels.clone().expect("labels");
    assert!(selects(&sm["spec"]["selector"], &svc_labels));
    let port = sm["spec"]["endpoints"][0]["port"].as_str().expect("port");
    assert!(service_port_names(&svc).iter().any(|p| p == port), "{port}");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"][0],
        "strata-system"
    );
}
