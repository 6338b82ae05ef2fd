//! The admin gRPC API (`proto/admin.proto`), used by the operator and the `strata`
//! CLI. Errors map to gRPC status codes: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT
//! (with the offending field in the message), FAILED_PRECONDITION, INTERNAL.

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.admin.v1");
}

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use tonic::{Request, Response, Status};

use crate::broker::{Broker, TopicState};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::state::GroupState;
use crate::metadata::MetadataError;
use pb::admin_server::Admin;
use pb::*;

pub use pb::admin_server::AdminServer;

/// The admin service over a broker.
pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>) -> Self {
        AdminService { broker }
    }
}

fn status(e: MetadataError) -> Status {
    match e {
        MetadataError::TopicExists(_) => Status::already_exists(e.to_string()),
        MetadataError::UnknownTopic(_) => Status::not_found(e.to_string()),
        MetadataError::InvalidTopicName(_)
        | MetadataError::InvalidPartitions(_)
        | MetadataError::InvalidReplicationFactor(_)
        | MetadataError::InvalidConfig(_) => Status::invalid_argument(e.to_string()),
        MetadataError::Io { .. } | MetadataError::Corrupt { .. } => Status::internal(e.to_string()),
        MetadataError::Quorum(_) => Status::unavailable(e.to_string()),
    }
}

/// (first offset in the tier or -1, bytes in the tier) of a partition.
fn remote_of(p: &crate::partition::Partition) -> (i64, i64) {
    match crate::tier::uploader::manifest_of(p) {
        Ok(m) => (m.start_offset().unwrap_or(-1), m.size_bytes() as i64),
        Err(_) => (-1, 0),
    }
}

fn describe_topic(broker: &Broker, t: &TopicState) -> TopicDescription {
    let node = broker.config.node_id;
    TopicDescription {
        name: t.record.name.clone(),
        topic_id: t.record.id.to_string(),
        partitions: t.record.partitions,
        replication_factor: i32::from(t.record.replication_factor),
        configs: t.record.configs.clone().into_iter().collect(),
        internal: t.record.internal,
        partition_details: t
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                partition: p.index,
                leader: node,
                leader_epoch: p.leader_epoch(),
                replicas: vec![node],
                isr: vec![node],
                log_start_offset: p.log_start_offset(),
                log_end_offset: p.high_watermark(),
                high_watermark: p.high_watermark(),
                size_bytes: p.size_bytes() as i64,
                local_start_offset: p.log_start_offset(),
                remote_start_offset: remote_of(p).0,
                remote_size_bytes: remote_of(p).1,
            })
            .collect(),
    }
}

impl AdminService {
    fn this_broker(&self) -> BrokerDescription {
        let (host, port) = self.broker.config.advertised();
        let topics = self.broker.all_topics();
        let replicas: usize = topics.iter().map(|t| t.partitions.len()).sum();
        BrokerDescription {
            id: self.broker.config.node_id,
            host,
            port,
            rack: self.broker.config.rack.clone().unwrap_or_default(),
            state: BrokerState::Alive as i32,
            replicas: replicas as i32,
            leaders: replicas as i32,
        }
    }

    fn check_broker_id(&self, id: i32) -> Result<(), Status> {
        if id == self.broker.config.node_id {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown broker {id}")))
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicState>, Status> {
        self.broker
            .topic(name)
            .ok_or_else(|| Status::not_found(format!("unknown topic `{name}`")))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn describe_cluster(
        &self,
        _r: Request<DescribeClusterRequest>,
    ) -> Result<Response<ClusterDescription>, Status> {
        Ok(Response::new(ClusterDescription {
            cluster_id: self.broker.config.cluster_id.clone(),
            controller_id: self.broker.config.node_id,
            brokers: vec![self.this_broker()],
            under_replicated_partitions: 0,
            offline_partitions: 0,
        }))
    }

    async fn create_topic(
        &self,
        r: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let r = r.into_inner();
        if r.partitions == 0 || r.partitions < -1 {
            return Err(Status::invalid_argument(format!(
                "partitions must be >= 1 (or -1 for the default), got {}",
                r.partitions
            )));
        }
        let rf = i16::try_from(r.replication_factor).map_err(|_| {
            Status::invalid_argument(format!(
                "replication_factor {} is out of range",
                r.replication_factor
            ))
        })?;
        let configs: BTreeMap<String, String> = r.configs.into_iter().collect();
        let t = self
            .broker
            .create_topic(&r.name, r.partitions, rf, configs, r.validate_only)
            .await
            .map_err(status)?;
        Ok(Response::new(describe_topic(&self.broker, &t)))
    }

    async fn delete_topic(
        &self,
        r: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = r.into_inner().name;
        if name == OFFSETS_TOPIC {
            return Err(Status::invalid_argument(
                "internal topics cannot be deleted",
            ));
        }
        self.broker.delete_topic(&name).await.map_err(status)?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn describe_topic(
        &self,
        r: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let t = self.topic(&r.into_inner().name)?;
        Ok(Response::new(describe_topic(&self.broker, &t)))
    }

    async fn list_topics(
        &self,
        r: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let include_internal = r.into_inner().include_internal;
        let topics = self
            .broker
            .all_topics()
            .iter()
            .filter(|t| include_internal || !t.record.internal)
            .map(|t| describe_topic(&self.broker, t))
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn alter_topic_config(
        &self,
        r: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let r = r.into_inner();
        let t = self.topic(&r.name)?;
        let mut configs = if r.replace {
            BTreeMap::new()
        } else {
            t.record.configs.clone()
        };
        configs.extend(r.configs);
        self.broker
            .set_topic_configs(&r.name, configs)
            .await
            .map_err(status)?;
        let t = self.topic(&r.name)?;
        Ok(Response::new(describe_topic(&self.broker, &t)))
    }

    async fn add_partitions(
        &self,
        r: Request<AddPartitionsRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let r = r.into_inner();
        self.topic(&r.name)?;
        self.broker
            .create_partitions(&r.name, r.total_partitions, false)
            .await
            .map_err(status)?;
        let t = self.topic(&r.name)?;
        Ok(Response::new(describe_topic(&self.broker, &t)))
    }

    async fn list_groups(
        &self,
        _r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let groups = self
            .broker
            .groups
            .list()
            .into_iter()
            .map(|l| GroupListing {
                group_id: l.group_id,
                state: l.state.name().to_string(),
                protocol_type: l.protocol_type,
            })
            .collect();
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        r: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let id = r.into_inner().group_id;
        let lag: Vec<pb::PartitionLag> = self
            .broker
            .groups
            .lag(&self.broker, &id)
            .into_iter()
            .map(|l| pb::PartitionLag {
                topic: l.topic,
                partition: l.partition,
                committed_offset: l.committed,
                end_offset: l.end_offset,
                lag: l.lag,
            })
            .collect();
        let total_lag = lag.iter().map(|l| l.lag).sum();
        let mut d = GroupDescription {
            group_id: id.clone(),
            state: GroupState::Empty.name().to_string(),
            lag,
            total_lag,
            ..Default::default()
        };
        match self.broker.groups.group(&id) {
            Some(g) => {
                let g = g.lock();
                d.state = g.state().name().to_string();
                d.protocol_type = g.protocol_type().unwrap_or("").to_string();
                d.protocol = g.protocol().unwrap_or("").to_string();
                d.generation = g.generation();
                d.members = g
                    .members()
                    .map(|m| GroupMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone().unwrap_or_default(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        assignment: decode_assignment(&m.assignment),
                    })
                    .collect();
            }
            None if d.lag.is_empty() && self.broker.groups.group_offsets(&id).is_empty() => {
                return Err(Status::not_found(format!("unknown group `{id}`")));
            }
            None => {}
        }
        Ok(Response::new(d))
    }

    async fn reset_group_offsets(
        &self,
        r: Request<ResetGroupOffsetsRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        use reset_group_offsets_request::Target;
        let r = r.into_inner();
        if let Some(g) = self.broker.groups.group(&r.group_id) {
            if !g.lock().is_empty() {
                return Err(Status::failed_precondition(format!(
                    "group `{}` has active members; stop its consumers before resetting offsets",
                    r.group_id
                )));
            }
        }
        let target = Target::try_from(r.target)
            .ok()
            .filter(|t| *t != Target::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument("target must be EARLIEST, LATEST, OFFSET or TIMESTAMP")
            })?;
        let topics: Vec<String> = if r.topics.is_empty() {
            let mut names: Vec<String> = self
                .broker
                .groups
                .group_offsets(&r.group_id)
                .into_keys()
                .map(|(t, _)| t)
                .collect();
            names.dedup();
            names
        } else {
            r.topics.clone()
        };
        if topics.is_empty() {
            return Err(Status::not_found(format!(
                "group `{}` has no committed offsets; name the topics to reset",
                r.group_id
            )));
        }
        let now = crate::broker::now_ms();
        let mut changes = Vec::new();
        for name in &topics {
            let t = self.topic(name)?;
            for p in &t.partitions {
                let (start, end) = (p.log_start_offset(), p.high_watermark());
                let offset = match target {
                    Target::Earliest => start,
                    Target::Latest | Target::Unspecified => end,
                    Target::Offset => r.value.clamp(start, end),
                    Target::Timestamp => p
                        .offset_for_timestamp(r.value)
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_or(end, |(o, _)| o),
                };
                changes.push((
                    r.group_id.clone(),
                    name.clone(),
                    p.index,
                    Some(crate::group::offsets::CommittedOffset {
                        offset,
                        leader_epoch: -1,
                        metadata: Some("reset by strata admin".into()),
                        commit_timestamp: now,
                    }),
                ));
            }
        }
        self.broker
            .groups
            .write(&self.broker, &r.group_id, changes, now)
            .map_err(|e| Status::internal(format!("cannot write offsets: {e:?}")))?;
        self.describe_group(Request::new(DescribeGroupRequest {
            group_id: r.group_id,
        }))
        .await
    }

    async fn drain_broker(
        &self,
        r: Request<DrainBrokerRequest>,
    ) -> Result<Response<BrokerDescription>, Status> {
        self.check_broker_id(r.into_inner().broker_id)?;
        Err(Status::failed_precondition(
            "cannot drain the only broker: its replicas have nowhere to go",
        ))
    }

    async fn undrain_broker(
        &self,
        r: Request<DrainBrokerRequest>,
    ) -> Result<Response<BrokerDescription>, Status> {
        self.check_broker_id(r.into_inner().broker_id)?;
        Ok(Response::new(self.this_broker()))
    }

    async fn reassign_partitions(
        &self,
        r: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        let r = r.into_inner();
        let node = self.broker.config.node_id;
        for m in &r.moves {
            let t = self.topic(&m.topic)?;
            if t.partition(m.partition).is_none() {
                return Err(Status::not_found(format!(
                    "unknown partition {}-{}",
                    m.topic, m.partition
                )));
            }
            if m.replicas.is_empty() || m.replicas.iter().any(|b| *b != node) {
                return Err(Status::invalid_argument(format!(
                    "replicas {:?} for {}-{} name unknown brokers (this cluster has broker {node} only)",
                    m.replicas, m.topic, m.partition
                )));
            }
        }
        Ok(Response::new(ReassignmentStatus {
            id: uuid::Uuid::new_v4().to_string(),
            phase: reassignment_status::Phase::Done as i32,
            total_moves: r.moves.len() as i32,
            completed_moves: r.moves.len() as i32,
            message: "every replica is already in place".into(),
        }))
    }

    async fn get_reassignment(
        &self,
        r: Request<GetReassignmentRequest>,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        Err(Status::not_found(format!(
            "unknown reassignment `{}`",
            r.into_inner().id
        )))
    }
}

/// "topic-partition" strings from a consumer-protocol assignment (empty if the group
/// uses another protocol).
fn decode_assignment(raw: &bytes::Bytes) -> Vec<String> {
    let mut b = raw.clone();
    if b.len() < 2 {
        return Vec::new();
    }
    let version = b.get_i16();
    match ConsumerProtocolAssignment::decode(&mut b, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(move |p| format!("{}-{p}", tp.topic.0))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
