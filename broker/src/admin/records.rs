//! DeleteRecords over the admin API: run on the partition leader (any other broker
//! forwards the call there), with the Kafka API's semantics
//! ([`crate::kafka::delete_records::delete_on_leader`]).

use kafka_protocol::error::ResponseError;
use tonic::{Request, Response, Status};

use super::pb::{DeleteRecordsRequest, DeleteRecordsResponse};
use super::{peer_admin, AdminService, FORWARD_TIMEOUT};
use crate::kafka::delete_records::delete_on_leader;

impl AdminService {
    pub(super) async fn delete_records_here_or_at_leader(
        &self,
        r: DeleteRecordsRequest,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        let state = self.broker.cluster();
        let leader = state
            .topics
            .get(&r.topic)
            .ok_or_else(|| Status::not_found(format!("unknown topic `{}`", r.topic)))?
            .partitions
            .get(usize::try_from(r.partition).unwrap_or(usize::MAX))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "topic `{}` has no partition {}",
                    r.topic, r.partition
                ))
            })?
            .leader;
        if leader < 0 {
            return Err(Status::unavailable(format!(
                "{}-{} has no leader",
                r.topic, r.partition
            )));
        }
        if leader != self.broker.node_id() {
            let addr = state
                .brokers
                .get(&leader)
                .map(|b| b.internal.clone())
                .ok_or_else(|| Status::unavailable(format!("leader {leader} is not registered")))?;
            let mut forward = Request::new(r);
            forward.set_timeout(FORWARD_TIMEOUT);
            return peer_admin(&self.broker, &addr)?
                .delete_records(forward)
                .await;
        }
        let what = format!("{}-{} offset {}", r.topic, r.partition, r.offset);
        match delete_on_leader(&self.broker, &r.topic, r.partition, r.offset).await {
            Ok(low_watermark) => Ok(Response::new(DeleteRecordsResponse { low_watermark })),
            Err(ResponseError::OffsetOutOfRange) => Err(Status::out_of_range(format!(
                "{what}: the offset is past the high watermark"
            ))),
            Err(ResponseError::InvalidTopicException) => Err(Status::invalid_argument(format!(
                "{what}: records of internal topics cannot be deleted"
            ))),
            Err(ResponseError::UnknownTopicOrPartition) => Err(Status::not_found(format!(
                "{what}: unknown topic or partition"
            ))),
            Err(e) if e.is_retriable() => Err(Status::unavailable(format!("{what}: {e}"))),
            Err(e) => Err(Status::internal(format!("{what}: {e}"))),
        }
    }
}
