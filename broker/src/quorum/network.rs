//! Connections to other brokers' internal gRPC port, shared by the Raft network, the
//! proposal forwarding and the follower fetchers. One lazily connected channel per
//! peer address; tonic multiplexes every RPC to that peer over it.

use std::collections::HashMap;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::proto::internal_client::InternalClient;
use super::proto::RaftMessage;
use super::{NodeId, ProposeReply, TypeConfig};
use crate::metadata::cluster::Command;
use crate::security::admin::{AdminChannel, AdminClientSecurity};

pub struct Peers {
    channels: Mutex<Channels>,
    /// TLS (mutual, with this broker's certificate) and the token, when the
    /// admin/internal listeners are secured.
    security: AdminClientSecurity,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot make a channel to a peer: {0}")]
    Address(String),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("undecodable reply: {0}")]
    Decode(#[from] serde_json::Error),
}

/// How often the TLS files of the channels are looked at for a rotation.
const FILES_CHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Channels {
    by_addr: HashMap<String, AdminChannel>,
    /// The TLS files the channels were made with, and when that was last checked.
    files: Option<crate::security::tls::Stamp>,
    checked: Option<std::time::Instant>,
}

impl Peers {
    pub fn new(security: AdminClientSecurity) -> Self {
        Peers {
            channels: Mutex::default(),
            security,
        }
    }

    /// A client for `addr` (`host:port`), connecting lazily.
    pub fn client(&self, addr: &str) -> Result<InternalClient<AdminChannel>, PeerError> {
        Ok(InternalClient::new(self.channel(addr)?).max_decoding_message_size(256 << 20))
    }

    /// The cached channel to `addr` (`host:port`), created lazily on first use; the
    /// internal and admin services of a broker share it.
    pub fn channel(&self, addr: &str) -> Result<AdminChannel, PeerError> {
        let mut channels = self.channels.lock();
        if self.security.tls() && channels.checked.is_none_or(|t| t.elapsed() >= FILES_CHECK) {
            channels.checked = Some(std::time::Instant::now());
            let now = self.security.stamp();
            if channels.files.as_ref().is_some_and(|f| *f != now) {
                // New calls use new connections with the new files; calls in flight
                // finish on the old ones, which close after them.
                tracing::info!(
                    "admin TLS files changed: new connections to the other brokers use them"
                );
                channels.by_addr.clear();
            }
            channels.files = Some(now);
        }
        if let Some(c) = channels.by_addr.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .security
            .endpoint(addr)
            .map_err(PeerError::Address)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = self.security.wrap(channel);
        channels.by_addr.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        kind: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(RaftMessage {
            kind: kind.to_string(),
            payload: serde_json::to_vec(req)?.into(),
        });
        request.set_timeout(timeout);
        let reply = client.raft(request).await?.into_inner();
        Ok(serde_json::from_slice(&reply.payload)?)
    }

    pub async fn propose(&self, addr: &str, cmd: &Command) -> Result<ProposeReply, PeerError> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(RaftMessage {
            kind: "propose".into(),
            payload: serde_json::to_vec(cmd)?.into(),
        });
        request.set_timeout(Duration::from_secs(5));
        let reply = client.propose(request).await?.into_inner();
        Ok(serde_json::from_slice(&reply.payload)?)
    }
}

/// Creates a [`PeerConn`] per Raft peer.
pub struct Network {
    pub peers: std::sync::Arc<Peers>,
}

pub struct PeerConn {
    peers: std::sync::Arc<Peers>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            peers: std::sync::Arc::clone(&self.peers),
            target,
            addr: node.addr.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerConn {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: &str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, E> = self
            .peers
            .call(&self.addr, kind, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Decode(d) => RPCError::Network(NetworkError::new(&d)),
                other => RPCError::Unreachable(Unreachable::new(&other)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.rpc("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.rpc("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.rpc("vote", &rpc, &option).await
    }
}
