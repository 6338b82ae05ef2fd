//! The metadata quorum: an `openraft` group over [`ClusterState`]. The first 1, 3 or
//! 5 brokers (the configured voters) vote; every other broker joins as a learner, so
//! every broker applies the same commands and can answer Metadata from its own copy.
//! Proposals made on a follower are forwarded to the Raft leader (the controller)
//! over the internal gRPC port.

pub mod network;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metadata::cluster::{Applied, ClusterState, Command};
use crate::metadata::MetadataError;
use network::Peers;
pub use store::Published;

pub mod proto {
    tonic::include_proto!("strata.internal.v1");
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Type parameters of the metadata Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// The outcome of one applied command, as returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult(pub Result<Applied, WireError>);

impl CommandResult {
    pub fn ok() -> Self {
        CommandResult(Ok(Applied::Done))
    }
}

impl From<Result<Applied, MetadataError>> for CommandResult {
    fn from(r: Result<Applied, MetadataError>) -> Self {
        CommandResult(r.map_err(WireError::from))
    }
}

/// A metadata error that crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    TopicExists(String),
    UnknownTopic(String),
    InvalidTopicName(String),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidConfig(String),
    Other(String),
}

impl From<MetadataError> for WireError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::TopicExists(s) => WireError::TopicExists(s),
            MetadataError::UnknownTopic(s) => WireError::UnknownTopic(s),
            MetadataError::InvalidTopicName(s) => WireError::InvalidTopicName(s),
            MetadataError::InvalidPartitions(s) => WireError::InvalidPartitions(s),
            MetadataError::InvalidReplicationFactor(s) => WireError::InvalidReplicationFactor(s),
            MetadataError::InvalidConfig(s) => WireError::InvalidConfig(s),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for MetadataError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::TopicExists(s) => MetadataError::TopicExists(s),
            WireError::UnknownTopic(s) => MetadataError::UnknownTopic(s),
            WireError::InvalidTopicName(s) => MetadataError::InvalidTopicName(s),
            WireError::InvalidPartitions(s) => MetadataError::InvalidPartitions(s),
            WireError::InvalidReplicationFactor(s) => MetadataError::InvalidReplicationFactor(s),
            WireError::InvalidConfig(s) => MetadataError::InvalidConfig(s),
            WireError::Other(s) => MetadataError::Quorum(s),
        }
    }
}

/// The reply to a forwarded proposal.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeReply {
    Applied { index: u64, result: CommandResult },
    NotLeader,
    Failed(String),
}

/// How this broker takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Where the Raft log, vote and snapshots live.
    pub dir: PathBuf,
    /// This broker's internal gRPC address as other brokers reach it.
    pub advertised: String,
    /// The voters: broker id → internal address.
    pub voters: BTreeMap<NodeId, String>,
    pub election_timeout_ms: u64,
    /// How this broker reaches the others' internal listeners (TLS, token).
    pub peer_security: crate::security::admin::AdminClientSecurity,
}

pub struct Quorum {
    pub node_id: NodeId,
    pub advertised: String,
    voters: BTreeMap<NodeId, String>,
    raft: Raft,
    published: watch::Receiver<Published>,
    peers: Arc<Peers>,
}

/// How long a proposal keeps retrying while there is no reachable leader.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(15);

impl Quorum {
    pub async fn start(config: QuorumConfig) -> anyhow::Result<Arc<Quorum>> {
        let log = store::LogStore::open(&config.dir.join("log")).map_err(|e| {
            anyhow::anyhow!("cannot open raft log in {}: {e}", config.dir.display())
        })?;
        let (sm, published) = store::StateMachine::open(&config.dir.join("state"))
            .map_err(|e| anyhow::anyhow!("cannot open metadata state machine: {e}"))?;
        let election = config.election_timeout_ms.max(300);
        let raft_config = openraft::Config {
            cluster_name: "strata".into(),
            heartbeat_interval: election / 4,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(2000),
            max_in_snapshot_log_to_keep: 200,
            install_snapshot_timeout: 2000,
            ..Default::default()
        }
        .validate()?;
        let peers = Arc::new(Peers::new(config.peer_security.clone()));
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::Network {
                peers: Arc::clone(&peers),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the metadata quorum: {e}"))?;
        if config.voters.contains_key(&config.node_id) {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => info!(voters = ?config.voters, "initialized the metadata quorum"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    debug!("metadata quorum already initialized")
                }
                Err(e) => return Err(anyhow::anyhow!("cannot initialize the quorum: {e}")),
            }
        }
        Ok(Arc::new(Quorum {
            node_id: config.node_id,
            advertised: config.advertised,
            voters: config.voters,
            raft,
            published,
            peers,
        }))
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The latest applied cluster state.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.published.borrow().state)
    }

    pub fn published(&self) -> Published {
        self.published.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.published.clone()
    }

    /// The current Raft leader (the controller), if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// Proposes a command and waits until the quorum applied it; forwarded to the
    /// leader when this broker is not it. Returns the log index and the outcome.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Applied), MetadataError> {
        let deadline = Instant::now() + PROPOSE_DEADLINE;
        let mut last_error = String::from("no metadata leader elected yet");
        loop {
            match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => {
                    return resp
                        .data
                        .0
                        .map(|a| (resp.log_id.index, a))
                        .map_err(Into::into)
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    // Unknown leader (e.g. a broker not yet in the quorum): ask the
                    // configured voters; the leader among them applies it.
                    let targets: Vec<String> = match f.leader_node {
                        Some(node) => vec![node.addr],
                        None => self
                            .voters
                            .iter()
                            .filter(|(id, _)| **id != self.node_id)
                            .map(|(_, a)| a.clone())
                            .collect(),
                    };
                    for addr in targets {
                        match self.peers.propose(&addr, &cmd).await {
                            Ok(ProposeReply::Applied { index, result }) => {
                                return result.0.map(|a| (index, a)).map_err(Into::into)
                            }
                            Ok(ProposeReply::NotLeader) => {
                                last_error = format!("{addr} is not the leader")
                            }
                            Ok(ProposeReply::Failed(e)) => last_error = e,
                            Err(e) => last_error = format!("{addr}: {e}"),
                        }
                    }
                }
                Err(e) => last_error = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(MetadataError::Quorum(last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Proposes a command as the controller: only while this broker is the Raft
    /// leader, never forwarded. A controller decision is made from this broker's
    /// view; if another broker leads now, that view may be stale, and forwarding the
    /// decision would let the new leader commit it.
    pub async fn propose_as_leader(&self, cmd: Command) -> Result<(u64, Applied), MetadataError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => resp
                .data
                .0
                .map(|a| (resp.log_id.index, a))
                .map_err(Into::into),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                MetadataError::Quorum("no longer the controller: decision dropped".into()),
            ),
            Err(e) => Err(MetadataError::Quorum(e.to_string())),
        }
    }

    /// Waits until this broker has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.published.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| p.applied_index >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Serves a forwarded proposal (this broker is expected to be the leader).
    pub async fn handle_propose(&self, payload: &[u8]) -> ProposeReply {
        let cmd: Command = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => return ProposeReply::Failed(format!("undecodable command: {e}")),
        };
        match self.raft.client_write(cmd).await {
            Ok(resp) => ProposeReply::Applied {
                index: resp.log_id.index,
                result: resp.data,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                ProposeReply::NotLeader
            }
            Err(e) => ProposeReply::Failed(e.to_string()),
        }
    }

    /// Serves one Raft RPC from a peer.
    pub async fn handle_raft(&self, kind: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        fn de<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, String> {
            serde_json::from_slice(p).map_err(|e| format!("undecodable raft message: {e}"))
        }
        let out = match kind {
            "append" => serde_json::to_vec(&self.raft.append_entries(de(payload)?).await),
            "vote" => serde_json::to_vec(&self.raft.vote(de(payload)?).await),
            "snapshot" => serde_json::to_vec(&self.raft.install_snapshot(de(payload)?).await),
            other => return Err(format!("unknown raft message kind `{other}`")),
        };
        out.map_err(|e| e.to_string())
    }

    /// Keeps the learners in step with the registered brokers: adds registered brokers
    /// that are not yet quorum members as learners, so they receive the metadata log,
    /// follows a learner that re-registered from a new address (a rescheduled pod gets
    /// a new IP), and removes learners whose broker was unregistered, so the leader
    /// stops replicating to them. Only the leader does this. Voters keep their
    /// configured addresses (stable DNS names in Kubernetes) and are never removed.
    pub async fn sync_learners(&self, brokers: &[(NodeId, String)]) {
        let known: BTreeMap<NodeId, (String, bool)> = self
            .published
            .borrow()
            .membership
            .iter()
            .map(|(id, addr, voter)| (*id, (addr.clone(), *voter)))
            .collect();
        for (id, addr) in brokers {
            match known.get(id) {
                Some((_, true)) => continue,
                Some((old, false)) if old == addr => continue,
                Some((old, false)) => {
                    let nodes = BTreeMap::from([(*id, BasicNode::new(addr))]);
                    match self
                        .raft
                        .change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
                        .await
                    {
                        Ok(_) => info!(
                            broker = id,
                            old = %old,
                            new = %addr,
                            "learner moved; updated its metadata quorum address"
                        ),
                        Err(e) => warn!(broker = id, error = %e, "cannot update learner address"),
                    }
                }
                None => match self
                    .raft
                    .add_learner(*id, BasicNode::new(addr), false)
                    .await
                {
                    Ok(_) => info!(
                        broker = id,
                        addr, "added broker to the metadata quorum as a learner"
                    ),
                    Err(e) => warn!(broker = id, error = %e, "cannot add learner"),
                },
            }
        }
        let gone: BTreeSet<NodeId> = known
            .iter()
            .filter(|(id, (_, voter))| !voter && !brokers.iter().any(|(b, _)| b == *id))
            .map(|(id, _)| *id)
            .collect();
        if !gone.is_empty() {
            match self
                .raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(gone.clone()), false)
                .await
            {
                Ok(_) => {
                    info!(brokers = ?gone, "removed unregistered brokers from the metadata quorum")
                }
                Err(e) => warn!(brokers = ?gone, error = %e, "cannot remove learners"),
            }
        }
    }

    /// Whether broker `id` is a voter of the metadata quorum.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.published
            .borrow()
            .membership
            .iter()
            .any(|(m, _, voter)| *m == id && *voter)
    }

    /// Resolves when the Raft core has stopped by itself, with the reason: openraft
    /// stops at the first error of its log or state machine storage (a full or
    /// failing disk), and never starts again in this process. A broker left running
    /// without it can commit no heartbeat, is fenced, and stays fenced after the disk
    /// recovers, so the caller exits instead and a restart recovers (as Kafka halts
    /// when its metadata log cannot be written).
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            let state = metrics.borrow().running_state.clone();
            if let Err(fatal) = state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core task ended".into();
            }
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "metadata quorum did not shut down cleanly");
        }
    }
}
