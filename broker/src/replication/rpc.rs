//! The internal gRPC service between brokers: Raft messages, proposals forwarded to
//! the quorum leader, and follower fetches (answered by [`super::serve`]).

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::serve::serve_fetch;
use crate::broker::Broker;
use crate::quorum::proto::internal_server::Internal;
use crate::quorum::proto::{RaftMessage, ReplicaFetchRequest, ReplicaFetchResponse};

/// The internal gRPC service.
pub struct InternalService {
    broker: Arc<Broker>,
}

impl InternalService {
    pub fn new(broker: Arc<Broker>) -> Self {
        InternalService { broker }
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn raft(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let payload = self
            .broker
            .quorum
            .handle_raft(&m.kind, &m.payload)
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(RaftMessage {
            kind: m.kind,
            payload: Bytes::from(payload),
        }))
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let reply = self.broker.quorum.handle_propose(&m.payload).await;
        let payload = serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            kind: "propose".into(),
            payload: payload.into(),
        }))
    }

    async fn replica_fetch(
        &self,
        req: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        Ok(Response::new(
            serve_fetch(&self.broker, req.into_inner()).await,
        ))
    }
}
