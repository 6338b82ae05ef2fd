//! The admin gRPC API: topic lifecycle through the generated client, and precise
//! status codes for bad input.

mod common;

use std::collections::HashMap;

use common::TestBroker;
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::*;
use tonic::Code;

async fn client(b: &TestBroker) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(format!("http://{}", b.admin))
        .await
        .expect("connect admin")
}

fn create(name: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        validate_only: false,
    }
}

#[tokio::test]
async fn topic_lifecycle_and_precise_errors() {
    let b = TestBroker::start().await;
    let mut c = client(&b).await;

    let t = c
        .create_topic(create("orders", 3, 1, &[("retention.ms", "60000")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((t.partitions, t.replication_factor), (3, 1));
    assert_eq!(t.partition_details.len(), 3);
    assert_eq!(
        t.configs.get("retention.ms").map(String::as_str),
        Some("60000")
    );

    let code = |r: Result<tonic::Response<TopicDescription>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(c.create_topic(create("orders", 3, 1, &[])).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.create_topic(create("neg", -5, 1, &[])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.create_topic(create("zero", 0, 1, &[])).await),
        Code::InvalidArgument
    );
    let e = c.create_topic(create("rf", 1, 3, &[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("replication factor 3"),
        "{}",
        e.message()
    );
    let e = c
        .create_topic(create("cfg", 1, 1, &[("retention.ms", "soon")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("retention.ms"), "{}", e.message());
    assert_eq!(
        code(c.create_topic(create("bad/name", 1, 1, &[])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.describe_topic(DescribeTopicRequest {
                name: "missing".into()
            })
            .await
        ),
        Code::NotFound
    );

    // Partitions only grow.
    let grown = c
        .add_partitions(AddPartitionsRequest {
            name: "orders".into(),
            total_partitions: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.partitions, 6);
    assert_eq!(
        code(
            c.add_partitions(AddPartitionsRequest {
                name: "orders".into(),
                total_partitions: 2
            })
            .await
        ),
        Code::InvalidArgument
    );

    // Config changes merge, or replace.
    let mut more = HashMap::new();
    more.insert("segment.bytes".to_string(), "1048576".to_string());
    let t = c
        .alter_topic_config(AlterTopicConfigRequest {
            name: "orders".into(),
            configs: more.clone(),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.configs.len(), 2);
    let t = c
        .alter_topic_config(AlterTopicConfigRequest {
            name: "orders".into(),
            configs: more,
            replace: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.configs.len(), 1);

    let list = c
        .list_topics(ListTopicsRequest {
            include_internal: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec!["orders"]
    );
    let all = c
        .list_topics(ListTopicsRequest {
            include_internal: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all
        .topics
        .iter()
        .any(|t| t.internal && t.name == "__consumer_offsets"));

    let cluster = c
        .describe_cluster(DescribeClusterRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].state, BrokerState::Alive as i32);
    assert_eq!(
        c.drain_broker(DrainBrokerRequest { broker_id: 1 })
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        c.drain_broker(DrainBrokerRequest { broker_id: 9 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.describe_group(DescribeGroupRequest {
            group_id: "nobody".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    c.delete_topic(DeleteTopicRequest {
        name: "orders".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.delete_topic(DeleteTopicRequest {
            name: "orders".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    assert_eq!(
        c.delete_topic(DeleteTopicRequest {
            name: "__consumer_offsets".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    b.stop().await;
}

#[tokio::test]
async fn group_offsets_reset_only_while_the_group_is_empty() {
    use common::Client;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    let b = TestBroker::start().await;
    let mut c = client(&b).await;
    c.create_topic(create("events", 2, 1, &[])).await.unwrap();
    // A simple (member-less) commit gives the group offsets to reset.
    let mut k = Client::connect(b.addr).await;
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 0;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("events"));
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(StrBytes::from_static_str("readers"));
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![t];
    let r: OffsetCommitResponse = k.call(ApiKey::OffsetCommit, 7, &req).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    let reset =
        |target: reset_group_offsets_request::Target, value: i64| ResetGroupOffsetsRequest {
            group_id: "readers".into(),
            target: target as i32,
            value,
            topics: vec![],
        };
    let d = c
        .reset_group_offsets(reset(reset_group_offsets_request::Target::Latest, 0))
        .await
        .unwrap()
        .into_inner();
    // Both partitions of the topic now have a committed offset (at the end: 0).
    assert_eq!(d.lag.len(), 2);
    assert!(d.lag.iter().all(|l| l.committed_offset == 0 && l.lag == 0));
    // Offsets are clamped to the partition's range.
    let d = c
        .reset_group_offsets(reset(reset_group_offsets_request::Target::Offset, 99))
        .await
        .unwrap()
        .into_inner();
    assert!(d.lag.iter().all(|l| l.committed_offset == 0));
    assert_eq!(
        c.reset_group_offsets(reset(reset_group_offsets_request::Target::Unspecified, 0))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // With a member in the group, offsets stay where the consumers put them.
    let joined = common::join(&mut k, "readers").await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(
        c.reset_group_offsets(reset(reset_group_offsets_request::Target::Earliest, 0))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let mut missing = reset(reset_group_offsets_request::Target::Earliest, 0);
    missing.group_id = "nobody".into();
    assert_eq!(
        c.reset_group_offsets(missing).await.unwrap_err().code(),
        Code::NotFound
    );
    b.stop().await;
}
