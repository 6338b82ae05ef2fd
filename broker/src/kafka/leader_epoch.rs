//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in the
//! leader's log. Consumers ask it after a leader change to learn whether the log was
//! truncated below their position (they then reset or report it); the answer comes
//! from the leader-epoch checkpoint. The leader fences a caller that believes in an
//! older or newer leader epoch, as for Fetch.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        let state = broker.replicas.topic(&t.topic.0);
        for p in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            let answer = match &state {
                None => Err(ResponseError::UnknownTopicOrPartition),
                // As for Fetch and ListOffsets: a broker without its lease may hold a
                // view another leader has moved past.
                Some(_) if !broker.holds_lease() => Err(ResponseError::NotLeaderOrFollower),
                Some(s) => s
                    .leader_of(p.partition)
                    .and_then(|part| part.epoch_end_offset(p.current_leader_epoch, p.leader_epoch)),
            };
            match answer {
                Ok((epoch, end)) => {
                    e.leader_epoch = epoch;
                    e.end_offset = end;
                }
                Err(code) => e.error_code = code.code(),
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    resp
}
