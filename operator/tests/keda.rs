//! KEDA compatibility: KEDA's own Kafka scaler (`github.com/kedacore/keda/v2/pkg/scalers`,
//! driven by the Go program in `tests/keda/`) computes, against a real
//! `strata-broker`, the lag the operator reports for the same group — the
//! ConsumerGroup status (`totalLag`) and the External metric the operator
//! serves to the HPA — read through the operator's own code (its pooled admin
//! client, `observe`, `from_description`/`unknown_group`, `metric_value`).
//!
//! Three groups on a topic of 3 partitions holding 10, 20 and 30 records:
//! `committed` has offsets on every partition, `partial` on two (partition 2
//! never committed), `none` on none. Where KEDA's defaults count differently
//! (a partition without a commit is 1, or its retained records with
//! `offsetResetPolicy: earliest`; the cap at `lagThreshold × partitions` only
//! from `(partitions + 1) × lagThreshold`), the test pins the difference, as
//! docs/operations.md#keda describes it.
//!
//! Needs the broker binary (`cargo build -p strata-broker`) and the Go program
//! (`bash tests/keda/build.sh`, cached under `$STRATA_CACHE/keda-<version>/`);
//! skips loudly without them unless `STRATA_E2E_REQUIRED=1`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use strata_operator::admin::AdminChannels;
use strata_operator::consumergroup::observe::observe;
use strata_operator::consumergroup::status::{from_description, unknown_group};
use strata_operator::crd::ConsumerGroupSpec;
use strata_operator::metrics::Metrics;
use strata_operator::metrics_api::value::metric_value;
use support::broker::{cluster, free_addr, start};
use support::broker_binary;

const TOPIC: &str = "keda";
/// Records per partition.
const PRODUCED: [i64; 3] = [10, 20, 30];
/// KEDA's `lagThreshold`, the ConsumerGroup's `lagPerReplica`.
const THRESHOLD: i64 = 5;

struct Case {
    group: &'static str,
    /// `partition:offset` pairs committed, for the Go program.
    commits: &'static str,
    /// Lag Strata reports: the sum over committed partitions of end − committed.
    lag: i64,
    /// Partitions without a committed offset, and the records they retain.
    uncommitted: i64,
    retained: i64,
}

const CASES: &[Case] = &[
    Case {
        group: "committed",
        commits: "0:3/1:5/2:30",
        lag: 7 + 15,
        uncommitted: 0,
        retained: 0,
    },
    Case {
        // 17 lies between the cap (15) and where KEDA applies it (20).
        group: "between-caps",
        commits: "0:0/1:13/2:30",
        lag: 10 + 7,
        uncommitted: 0,
        retained: 0,
    },
    Case {
        group: "partial",
        commits: "0:4/1:20",
        lag: 6,
        uncommitted: 1,
        retained: 30,
    },
    Case {
        group: "none",
        commits: "",
        lag: 0,
        uncommitted: 3,
        retained: 60,
    },
];

/// The program `tests/keda/build.sh` builds for the KEDA version in go.mod.
fn keda_program() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/keda");
    let go_mod = std::fs::read_to_string(dir.join("go.mod")).ok()?;
    let version = go_mod.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("github.com/kedacore/keda/v2"))
            .then(|| words.next().map(str::to_string))
            .flatten()
    })?;
    let cache = std::env::var_os("STRATA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata")))?;
    let p = cache
        .join(format!("keda-{version}"))
        .join("strata-keda-lag");
    p.exists().then_some(p)
}

fn skip(msg: &str) {
    if strata_e2e::testing::required() {
        panic!("{msg} (STRATA_E2E_REQUIRED=1)");
    }
    eprintln!("\n!!!!! SKIPPING KEDA compatibility test: {msg} !!!!!\n");
}

fn keda(program: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("run strata-keda-lag");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "strata-keda-lag {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// KEDA's value with its default cap: applied once `lag / threshold` (integer
/// division) exceeds the partitions.
fn keda_capped(lag: i64, partitions: i64) -> i64 {
    if lag / THRESHOLD > partitions {
        partitions * THRESHOLD
    } else {
        lag
    }
}

#[tokio::test]
async fn kedas_kafka_scaler_computes_the_lag_strata_reports() {
    let Some(binary) = broker_binary() else {
        return skip("strata-broker not built (cargo build -p strata-broker)");
    };
    let Some(program) = keda_program() else {
        return skip("strata-keda-lag not built (bash tests/keda/build.sh)");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (kafka, admin) = (free_addr(), free_addr());
    let _broker = start(&binary, &dir.path().join("data"), kafka, admin);
    let bootstrap = kafka.to_string();
    let produce: Vec<String> = PRODUCED.iter().map(i64::to_string).collect();
    let commits: Vec<String> = CASES
        .iter()
        .map(|c| format!("{}={}", c.group, c.commits))
        .collect();
    keda(
        &program,
        &[
            "setup",
            &bootstrap,
            TOPIC,
            &produce.join(","),
            &commits.join(";"),
        ],
    );

    let pool = AdminChannels::new(Metrics::new().expect("metrics"));
    let demo = cluster(admin);
    let partitions = PRODUCED.len() as i64;
    for case in CASES {
        let spec: ConsumerGroupSpec = serde_yaml::from_str(&format!(
            "clusterRef: demo\ngroupId: {}\ntopics: [{TOPIC}]\nautoscaling:\n  targetRef: {{name: consumers}}\n  lagPerReplica: {THRESHOLD}\n",
            case.group
        ))
        .expect("spec");
        // What the ConsumerGroup controller and the External metrics server compute.
        let mut client = pool.client(&demo).await.expect("admin client");
        let obs = observe(&mut client, &spec).await.expect("observe");
        let status = match &obs.description {
            Some(d) => from_description(&spec, d, obs.partitions),
            None => unknown_group(&spec, obs.partitions),
        };
        let total = status.total_lag.expect("totalLag");
        let metric = metric_value(obs.total_lag(&spec), THRESHOLD, obs.partitions);
        assert_eq!(obs.partitions, 3, "{}", case.group);
        assert_eq!(total, case.lag, "{}: status totalLag", case.group);

        let out = keda(
            &program,
            &["lag", &bootstrap, TOPIC, case.group, &THRESHOLD.to_string()],
        );
        let k: BTreeMap<String, i64> =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        let get = |name: &str| -> i64 {
            *k.get(name)
                .unwrap_or_else(|| panic!("no {name} in the program's output {out}"))
        };
        let g = case.group;
        // The same numbers, with uncommitted partitions counted as Strata counts them.
        assert_eq!(
            get("scaleToZeroOnInvalidOffset,allowIdleConsumers"),
            total,
            "{g}: KEDA's raw lag vs the status"
        );
        assert_eq!(
            get("scaleToZeroOnInvalidOffset"),
            keda_capped(total, partitions),
            "{g}: KEDA's capped lag"
        );
        assert_eq!(
            get("version=4.0.0,scaleToZeroOnInvalidOffset"),
            get("scaleToZeroOnInvalidOffset"),
            "{g}: with a newer protocol version"
        );
        // The HPA metric caps at lagPerReplica × partitions; KEDA from one more.
        assert_eq!(metric, total.min(partitions * THRESHOLD), "{g}: metric");
        if total < partitions * THRESHOLD || total >= (partitions + 1) * THRESHOLD {
            assert_eq!(metric, get("scaleToZeroOnInvalidOffset"), "{g}: metric");
        }
        // KEDA's defaults: 1 per uncommitted partition, or its retained records.
        assert_eq!(
            get("allowIdleConsumers"),
            total + case.uncommitted,
            "{g}: KEDA counts 1 per partition without a commit"
        );
        assert_eq!(
            get("default"),
            keda_capped(total + case.uncommitted, partitions),
            "{g}: KEDA's defaults"
        );
        assert_eq!(
            get("offsetResetPolicy=earliest,allowIdleConsumers"),
            total + case.retained,
            "{g}: earliest counts the retained records of a partition without a commit"
        );
        eprintln!("{g}: Strata totalLag {total}, HPA metric {metric}; KEDA {k:?}");
    }
}
