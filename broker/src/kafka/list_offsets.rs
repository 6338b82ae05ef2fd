//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset
//! whose record timestamp is at or after a given time.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::log_error_code;
use crate::broker::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let state = broker.topic(&t.name.0);
        for lp in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            let partition = match &state {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(s) => s.leader_of(lp.partition_index),
            };
            match partition {
                Err(e) => pr.error_code = e.code(),
                Ok(p) => {
                    if version >= 4 {
                        pr.leader_epoch = p.leader_epoch();
                    }
                    let found = match lp.timestamp {
                        LATEST => Ok(Some((p.high_watermark(), -1))),
                        EARLIEST => Ok(Some((p.log_start_offset(), -1))),
                        MAX_TIMESTAMP if version >= 7 => p.max_timestamp_offset(),
                        ts if ts >= 0 => p.offset_for_timestamp(ts),
                        _ => {
                            pr.error_code = ResponseError::InvalidRequest.code();
                            Ok(None)
                        }
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            pr.offset = offset;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(e) => pr.error_code = log_error_code(&e).code(),
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
