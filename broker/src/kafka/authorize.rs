//! The ACL checks of each request, as Kafka's request handlers make them, when an
//! authorizer is configured. Each check takes the decoded request and either
//! refuses it whole (the response with Kafka's error code) or passes it on with
//! the entries the client may not touch removed, and a patch that puts their
//! errors back into the handler's response. Handlers know nothing of ACLs.
//!
//! What each API needs (Kafka's `KafkaApis`):
//! * Produce: WRITE on each topic (TOPIC_AUTHORIZATION_FAILED), and WRITE on the
//!   transactional id of a transactional producer (TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
//! * Fetch (consumers), ListOffsets, OffsetForLeaderEpoch: READ / DESCRIBE /
//!   DESCRIBE on each topic; a Fetch from a replica: CLUSTER_ACTION;
//! * Metadata: DESCRIBE on each topic (unnamed: the list is filtered), and for an
//!   auto-created topic CREATE on the cluster or on the topic;
//! * CreateTopics: CREATE on the cluster or the topic; DeleteTopics: DELETE;
//!   CreatePartitions: ALTER; DeleteRecords: DELETE; DescribeProducers: READ;
//! * configs: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or on the cluster for
//!   broker configs (CLUSTER_AUTHORIZATION_FAILED);
//! * groups: READ (join, sync, heartbeat, leave, commit, plus READ on the topics
//!   committed), DESCRIBE (describe, offset fetch, find coordinator), DELETE
//!   (delete groups, offset delete); ListGroups lists only the groups the client may
//!   describe unless it may describe the cluster;
//! * transactions: WRITE on the transactional id (InitProducerId, AddPartitionsToTxn,
//!   AddOffsetsToTxn, EndTxn, TxnOffsetCommit) plus WRITE / READ on the topics and
//!   the group; InitProducerId without one: IDEMPOTENT_WRITE on the cluster or
//!   WRITE on any topic (KIP-679); WriteTxnMarkers and verify-only
//!   AddPartitionsToTxn (broker to broker): CLUSTER_ACTION;
//! * cluster operations (ACLs, SCRAM users, quotas, reassignments, leader
//!   elections, log dirs): ALTER / DESCRIBE (ALTER_CONFIGS / DESCRIBE_CONFIGS for
//!   quotas) on the cluster.

// A refusal is the whole response, made once per request and handed straight to
// the encoder: not an error value passed up a call chain.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::metadata::cluster::ClusterState;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::{host_of, Authorizer};
use crate::security::ClientContext;

use Operation as Op;
use ResourceType as Rt;

/// The ACL view of one request: the authorizer, the ACLs, who asks.
pub struct Authz<'a> {
    on: Option<(&'a Authorizer, Arc<ClusterState>, String)>,
    ctx: &'a ClientContext,
}

/// Puts the refused entries' errors into the handler's response.
pub type Patch<R> = Box<dyn FnOnce(&mut R) + Send>;
/// A checked request: passed on (maybe narrowed, with a patch), or refused.
pub type Checked<Q, R> = Result<(Q, Patch<R>), R>;

fn pass<Q, R>(q: Q) -> Checked<Q, R> {
    Ok((q, Box::new(|_| {})))
}

const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN_DENIED: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

impl<'a> Authz<'a> {
    pub fn new(broker: &'a Broker, ctx: &'a ClientContext) -> Self {
        Authz {
            on: broker
                .authorizer
                .as_ref()
                .map(|a| (a, broker.cluster(), host_of(ctx))),
            ctx,
        }
    }

    pub fn enabled(&self) -> bool {
        self.on.is_some()
    }

    fn check(&self, op: Op, rt: Rt, name: &str, log: bool) -> bool {
        match &self.on {
            None => true,
            Some((a, state, host)) => a.authorize(&state.acls, self.ctx, host, op, rt, name, log),
        }
    }

    pub fn allows(&self, op: Op, rt: Rt, name: &str) -> bool {
        self.check(op, rt, name, true)
    }
    pub fn cluster(&self, op: Op) -> bool {
        self.allows(op, Rt::Cluster, CLUSTER_NAME)
    }
    pub fn topic(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::Topic, name)
    }
    pub fn group(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::Group, name)
    }
    pub fn txn(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::TransactionalId, name)
    }
    fn any(&self, op: Op, rt: Rt) -> bool {
        match &self.on {
            None => true,
            Some((a, state, host)) => a.authorize_any(&state.acls, self.ctx, host, op, rt),
        }
    }
    fn topic_name_by_id(&self, id: &uuid::Uuid) -> Option<String> {
        let (_, state, _) = self.on.as_ref()?;
        state
            .topics
            .values()
            .find(|t| &t.record.id == id)
            .map(|t| t.record.name.clone())
    }
}

fn s(v: &StrBytes) -> &str {
    v.as_str()
}

/// Splits `items` into those `ok` accepts and the rest.
fn split<T>(items: Vec<T>, mut ok: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|t| ok(t))
}

/// A request refused whole on the cluster resource, for responses with a
/// top-level error code.
macro_rules! cluster_gate {
    ($az:expr, $op:expr, $req:expr, $resp:ty) => {{
        if $az.cluster($op) {
            pass($req)
        } else {
            let mut r = <$resp>::default();
            r.error_code = CLUSTER_DENIED;
            Err(r)
        }
    }};
}

pub fn produce(az: &Authz, mut req: ProduceRequest) -> Checked<ProduceRequest, ProduceResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let txn_ok = req
        .transactional_id
        .as_ref()
        .is_none_or(|t| az.txn(Op::Write, s(t)));
    let topics = std::mem::take(&mut req.topic_data);
    let (ok, denied) = split(topics, |t| txn_ok && az.topic(Op::Write, s(&t.name)));
    req.topic_data = ok;
    let code = if txn_ok { TOPIC_DENIED } else { TXN_DENIED };
    Ok((
        req,
        Box::new(move |resp: &mut ProduceResponse| {
            for t in denied {
                let mut tr = produce_response::TopicProduceResponse::default();
                tr.name = t.name;
                tr.topic_id = t.topic_id;
                for p in t.partition_data {
                    let mut pr = produce_response::PartitionProduceResponse::default();
                    pr.index = p.index;
                    pr.error_code = code;
                    pr.base_offset = -1;
                    pr.log_append_time_ms = -1;
                    pr.log_start_offset = -1;
                    tr.partition_responses.push(pr);
                }
                resp.responses.push(tr);
            }
        }),
    ))
}

pub fn fetch(az: &Authz, mut req: FetchRequest) -> Checked<FetchRequest, FetchResponse> {
    if !az.enabled() {
        return pass(req);
    }
    // A replica fetching (a broker): CLUSTER_ACTION on the cluster.
    if req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0 {
        if az.cluster(Op::ClusterAction) {
            return pass(req);
        }
        let mut r = FetchResponse::default();
        r.error_code = CLUSTER_DENIED;
        return Err(r);
    }
    let topics = std::mem::take(&mut req.topics);
    let (ok, denied) = split(topics, |t| {
        let name = if s(&t.topic).is_empty() {
            az.topic_name_by_id(&t.topic_id)
        } else {
            Some(s(&t.topic).to_string())
        };
        // An unknown topic id is left to the handler (UNKNOWN_TOPIC_ID).
        name.is_none_or(|n| az.topic(Op::Read, &n))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut FetchResponse| {
            for t in denied {
                let mut tr = fetch_response::FetchableTopicResponse::default();
                tr.topic = t.topic;
                tr.topic_id = t.topic_id;
                for p in t.partitions {
                    let mut pd = fetch_response::PartitionData::default();
                    pd.partition_index = p.partition;
                    pd.error_code = TOPIC_DENIED;
                    pd.high_watermark = -1;
                    pd.last_stable_offset = -1;
                    pd.log_start_offset = -1;
                    pd.preferred_read_replica = (-1).into();
                    pd.records = Some(Default::default());
                    tr.partitions.push(pd);
                }
                resp.responses.push(tr);
            }
        }),
    ))
}

pub fn list_offsets(
    az: &Authz,
    mut req: ListOffsetsRequest,
) -> Checked<ListOffsetsRequest, ListOffsetsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Describe, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut ListOffsetsResponse| {
            for t in denied {
                let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
                tr.name = t.name;
                for p in t.partitions {
                    let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = TOPIC_DENIED;
                    pr.timestamp = -1;
                    pr.offset = -1;
                    pr.leader_epoch = -1;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }),
    ))
}

pub fn leader_epoch(
    az: &Authz,
    mut req: OffsetForLeaderEpochRequest,
) -> Checked<OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse> {
    if !az.enabled() {
        return pass(req);
    }
    if req.replica_id.0 >= 0 && !az.cluster(Op::ClusterAction) {
        req.topics.clear();
        return Ok((req, Box::new(|_| {})));
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Describe, s(&t.topic))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut OffsetForLeaderEpochResponse| {
            for t in denied {
                let mut tr =
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                tr.topic = t.topic;
                for p in t.partitions {
                    let mut pr = offset_for_leader_epoch_response::EpochEndOffset::default();
                    pr.partition = p.partition;
                    pr.error_code = TOPIC_DENIED;
                    pr.leader_epoch = -1;
                    pr.end_offset = -1;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }),
    ))
}

/// Metadata: named topics the client may not describe are answered
/// TOPIC_AUTHORIZATION_FAILED, as are unknown ones it may not create (when the
/// request would create them); the full list holds only the topics it may describe.
pub fn metadata(
    az: &Authz,
    broker: &Broker,
    mut req: MetadataRequest,
) -> Checked<MetadataRequest, MetadataResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let mut denied: Vec<String> = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    if let Some(topics) = req.topics.take() {
        let state = broker.cluster();
        let auto_create = req.allow_auto_topic_creation && broker.config.auto_create_topics;
        let mut cluster_create: Option<bool> = None;
        let mut ok = Vec::new();
        for t in topics {
            let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
                ok.push(t);
                continue;
            };
            if !az.topic(Op::Describe, &name) {
                denied.push(name);
                continue;
            }
            if auto_create && !state.topics.contains_key(&name) {
                let cluster = *cluster_create
                    .get_or_insert_with(|| az.check(Op::Create, Rt::Cluster, CLUSTER_NAME, false));
                if !cluster && !az.topic(Op::Create, &name) {
                    denied.push(name);
                    continue;
                }
            }
            passed.push(name);
            ok.push(t);
        }
        req.topics = Some(ok);
    }
    // Only the topics this client may describe: a full listing drops the rest
    // silently (they are no event); topics named by id are checked here too.
    // Computed now: the patch may not borrow `az`.
    let mut allowed_names = visible_topics(az).unwrap_or_default();
    allowed_names.extend(passed);
    Ok((
        req,
        Box::new(move |resp: &mut MetadataResponse| {
            resp.topics.retain(|t| {
                t.name
                    .as_ref()
                    .is_none_or(|n| t.error_code != 0 || allowed_names.contains(n.as_str()))
            });
            for name in denied {
                let mut tr = metadata_response::MetadataResponseTopic::default();
                tr.error_code = TOPIC_DENIED;
                tr.name = Some(super::str_bytes(name).into());
                tr.topic_authorized_operations = i32::MIN;
                resp.topics.push(tr);
            }
        }),
    ))
}

fn az_check_quiet(az: &Authz, name: &str) -> bool {
    az.check(Op::Describe, Rt::Topic, name, false)
}

pub fn describe_topic_partitions(
    az: &Authz,
    mut req: DescribeTopicPartitionsRequest,
) -> Checked<DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Describe, s(&t.name))
    });
    req.topics = ok;
    // Listing (no names): drop what may not be described.
    let state_names: Option<std::collections::BTreeSet<String>> =
        az.on.as_ref().map(|(_, st, _)| {
            st.topics
                .keys()
                .filter(|n| az_check_quiet(az, n))
                .cloned()
                .collect()
        });
    Ok((
        req,
        Box::new(move |resp: &mut DescribeTopicPartitionsResponse| {
            if let Some(names) = state_names {
                resp.topics.retain(|t| {
                    t.error_code != 0 || t.name.as_ref().is_none_or(|n| names.contains(n.as_str()))
                });
            }
            for t in denied {
                let mut tr =
                    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default();
                tr.error_code = TOPIC_DENIED;
                tr.name = Some(t.name);
                tr.topic_authorized_operations = i32::MIN;
                resp.topics.push(tr);
            }
        }),
    ))
}

pub fn create_topics(
    az: &Authz,
    mut req: CreateTopicsRequest,
) -> Checked<CreateTopicsRequest, CreateTopicsResponse> {
    if !az.enabled() || az.check(Op::Create, Rt::Cluster, CLUSTER_NAME, false) {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Create, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut CreateTopicsResponse| {
            for t in denied {
                let mut tr = create_topics_response::CreatableTopicResult::default();
                tr.name = t.name;
                tr.error_code = TOPIC_DENIED;
                tr.error_message = Some(super::str_bytes("Authorization failed."));
                tr.num_partitions = -1;
                tr.replication_factor = -1;
                resp.topics.push(tr);
            }
        }),
    ))
}

pub fn delete_topics(
    az: &Authz,
    mut req: DeleteTopicsRequest,
) -> Checked<DeleteTopicsRequest, DeleteTopicsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (names, denied_names) = split(std::mem::take(&mut req.topic_names), |n| {
        az.topic(Op::Delete, s(n))
    });
    req.topic_names = names;
    let (states, denied_states) = split(std::mem::take(&mut req.topics), |t| {
        let name = match &t.name {
            Some(n) => Some(n.to_string()),
            None => az.topic_name_by_id(&t.topic_id),
        };
        name.is_none_or(|n| az.topic(Op::Delete, &n))
    });
    req.topics = states;
    Ok((
        req,
        Box::new(move |resp: &mut DeleteTopicsResponse| {
            for n in denied_names {
                let mut r = delete_topics_response::DeletableTopicResult::default();
                r.name = Some(n);
                r.error_code = TOPIC_DENIED;
                resp.responses.push(r);
            }
            for t in denied_states {
                let mut r = delete_topics_response::DeletableTopicResult::default();
                r.name = t.name;
                r.topic_id = t.topic_id;
                r.error_code = TOPIC_DENIED;
                resp.responses.push(r);
            }
        }),
    ))
}

pub fn create_partitions(
    az: &Authz,
    mut req: CreatePartitionsRequest,
) -> Checked<CreatePartitionsRequest, CreatePartitionsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Alter, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut CreatePartitionsResponse| {
            for t in denied {
                let mut r = create_partitions_response::CreatePartitionsTopicResult::default();
                r.name = t.name;
                r.error_code = TOPIC_DENIED;
                resp.results.push(r);
            }
        }),
    ))
}

pub fn delete_records(
    az: &Authz,
    mut req: DeleteRecordsRequest,
) -> Checked<DeleteRecordsRequest, DeleteRecordsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Delete, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut DeleteRecordsResponse| {
            for t in denied {
                let mut r = delete_records_response::DeleteRecordsTopicResult::default();
                r.name = t.name;
                for p in t.partitions {
                    let mut pr = delete_records_response::DeleteRecordsPartitionResult::default();
                    pr.partition_index = p.partition_index;
                    pr.low_watermark = -1;
                    pr.error_code = TOPIC_DENIED;
                    r.partitions.push(pr);
                }
                resp.topics.push(r);
            }
        }),
    ))
}

/// The config resource type codes (`ConfigResource.Type`).
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;
const CONFIG_GROUP: i8 = 32;

/// The check of one config resource: None when allowed, else the error code.
fn config_denied(az: &Authz, op: Op, resource_type: i8, name: &str) -> Option<i16> {
    let (ok, code) = match resource_type {
        CONFIG_TOPIC => (az.topic(op, name), TOPIC_DENIED),
        CONFIG_GROUP => (az.group(op, name), GROUP_DENIED),
        CONFIG_BROKER | CONFIG_BROKER_LOGGER => (az.cluster(op), CLUSTER_DENIED),
        _ => (true, 0),
    };
    (!ok).then_some(code)
}

/// A config request's check: resources `$op` is denied on are taken out of the
/// request, and the response gets a `$item` with the authorization error for each,
/// in `$field`, as Kafka answers them (per resource, the others proceed).
macro_rules! config_gate {
    ($name:ident, $req:ty, $resp:ty, $field:ident, $item:ty, $op:expr) => {
        pub fn $name(az: &Authz, mut req: $req) -> Checked<$req, $resp> {
            if !az.enabled() {
                return pass(req);
            }
            let mut denied = Vec::new();
            req.resources.retain(|r| {
                match config_denied(az, $op, r.resource_type, s(&r.resource_name)) {
                    Some(code) => {
                        denied.push((r.resource_type, r.resource_name.clone(), code));
                        false
                    }
                    None => true,
                }
            });
            Ok((
                req,
                Box::new(move |resp: &mut $resp| {
                    for (rt, name, code) in denied {
                        let mut r = <$item>::default();
                        r.resource_type = rt;
                        r.resource_name = name;
                        r.error_code = code;
                        r.error_message = Some(super::str_bytes("Authorization failed."));
                        resp.$field.push(r);
                    }
                }),
            ))
        }
    };
}

config_gate!(
    describe_configs,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    results,
    describe_configs_response::DescribeConfigsResult,
    Op::DescribeConfigs
);
config_gate!(
    alter_configs,
    AlterConfigsRequest,
    AlterConfigsResponse,
    responses,
    alter_configs_response::AlterConfigsResourceResponse,
    Op::AlterConfigs
);
config_gate!(
    incremental_alter_configs,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
    responses,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
    Op::AlterConfigs
);

pub fn describe_client_quotas(
    az: &Authz,
    req: DescribeClientQuotasRequest,
) -> Checked<DescribeClientQuotasRequest, DescribeClientQuotasResponse> {
    cluster_gate!(az, Op::DescribeConfigs, req, DescribeClientQuotasResponse)
}

pub fn alter_client_quotas(
    az: &Authz,
    req: AlterClientQuotasRequest,
) -> Checked<AlterClientQuotasRequest, AlterClientQuotasResponse> {
    if az.cluster(Op::AlterConfigs) {
        return pass(req);
    }
    let mut r = AlterClientQuotasResponse::default();
    for e in req.entries {
        let mut er = alter_client_quotas_response::EntryData::default();
        er.error_code = CLUSTER_DENIED;
        er.entity = e
            .entity
            .into_iter()
            .map(|x| {
                let mut d = alter_client_quotas_response::EntityData::default();
                d.entity_type = x.entity_type;
                d.entity_name = x.entity_name;
                d
            })
            .collect();
        r.entries.push(er);
    }
    Err(r)
}

pub fn describe_scram(
    az: &Authz,
    req: DescribeUserScramCredentialsRequest,
) -> Checked<DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse> {
    cluster_gate!(az, Op::Describe, req, DescribeUserScramCredentialsResponse)
}

pub fn alter_scram(
    az: &Authz,
    req: AlterUserScramCredentialsRequest,
) -> Checked<AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse> {
    if az.cluster(Op::Alter) {
        return pass(req);
    }
    let mut users: Vec<StrBytes> = req.deletions.iter().map(|d| d.name.clone()).collect();
    users.extend(req.upsertions.iter().map(|u| u.name.clone()));
    users.sort();
    users.dedup();
    let mut r = AlterUserScramCredentialsResponse::default();
    for u in users {
        let mut ur =
            alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
        ur.user = u;
        ur.error_code = CLUSTER_DENIED;
        r.results.push(ur);
    }
    Err(r)
}

pub fn describe_acls(
    az: &Authz,
    req: DescribeAclsRequest,
) -> Checked<DescribeAclsRequest, DescribeAclsResponse> {
    cluster_gate!(az, Op::Describe, req, DescribeAclsResponse)
}

pub fn create_acls(
    az: &Authz,
    req: CreateAclsRequest,
) -> Checked<CreateAclsRequest, CreateAclsResponse> {
    if az.cluster(Op::Alter) {
        return pass(req);
    }
    let mut r = CreateAclsResponse::default();
    for _ in &req.creations {
        let mut cr = create_acls_response::AclCreationResult::default();
        cr.error_code = CLUSTER_DENIED;
        r.results.push(cr);
    }
    Err(r)
}

pub fn delete_acls(
    az: &Authz,
    req: DeleteAclsRequest,
) -> Checked<DeleteAclsRequest, DeleteAclsResponse> {
    if az.cluster(Op::Alter) {
        return pass(req);
    }
    let mut r = DeleteAclsResponse::default();
    for _ in &req.filters {
        let mut fr = delete_acls_response::DeleteAclsFilterResult::default();
        fr.error_code = CLUSTER_DENIED;
        r.filter_results.push(fr);
    }
    Err(r)
}

pub fn elect_leaders(
    az: &Authz,
    req: ElectLeadersRequest,
) -> Checked<ElectLeadersRequest, ElectLeadersResponse> {
    cluster_gate!(az, Op::Alter, req, ElectLeadersResponse)
}

pub fn alter_reassignments(
    az: &Authz,
    req: AlterPartitionReassignmentsRequest,
) -> Checked<AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse> {
    cluster_gate!(az, Op::Alter, req, AlterPartitionReassignmentsResponse)
}

pub fn list_reassignments(
    az: &Authz,
    req: ListPartitionReassignmentsRequest,
) -> Checked<ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse> {
    cluster_gate!(az, Op::Describe, req, ListPartitionReassignmentsResponse)
}

pub fn describe_log_dirs(
    az: &Authz,
    req: DescribeLogDirsRequest,
) -> Checked<DescribeLogDirsRequest, DescribeLogDirsResponse> {
    cluster_gate!(az, Op::Describe, req, DescribeLogDirsResponse)
}

pub fn find_coordinator(
    az: &Authz,
    req: FindCoordinatorRequest,
) -> Checked<FindCoordinatorRequest, FindCoordinatorResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let key_type = req.key_type;
    let check = |key: &str| -> Option<i16> {
        match key_type {
            0 => (!az.group(Op::Describe, key)).then_some(GROUP_DENIED),
            1 => (!az.txn(Op::Describe, key)).then_some(TXN_DENIED),
            _ => None,
        }
    };
    if req.coordinator_keys.is_empty() {
        return match check(s(&req.key)) {
            None => pass(req),
            Some(code) => {
                let mut r = FindCoordinatorResponse::default();
                r.error_code = code;
                r.node_id = (-1).into();
                r.port = -1;
                Err(r)
            }
        };
    }
    let mut denied = Vec::new();
    let mut req = req;
    let keys = std::mem::take(&mut req.coordinator_keys);
    let mut ok = Vec::new();
    for k in keys {
        match check(s(&k)) {
            Some(code) => denied.push((k, code)),
            None => ok.push(k),
        }
    }
    req.coordinator_keys = ok;
    if req.coordinator_keys.is_empty() {
        let mut r = FindCoordinatorResponse::default();
        r.coordinators = denied.into_iter().map(denied_coordinator).collect();
        return Err(r);
    }
    Ok((
        req,
        Box::new(move |resp: &mut FindCoordinatorResponse| {
            resp.coordinators
                .extend(denied.into_iter().map(denied_coordinator));
        }),
    ))
}

fn denied_coordinator((key, code): (StrBytes, i16)) -> find_coordinator_response::Coordinator {
    let mut c = find_coordinator_response::Coordinator::default();
    c.key = key;
    c.node_id = (-1).into();
    c.port = -1;
    c.error_code = code;
    c
}

/// A group request refused whole (join, sync, heartbeat, leave, add offsets).
macro_rules! group_gate {
    ($name:ident, $req:ty, $resp:ty, $op:expr) => {
        pub fn $name(az: &Authz, req: $req) -> Checked<$req, $resp> {
            if az.group($op, s(&req.group_id)) {
                pass(req)
            } else {
                let mut r = <$resp>::default();
                r.error_code = GROUP_DENIED;
                Err(r)
            }
        }
    };
}

group_gate!(join_group, JoinGroupRequest, JoinGroupResponse, Op::Read);
group_gate!(sync_group, SyncGroupRequest, SyncGroupResponse, Op::Read);
group_gate!(heartbeat, HeartbeatRequest, HeartbeatResponse, Op::Read);
group_gate!(leave_group, LeaveGroupRequest, LeaveGroupResponse, Op::Read);

pub fn offset_commit(
    az: &Authz,
    mut req: OffsetCommitRequest,
) -> Checked<OffsetCommitRequest, OffsetCommitResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let group_ok = az.group(Op::Read, s(&req.group_id));
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        group_ok && az.topic(Op::Read, s(&t.name))
    });
    let code = if group_ok { TOPIC_DENIED } else { GROUP_DENIED };
    let answer = move |resp: &mut OffsetCommitResponse| {
        for t in denied {
            let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
            tr.name = t.name;
            tr.topic_id = t.topic_id;
            for p in t.partitions {
                let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = code;
                tr.partitions.push(pr);
            }
            resp.topics.push(tr);
        }
    };
    if ok.is_empty() {
        let mut r = OffsetCommitResponse::default();
        answer(&mut r);
        return Err(r);
    }
    req.topics = ok;
    Ok((req, Box::new(answer)))
}

pub fn offset_fetch(
    az: &Authz,
    mut req: OffsetFetchRequest,
) -> Checked<OffsetFetchRequest, OffsetFetchResponse> {
    if !az.enabled() {
        return pass(req);
    }
    // v0-7: one group.
    if req.groups.is_empty() {
        if !az.group(Op::Describe, s(&req.group_id)) {
            let mut r = OffsetFetchResponse::default();
            r.error_code = GROUP_DENIED;
            return Err(r);
        }
        let mut denied = Vec::new();
        if let Some(topics) = req.topics.take() {
            let (ok, d) = split(topics, |t| az.topic(Op::Describe, s(&t.name)));
            req.topics = Some(ok);
            denied = d;
        }
        let visible = visible_topics(az);
        return Ok((
            req,
            Box::new(move |resp: &mut OffsetFetchResponse| {
                if let Some(v) = &visible {
                    resp.topics.retain(|t| v.contains(t.name.as_str()));
                }
                for t in denied {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                    tr.name = t.name;
                    for p in t.partition_indexes {
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                        pr.partition_index = p;
                        pr.committed_offset = -1;
                        pr.committed_leader_epoch = -1;
                        pr.error_code = TOPIC_DENIED;
                        tr.partitions.push(pr);
                    }
                    resp.topics.push(tr);
                }
            }),
        ));
    }
    // v8+: several groups.
    let (ok, denied_groups) = split(std::mem::take(&mut req.groups), |g| {
        az.group(Op::Describe, s(&g.group_id))
    });
    let mut denied_topics = Vec::new();
    req.groups = ok
        .into_iter()
        .map(|mut g| {
            if let Some(topics) = g.topics.take() {
                let (ok, d) = split(topics, |t| az.topic(Op::Describe, s(&t.name)));
                g.topics = Some(ok);
                denied_topics.push((g.group_id.clone(), d));
            }
            g
        })
        .collect();
    let visible = visible_topics(az);
    let answer = move |resp: &mut OffsetFetchResponse| {
        if let Some(v) = &visible {
            for g in &mut resp.groups {
                g.topics.retain(|t| v.contains(t.name.as_str()));
            }
        }
        for (group, topics) in denied_topics {
            if let Some(g) = resp.groups.iter_mut().find(|g| g.group_id == group) {
                for t in topics {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                    tr.name = t.name;
                    tr.topic_id = t.topic_id;
                    for p in t.partition_indexes {
                        let mut pr =
                            offset_fetch_response::OffsetFetchResponsePartitions::default();
                        pr.partition_index = p;
                        pr.committed_offset = -1;
                        pr.committed_leader_epoch = -1;
                        pr.error_code = TOPIC_DENIED;
                        tr.partitions.push(pr);
                    }
                    g.topics.push(tr);
                }
            }
        }
        for g in denied_groups {
            let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id;
            gr.error_code = GROUP_DENIED;
            resp.groups.push(gr);
        }
    };
    if req.groups.is_empty() {
        let mut r = OffsetFetchResponse::default();
        answer(&mut r);
        return Err(r);
    }
    Ok((req, Box::new(answer)))
}

/// The topics the client may describe (for answers that list every committed
/// offset of a group).
fn visible_topics(az: &Authz) -> Option<std::collections::BTreeSet<String>> {
    az.on.as_ref().map(|(_, st, _)| {
        st.topics
            .keys()
            .filter(|n| az_check_quiet(az, n))
            .cloned()
            .collect()
    })
}

pub fn offset_delete(
    az: &Authz,
    mut req: OffsetDeleteRequest,
) -> Checked<OffsetDeleteRequest, OffsetDeleteResponse> {
    if !az.enabled() {
        return pass(req);
    }
    if !az.group(Op::Delete, s(&req.group_id)) {
        let mut r = OffsetDeleteResponse::default();
        r.error_code = GROUP_DENIED;
        return Err(r);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Read, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut OffsetDeleteResponse| {
            for t in denied {
                let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
                tr.name = t.name;
                for p in t.partitions {
                    let mut pr = offset_delete_response::OffsetDeleteResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = TOPIC_DENIED;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }),
    ))
}

pub fn describe_groups(
    az: &Authz,
    mut req: DescribeGroupsRequest,
) -> Checked<DescribeGroupsRequest, DescribeGroupsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.groups), |g| {
        az.group(Op::Describe, s(g))
    });
    req.groups = ok;
    let answer = move |resp: &mut DescribeGroupsResponse| {
        for g in denied {
            let mut d = describe_groups_response::DescribedGroup::default();
            d.group_id = g;
            d.error_code = GROUP_DENIED;
            d.authorized_operations = i32::MIN;
            resp.groups.push(d);
        }
    };
    if req.groups.is_empty() {
        let mut r = DescribeGroupsResponse::default();
        answer(&mut r);
        return Err(r);
    }
    Ok((req, Box::new(answer)))
}

/// ListGroups: everything for a client that may describe the cluster, else only
/// the groups it may describe (never an error).
pub fn list_groups(
    az: &Authz,
    req: ListGroupsRequest,
) -> Checked<ListGroupsRequest, ListGroupsResponse> {
    if !az.enabled() || az.check(Op::Describe, Rt::Cluster, CLUSTER_NAME, false) {
        return pass(req);
    }
    let Some((a, state, host)) = az.on.as_ref() else {
        return pass(req);
    };
    let settings = a.settings.clone();
    let (state, host, principal) = (
        Arc::clone(state),
        host.clone(),
        az.ctx.principal.to_string(),
    );
    Ok((
        req,
        Box::new(move |resp: &mut ListGroupsResponse| {
            resp.groups.retain(|g| {
                crate::security::acl::decide(
                    &settings,
                    &state.acls,
                    &principal,
                    &host,
                    Op::Describe,
                    Rt::Group,
                    s(&g.group_id),
                )
                .allowed()
            });
        }),
    ))
}

pub fn delete_groups(
    az: &Authz,
    mut req: DeleteGroupsRequest,
) -> Checked<DeleteGroupsRequest, DeleteGroupsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.groups_names), |g| {
        az.group(Op::Delete, s(g))
    });
    req.groups_names = ok;
    let answer = move |resp: &mut DeleteGroupsResponse| {
        for g in denied {
            let mut d = delete_groups_response::DeletableGroupResult::default();
            d.group_id = g;
            d.error_code = GROUP_DENIED;
            resp.results.push(d);
        }
    };
    if req.groups_names.is_empty() {
        let mut r = DeleteGroupsResponse::default();
        answer(&mut r);
        return Err(r);
    }
    Ok((req, Box::new(answer)))
}

pub fn init_producer_id(
    az: &Authz,
    req: InitProducerIdRequest,
) -> Checked<InitProducerIdRequest, InitProducerIdResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let code = match req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => (!az.txn(Op::Write, s(t))).then_some(TXN_DENIED),
        None => (!(az.check(Op::IdempotentWrite, Rt::Cluster, CLUSTER_NAME, false)
            || az.any(Op::Write, Rt::Topic)))
        .then_some(CLUSTER_DENIED),
    };
    match code {
        None => pass(req),
        Some(code) => {
            let mut r = InitProducerIdResponse::default();
            r.error_code = code;
            r.producer_id = (-1).into();
            r.producer_epoch = -1;
            Err(r)
        }
    }
}

pub fn add_partitions_to_txn(
    az: &Authz,
    mut req: AddPartitionsToTxnRequest,
) -> Checked<AddPartitionsToTxnRequest, AddPartitionsToTxnResponse> {
    if !az.enabled() {
        return pass(req);
    }
    // v4+: brokers verifying a transaction's partitions (CLUSTER_ACTION).
    if !req.transactions.is_empty() {
        if az.cluster(Op::ClusterAction) {
            return pass(req);
        }
        let mut r = AddPartitionsToTxnResponse::default();
        r.error_code = CLUSTER_DENIED;
        return Err(r);
    }
    let txn_ok = az.txn(Op::Write, s(&req.v3_and_below_transactional_id));
    let denied: Vec<(TopicName, Vec<i32>)> = req
        .v3_and_below_topics
        .iter()
        .filter(|t| !txn_ok || !az.topic(Op::Write, s(&t.name)))
        .map(|t| (t.name.clone(), t.partitions.clone()))
        .collect();
    if !txn_ok || !denied.is_empty() {
        // Kafka answers every partition: the refused ones with their error, the
        // others OPERATION_NOT_ATTEMPTED.
        let mut r = AddPartitionsToTxnResponse::default();
        for t in std::mem::take(&mut req.v3_and_below_topics) {
            let refused = denied.iter().any(|(n, _)| *n == t.name);
            let code = match (txn_ok, refused) {
                (false, _) => TXN_DENIED,
                (true, true) => TOPIC_DENIED,
                (true, false) => ResponseError::OperationNotAttempted.code(),
            };
            let mut tr = add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
            tr.name = t.name;
            for p in t.partitions {
                let mut pr =
                    add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = p;
                pr.partition_error_code = code;
                tr.results_by_partition.push(pr);
            }
            r.results_by_topic_v3_and_below.push(tr);
        }
        return Err(r);
    }
    pass(req)
}

pub fn add_offsets_to_txn(
    az: &Authz,
    req: AddOffsetsToTxnRequest,
) -> Checked<AddOffsetsToTxnRequest, AddOffsetsToTxnResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let code = if !az.txn(Op::Write, s(&req.transactional_id)) {
        TXN_DENIED
    } else if !az.group(Op::Read, s(&req.group_id)) {
        GROUP_DENIED
    } else {
        return pass(req);
    };
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = code;
    Err(r)
}

pub fn end_txn(az: &Authz, req: EndTxnRequest) -> Checked<EndTxnRequest, EndTxnResponse> {
    if az.txn(Op::Write, s(&req.transactional_id)) {
        return pass(req);
    }
    let mut r = EndTxnResponse::default();
    r.error_code = TXN_DENIED;
    r.producer_id = (-1).into();
    r.producer_epoch = -1;
    Err(r)
}

pub fn txn_offset_commit(
    az: &Authz,
    mut req: TxnOffsetCommitRequest,
) -> Checked<TxnOffsetCommitRequest, TxnOffsetCommitResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let whole = if !az.txn(Op::Write, s(&req.transactional_id)) {
        Some(TXN_DENIED)
    } else if !az.group(Op::Read, s(&req.group_id)) {
        Some(GROUP_DENIED)
    } else {
        None
    };
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        whole.is_none() && az.topic(Op::Read, s(&t.name))
    });
    let code = whole.unwrap_or(TOPIC_DENIED);
    let answer = move |resp: &mut TxnOffsetCommitResponse| {
        for t in denied {
            let mut tr = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
            tr.name = t.name;
            for p in t.partitions {
                let mut pr =
                    txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = code;
                tr.partitions.push(pr);
            }
            resp.topics.push(tr);
        }
    };
    if ok.is_empty() {
        let mut r = TxnOffsetCommitResponse::default();
        answer(&mut r);
        return Err(r);
    }
    req.topics = ok;
    Ok((req, Box::new(answer)))
}

pub fn write_txn_markers(
    az: &Authz,
    req: WriteTxnMarkersRequest,
) -> Checked<WriteTxnMarkersRequest, WriteTxnMarkersResponse> {
    if az.cluster(Op::ClusterAction) {
        return pass(req);
    }
    let mut r = WriteTxnMarkersResponse::default();
    for m in req.markers {
        let mut mr = write_txn_markers_response::WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        for t in m.topics {
            let mut tr = write_txn_markers_response::WritableTxnMarkerTopicResult::default();
            tr.name = t.name;
            for p in t.partition_indexes {
                let mut pr =
                    write_txn_markers_response::WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = CLUSTER_DENIED;
                tr.partitions.push(pr);
            }
            mr.topics.push(tr);
        }
        r.markers.push(mr);
    }
    Err(r)
}

pub fn describe_transactions(
    az: &Authz,
    mut req: DescribeTransactionsRequest,
) -> Checked<DescribeTransactionsRequest, DescribeTransactionsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.transactional_ids), |t| {
        az.txn(Op::Describe, s(t))
    });
    req.transactional_ids = ok;
    Ok((
        req,
        Box::new(move |resp: &mut DescribeTransactionsResponse| {
            for t in denied {
                let mut ts = describe_transactions_response::TransactionState::default();
                ts.transactional_id = t;
                ts.error_code = TXN_DENIED;
                resp.transaction_states.push(ts);
            }
        }),
    ))
}

pub fn list_transactions(
    az: &Authz,
    req: ListTransactionsRequest,
) -> Checked<ListTransactionsRequest, ListTransactionsResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let Some((a, state, host)) = az.on.as_ref() else {
        return pass(req);
    };
    let settings = a.settings.clone();
    let (state, host, principal) = (
        Arc::clone(state),
        host.clone(),
        az.ctx.principal.to_string(),
    );
    Ok((
        req,
        Box::new(move |resp: &mut ListTransactionsResponse| {
            resp.transaction_states.retain(|t| {
                crate::security::acl::decide(
                    &settings,
                    &state.acls,
                    &principal,
                    &host,
                    Op::Describe,
                    Rt::TransactionalId,
                    s(&t.transactional_id),
                )
                .allowed()
            });
        }),
    ))
}

pub fn describe_producers(
    az: &Authz,
    mut req: DescribeProducersRequest,
) -> Checked<DescribeProducersRequest, DescribeProducersResponse> {
    if !az.enabled() {
        return pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        az.topic(Op::Read, s(&t.name))
    });
    req.topics = ok;
    Ok((
        req,
        Box::new(move |resp: &mut DescribeProducersResponse| {
            for t in denied {
                let mut tr = describe_producers_response::TopicResponse::default();
                tr.name = t.name;
                for p in t.partition_indexes {
                    let mut pr = describe_producers_response::PartitionResponse::default();
                    pr.partition_index = p;
                    pr.error_code = TOPIC_DENIED;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }),
    ))
}
