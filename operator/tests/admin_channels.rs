//! The operator's admin connection pool against a real `strata-broker`: every
//! request for a Cluster's admin client reuses one connection until a call on
//! it fails at the transport (here: the broker is killed), and then the next
//! request connects again (here: to the restarted broker).
//!
//! Needs the broker binary (`cargo build -p strata-broker`); skips loudly
//! without it unless `STRATA_E2E_REQUIRED=1`.

mod support;

use strata_operator::admin::{pb, AdminChannels};
use strata_operator::crd::Cluster;
use strata_operator::metrics::Metrics;
use support::broker::{cluster, free_addr, start};
use support::broker_binary;

/// `strata_operator_admin_connects_total{result}` as rendered on `/metrics`.
fn connects(metrics: &Metrics, result: &str) -> u64 {
    let text = metrics.render().expect("render");
    text.lines()
        .filter(|l| {
            l.starts_with("strata_operator_admin_connects_total{")
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn describe(pool: &AdminChannels, cluster: &Cluster) -> Result<usize, String> {
    let mut client = pool.client(cluster).await.map_err(|e| e.to_string())?;
    client
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .map(|r| r.into_inner().brokers.len())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn one_admin_connection_per_cluster_until_it_breaks() {
    let Some(binary) = broker_binary() else {
        if strata_e2e::testing::required() {
            panic!("strata-broker not built (STRATA_E2E_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPING admin channel test: strata-broker not built (cargo build -p strata-broker) !!!!!\n");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (kafka, admin) = (free_addr(), free_addr());
    let broker = start(&binary, &data, kafka, admin);
    let demo = cluster(admin);
    let metrics = Metrics::new().expect("metrics");
    let pool = AdminChannels::new(metrics.clone());

    // Sequential and concurrent requests share the first connection.
    for _ in 0..5 {
        assert_eq!(describe(&pool, &demo).await, Ok(1));
    }
    let together = futures::future::join_all((0..8).map(|_| describe(&pool, &demo))).await;
    assert!(together.iter().all(|r| r == &Ok(1)), "{together:?}");
    assert_eq!(
        connects(&metrics, "ok"),
        1,
        "connections opened for 13 calls"
    );

    // The broker goes away: the call on the pooled channel fails at the
    // transport, so the next request tries a new connection (refused).
    drop(broker);
    let failed = describe(&pool, &demo).await;
    assert!(
        failed.is_err(),
        "a call to a killed broker answered: {failed:?}"
    );
    let refused = describe(&pool, &demo).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("no broker reachable")),
        "{refused:?}"
    );
    assert_eq!(connects(&metrics, "error"), 1);

    // Back on the same address: one new connection, reused again.
    let _broker = start(&binary, &data, kafka, admin);
    for _ in 0..3 {
        assert_eq!(describe(&pool, &demo).await, Ok(1));
    }
    assert_eq!(connects(&metrics, "ok"), 2);
}
