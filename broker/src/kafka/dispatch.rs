//! Turns one request frame into one response frame: checks the API key and version
//! against what we serve, decodes the body (guarding the decoder), calls the handler
//! and encodes the answer with the right header version. A frame that cannot be
//! understood yields [`Outcome::Close`] with a reason; nothing here panics on input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use opentelemetry::KeyValue;
use tracing::{debug, debug_span, warn, Instrument};

use super::authorize::{self as az, Authz};
use super::fetch_frame::{Encoded, FetchFrame, Frame};
use super::{
    acls, alter_configs, api_versions, client_quotas, committed_offsets, configs, delete_records,
    describe_cluster, describe_topic_partitions, describe_txn, elect_leaders, fetch, fetch_frame,
    groups, leader_epoch, list_offsets, log_dirs, produce, producer_id, reassignments, scram_users,
    topic_metadata, topics, transactions, txn_markers,
};
use crate::broker::Broker;
use crate::quota::{RequestCharge, ThrottleTime};
use crate::security::ClientContext;

/// What the connection should do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this frame (length prefix included).
    Reply(Bytes),
    /// Send this Fetch response, its records from the segment files when the
    /// connection allows (`fetch_frame`).
    Fetch(FetchFrame),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// The client is over a quota: send `reply` (if any) at once, then read nothing
    /// more from the connection for `mute` (KIP-219).
    Throttled {
        reply: Option<Frame>,
        mute: std::time::Duration,
    },
    /// Close the connection, logging the reason.
    Close(String),
    /// Send this frame, then close the connection (a refused authentication; the
    /// reason was logged where it was decided).
    CloseAfter(Bytes),
}

/// Smallest possible request: api key, api version, correlation id.
const MIN_HEADER: usize = 8;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Decodes a request body of a served API, turning decoder errors and panics into a
/// close reason.
pub fn decode_body(buf: &mut Bytes, api: ApiKey, version: i16) -> Result<RequestKind, String> {
    match catch_unwind(AssertUnwindSafe(|| RequestKind::decode(api, buf, version))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("malformed {api:?} v{version} request: {e:#}")),
        Err(_) => Err(format!(
            "malformed {api:?} v{version} request: decoder panicked"
        )),
    }
}

/// One request frame, decoded and checked against what this broker serves.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// A frame that is not a request this broker serves.
#[derive(Debug)]
pub enum Rejected {
    /// ApiVersions in a version we do not serve: answered (in v0) so that the
    /// client learns our range.
    ApiVersionsUnsupported { correlation_id: i32 },
    /// Anything else: the connection is closed with this reason.
    Close(String),
}

/// Decodes one request frame (without its length prefix): the only code that reads
/// untrusted request bytes before a handler runs, and what the request fuzz target
/// (`fuzz/fuzz_targets/request_frame.rs`) exercises.
pub fn decode_frame(frame: Bytes) -> Result<Request, Rejected> {
    if frame.len() < MIN_HEADER {
        return Err(Rejected::Close(format!(
            "request header truncated ({} bytes)",
            frame.len()
        )));
    }
    let raw_key = i16_at(&frame, 0);
    let version = i16_at(&frame, 2);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(raw_key) else {
        return Err(Rejected::Close(format!("unknown API key {raw_key}")));
    };
    let Some((lo, hi)) = api_versions::supported_range(api) else {
        return Err(Rejected::Close(format!(
            "API {api:?} is not served by this broker"
        )));
    };
    if version < lo || version > hi {
        if api == ApiKey::ApiVersions {
            return Err(Rejected::ApiVersionsUnsupported { correlation_id });
        }
        return Err(Rejected::Close(format!(
            "unsupported version {version} of {api:?} (serving {lo}..={hi})"
        )));
    }
    let mut buf = frame;
    let header: RequestHeader = match catch_unwind(AssertUnwindSafe(|| {
        decode_request_header_from_buffer(&mut buf)
    })) {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(Rejected::Close(format!("malformed request header: {e}"))),
        Err(_) => {
            return Err(Rejected::Close(
                "malformed request header: decoder panicked".into(),
            ))
        }
    };
    let body = decode_body(&mut buf, api, version).map_err(Rejected::Close)?;
    Ok(Request {
        api,
        version,
        correlation_id,
        header,
        body,
    })
}

/// Encodes `[length][response header][body]`.
pub(crate) fn encode<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let header_version = api.response_header_version(version);
    // Sized up front: a fetch response grown from a small buffer by doubling copied
    // its records about twice more on the way.
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .unwrap_or(64);
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version))
        .map_err(|e| format!("cannot encode {api:?} v{version} response: {e}"))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Handles one request frame (without its length prefix) from the client `ctx`
/// describes (authenticated already, when its listener asks for it).
pub async fn dispatch(broker: &Arc<Broker>, ctx: &ClientContext, frame: Bytes) -> Outcome {
    let frame_len = frame.len();
    let req = match decode_frame(frame) {
        Ok(r) => r,
        Err(Rejected::ApiVersionsUnsupported { correlation_id }) => {
            // Answer in v0 so any client can read it, then it retries with our range.
            let body = api_versions::response(Some(ResponseError::UnsupportedVersion));
            return reply(encode(ApiKey::ApiVersions, 0, correlation_id, &body));
        }
        Err(Rejected::Close(why)) => return Outcome::Close(why),
    };
    let (api, version, correlation_id) = (req.api, req.version, req.correlation_id);
    let started = Instant::now();
    let mut charge = RequestCharge::begin(
        broker,
        api,
        &req.header,
        frame_len,
        Arc::clone(&ctx.principal.name),
    );
    let busy = charge.busy_clock();
    // One span per request: the root of its trace when traces are exported.
    let span = debug_span!(
        "kafka.request",
        otel.name = %format_args!("kafka.{api:?}"),
        otel.kind = "server",
        kafka.api_version = version,
        kafka.correlation_id = correlation_id,
        kafka.client_id = req.header.client_id.as_deref().unwrap_or(""),
        kafka.listener = %ctx.listener,
        kafka.principal = %ctx.principal,
    );
    let outcome = crate::quota::request::busy(busy, route(broker, ctx, req, &mut charge))
        .instrument(span)
        .await;
    let elapsed = started.elapsed();
    let label = [KeyValue::new("api", format!("{api:?}"))];
    broker
        .metrics
        .request_latency
        .record(elapsed.as_secs_f64(), &label);
    // Requests of one connection are answered in order: a slow one holds back the
    // rest, so it is worth a line (the waits of Fetch and of a rebalance are not).
    let waits = matches!(api, ApiKey::Fetch | ApiKey::JoinGroup | ApiKey::SyncGroup);
    if elapsed >= SLOW_REQUEST && !waits {
        warn!(?api, version, correlation_id, ?elapsed, "slow request");
    } else {
        debug!(?api, version, correlation_id, ?elapsed, "request");
    }
    let mute = charge.mute(broker);
    match outcome {
        Outcome::Reply(b) if !mute.is_zero() => Outcome::Throttled {
            reply: Some(Frame::Bytes(b)),
            mute,
        },
        Outcome::Fetch(f) if !mute.is_zero() => Outcome::Throttled {
            reply: Some(Frame::Fetch(f)),
            mute,
        },
        Outcome::Silent if !mute.is_zero() => Outcome::Throttled { reply: None, mute },
        other => other,
    }
}

/// How long a request may take before it is logged as slow.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(10);

fn reply(r: Result<Bytes, String>) -> Outcome {
    match r {
        Ok(b) => Outcome::Reply(b),
        Err(e) => Outcome::Close(e),
    }
}

async fn route(
    broker: &Arc<Broker>,
    ctx: &ClientContext,
    req: Request,
    charge: &mut RequestCharge,
) -> Outcome {
    let Request {
        api,
        version,
        correlation_id,
        header,
        body,
    } = req;
    // Every response with a `throttle_time_ms` field carries the client's
    // request-quota throttle; `respond_unthrottled!` is for those without one.
    macro_rules! respond {
        ($resp:expr) => {{
            let mut resp = $resp.await;
            resp.set_throttle_time_ms(charge.response_throttle(broker));
            reply(encode(api, version, correlation_id, &resp))
        }};
    }
    macro_rules! respond_unthrottled {
        ($resp:expr) => {{
            let resp = $resp.await;
            reply(encode(api, version, correlation_id, &resp))
        }};
    }
    // The ACL check of the request (`authorize`), then the handler: a refused
    // request is answered at once; a narrowed one has its refusals patched in.
    let authz = Authz::new(broker, ctx);
    macro_rules! guarded {
        ($check:ident, $r:ident, |$q:ident| $handler:expr) => {
            match az::$check(&authz, $r) {
                Ok(($q, patch)) => respond!(async {
                    let mut resp = $handler.await;
                    patch(&mut resp);
                    resp
                }),
                Err(refused) => respond!(async { refused }),
            }
        };
    }
    match body {
        RequestKind::ApiVersions(_) => respond!(async { api_versions::response(None) }),
        RequestKind::Metadata(r) => match az::metadata(&authz, broker, r) {
            Ok((r, patch)) => respond!(async {
                let mut resp = topic_metadata::handle(broker, ctx, r, version).await;
                patch(&mut resp);
                resp
            }),
            Err(refused) => respond!(async { refused }),
        },
        RequestKind::Produce(r) => {
            let (r, patch) = match az::produce(&authz, r) {
                Ok(checked) => checked,
                Err(refused) => return reply(encode(api, version, correlation_id, &refused)),
            };
            match produce::handle(broker, r, version).await {
                Some(mut resp) => {
                    patch(&mut resp);
                    resp.throttle_time_ms = charge.produce(broker);
                    reply(encode(api, version, correlation_id, &resp))
                }
                None => {
                    charge.produce(broker);
                    Outcome::Silent
                }
            }
        }
        RequestKind::Fetch(r) => {
            let (r, patch) = match az::fetch(&authz, r) {
                Ok(checked) => checked,
                Err(refused) => return reply(encode(api, version, correlation_id, &refused)),
            };
            let mut answer = fetch::handle(broker, r, version).await;
            patch(&mut answer.resp);
            let file_bytes = answer.file_bytes();
            if charge.fetch(broker, &mut answer.resp, file_bytes, version) {
                answer.clear();
            }
            fetch::account(broker, &answer);
            let counter = Some(broker.metrics.fetch_bytes.clone());
            match fetch_frame::encode(version, correlation_id, answer, counter) {
                Ok(Encoded::Memory(resp)) => reply(encode(api, version, correlation_id, &resp)),
                Ok(Encoded::Files(f)) => Outcome::Fetch(f),
                Err(e) => Outcome::Close(e),
            }
        }
        RequestKind::ListOffsets(r) => {
            guarded!(list_offsets, r, |r| list_offsets::handle(
                broker, r, version
            ))
        }
        RequestKind::DescribeCluster(r) => {
            respond!(describe_cluster::handle(broker, ctx, r, version))
        }
        RequestKind::DescribeTopicPartitions(r) => {
            guarded!(describe_topic_partitions, r, |r| {
                describe_topic_partitions::handle(broker, r, version)
            })
        }
        RequestKind::DescribeLogDirs(r) => {
            guarded!(describe_log_dirs, r, |r| log_dirs::handle(
                broker, r, version
            ))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            guarded!(leader_epoch, r, |r| leader_epoch::handle(
                broker, r, version
            ))
        }
        RequestKind::CreateTopics(r) => {
            guarded!(create_topics, r, |r| topics::create_topics(
                broker, r, version
            ))
        }
        RequestKind::DeleteTopics(r) => {
            guarded!(delete_topics, r, |r| topics::delete_topics(
                broker, r, version
            ))
        }
        RequestKind::DeleteRecords(r) => {
            guarded!(delete_records, r, |r| delete_records::handle(
                broker, r, version
            ))
        }
        RequestKind::CreatePartitions(r) => {
            guarded!(create_partitions, r, |r| topics::create_partitions(
                broker, r, version
            ))
        }
        RequestKind::DescribeConfigs(r) => {
            guarded!(describe_configs, r, |r| configs::describe(
                broker, r, version
            ))
        }
        RequestKind::AlterConfigs(r) => {
            guarded!(alter_configs, r, |r| alter_configs::alter(
                broker, r, version
            ))
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            guarded!(
                incremental_alter_configs,
                r,
                |r| alter_configs::incremental(broker, r, version)
            )
        }
        RequestKind::DescribeClientQuotas(r) => {
            guarded!(describe_client_quotas, r, |r| client_quotas::describe(
                broker, r, version
            ))
        }
        RequestKind::AlterClientQuotas(r) => {
            guarded!(alter_client_quotas, r, |r| client_quotas::alter(
                broker, r, version
            ))
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            guarded!(describe_scram, r, |r| scram_users::describe(
                broker, r, version
            ))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            guarded!(alter_scram, r, |r| scram_users::alter(broker, r, version))
        }
        // Only SASL listeners authenticate (their connections answer these before
        // the dispatcher); elsewhere they are out of place, as in Kafka.
        RequestKind::SaslHandshake(_) => {
            let mut resp = kafka_protocol::messages::SaslHandshakeResponse::default();
            resp.error_code = ResponseError::IllegalSaslState.code();
            reply(encode(api, version, correlation_id, &resp))
        }
        RequestKind::SaslAuthenticate(_) => {
            let mut resp = kafka_protocol::messages::SaslAuthenticateResponse::default();
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.error_message = Some(super::str_bytes(format!(
                "listener {} does not use SASL",
                ctx.listener
            )));
            reply(encode(api, version, correlation_id, &resp))
        }
        RequestKind::ElectLeaders(r) => {
            guarded!(elect_leaders, r, |r| elect_leaders::handle(
                broker, r, version
            ))
        }
        RequestKind::DescribeAcls(r) => {
            guarded!(describe_acls, r, |r| acls::describe(broker, r, version))
        }
        RequestKind::CreateAcls(r) => {
            guarded!(create_acls, r, |r| acls::create(broker, r, version))
        }
        RequestKind::DeleteAcls(r) => {
            guarded!(delete_acls, r, |r| acls::delete(broker, r, version))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            guarded!(alter_reassignments, r, |r| reassignments::alter(
                broker, r, version
            ))
        }
        RequestKind::ListPartitionReassignments(r) => {
            guarded!(list_reassignments, r, |r| reassignments::list(
                broker, r, version
            ))
        }
        RequestKind::InitProducerId(r) => {
            guarded!(init_producer_id, r, |r| producer_id::handle(
                broker, r, version
            ))
        }
        RequestKind::FindCoordinator(r) => {
            guarded!(find_coordinator, r, |r| groups::find_coordinator(
                broker, ctx, r, version
            ))
        }
        RequestKind::JoinGroup(r) => {
            let client = groups::client_id(&header);
            guarded!(join_group, r, |r| groups::join_group(
                broker, r, version, &client
            ))
        }
        RequestKind::SyncGroup(r) => {
            guarded!(sync_group, r, |r| groups::sync_group(broker, r, version))
        }
        RequestKind::Heartbeat(r) => {
            guarded!(heartbeat, r, |r| groups::heartbeat(broker, r, version))
        }
        RequestKind::LeaveGroup(r) => {
            guarded!(leave_group, r, |r| groups::leave_group(broker, r, version))
        }
        RequestKind::DescribeGroups(r) => {
            guarded!(describe_groups, r, |r| groups::describe_groups(
                broker, r, version
            ))
        }
        RequestKind::ListGroups(r) => {
            guarded!(list_groups, r, |r| groups::list_groups(broker, r, version))
        }
        RequestKind::DeleteGroups(r) => {
            guarded!(delete_groups, r, |r| groups::delete_groups(
                broker, r, version
            ))
        }
        RequestKind::OffsetCommit(r) => {
            guarded!(offset_commit, r, |r| committed_offsets::commit(
                broker, r, version
            ))
        }
        RequestKind::OffsetFetch(r) => {
            guarded!(offset_fetch, r, |r| committed_offsets::fetch(
                broker, r, version
            ))
        }
        RequestKind::OffsetDelete(r) => {
            guarded!(offset_delete, r, |r| committed_offsets::delete(
                broker, r, version
            ))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            guarded!(add_partitions_to_txn, r, |r| transactions::add_partitions(
                broker, r, version
            ))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            guarded!(add_offsets_to_txn, r, |r| transactions::add_offsets(
                broker, r, version
            ))
        }
        RequestKind::EndTxn(r) => {
            guarded!(end_txn, r, |r| transactions::end_txn(broker, r, version))
        }
        RequestKind::TxnOffsetCommit(r) => {
            guarded!(txn_offset_commit, r, |r| transactions::txn_offset_commit(
                broker, r, version
            ))
        }
        RequestKind::WriteTxnMarkers(r) => match az::write_txn_markers(&authz, r) {
            Ok((r, _)) => respond_unthrottled!(txn_markers::handle(broker, r, version)),
            Err(refused) => respond_unthrottled!(async { refused }),
        },
        RequestKind::DescribeTransactions(r) => {
            guarded!(describe_transactions, r, |r| {
                describe_txn::describe_transactions(broker, r, version)
            })
        }
        RequestKind::ListTransactions(r) => {
            guarded!(list_transactions, r, |r| describe_txn::list_transactions(
                broker, r, version
            ))
        }
        RequestKind::DescribeProducers(r) => {
            guarded!(describe_producers, r, |r| describe_txn::describe_producers(
                broker, r, version
            ))
        }
        _ => Outcome::Close(format!("API {api:?} is not served by this broker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `body` as the request `api` at `version`, as the dispatcher would.
    fn decode_any(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
        decode_body(&mut Bytes::copy_from_slice(body), api, version).map(drop)
    }

    /// A frame header for `api`/`version` (client id "t"), then `body`.
    fn frame(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = 7;
        header.client_id = Some(kafka_protocol::protocol::StrBytes::from_static_str("t"));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        buf.extend_from_slice(body);
        buf.freeze()
    }

    #[test]
    fn frames_are_decoded_or_rejected_with_a_reason() {
        // Two empty compact strings (client software name and version), no tags.
        let ok = frame(ApiKey::ApiVersions, 3, &[1, 1, 0]);
        let req = decode_frame(ok).unwrap();
        assert_eq!(
            (req.api, req.version, req.correlation_id),
            (ApiKey::ApiVersions, 3, 7)
        );
        assert!(matches!(
            decode_frame(frame(ApiKey::ApiVersions, 99, &[])),
            Err(Rejected::ApiVersionsUnsupported { correlation_id: 7 })
        ));
        for bad in [
            Bytes::from_static(&[0, 3]),
            frame(ApiKey::Metadata, 99, &[]),
            frame(ApiKey::Metadata, 12, &[0xff; 3]),
            Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]),
        ] {
            match decode_frame(bad) {
                Err(Rejected::Close(why)) => assert!(!why.is_empty()),
                other => panic!("accepted: {other:?}"),
            }
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
