//! Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups and DeleteGroups. The decisions live in
//! `group::state`; this module maps wire fields to it and back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::str_bytes;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::{partition_for, OFFSETS_TOPIC};
use crate::group::state::{JoinRequest, JoinResult, Reply, SyncResult};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// The broker leading the partition of `key` in `internal_topic`
/// (`__consumer_offsets` or `__transaction_state`): `(id, host, port)`, the
/// endpoint of `listener` (None: the inter-broker one).
pub fn coordinator_for(
    broker: &Broker,
    internal_topic: &str,
    key: &str,
    listener: Option<&str>,
) -> Result<(i32, String, i32), ResponseError> {
    let state = broker.cluster();
    let topic = state
        .topics
        .get(internal_topic)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let n = topic.partitions.len() as i32;
    let p = usize::try_from(partition_for(key, n))
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let b = state
        .brokers
        .get(&p.leader)
        .filter(|_| state.is_live(p.leader))
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let (host, port) = match listener {
        None => (b.host.as_str(), b.port),
        Some(l) => b
            .endpoint(l)
            .ok_or(ResponseError::CoordinatorNotAvailable)?,
    };
    Ok((b.id, host.to_string(), port))
}

pub async fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &crate::security::ClientContext,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let internal_topic = match req.key_type {
        KEY_TYPE_GROUP => Some(OFFSETS_TOPIC),
        KEY_TYPE_TRANSACTION => {
            broker.ensure_txn_state_topic().await;
            Some(crate::txn::TXN_STATE_TOPIC)
        }
        _ => None,
    };
    let supported = internal_topic.is_some();
    let lookup = |key: &str| -> Result<(i32, String, i32), ResponseError> {
        match internal_topic {
            Some(topic) => coordinator_for(broker, topic, key, Some(&ctx.listener)),
            None => Err(ResponseError::InvalidRequest),
        }
    };
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                match lookup(k) {
                    Ok((id, host, port)) => {
                        c.node_id = BrokerId(id);
                        c.host = str_bytes(host);
                        c.port = port;
                    }
                    Err(e) => {
                        c.error_code = e.code();
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        if !supported {
                            c.error_message = Some(str_bytes(format!(
                                "unknown coordinator key type {}",
                                req.key_type
                            )));
                        }
                    }
                }
                c
            })
            .collect();
    } else {
        match lookup(&req.key) {
            Ok((id, host, port)) => {
                resp.node_id = BrokerId(id);
                resp.host = str_bytes(host);
                resp.port = port;
            }
            Err(e) => {
                resp.error_code = e.code();
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
        }
    }
    resp
}

/// Waits for a parked JoinGroup/SyncGroup answer; the group's own deadlines always
/// complete it, the timeout is only a safety net.
async fn wait<T>(rx: oneshot::Receiver<T>, limit_ms: i64, on_timeout: T) -> T {
    let limit = Duration::from_millis(limit_ms.clamp(0, 30 * 60 * 1000) as u64 + 5_000);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(v)) => v,
        _ => on_timeout,
    }
}

pub async fn join_group(
    broker: &Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default();
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        resp.error_code = ResponseError::InvalidGroupId.code();
        return resp;
    }
    if !broker.coordinates(&group_id) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let rebalance_timeout = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: i64::from(req.session_timeout_ms),
        rebalance_timeout_ms: i64::from(rebalance_timeout),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let group = broker.groups.group_or_create(&group_id);
    let reply = group.lock().join(join, now_ms());
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Wait(rx) => {
            let member = req.member_id.to_string();
            wait(
                rx,
                i64::from(rebalance_timeout),
                JoinResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    generation: -1,
                    protocol_type: None,
                    protocol_name: None,
                    leader: String::new(),
                    member_id: member,
                    members: Vec::new(),
                    skip_assignment: false,
                },
            )
            .await
        }
    };
    resp.error_code = code(result.error);
    resp.generation_id = result.generation;
    if version >= 7 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol_name.map(str_bytes);
    } else {
        resp.protocol_name = Some(str_bytes(result.protocol_name.unwrap_or_default()));
    }
    if version >= 9 {
        resp.skip_assignment = result.skip_assignment;
    }
    resp.leader = str_bytes(result.leader);
    resp.member_id = str_bytes(result.member_id);
    resp.members = result
        .members
        .into_iter()
        .map(|(id, inst, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(id);
            if version >= 5 {
                m.group_instance_id = inst.map(str_bytes);
            }
            m.metadata = meta;
            m
        })
        .collect();
    resp
}

pub async fn sync_group(
    broker: &Arc<Broker>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default();
    if !broker.coordinates(&req.group_id.0) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let Some(group) = broker.groups.group(&req.group_id.0) else {
        resp.error_code = ResponseError::UnknownMemberId.code();
        return resp;
    };
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    let reply = group.lock().sync(
        &req.member_id,
        inst.as_deref(),
        req.generation_id,
        assignments,
        now_ms(),
    );
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Wait(rx) => {
            wait(
                rx,
                5 * 60 * 1000,
                SyncResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    assignment: Bytes::new(),
                    protocol_type: None,
                    protocol_name: None,
                },
            )
            .await
        }
    };
    resp.error_code = code(result.error);
    resp.assignment = result.assignment;
    if version >= 5 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol_name.map(str_bytes);
    }
    resp
}

pub async fn heartbeat(
    broker: &Arc<Broker>,
    req: HeartbeatRequest,
    _version: i16,
) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    if !broker.coordinates(&req.group_id.0) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    resp.error_code = match broker.groups.group(&req.group_id.0) {
        None => ResponseError::UnknownMemberId.code(),
        Some(g) => {
            code(
                g.lock()
                    .heartbeat(&req.member_id, inst.as_deref(), req.generation_id, now_ms()),
            )
        }
    };
    resp
}

pub async fn leave_group(
    broker: &Arc<Broker>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let mut resp = LeaveGroupResponse::default();
    if !broker.coordinates(&req.group_id.0) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let group = broker.groups.group(&req.group_id.0);
    let now = now_ms();
    if version < 3 {
        resp.error_code = match &group {
            None => ResponseError::UnknownMemberId.code(),
            Some(g) => code(g.lock().leave(&req.member_id, None, now)),
        };
        return resp;
    }
    for m in &req.members {
        let mut r = MemberResponse::default();
        r.member_id = m.member_id.clone();
        r.group_instance_id = m.group_instance_id.clone();
        let inst = m.group_instance_id.as_ref().map(|s| s.to_string());
        r.error_code = match &group {
            None => ResponseError::UnknownMemberId.code(),
            Some(g) => code(g.lock().leave(&m.member_id, inst.as_deref(), now)),
        };
        resp.members.push(r);
    }
    resp
}

pub async fn describe_groups(
    broker: &Arc<Broker>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        if !broker.coordinates(&id.0) {
            d.error_code = ResponseError::NotCoordinator.code();
            resp.groups.push(d);
            continue;
        }
        match broker.groups.group(&id.0) {
            Some(g) => {
                let g = g.lock();
                d.group_state = str_bytes(g.state().name());
                d.protocol_type = str_bytes(g.protocol_type().unwrap_or(""));
                d.protocol_data = str_bytes(g.protocol().unwrap_or(""));
                let protocol = g.protocol().unwrap_or("").to_string();
                d.members = g
                    .members()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = str_bytes(m.id.clone());
                        if version >= 4 {
                            dm.group_instance_id = m.instance_id.clone().map(str_bytes);
                        }
                        dm.client_id = str_bytes(m.client_id.clone());
                        dm.client_host = str_bytes(m.client_host.clone());
                        dm.member_metadata = m.metadata(&protocol);
                        dm.member_assignment = m.assignment.clone();
                        dm
                    })
                    .collect();
            }
            None if !broker.groups.group_offsets(&id.0).is_empty() => {
                d.group_state = str_bytes("Empty");
                d.protocol_type = str_bytes("consumer");
            }
            None => {
                d.group_state = str_bytes("Dead");
                if version >= 6 {
                    d.error_code = ResponseError::GroupIdNotFound.code();
                }
            }
        }
        resp.groups.push(d);
    }
    resp
}

pub async fn list_groups(
    broker: &Arc<Broker>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    for l in broker.groups.list() {
        if version >= 4 && !states.is_empty() && !states.contains(&l.state.name().to_lowercase()) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(l.group_id));
        g.protocol_type = str_bytes(l.protocol_type);
        if version >= 4 {
            g.group_state = str_bytes(l.state.name());
        }
        if version >= 5 {
            g.group_type = str_bytes("classic");
        }
        resp.groups.push(g);
    }
    resp
}

pub async fn delete_groups(
    broker: &Arc<Broker>,
    req: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in req.groups_names {
        let mut r = DeletableGroupResult::default();
        r.error_code = if broker.coordinates(&id.0) {
            code(broker.groups.delete_group(&id.0, now_ms()).await.err())
        } else {
            ResponseError::NotCoordinator.code()
        };
        r.group_id = id;
        resp.results.push(r);
    }
    resp
}

/// The client id from the request header, for DescribeGroups.
pub fn client_id(header: &RequestHeader) -> String {
    header
        .client_id
        .as_ref()
        .map(StrBytes::to_string)
        .unwrap_or_default()
}
