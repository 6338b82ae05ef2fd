//! The cluster metadata state machine, as replicated by the metadata quorum: brokers,
//! topics, partitions (replicas, leader, leader epoch, ISR), producer-id blocks and
//! reassignments. Every broker applies the same [`Command`]s in the same order, so any
//! broker can answer Metadata from its copy. Applying is pure and deterministic (time
//! comes in the commands); the controller's decisions — replica placement, fencing,
//! leader election — are pure functions over this state, unit- and property-tested.
//!
//! The commands are in `command`, the controller's decisions in `controller`, the
//! checks of the tier's commands in `remote`, operator-asked elections in `election`, and the partition-health counts the
//! metrics and the admin API report in `health`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::remote_log::RemoteLog;
use super::{MetadataError, TopicRecord};

mod command;
mod controller;
pub mod election;
mod health;
mod reassignment;
mod remote;

pub use command::{Applied, Command};
pub use controller::{
    assign_replicas, fence_and_elect, preferred_leader_elections, progress_actions,
    replication_factor_moves,
};
pub use health::min_insync_replicas;
pub use reassignment::{ongoing_reassignment, OngoingReassignment};

/// Producer ids are handed out to brokers in blocks of this size.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerStatus {
    Alive,
    Draining,
    Fenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The broker's internal gRPC address (replication, quorum).
    #[serde(default)]
    pub internal: String,
    /// Advertised endpoint of each named Kafka listener (`host`/`port` are the
    /// inter-broker listener's). Empty in registrations from before listeners had
    /// names: then `host`/`port` serve every listener.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, Endpoint>,
    pub status: BrokerStatus,
    pub draining: bool,
    pub last_heartbeat_ms: i64,
}

/// Where clients reach one listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    /// The endpoint of `listener` on this broker, if it has that listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .get(listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Current leader, or -1 when the partition is offline.
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Target replica list of an in-flight reassignment.
    pub target: Option<Vec<i32>>,
    /// The replicas before the in-flight reassignment started, restored when it is
    /// cancelled (absent for reassignments logged before cancellation existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Vec<i32>>,
    /// What of the partition is in the tier (shared, so publishing the state after
    /// every command does not copy segment lists).
    #[serde(default)]
    pub remote: Arc<RemoteLog>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub record: TopicRecord,
    pub partitions: Vec<PartitionState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Shared with every published copy of the state: publishing after each applied
    /// entry (every broker heartbeat is one) clones the map, not the partitions, and
    /// a change copies only the topic it touches ([`Arc::make_mut`]). Replicas
    /// reconcile only the topics whose `Arc` changed.
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    pub next_producer_id: i64,
    /// Deleted topics whose remote objects are still to be removed: id → name.
    #[serde(default)]
    pub remote_deletions: BTreeMap<Uuid, String>,
    /// Client quotas by user and client id (absent from snapshots taken before they
    /// existed).
    #[serde(default)]
    pub client_quotas: crate::quota::ClientQuotas,
    /// SCRAM credentials by user and mechanism (absent from older snapshots).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: crate::security::scram::UserCredentials,
    /// Dynamic broker configs: entity (a broker id, or `""` for every broker) → Kafka
    /// key → value (`config::dynamic`; absent from older snapshots).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The ACLs (CreateAcls / DeleteAcls; absent from older snapshots).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: crate::security::acl::Acls,
}

/// Starts moving `p` to `target`: replicas = the union while moving, so new
/// replicas fetch and catch up; the controller completes it once `target` is in sync.
fn start_reassignment(p: &mut PartitionState, target: Vec<i32>) {
    if p.target.is_none() {
        p.origin = Some(p.replicas.clone());
    }
    for r in &target {
        if !p.replicas.contains(r) {
            p.replicas.push(*r);
        }
    }
    p.target = Some(target);
}

fn unknown_partition(topic: &str, partition: i32) -> MetadataError {
    MetadataError::UnknownTopic(format!("{topic}-{partition}"))
}

impl ClusterState {
    fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionState, MetadataError> {
        self.topics
            .get_mut(topic)
            .map(Arc::make_mut)
            .and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
            })
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    fn check_assignment(&self, assignment: &[Vec<i32>]) -> Result<(), MetadataError> {
        for replicas in assignment {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            if replicas.is_empty() || distinct.len() != replicas.len() {
                return Err(MetadataError::InvalidReplicationFactor(format!(
                    "replica list {replicas:?} must be non-empty and distinct"
                )));
            }
            if let Some(b) = replicas.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(MetadataError::InvalidReplicationFactor(format!(
                    "unknown broker {b}"
                )));
            }
        }
        Ok(())
    }

    fn new_partition(&self, replicas: Vec<i32>) -> PartitionState {
        let live: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|b| self.is_live(*b))
            .collect();
        PartitionState {
            leader: live.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            isr: if live.is_empty() {
                replicas.clone()
            } else {
                live
            },
            replicas,
            target: None,
            origin: None,
            remote: Arc::default(),
        }
    }

    /// Why broker `id` cannot be unregistered yet, if it cannot: it is still live
    /// (heartbeating), or a partition still lists it as a replica or a target.
    pub fn unregister_blocker(&self, id: i32) -> Option<String> {
        if self.is_live(id) {
            return Some(format!(
                "broker {id} is still live; it can be unregistered once it has stopped and been fenced"
            ));
        }
        let hosted = self
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| {
                p.replicas.contains(&id) || p.target.as_ref().is_some_and(|t| t.contains(&id))
            })
            .count();
        (hosted > 0).then(|| {
            format!("broker {id} still holds replicas of {hosted} partition(s); drain it first")
        })
    }

    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers
            .get(&broker)
            .is_some_and(|b| b.status != BrokerStatus::Fenced)
    }

    /// Applies one command. Errors leave the state unchanged.
    pub fn apply(&mut self, cmd: Command) -> Result<Applied, MetadataError> {
        match cmd {
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                internal,
                listeners,
                now_ms,
            } => {
                let draining = self.brokers.get(&id).is_some_and(|b| b.draining);
                self.brokers.insert(
                    id,
                    BrokerInfo {
                        id,
                        host,
                        port,
                        rack,
                        internal,
                        listeners,
                        status: if draining {
                            BrokerStatus::Draining
                        } else {
                            BrokerStatus::Alive
                        },
                        draining,
                        last_heartbeat_ms: now_ms,
                    },
                );
            }
            Command::Heartbeat { id, now_ms } => {
                let b = self
                    .brokers
                    .get_mut(&id)
                    .ok_or_else(|| MetadataError::InvalidConfig(format!("unknown broker {id}")))?;
                b.last_heartbeat_ms = now_ms;
                if b.status == BrokerStatus::Fenced {
                    b.status = if b.draining {
                        BrokerStatus::Draining
                    } else {
                        BrokerStatus::Alive
                    };
                }
            }
            Command::FenceBroker {
                id,
                last_heartbeat_ms,
            } => {
                if let Some(b) = self.brokers.get_mut(&id) {
                    if last_heartbeat_ms.is_some_and(|seen| b.last_heartbeat_ms > seen) {
                        return Err(MetadataError::InvalidConfig(format!(
                            "broker {id} heartbeated at {} after the fencing decision (saw {})",
                            b.last_heartbeat_ms,
                            last_heartbeat_ms.unwrap_or_default()
                        )));
                    }
                    b.status = BrokerStatus::Fenced;
                }
                // A fenced broker cannot stay in any ISR.
                for t in self.topics.values_mut() {
                    let in_isr = |p: &PartitionState| p.isr.len() > 1 && p.isr.contains(&id);
                    if !t.partitions.iter().any(in_isr) {
                        continue; // untouched: stays shared
                    }
                    for p in &mut Arc::make_mut(t).partitions {
                        if in_isr(p) {
                            p.isr.retain(|r| *r != id);
                        }
                    }
                }
            }
            Command::SetDraining { id, draining } => {
                let b = self
                    .brokers
                    .get_mut(&id)
                    .ok_or_else(|| MetadataError::InvalidConfig(format!("unknown broker {id}")))?;
                b.draining = draining;
                if b.status != BrokerStatus::Fenced {
                    b.status = if draining {
                        BrokerStatus::Draining
                    } else {
                        BrokerStatus::Alive
                    };
                }
            }
            Command::UnregisterBroker { id } => {
                if !self.brokers.contains_key(&id) {
                    return Err(MetadataError::InvalidConfig(format!("unknown broker {id}")));
                }
                if let Some(why) = self.unregister_blocker(id) {
                    return Err(MetadataError::InvalidConfig(why));
                }
                self.brokers.remove(&id);
            }
            Command::CreateTopic { record, assignment } => {
                if self.topics.contains_key(&record.name) {
                    return Err(MetadataError::TopicExists(record.name));
                }
                if assignment.len() != record.partitions as usize {
                    return Err(MetadataError::InvalidPartitions(
                        "assignment does not match the partition count".into(),
                    ));
                }
                self.check_assignment(&assignment)?;
                let partitions = assignment
                    .into_iter()
                    .map(|r| self.new_partition(r))
                    .collect();
                self.topics.insert(
                    record.name.clone(),
                    Arc::new(TopicMeta { record, partitions }),
                );
            }
            Command::DeleteTopic { name } => {
                let t = self
                    .topics
                    .remove(&name)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                if remote::has_remote_data(&t) {
                    self.remote_deletions
                        .insert(t.record.id, t.record.name.clone());
                }
            }
            Command::AddPartitions { name, assignment } => {
                self.check_assignment(&assignment)?;
                let new: Vec<PartitionState> = assignment
                    .into_iter()
                    .map(|r| self.new_partition(r))
                    .collect();
                let t = self
                    .topics
                    .get_mut(&name)
                    .map(Arc::make_mut)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                t.record.partitions += new.len() as i32;
                t.partitions.extend(new);
            }
            Command::SetTopicConfigs { name, configs } => {
                let t = self
                    .topics
                    .get_mut(&name)
                    .map(Arc::make_mut)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                t.record.configs = configs;
            }
            Command::ChangeIsr {
                topic,
                partition,
                leader_epoch,
                isr,
            } => {
                let p = self.partition_mut(&topic, partition)?;
                if leader_epoch != p.leader_epoch {
                    return Err(MetadataError::InvalidConfig(format!(
                        "stale leader epoch {leader_epoch} (current {})",
                        p.leader_epoch
                    )));
                }
                if isr.is_empty()
                    || isr.iter().any(|r| {
                        !p.replicas.contains(r) && !p.target.as_ref().is_some_and(|t| t.contains(r))
                    })
                {
                    return Err(MetadataError::InvalidConfig(format!(
                        "ISR {isr:?} is not a subset of the replicas"
                    )));
                }
                p.isr = isr;
            }
            Command::ElectLeader {
                topic,
                partition,
                leader,
            } => {
                // An election is checked against the state it lands on, not only the
                // one the controller decided from: a controller paused past its session
                // once woke, computed elections from its old view and had them
                // committed by the new controller, making a fenced broker outside the
                // ISR leader and truncating acknowledged writes on the others.
                let live = leader < 0 || self.is_live(leader);
                let live_brokers: Vec<i32> = self
                    .brokers
                    .values()
                    .filter(|b| b.status != BrokerStatus::Fenced)
                    .map(|b| b.id)
                    .collect();
                let unclean_allowed = self.topics.get(&topic).is_some_and(|t| {
                    t.record
                        .configs
                        .get("unclean.leader.election.enable")
                        .map(String::as_str)
                        == Some("true")
                });
                let p = self.partition_mut(&topic, partition)?;
                if leader >= 0
                    && !p.replicas.contains(&leader)
                    && !p.target.as_ref().is_some_and(|t| t.contains(&leader))
                {
                    return Err(MetadataError::InvalidConfig(format!(
                        "broker {leader} is not a replica"
                    )));
                }
                if !live {
                    return Err(MetadataError::InvalidConfig(format!(
                        "broker {leader} is fenced: it cannot lead {topic}-{partition}"
                    )));
                }
                if leader < 0 {
                    if let Some(r) = p.isr.iter().find(|r| live_brokers.contains(r)) {
                        return Err(MetadataError::InvalidConfig(format!(
                            "{topic}-{partition} has a live in-sync replica ({r}): not offline"
                        )));
                    }
                }
                if leader >= 0 && !p.isr.contains(&leader) && !unclean_allowed {
                    return Err(MetadataError::InvalidConfig(format!(
                        "broker {leader} is not in the ISR {:?} of {topic}-{partition} and \
                         unclean.leader.election.enable is off",
                        p.isr
                    )));
                }
                p.leader = leader;
                p.leader_epoch += 1;
                if leader >= 0 && !p.isr.contains(&leader) {
                    // Only an unclean election gets here: the new leader's log is the truth.
                    p.isr = vec![leader];
                }
            }
            Command::SetReplicationFactor {
                name,
                replication_factor,
                moves,
            } => {
                let rf = usize::try_from(replication_factor).unwrap_or(0);
                let targets: Vec<Vec<i32>> = moves.iter().map(|(_, t)| t.clone()).collect();
                self.check_assignment(&targets)?;
                let t = self
                    .topics
                    .get(&name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                for (partition, target) in &moves {
                    let p = usize::try_from(*partition)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                        .ok_or_else(|| unknown_partition(&name, *partition))?;
                    if p.target.is_some() || target.len() != rf {
                        return Err(MetadataError::InvalidReplicationFactor(format!(
                            "{name}-{partition}: being reassigned, or {target:?} is not {rf} replicas"
                        )));
                    }
                }
                let t = self
                    .topics
                    .get_mut(&name)
                    .map(Arc::make_mut)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                t.record.replication_factor = replication_factor;
                for (partition, target) in moves {
                    if let Some(p) = usize::try_from(partition)
                        .ok()
                        .and_then(|i| t.partitions.get_mut(i))
                    {
                        start_reassignment(p, target);
                    }
                }
            }
            Command::Reassign {
                topic,
                partition,
                target,
            } => {
                self.check_assignment(std::slice::from_ref(&target))?;
                let p = self.partition_mut(&topic, partition)?;
                start_reassignment(p, target);
            }
            Command::CompleteReassignment { topic, partition } => {
                let p = self.partition_mut(&topic, partition)?;
                let Some(target) = p.target.take() else {
                    return Ok(Applied::Done);
                };
                p.isr.retain(|r| target.contains(r));
                p.replicas = target;
                p.origin = None;
            }
            Command::CancelReassignment { topic, partition } => {
                self.cancel_reassignment(&topic, partition)?
            }
            Command::CommitRemoteSegment {
                topic,
                topic_id,
                partition,
                leader_epoch,
                segment,
            } => self.commit_remote_segment(&topic, topic_id, partition, leader_epoch, segment)?,
            Command::ExpireRemoteSegments {
                topic,
                topic_id,
                partition,
                leader_epoch,
                through,
                log_start,
            } => self.expire_remote_segments(
                &topic,
                topic_id,
                partition,
                leader_epoch,
                through,
                log_start,
            )?,
            Command::AdoptRemoteLog {
                topic,
                topic_id,
                partition,
                leader_epoch,
                log,
            } => self.adopt_remote_log(&topic, topic_id, partition, leader_epoch, log)?,
            Command::ForgetRemoteTopic { topic_id } => {
                self.remote_deletions.remove(&topic_id);
            }
            Command::AlterClientQuotas { entity, ops } => self
                .client_quotas
                .alter(&entity, &ops)
                .map_err(MetadataError::InvalidConfig)?,
            Command::AlterScramCredentials {
                user,
                upsert,
                delete,
            } => {
                let creds = self.scram_credentials.entry(user.clone()).or_default();
                for m in delete {
                    creds.remove(&m);
                }
                for (m, c) in upsert {
                    creds.insert(m, c);
                }
                if creds.is_empty() {
                    self.scram_credentials.remove(&user);
                }
            }
            Command::CreateAcls { acls } => {
                if let Some(why) = acls.iter().find_map(|a| a.invalid()) {
                    return Err(MetadataError::InvalidConfig(why));
                }
                self.acls.extend(acls);
            }
            Command::DeleteAcls { acls } => {
                for a in &acls {
                    self.acls.remove(a);
                }
            }
            Command::AlterBrokerConfigs { entity, configs } => {
                if !crate::config::dynamic::valid_entity(&entity) {
                    return Err(MetadataError::InvalidConfig(format!(
                        "`{entity}` is not a broker id"
                    )));
                }
                crate::config::dynamic::validate(&configs, |k| {
                    format!("{k} is not a dynamic broker config")
                })
                .map_err(MetadataError::InvalidConfig)?;
                if configs.is_empty() {
                    self.broker_configs.remove(&entity);
                } else {
                    self.broker_configs.insert(entity, configs);
                }
            }
            Command::AllocateProducerIds { broker: _ } => {
                let start = self.next_producer_id;
                self.next_producer_id += PRODUCER_ID_BLOCK;
                return Ok(Applied::ProducerIdBlock {
                    start,
                    len: PRODUCER_ID_BLOCK,
                });
            }
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod tests;
