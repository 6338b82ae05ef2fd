//! Group coordinator error handling at the protocol level: wrong generations, unknown
//! members, unknown topics and oversized metadata each get the protocol's error code.

mod common;

use common::{join, Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(name));
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
    assert_eq!(resp.topics[0].error_code, 0);
}

fn commit_req(
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
    meta: &str,
) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = 5;
    p.committed_metadata = Some(s(meta));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member);
    r.topics = vec![t];
    r
}

async fn commit_error(c: &mut Client, req: &OffsetCommitRequest) -> i16 {
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 7, req).await;
    resp.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn bad_group_requests_get_protocol_errors() {
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    create_topic(&mut c, "t", 2).await;
    let joined = join(&mut c, "g").await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    let member = joined.member_id.to_string();

    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s("g"));
    sync.generation_id = 1;
    sync.member_id = s(&member);
    let resp: SyncGroupResponse = c.call(ApiKey::SyncGroup, 3, &sync).await;
    assert_eq!(resp.error_code, 0);

    // A good commit works and reads back.
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 1, &member, "t", 0, "ok")).await,
        0
    );
    // Wrong generation, unknown member, unknown topic and partition, huge metadata.
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 7, &member, "t", 0, "")).await,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 1, "nobody", "t", 0, "")).await,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 1, &member, "no-such-topic", 0, "")).await,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 1, &member, "t", 99, "")).await,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let huge = "m".repeat(5000);
    assert_eq!(
        commit_error(&mut c, &commit_req("g", 1, &member, "t", 1, &huge)).await,
        ResponseError::OffsetMetadataTooLarge.code()
    );
    // Simple (generation -1) commits are refused while the group has members.
    assert_eq!(
        commit_error(&mut c, &commit_req("g", -1, "", "t", 0, "")).await,
        ResponseError::UnknownMemberId.code()
    );

    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(s("g"));
    hb.generation_id = 2;
    hb.member_id = s(&member);
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb).await;
    assert_eq!(r.error_code, ResponseError::IllegalGeneration.code());
    hb.generation_id = 1;
    hb.member_id = s("ghost");
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb).await;
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());

    // A group with members cannot be deleted; an unknown one is not found.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g")), GroupId(s("never"))];
    let r: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &del).await;
    assert_eq!(r.results[0].error_code, ResponseError::NonEmptyGroup.code());
    assert_eq!(
        r.results[1].error_code,
        ResponseError::GroupIdNotFound.code()
    );

    // The committed offset is what OffsetFetch reports; uncommitted partitions say -1.
    let mut f = OffsetFetchRequest::default();
    f.group_id = GroupId(s("g"));
    let mut ft = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
    ft.name = TopicName(s("t"));
    ft.partition_indexes = vec![0, 1];
    f.topics = Some(vec![ft]);
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 5, &f).await;
    let offs: Vec<(i32, i64)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offs, vec![(0, 5), (1, -1)]);

    // Invalid session timeout and empty group id.
    let mut j = JoinGroupRequest::default();
    j.group_id = GroupId(s(""));
    j.session_timeout_ms = 10_000;
    j.protocol_type = s("consumer");
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &j).await;
    assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());
    broker.stop().await;
}
