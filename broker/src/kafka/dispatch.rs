//! Turns one request frame into one response frame: checks the API key and version
//! against what we serve, decodes the body (guarding the decoder), calls the handler
//! and encodes the answer with the right header version. A frame that cannot be
//! understood yields [`Outcome::Close`] with a reason; nothing here panics on input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable};
use opentelemetry::KeyValue;

use super::{
    api_versions, configs, fetch, groups, list_offsets, metadata, offsets, produce, producer_id,
    topics,
};
use crate::broker::Broker;

/// What the connection should do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this frame (length prefix included).
    Reply(Bytes),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Close the connection, logging the reason.
    Close(String),
}

/// Smallest possible request: api key, api version, correlation id.
const MIN_HEADER: usize = 8;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Decodes a request body, turning decoder errors and panics into a close reason.
fn decode<T: Decodable>(buf: &mut Bytes, version: i16, api: ApiKey) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(|| T::decode(buf, version))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("malformed {api:?} v{version} request: {e}")),
        Err(_) => Err(format!(
            "malformed {api:?} v{version} request: decoder panicked"
        )),
    }
}

/// Encodes `[length][response header][body]`.
fn encode<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let header_version = api.response_header_version(version);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version))
        .map_err(|e| format!("cannot encode {api:?} v{version} response: {e}"))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Handles one request frame (without its length prefix).
pub async fn dispatch(broker: &Arc<Broker>, frame: Bytes) -> Outcome {
    if frame.len() < MIN_HEADER {
        return Outcome::Close(format!("request header truncated ({} bytes)", frame.len()));
    }
    let raw_key = i16_at(&frame, 0);
    let version = i16_at(&frame, 2);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown API key {raw_key}"));
    };
    let Some((lo, hi)) = api_versions::supported_range(api) else {
        return Outcome::Close(format!("API {api:?} is not served by this broker"));
    };
    if version < lo || version > hi {
        if api == ApiKey::ApiVersions {
            // Answer in v0 so any client can read it, then it retries with our range.
            let body = api_versions::response(Some(ResponseError::UnsupportedVersion));
            return reply(encode(api, 0, correlation_id, &body));
        }
        return Outcome::Close(format!(
            "unsupported version {version} of {api:?} (serving {lo}..={hi})"
        ));
    }
    let mut buf = frame;
    let header: RequestHeader = match catch_unwind(AssertUnwindSafe(|| {
        decode_request_header_from_buffer(&mut buf)
    })) {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Outcome::Close(format!("malformed request header: {e}")),
        Err(_) => return Outcome::Close("malformed request header: decoder panicked".into()),
    };
    let started = Instant::now();
    let outcome = route(broker, api, version, correlation_id, &header, buf).await;
    let label = [KeyValue::new("api", format!("{api:?}"))];
    broker
        .metrics
        .request_latency
        .record(started.elapsed().as_secs_f64(), &label);
    outcome
}

fn reply(r: Result<Bytes, String>) -> Outcome {
    match r {
        Ok(b) => Outcome::Reply(b),
        Err(e) => Outcome::Close(e),
    }
}

async fn route(
    broker: &Arc<Broker>,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    header: &RequestHeader,
    mut buf: Bytes,
) -> Outcome {
    macro_rules! handle {
        ($req:ty, $call:expr) => {{
            let req: $req = match decode(&mut buf, version, api) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(e),
            };
            let resp = $call(req).await;
            reply(encode(api, version, correlation_id, &resp))
        }};
    }
    use kafka_protocol::messages::*;
    match api {
        ApiKey::ApiVersions => {
            handle!(ApiVersionsRequest, |_req| async {
                api_versions::response(None)
            })
        }
        ApiKey::Metadata => handle!(MetadataRequest, |req| metadata::handle(
            broker, req, version
        )),
        ApiKey::Produce => {
            let req: ProduceRequest = match decode(&mut buf, version, api) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(e),
            };
            match produce::handle(broker, req, version).await {
                Some(resp) => reply(encode(api, version, correlation_id, &resp)),
                None => Outcome::Silent,
            }
        }
        ApiKey::Fetch => handle!(FetchRequest, |req| fetch::handle(broker, req, version)),
        ApiKey::ListOffsets => handle!(ListOffsetsRequest, |req| list_offsets::handle(
            broker, req, version
        )),
        ApiKey::CreateTopics => handle!(CreateTopicsRequest, |req| topics::create_topics(
            broker, req, version
        )),
        ApiKey::DeleteTopics => handle!(DeleteTopicsRequest, |req| topics::delete_topics(
            broker, req, version
        )),
        ApiKey::CreatePartitions => {
            handle!(CreatePartitionsRequest, |req| topics::create_partitions(
                broker, req, version
            ))
        }
        ApiKey::DescribeConfigs => handle!(DescribeConfigsRequest, |req| configs::describe(
            broker, req, version
        )),
        ApiKey::InitProducerId => handle!(InitProducerIdRequest, |req| producer_id::handle(
            broker, req, version
        )),
        ApiKey::FindCoordinator => {
            handle!(FindCoordinatorRequest, |req| groups::find_coordinator(
                broker, req, version
            ))
        }
        ApiKey::JoinGroup => {
            let client = groups::client_id(header);
            handle!(JoinGroupRequest, |req| groups::join_group(
                broker, req, version, &client
            ))
        }
        ApiKey::SyncGroup => handle!(SyncGroupRequest, |req| groups::sync_group(
            broker, req, version
        )),
        ApiKey::Heartbeat => handle!(HeartbeatRequest, |req| groups::heartbeat(
            broker, req, version
        )),
        ApiKey::LeaveGroup => handle!(LeaveGroupRequest, |req| groups::leave_group(
            broker, req, version
        )),
        ApiKey::DescribeGroups => handle!(DescribeGroupsRequest, |req| groups::describe_groups(
            broker, req, version
        )),
        ApiKey::ListGroups => handle!(ListGroupsRequest, |req| groups::list_groups(
            broker, req, version
        )),
        ApiKey::DeleteGroups => handle!(DeleteGroupsRequest, |req| groups::delete_groups(
            broker, req, version
        )),
        ApiKey::OffsetCommit => handle!(OffsetCommitRequest, |req| offsets::commit(
            broker, req, version
        )),
        ApiKey::OffsetFetch => handle!(OffsetFetchRequest, |req| offsets::fetch(
            broker, req, version
        )),
        ApiKey::OffsetDelete => handle!(OffsetDeleteRequest, |req| offsets::delete(
            broker, req, version
        )),
        other => Outcome::Close(format!("API {other:?} is not served by this broker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use proptest::prelude::*;

    /// Decodes `body` as the request `api` at `version`, as the dispatcher would.
    fn decode_any(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
        let mut buf = Bytes::copy_from_slice(body);
        match api {
            ApiKey::Produce => decode::<ProduceRequest>(&mut buf, version, api).map(drop),
            ApiKey::Fetch => decode::<FetchRequest>(&mut buf, version, api).map(drop),
            ApiKey::ListOffsets => decode::<ListOffsetsRequest>(&mut buf, version, api).map(drop),
            ApiKey::Metadata => decode::<MetadataRequest>(&mut buf, version, api).map(drop),
            ApiKey::ApiVersions => decode::<ApiVersionsRequest>(&mut buf, version, api).map(drop),
            ApiKey::CreateTopics => decode::<CreateTopicsRequest>(&mut buf, version, api).map(drop),
            ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(&mut buf, version, api).map(drop),
            ApiKey::CreatePartitions => {
                decode::<CreatePartitionsRequest>(&mut buf, version, api).map(drop)
            }
            ApiKey::DescribeConfigs => {
                decode::<DescribeConfigsRequest>(&mut buf, version, api).map(drop)
            }
            ApiKey::InitProducerId => {
                decode::<InitProducerIdRequest>(&mut buf, version, api).map(drop)
            }
            ApiKey::FindCoordinator => {
                decode::<FindCoordinatorRequest>(&mut buf, version, api).map(drop)
            }
            ApiKey::JoinGroup => decode::<JoinGroupRequest>(&mut buf, version, api).map(drop),
            ApiKey::SyncGroup => decode::<SyncGroupRequest>(&mut buf, version, api).map(drop),
            ApiKey::Heartbeat => decode::<HeartbeatRequest>(&mut buf, version, api).map(drop),
            ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(&mut buf, version, api).map(drop),
            ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(&mut buf, version, api).map(drop),
            ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(&mut buf, version, api).map(drop),
            ApiKey::DescribeGroups => {
                decode::<DescribeGroupsRequest>(&mut buf, version, api).map(drop)
            }
            ApiKey::ListGroups => decode::<ListGroupsRequest>(&mut buf, version, api).map(drop),
            ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(&mut buf, version, api).map(drop),
            ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(&mut buf, version, api).map(drop),
            _ => Ok(()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Random bodies for every served API and version never panic or abort (the
        /// test binary uses the same guarded allocator as the broker).
        #[test]
        fn decoder_survives_random_bodies(idx in 0usize..api_versions::SUPPORTED.len(), v in 0i16..20, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (api, lo, hi) = api_versions::SUPPORTED[idx];
            let version = lo + v % (hi - lo + 1);
            let _ = decode_any(api, version, &body);
        }

        /// Bodies that start with a huge element count, the shape of the allocation bomb.
        #[test]
        fn decoder_survives_count_bombs(idx in 0usize..api_versions::SUPPORTED.len(), v in 0i16..20, prefix in proptest::collection::vec(any::<u8>(), 0..12)) {
            let (api, lo, hi) = api_versions::SUPPORTED[idx];
            let version = lo + v % (hi - lo + 1);
            for bomb in [&[0x7f, 0xff, 0xff, 0xff][..], &[0xff, 0xff, 0xff, 0xff, 0x0f][..]] {
                let mut body = prefix.clone();
                body.extend_from_slice(bomb);
                let _ = decode_any(api, version, &body);
            }
        }
    }
}
