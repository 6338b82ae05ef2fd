//! The commands of the metadata log: every change to cluster metadata, as the quorum
//! replicates it and every broker applies it
//! ([`ClusterState::apply`](super::ClusterState::apply)), and what applying one
//! produced. Commands are stored as JSON entries of the Raft log, so their serde shape
//! is a storage format (fields added later carry `#[serde(default)]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::remote_log::{RemoteLog, RemoteSegment};
use crate::metadata::TopicRecord;
use crate::quota::{QuotaEntity, QuotaValue};
use crate::security::scram::{ScramCredential, ScramMechanism};

/// Every change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        #[serde(default)]
        internal: String,
        /// Advertised endpoint of each named Kafka listener (absent in commands
        /// logged before listeners had names).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        listeners: BTreeMap<String, super::Endpoint>,
        now_ms: i64,
    },
    Heartbeat {
        id: i32,
        now_ms: i64,
    },
    FenceBroker {
        id: i32,
        /// The broker's last heartbeat as the controller saw it when it decided:
        /// refused if the broker heartbeated since (a decision made from a stale
        /// view, e.g. by a controller that was paused and has not yet noticed that it
        /// was replaced). Absent in commands logged before this check existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_heartbeat_ms: Option<i64>,
    },
    SetDraining {
        id: i32,
        draining: bool,
    },
    /// Forgets a broker that left the cluster for good (after a scale-in); refused
    /// while it is live or any partition still names it. A broker that comes back
    /// registers anew.
    UnregisterBroker {
        id: i32,
    },
    CreateTopic {
        record: TopicRecord,
        assignment: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
    },
    AddPartitions {
        name: String,
        assignment: Vec<Vec<i32>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A leader shrinks or expands the ISR; refused unless `leader_epoch` is current.
    ChangeIsr {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    },
    /// The controller moves leadership (or marks the partition offline with -1).
    ElectLeader {
        topic: String,
        partition: i32,
        leader: i32,
    },
    /// Changes a topic's replication factor: records it and starts moving each
    /// listed partition to its new replica list (a reassignment each), all at once.
    SetReplicationFactor {
        name: String,
        replication_factor: i16,
        moves: Vec<(i32, Vec<i32>)>,
    },
    /// Starts moving a partition to `target` replicas.
    Reassign {
        topic: String,
        partition: i32,
        target: Vec<i32>,
    },
    /// Finishes a reassignment: replicas become the target.
    CompleteReassignment {
        topic: String,
        partition: i32,
    },
    /// Cancels an in-flight reassignment: the replicas return to those it started
    /// from (AlterPartitionReassignments with no replicas). Refused when the leader
    /// already moved to a replica that is not among them and none of them can lead.
    CancelReassignment {
        topic: String,
        partition: i32,
    },
    AllocateProducerIds {
        broker: i32,
    },
    /// The partition leader uploaded `segment`; accepted only from the current leader
    /// epoch and when it continues the remote log (a re-commit of an identical entry is
    /// a no-op).
    CommitRemoteSegment {
        topic: String,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        segment: RemoteSegment,
    },
    /// Total retention or DeleteRecords: the leader drops the oldest remote segments
    /// ending at or before `through` (their objects are deleted afterwards), and with
    /// `log_start` records that no remote record below it is served any more.
    ExpireRemoteSegments {
        topic: String,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        through: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_start: Option<i64>,
    },
    /// Migration: the leader hands over a remote log recorded before the quorum
    /// carried it (a former `remote-manifest.json`); accepted only while the
    /// partition's remote log is still empty.
    AdoptRemoteLog {
        topic: String,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        log: RemoteLog,
    },
    /// Sets (`Some`) or removes (`None`) client quota values of one entity, all or
    /// nothing (AlterClientQuotas).
    AlterClientQuotas {
        entity: QuotaEntity,
        ops: BTreeMap<String, Option<QuotaValue>>,
    },
    /// Replaces (`upsert`) or removes (`delete`) SCRAM credentials of one user,
    /// all or nothing (AlterUserScramCredentials, checked before it is proposed).
    AlterScramCredentials {
        user: String,
        upsert: Vec<(ScramMechanism, ScramCredential)>,
        delete: Vec<ScramMechanism>,
    },
    /// Replaces the dynamic broker configs of one entity (a broker id, or `""` for
    /// the cluster-wide defaults); an empty map removes them.
    AlterBrokerConfigs {
        entity: String,
        configs: BTreeMap<String, String>,
    },
    /// Adds ACL bindings (CreateAcls; each checked before it is proposed).
    CreateAcls {
        acls: Vec<crate::security::acl::AclBinding>,
    },
    /// Removes ACL bindings (DeleteAcls: those its filters matched).
    DeleteAcls {
        acls: Vec<crate::security::acl::AclBinding>,
    },
    /// The remote objects of a deleted topic are gone.
    ForgetRemoteTopic {
        topic_id: Uuid,
    },
}

/// What applying a command produced, beyond the state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    ProducerIdBlock { start: i64, len: i64 },
}
