//! The admin gRPC API (`proto/admin.proto`), used by the operator and the `strata`
//! CLI. Errors map to gRPC status codes: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT
//! (with the offending field in the message), FAILED_PRECONDITION, INTERNAL.

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.admin.v1");
}

mod groups;
mod lag;
mod reassign;
mod records;
mod security;
mod txns;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::security::admin::AdminChannel;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::cluster::{BrokerInfo, BrokerStatus, ClusterState};
use crate::metadata::MetadataError;
use crate::replicas::TopicState;
use pb::admin_client::AdminClient;
use pb::admin_server::Admin;
use pb::*;

pub use pb::admin_server::AdminServer;

/// How long another broker gets to list its groups.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the coordinator gets to answer a forwarded group call (it may ask the
/// partition leaders in turn, see `lag`).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// An admin client for another broker (`host:port` of its internal listener, which
/// serves the admin API too), over the broker's cached peer channel.
pub(crate) fn peer_admin(broker: &Broker, addr: &str) -> Result<AdminClient<AdminChannel>, Status> {
    broker
        .quorum
        .peers()
        .channel(addr)
        .map(AdminClient::new)
        .map_err(|e| Status::internal(e.to_string()))
}

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

fn remote_segment(s: &crate::metadata::remote_log::RemoteSegment) -> RemoteSegmentDescription {
    RemoteSegmentDescription {
        base_offset: s.base_offset,
        end_offset: s.end_offset,
        max_timestamp: s.max_timestamp,
        size_bytes: i64::try_from(s.size_bytes).unwrap_or(i64::MAX),
        leader_epoch: s.leader_epoch,
        log_key: s.log_key.clone(),
    }
}

/// A topic as this broker sees it; `remote_segments` lists each partition's remote
/// segments too.
fn describe_topic(broker: &Broker, t: &TopicState, remote_segments: bool) -> TopicDescription {
    let state = broker.cluster();
    let meta = state.topics.get(&t.record.name);
    TopicDescription {
        name: t.record.name.clone(),
        topic_id: t.record.id.to_string(),
        partitions: t.record.partitions,
        replication_factor: i32::from(t.record.replication_factor),
        configs: t.record.configs.clone().into_iter().collect(),
        internal: t.record.internal,
        partition_details: (0..t.record.partitions)
            .map(|i| {
                let pm = meta.and_then(|m| m.partitions.get(i as usize));
                let mut d = PartitionDescription {
                    partition: i,
                    leader: pm.map_or(-1, |p| p.leader),
                    leader_epoch: pm.map_or(-1, |p| p.leader_epoch),
                    replicas: pm.map(|p| p.replicas.clone()).unwrap_or_default(),
                    isr: pm.map(|p| p.isr.clone()).unwrap_or_default(),
                    log_start_offset: -1,
                    log_end_offset: -1,
                    high_watermark: -1,
                    local_start_offset: -1,
                    remote_start_offset: -1,
                    remote_end_offset: -1,
                    ..Default::default()
                };
                // What is remote comes from the quorum, so every broker knows it.
                if let Some(remote) = pm.map(|p| &p.remote) {
                    d.remote_start_offset = remote.start_offset().unwrap_or(-1);
                    d.remote_end_offset = remote.end_offset().unwrap_or(-1);
                    d.remote_size_bytes = i64::try_from(remote.size_bytes()).unwrap_or(i64::MAX);
                    if remote_segments {
                        d.remote_segments = remote.segments().iter().map(remote_segment).collect();
                    }
                }
                // Offsets and sizes come from the local replica, when there is one.
                if let Some(p) = t.partition(i) {
                    d.log_start_offset = p.log_start_offset();
                    d.log_end_offset = p.log_end_offset();
                    d.high_watermark = p.high_watermark();
                    d.size_bytes = p.size_bytes() as i64;
                    d.local_start_offset = p.log_start_offset();
                }
                d
            })
            .collect(),
    }
}

fn broker_description(state: &ClusterState, b: &BrokerInfo) -> BrokerDescription {
    let (mut replicas, mut leaders) = (0, 0);
    for p in state.topics.values().flat_map(|t| &t.partitions) {
        if p.replicas.contains(&b.id) {
            replicas += 1;
        }
        if p.leader == b.id {
            leaders += 1;
        }
    }
    BrokerDescription {
        id: b.id,
        host: b.host.clone(),
        port: b.port,
        rack: b.rack.clone().unwrap_or_default(),
        state: match b.status {
            BrokerStatus::Alive => BrokerState::Alive,
            BrokerStatus::Draining => BrokerState::Draining,
            BrokerStatus::Fenced => BrokerState::Fenced,
        } as i32,
        replicas,
        leaders,
        min_isr_at_risk: i32::try_from(state.min_isr_at_risk(b.id)).unwrap_or(i32::MAX),
    }
}

impl AdminService {
    fn broker_desc(&self, id: i32) -> Result<BrokerDescription, Status> {
        let state = self.broker.cluster();
        state
            .brokers
            .get(&id)
            .map(|b| broker_description(&state, b))
            .ok_or_else(|| Status::not_found(format!("unknown broker {id}")))
    }

    /// The admin client of the broker coordinating `group`, when that is not this one.
    fn coordinator_client(&self, group: &str) -> Result<Option<AdminClient<AdminChannel>>, Status> {
        if self.broker.coordinates(group) {
            return Ok(None);
        }
        self.key_leader_client(OFFSETS_TOPIC, group, crate::group::offsets::partition_for)
            .map(Some)
            .ok_or_else(|| Status::unavailable("the group coordinator is not available"))
    }

    /// An admin client for the leader of the partition of `topic` that `key` maps to
    /// (a coordinator), when that is another broker.
    fn key_leader_client(
        &self,
        topic: &str,
        key: &str,
        partition_for: fn(&str, i32) -> i32,
    ) -> Option<AdminClient<AdminChannel>> {
        let state = self.broker.cluster();
        let leader = state
            .topics
            .get(topic)
            .and_then(|t| {
                let n = t.partitions.len() as i32;
                t.partitions.get(partition_for(key, n) as usize)
            })
            .map(|p| p.leader)
            .filter(|l| *l >= 0 && *l != self.broker.node_id())
            .and_then(|l| state.brokers.get(&l))?;
        peer_admin(&self.broker, &leader.internal).ok()
    }

    /// Asks every other live broker at once, each within [`PEER_TIMEOUT`]: the
    /// answers, and the ids of the brokers that gave none.
    async fn ask_live_peers<T, F, Fut>(&self, what: &str, ask: F) -> (Vec<T>, Vec<i32>)
    where
        F: Fn(AdminClient<AdminChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let state = self.broker.cluster();
        let asks = state
            .brokers
            .values()
            .filter(|b| b.id != self.broker.node_id() && state.is_live(b.id))
            .map(|b| {
                let ask = &ask;
                async move {
                    let reply = match peer_admin(&self.broker, &b.internal) {
                        Ok(c) => tokio::time::timeout(PEER_TIMEOUT, ask(c))
                            .await
                            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer"))),
                        Err(e) => Err(e),
                    };
                    (b.id, reply)
                }
            });
        let (mut answers, mut silent) = (Vec::new(), Vec::new());
        for (id, reply) in futures::future::join_all(asks).await {
            match reply {
                Ok(r) => answers.push(r),
                Err(e) => {
                    tracing::debug!(broker = id, error = %e, "broker did not answer {what}");
                    silent.push(id);
                }
            }
        }
        (answers, silent)
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicState>, Status> {
        self.broker
            .replicas
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
        let state = self.broker.cluster();
        let membership = self.broker.quorum.published().membership;
        let members = |voters: bool| -> Vec<i32> {
            membership
                .iter()
                .filter(|(_, _, voter)| *voter == voters)
                .filter_map(|(id, _, _)| i32::try_from(*id).ok())
                .collect()
        };
        Ok(Response::new(ClusterDescription {
            cluster_id: self.broker.config.cluster_id.clone(),
            quorum_voters: members(true),
            quorum_learners: members(false),
            min_isr_no_spare_topics: state.min_isr_no_spare(),
            controller_id: self
                .broker
                .quorum
                .leader()
                .and_then(|l| i32::try_from(l).ok())
                .unwrap_or(-1),
            brokers: state
                .brokers
                .values()
                .map(|b| broker_description(&state, b))
                .collect(),
            under_replicated_partitions: state.under_replicated() as i32,
            offline_partitions: state.offline() as i32,
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
        Ok(Response::new(describe_topic(&self.broker, &t, false)))
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
        Ok(Response::new(describe_topic(&self.broker, &t, true)))
    }

    async fn list_topics(
        &self,
        r: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let include_internal = r.into_inner().include_internal;
        let topics = self
            .broker
            .replicas
            .all_topics()
            .iter()
            .filter(|t| include_internal || !t.record.internal)
            .map(|t| describe_topic(&self.broker, t, false))
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
        Ok(Response::new(describe_topic(&self.broker, &t, false)))
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
        Ok(Response::new(describe_topic(&self.broker, &t, false)))
    }

    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        self.list_groups_impl(r).await
    }

    async fn describe_group(
        &self,
        r: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        self.describe_group_impl(r).await
    }

    async fn reset_group_offsets(
        &self,
        r: Request<ResetGroupOffsetsRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        self.reset_group_offsets_impl(r).await
    }

    async fn drain_broker(
        &self,
        r: Request<DrainBrokerRequest>,
    ) -> Result<Response<BrokerDescription>, Status> {
        let id = r.into_inner().broker_id;
        let state = self.broker.cluster();
        if !state.brokers.contains_key(&id) {
            return Err(Status::not_found(format!("unknown broker {id}")));
        }
        let others = state
            .brokers
            .values()
            .filter(|b| b.id != id && b.status == BrokerStatus::Alive && !b.draining)
            .count();
        let max_rf = state
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&id))
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0);
        if max_rf > others {
            return Err(Status::failed_precondition(format!(
                "broker {id} holds replicas of partitions with {max_rf} replicas but only {others} other broker(s) can take them"
            )));
        }
        self.broker.set_draining(id, true).await.map_err(status)?;
        Ok(Response::new(self.broker_desc(id)?))
    }

    async fn undrain_broker(
        &self,
        r: Request<DrainBrokerRequest>,
    ) -> Result<Response<BrokerDescription>, Status> {
        let id = r.into_inner().broker_id;
        self.broker_desc(id)?;
        self.broker.set_draining(id, false).await.map_err(status)?;
        Ok(Response::new(self.broker_desc(id)?))
    }

    async fn unregister_broker(
        &self,
        r: Request<UnregisterBrokerRequest>,
    ) -> Result<Response<UnregisterBrokerResponse>, Status> {
        let id = r.into_inner().broker_id;
        let state = self.broker.cluster();
        if !state.brokers.contains_key(&id) {
            return Err(Status::not_found(format!("unknown broker {id}")));
        }
        if u64::try_from(id).is_ok_and(|n| self.broker.quorum.is_voter(n)) {
            return Err(Status::failed_precondition(format!(
                "broker {id} is a voter of the metadata quorum; voters stay registered"
            )));
        }
        if let Some(why) = state.unregister_blocker(id) {
            return Err(Status::failed_precondition(why));
        }
        self.broker
            .unregister_broker(id)
            .await
            .map_err(|e| match e {
                // Lost a race with a heartbeat or a new assignment: the same precondition.
                MetadataError::InvalidConfig(why) => Status::failed_precondition(why),
                other => status(other),
            })?;
        Ok(Response::new(UnregisterBrokerResponse {}))
    }

    async fn reassign_partitions(
        &self,
        r: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        self.reassign_partitions_impl(r.into_inner()).await
    }

    async fn alter_broker_configs(
        &self,
        r: Request<AlterBrokerConfigsRequest>,
    ) -> Result<Response<BrokerConfigs>, Status> {
        let r = r.into_inner();
        let current = |b: &Broker| {
            b.cluster()
                .broker_configs
                .get(&r.entity)
                .cloned()
                .unwrap_or_default()
        };
        let before = current(&self.broker);
        crate::kafka::alter_configs::alter_broker(
            &self.broker,
            &r.entity,
            |cur| {
                let mut next = cur.clone();
                for k in &r.delete {
                    next.remove(k);
                }
                next.extend(r.set.clone());
                Ok(next)
            },
            false,
        )
        .await
        .map_err(|(code, why)| match code {
            kafka_protocol::error::ResponseError::InvalidConfig
            | kafka_protocol::error::ResponseError::InvalidRequest => Status::invalid_argument(why),
            _ => Status::unavailable(why),
        })?;
        let configs = current(&self.broker);
        Ok(Response::new(BrokerConfigs {
            changed: configs != before,
            entity: r.entity,
            configs: configs.into_iter().collect(),
        }))
    }

    async fn set_replication_factor(
        &self,
        r: Request<SetReplicationFactorRequest>,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        self.set_replication_factor_impl(r.into_inner()).await
    }

    async fn get_reassignment(
        &self,
        r: Request<GetReassignmentRequest>,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        let id = r.into_inner().id;
        Ok(Response::new(reassign::reassignment_status(
            &self.broker.cluster(),
            &id,
        )?))
    }

    async fn delete_records(
        &self,
        r: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        self.delete_records_here_or_at_leader(r.into_inner()).await
    }

    async fn list_transactions(
        &self,
        r: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        self.list_transactions_impl(r.into_inner()).await
    }

    async fn describe_transaction(
        &self,
        r: Request<DescribeTransactionRequest>,
    ) -> Result<Response<TransactionDescription>, Status> {
        self.transaction_call(r.into_inner().transactional_id, false)
            .await
    }

    async fn abort_transaction(
        &self,
        r: Request<AbortTransactionRequest>,
    ) -> Result<Response<TransactionDescription>, Status> {
        self.transaction_call(r.into_inner().transactional_id, true)
            .await
    }

    async fn list_scram_users(
        &self,
        _r: Request<ListScramUsersRequest>,
    ) -> Result<Response<ListScramUsersResponse>, Status> {
        Ok(Response::new(self.list_scram_users_impl()))
    }

    async fn upsert_scram_credential(
        &self,
        r: Request<UpsertScramCredentialRequest>,
    ) -> Result<Response<ScramUser>, Status> {
        Ok(Response::new(
            self.upsert_scram_credential_impl(r.into_inner()).await?,
        ))
    }

    async fn delete_scram_user(
        &self,
        r: Request<DeleteScramUserRequest>,
    ) -> Result<Response<DeleteScramUserResponse>, Status> {
        self.delete_scram_user_impl(r.into_inner().user).await?;
        Ok(Response::new(DeleteScramUserResponse {}))
    }

    async fn list_acls(
        &self,
        r: Request<ListAclsRequest>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        Ok(Response::new(
            self.list_acls_impl(&r.into_inner().principal),
        ))
    }

    async fn create_acls(
        &self,
        r: Request<CreateAclsRequest>,
    ) -> Result<Response<AclsResponse>, Status> {
        let acls = r.into_inner().acls;
        Ok(Response::new(self.change_acls_impl(&acls, true).await?))
    }

    async fn delete_acls(
        &self,
        r: Request<DeleteAclsRequest>,
    ) -> Result<Response<AclsResponse>, Status> {
        let acls = r.into_inner().acls;
        Ok(Response::new(self.change_acls_impl(&acls, false).await?))
    }

    async fn get_user_quotas(
        &self,
        r: Request<GetUserQuotasRequest>,
    ) -> Result<Response<UserQuotas>, Status> {
        Ok(Response::new(self.user_quotas(r.into_inner().user)))
    }

    async fn set_user_quotas(
        &self,
        r: Request<UserQuotas>,
    ) -> Result<Response<UserQuotas>, Status> {
        Ok(Response::new(
            self.set_user_quotas_impl(r.into_inner()).await?,
        ))
    }
}
