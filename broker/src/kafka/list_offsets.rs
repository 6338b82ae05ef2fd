//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset
//! whose record timestamp is at or after a given time. For tiered partitions the
//! earliest offset and timestamp searches include what only the tier holds. With
//! `isolation_level=read_committed` the latest offset is the last stable offset.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::fetch::tier_error_code;
use super::log_error_code;
use crate::broker::Broker;
use crate::partition::Partition;
use crate::tier::Tier;
use uuid::Uuid;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let read_committed = version >= 2 && req.isolation_level == 1;
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let state = broker.replicas.topic(&t.name.0);
        for lp in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            let partition = match &state {
                None => Err(ResponseError::UnknownTopicOrPartition),
                // As for Fetch: a stale leader would answer offsets a new one moved past.
                Some(_) if !broker.holds_lease() => Err(ResponseError::NotLeaderOrFollower),
                Some(s) => s
                    .leader_of(lp.partition_index)
                    .and_then(|p| p.check_offsets_available().map(|()| p)),
            };
            match partition {
                Err(e) => pr.error_code = e.code(),
                Ok(p) => {
                    if version >= 4 {
                        pr.leader_epoch = p.leader_epoch();
                    }
                    let tier = broker.tier.as_ref();
                    let tid = state.as_ref().map(|s| s.record.id).unwrap_or_default();
                    let found = match lp.timestamp {
                        // read_committed consumers start at the last stable offset.
                        LATEST if read_committed => Ok(Some((p.last_stable_offset(), -1))),
                        LATEST => Ok(Some((p.high_watermark(), -1))),
                        EARLIEST => {
                            let local = p.log_start_offset();
                            let start = tier.map_or(local, |t| t.log_start_offset(&tid, p, local));
                            Ok(Some((start, -1)))
                        }
                        MAX_TIMESTAMP if version >= 7 => max_timestamp(tier, &tid, p).await,
                        ts if ts >= 0 => by_timestamp(tier, &tid, p, ts).await,
                        _ => {
                            pr.error_code = ResponseError::InvalidRequest.code();
                            Ok(None)
                        }
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            // A timestamp search may land in a batch that straddles a
                            // log start DeleteRecords put inside it.
                            let local = p.log_start_offset();
                            let start = tier.map_or(local, |t| t.log_start_offset(&tid, p, local));
                            pr.offset = offset.max(start);
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(code) => pr.error_code = code.code(),
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

type Found = Result<Option<(i64, i64)>, ResponseError>;

/// First offset with a timestamp at or after `ts`: the tier's part of the log first.
async fn by_timestamp(tier: Option<&Arc<Tier>>, tid: &Uuid, p: &Partition, ts: i64) -> Found {
    if let Some(tier) = tier {
        let below = p.log_start_offset();
        match tier.offset_for_timestamp(tid, p, below, ts).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(e) => return Err(tier_error_code(&e)),
        }
    }
    p.offset_for_timestamp(ts).map_err(|e| log_error_code(&e))
}

/// The record with the largest timestamp, which may live only in the tier.
async fn max_timestamp(tier: Option<&Arc<Tier>>, tid: &Uuid, p: &Partition) -> Found {
    let local = p.max_timestamp_offset().map_err(|e| log_error_code(&e))?;
    let Some(tier) = tier else { return Ok(local) };
    let below = p.log_start_offset();
    match tier.max_timestamp_below(tid, p, below) {
        Some(remote) if local.is_none_or(|(_, ts)| remote > ts) => tier
            .offset_for_timestamp(tid, p, below, remote)
            .await
            .map_err(|e| tier_error_code(&e)),
        _ => Ok(local),
    }
}
