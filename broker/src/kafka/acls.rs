//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs of the cluster, as
//! `kafka-acls --add / --list / --remove` and the AdminClient manage them. They are
//! stored in the metadata quorum (`ClusterState::acls`), so every broker enforces
//! the same ones; a change is answered once this broker applied it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::Command;
use crate::security::acl::{
    AclBinding, AclFilter, Acls, Operation, PatternType, Permission, ResourceType,
};

/// A filter from its wire fields, or why it is invalid (unknown codes).
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<String>,
    pattern_type: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    Ok(AclFilter {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| format!("Invalid resource type {resource_type}"))?,
        resource_name: name,
        pattern_type: PatternType::from_code(pattern_type)
            .ok_or_else(|| format!("Invalid pattern type {pattern_type}"))?,
        principal,
        host,
        operation: Operation::from_code(operation)
            .ok_or_else(|| format!("Invalid operation {operation}"))?,
        permission: Permission::from_code(permission)
            .ok_or_else(|| format!("Invalid permission type {permission}"))?,
    })
}

/// A binding from the wire fields of a creation, checked.
fn binding(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<AclBinding, String> {
    let b = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| format!("Invalid resource type {}", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type)
            .ok_or_else(|| format!("Invalid pattern type {}", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation)
            .ok_or_else(|| format!("Invalid operation {}", c.operation))?,
        permission: Permission::from_code(c.permission_type)
            .ok_or_else(|| format!("Invalid permission type {}", c.permission_type))?,
    };
    match b.invalid() {
        Some(why) => Err(why),
        None => Ok(b),
    }
}

pub async fn create(
    broker: &Arc<Broker>,
    req: CreateAclsRequest,
    _version: i16,
) -> CreateAclsResponse {
    let mut resp = CreateAclsResponse::default();
    let mut valid = Vec::new();
    for c in &req.creations {
        let mut r = AclCreationResult::default();
        match binding(c) {
            Ok(b) => valid.push((resp.results.len(), b)),
            Err(why) => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(str_bytes(why));
            }
        }
        resp.results.push(r);
    }
    if valid.is_empty() {
        return resp;
    }
    let acls: Vec<AclBinding> = valid.iter().map(|(_, b)| b.clone()).collect();
    match broker
        .quorum
        .propose(Command::CreateAcls { acls: acls.clone() })
        .await
    {
        Ok((index, _)) => {
            for b in &acls {
                info!(acl = ?b, "ACL created");
            }
            broker.wait_reconciled(index).await;
        }
        Err(e) => {
            for (i, _) in &valid {
                resp.results[*i].error_code = metadata_error_code(&e).code();
                resp.results[*i].error_message = Some(str_bytes(e.to_string()));
            }
        }
    }
    resp
}

/// The ACLs `f` matches, grouped by resource pattern.
fn matching<'a>(
    acls: &'a Acls,
    f: &AclFilter,
) -> BTreeMap<(ResourceType, String, PatternType), Vec<&'a AclBinding>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for b in acls.iter().filter(|b| f.matches(b)) {
        out.entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(b);
    }
    out
}

pub async fn describe(
    broker: &Arc<Broker>,
    req: DescribeAclsRequest,
    _version: i16,
) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.map(|s| s.to_string()),
        req.pattern_type_filter,
        req.principal_filter.map(|s| s.to_string()),
        req.host_filter.map(|s| s.to_string()),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => {
            resp.error_code = ResponseError::InvalidRequest.code();
            resp.error_message = Some(str_bytes(why));
            return resp;
        }
    };
    let state = broker.cluster();
    for ((rt, name, pt), bindings) in matching(&state.acls, &f) {
        let mut r = DescribeAclsResource::default();
        r.resource_type = rt.code();
        r.resource_name = str_bytes(name);
        r.pattern_type = pt.code();
        r.acls = bindings
            .into_iter()
            .map(|b| {
                let mut d = AclDescription::default();
                d.principal = str_bytes(b.principal.clone());
                d.host = str_bytes(b.host.clone());
                d.operation = b.operation.code();
                d.permission_type = b.permission.code();
                d
            })
            .collect();
        resp.resources.push(r);
    }
    resp
}

pub async fn delete(
    broker: &Arc<Broker>,
    req: DeleteAclsRequest,
    _version: i16,
) -> DeleteAclsResponse {
    let state = broker.cluster();
    let mut resp = DeleteAclsResponse::default();
    let mut doomed: Vec<AclBinding> = Vec::new();
    for f in req.filters {
        let mut r = DeleteAclsFilterResult::default();
        match filter(
            f.resource_type_filter,
            f.resource_name_filter.map(|s| s.to_string()),
            f.pattern_type_filter,
            f.principal_filter.map(|s| s.to_string()),
            f.host_filter.map(|s| s.to_string()),
            f.operation,
            f.permission_type,
        ) {
            Err(why) => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(str_bytes(why));
            }
            Ok(f) => {
                for b in state.acls.iter().filter(|b| f.matches(b)) {
                    let mut m = DeleteAclsMatchingAcl::default();
                    m.resource_type = b.resource_type.code();
                    m.resource_name = str_bytes(b.resource_name.clone());
                    m.pattern_type = b.pattern_type.code();
                    m.principal = str_bytes(b.principal.clone());
                    m.host = str_bytes(b.host.clone());
                    m.operation = b.operation.code();
                    m.permission_type = b.permission.code();
                    r.matching_acls.push(m);
                    if !doomed.contains(b) {
                        doomed.push(b.clone());
                    }
                }
            }
        }
        resp.filter_results.push(r);
    }
    if doomed.is_empty() {
        return resp;
    }
    match broker
        .quorum
        .propose(Command::DeleteAcls {
            acls: doomed.clone(),
        })
        .await
    {
        Ok((index, _)) => {
            for b in &doomed {
                info!(acl = ?b, "ACL deleted");
            }
            broker.wait_reconciled(index).await;
        }
        Err(e) => {
            for r in resp.filter_results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = metadata_error_code(&e).code();
                r.error_message = Some(str_bytes(e.to_string()));
                r.matching_acls.clear();
            }
        }
    }
    resp
}
