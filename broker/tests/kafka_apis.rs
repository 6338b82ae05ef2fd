//! Kafka APIs answered from the metadata and the epoch checkpoint, against a real
//! broker: OffsetForLeaderEpoch (where the current epoch ends, an epoch older than
//! any in the log, fencing by the caller's current leader epoch, unknown topics) and
//! DescribeCluster.

mod common;
mod tier_support;

use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use tier_support::{create_topic, produce, s, RECORDS};

async fn ask(c: &mut Client, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
    let mut p = OffsetForLeaderPartition::default();
    p.partition = 0;
    p.current_leader_epoch = current;
    p.leader_epoch = epoch;
    let mut t = OffsetForLeaderTopic::default();
    t.topic = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp: OffsetForLeaderEpochResponse = c.call(ApiKey::OffsetForLeaderEpoch, 4, &req).await;
    let e = &resp.topics[0].partitions[0];
    (e.error_code, e.leader_epoch, e.end_offset)
}

async fn leader_epoch(c: &mut Client, topic: &str) -> i32 {
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(s(topic)));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req).await;
    resp.topics[0].partitions[0].leader_epoch
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_from_the_epoch_checkpoint() {
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    create_topic(&mut c, "epochs", &[]).await;
    assert_eq!(produce(&mut c, "epochs", (0, 3), 1, 20).await, 0);
    let end = 3 * RECORDS;
    let epoch = leader_epoch(&mut c, "epochs").await;
    assert!(epoch >= 0);
    // The current epoch ends at the log end.
    assert_eq!(ask(&mut c, "epochs", epoch, epoch).await, (0, epoch, end));
    assert_eq!(ask(&mut c, "epochs", -1, epoch).await, (0, epoch, end));
    // An epoch newer than the log's is answered with the latest one.
    assert_eq!(
        ask(&mut c, "epochs", epoch, epoch + 5).await,
        (0, epoch, end)
    );
    if epoch > 0 {
        // Older than every epoch here: it ends where the first one starts.
        assert_eq!(
            ask(&mut c, "epochs", epoch, epoch - 1).await,
            (0, epoch - 1, 0)
        );
    }
    // A caller with another idea of the leader epoch is fenced.
    let (code, _, _) = ask(&mut c, "epochs", epoch + 1, epoch).await;
    assert_eq!(code, ResponseError::UnknownLeaderEpoch.code());
    if epoch > 0 {
        let (code, _, _) = ask(&mut c, "epochs", epoch - 1, epoch).await;
        assert_eq!(code, ResponseError::FencedLeaderEpoch.code());
    }
    let (code, _, _) = ask(&mut c, "no-such-topic", -1, 0).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    broker.stop().await;
}

#[tokio::test]
async fn describe_cluster_names_the_cluster_the_controller_and_the_brokers() {
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    for version in 0..=2 {
        let mut req = DescribeClusterRequest::default();
        req.endpoint_type = 1;
        req.include_fenced_brokers = version >= 2;
        let resp: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, version, &req).await;
        assert_eq!(resp.error_code, 0, "v{version}");
        assert!(!resp.cluster_id.is_empty());
        assert_eq!(resp.controller_id, BrokerId(1), "the only voter leads");
        assert_eq!(resp.brokers.len(), 1);
        let b = &resp.brokers[0];
        assert_eq!(
            (b.broker_id, b.port),
            (BrokerId(1), i32::from(broker.addr.port()))
        );
        assert!(!b.is_fenced);
    }
    // The controllers' endpoint type is not served by a broker.
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 2;
    let resp: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, 1, &req).await;
    assert_eq!(
        resp.error_code,
        ResponseError::UnsupportedEndpointType.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn describe_log_dirs_reports_replica_sizes_and_the_filesystem() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    create_topic(&mut c, "sized", &[]).await;
    create_topic(&mut c, "other", &[]).await;
    assert_eq!(produce(&mut c, "sized", (0, 4), 2, 100).await, 0);
    // Every topic (null topics; an empty list asks for none).
    let mut all = DescribeLogDirsRequest::default();
    all.topics = None;
    let resp: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, 4, &all).await;
    assert_eq!(resp.results.len(), 1, "no tier: one log dir");
    let dir = &resp.results[0];
    assert_eq!(dir.error_code, 0);
    assert_eq!(
        dir.log_dir.as_str(),
        broker.data_dir().display().to_string()
    );
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes);
    let size = |dir: &describe_log_dirs_response::DescribeLogDirsResult, topic: &str| {
        dir.topics
            .iter()
            .find(|t| t.name.0.as_str() == topic)
            .map(|t| t.partitions[0].partition_size)
    };
    assert!(size(dir, "sized").is_some_and(|n| n > 4 * RECORDS * 100));
    assert_eq!(size(dir, "other"), Some(0));
    // Only what was asked for.
    let mut t = DescribableLogDirTopic::default();
    t.topic = TopicName(s("sized"));
    t.partitions = vec![0];
    let mut req = DescribeLogDirsRequest::default();
    req.topics = Some(vec![t]);
    let resp: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, 1, &req).await;
    let dir = &resp.results[0];
    assert_eq!(dir.topics.len(), 1);
    assert!(size(dir, "sized").is_some());
    assert_eq!(dir.total_bytes, -1, "v1 has no filesystem sizes");
    broker.stop().await;
}
