//! SCRAM users, ACLs and user quotas over the admin API: what the operator's `User`
//! controller manages. The same quorum commands as `AlterUserScramCredentials`,
//! `CreateAcls` / `DeleteAcls` and `AlterClientQuotas` (see `kafka::scram_users`,
//! `kafka::acls`, `kafka::client_quotas`), with the same checks; a change is
//! answered once this broker applied it.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;
use tracing::info;

use super::pb;
use super::{status, AdminService};
use crate::metadata::cluster::Command;
use crate::quota::config::validate_op;
use crate::quota::{ClientQuotas, EntityName, QuotaEntity, QuotaKind, QuotaValue};
use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use crate::security::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// A stored binding from its admin API form, or why it cannot be stored.
pub(super) fn binding(b: &pb::AclBinding) -> Result<AclBinding, String> {
    fn field<T>(what: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, String> {
        parse(value).ok_or_else(|| format!("unknown {what} {value:?}"))
    }
    let binding = AclBinding {
        resource_type: field("resource_type", &b.resource_type, ResourceType::from_name)?,
        resource_name: b.resource_name.clone(),
        pattern_type: field("pattern_type", &b.pattern_type, PatternType::from_name)?,
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: field("operation", &b.operation, Operation::from_name)?,
        permission: field("permission", &b.permission, Permission::from_name)?,
    };
    match binding.invalid() {
        Some(why) => Err(why),
        None => Ok(binding),
    }
}

fn description(b: &AclBinding) -> pb::AclBinding {
    pb::AclBinding {
        resource_type: b.resource_type.name().into(),
        resource_name: b.resource_name.clone(),
        pattern_type: b.pattern_type.name().into(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.name().into(),
        permission: b.permission.name().into(),
    }
}

/// The credential an upsert asks for, checked as `AlterUserScramCredentials` is.
pub(super) fn credential(
    r: &pb::UpsertScramCredentialRequest,
) -> Result<(ScramMechanism, ScramCredential), String> {
    if r.user.is_empty() {
        return Err("the user name is empty".into());
    }
    let m = ScramMechanism::from_name(&r.mechanism)
        .ok_or_else(|| format!("unknown SCRAM mechanism {:?}", r.mechanism))?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&r.iterations) {
        return Err(format!(
            "iterations {} must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}",
            r.iterations
        ));
    }
    if r.salt.is_empty() || r.salted_password.len() != m.key_len() {
        return Err(format!(
            "a {} credential needs a salt and a {}-byte salted password",
            m.name(),
            m.key_len()
        ));
    }
    Ok((
        m,
        ScramCredential::from_salted_password(m, &r.salt, r.iterations, &r.salted_password),
    ))
}

/// The quota entity of a user alone (no client id).
fn user_entity(user: &str) -> QuotaEntity {
    QuotaEntity {
        user: Some(EntityName::Named(user.to_string())),
        client_id: None,
    }
}

fn quotas_of(quotas: &ClientQuotas, user: &str) -> HashMap<String, f64> {
    quotas
        .get(&user_entity(user))
        .map(|e| e.values.iter().map(|(k, v)| (k.clone(), v.0)).collect())
        .unwrap_or_default()
}

/// The alteration that makes a user's quotas exactly `wanted`: every served key is
/// set or removed. Checked as `AlterClientQuotas` checks it.
pub(super) fn quota_ops(
    wanted: &HashMap<String, f64>,
) -> Result<BTreeMap<String, Option<QuotaValue>>, String> {
    for (k, v) in wanted {
        validate_op(k, Some(*v))?;
    }
    Ok(QuotaKind::ALL
        .iter()
        .map(|k| {
            (
                k.key().to_string(),
                wanted.get(k.key()).map(|v| QuotaValue(*v)),
            )
        })
        .collect())
}

impl AdminService {
    pub(super) fn user_quotas(&self, user: String) -> pb::UserQuotas {
        let quotas = quotas_of(&self.broker.cluster().client_quotas, &user);
        pb::UserQuotas { user, quotas }
    }

    pub(super) async fn set_user_quotas_impl(
        &self,
        r: pb::UserQuotas,
    ) -> Result<pb::UserQuotas, Status> {
        if r.user.is_empty() {
            return Err(Status::invalid_argument("the user name is empty"));
        }
        let ops = quota_ops(&r.quotas).map_err(Status::invalid_argument)?;
        if quotas_of(&self.broker.cluster().client_quotas, &r.user) != r.quotas {
            self.apply(Command::AlterClientQuotas {
                entity: user_entity(&r.user),
                ops,
            })
            .await?;
            info!(user = %r.user, quotas = ?r.quotas, "user quotas set (admin API)");
        }
        Ok(self.user_quotas(r.user))
    }

    /// Proposes `cmd` and waits until this broker applied it.
    async fn apply(&self, cmd: Command) -> Result<(), Status> {
        let (index, _) = self.broker.quorum.propose(cmd).await.map_err(status)?;
        self.broker.wait_reconciled(index).await;
        Ok(())
    }

    pub(super) fn list_scram_users_impl(&self) -> pb::ListScramUsersResponse {
        let cluster = self.broker.cluster();
        let users = cluster
            .scram_credentials
            .iter()
            .map(|(name, creds)| pb::ScramUser {
                name: name.clone(),
                mechanisms: creds.keys().map(|m| m.name().to_string()).collect(),
            })
            .collect();
        pb::ListScramUsersResponse { users }
    }

    pub(super) async fn upsert_scram_credential_impl(
        &self,
        r: pb::UpsertScramCredentialRequest,
    ) -> Result<pb::ScramUser, Status> {
        let (m, cred) = credential(&r).map_err(Status::invalid_argument)?;
        self.apply(Command::AlterScramCredentials {
            user: r.user.clone(),
            upsert: vec![(m, cred)],
            delete: Vec::new(),
        })
        .await?;
        info!(user = %r.user, mechanism = m.name(), "SCRAM credential set (admin API)");
        let mechanisms = self
            .broker
            .cluster()
            .scram_credentials
            .get(&r.user)
            .map(|c| c.keys().map(|m| m.name().to_string()).collect())
            .unwrap_or_default();
        Ok(pb::ScramUser {
            name: r.user,
            mechanisms,
        })
    }

    pub(super) async fn delete_scram_user_impl(&self, user: String) -> Result<(), Status> {
        let mechanisms: Vec<ScramMechanism> =
            match self.broker.cluster().scram_credentials.get(&user) {
                Some(c) => c.keys().copied().collect(),
                None => return Err(Status::not_found(format!("no SCRAM user {user:?}"))),
            };
        self.apply(Command::AlterScramCredentials {
            user: user.clone(),
            upsert: Vec::new(),
            delete: mechanisms,
        })
        .await?;
        info!(%user, "SCRAM user deleted (admin API)");
        Ok(())
    }

    pub(super) fn list_acls_impl(&self, principal: &str) -> pb::ListAclsResponse {
        let cluster = self.broker.cluster();
        let acls = cluster
            .acls
            .iter()
            .filter(|b| principal.is_empty() || b.principal == principal)
            .map(description)
            .collect();
        pb::ListAclsResponse { acls }
    }

    /// Adds (`create`) or removes the bindings; answers how many were not there
    /// (added) or were there (removed).
    pub(super) async fn change_acls_impl(
        &self,
        acls: &[pb::AclBinding],
        create: bool,
    ) -> Result<pb::AclsResponse, Status> {
        let bindings = acls
            .iter()
            .map(binding)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let changed = {
            let cluster = self.broker.cluster();
            bindings
                .iter()
                .filter(|b| cluster.acls.contains(b) != create)
                .count()
        };
        if !bindings.is_empty() {
            for b in &bindings {
                info!(acl = ?b, create, "ACL changed (admin API)");
            }
            let cmd = if create {
                Command::CreateAcls { acls: bindings }
            } else {
                Command::DeleteAcls { acls: bindings }
            };
            self.apply(cmd).await?;
        }
        Ok(pb::AclsResponse {
            changed: i32::try_from(changed).unwrap_or(i32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(op: &str) -> pb::AclBinding {
        pb::AclBinding {
            resource_type: "topic".into(),
            resource_name: "orders-".into(),
            pattern_type: "Prefixed".into(),
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op.into(),
            permission: "ALLOW".into(),
        }
    }

    #[test]
    fn bindings_take_kafka_names_in_any_case() {
        let b = binding(&acl("DescribeConfigs")).expect("valid");
        assert_eq!(b.operation, Operation::DescribeConfigs);
        assert_eq!(b.pattern_type, PatternType::Prefixed);
        assert_eq!(description(&b).operation, "DESCRIBE_CONFIGS");
        assert_eq!(binding(&description(&b)), Ok(b));
        assert!(binding(&acl("Fly")).unwrap_err().contains("operation"));
        assert!(binding(&acl("ANY")).unwrap_err().contains("ANY"));
        let mut cluster = acl("ALTER");
        cluster.resource_type = "CLUSTER".into();
        assert!(
            binding(&cluster).is_err(),
            "the cluster is literal kafka-cluster"
        );
    }

    #[test]
    fn user_quotas_set_every_served_key_or_refuse() {
        let wanted: HashMap<String, f64> = [("producer_byte_rate".to_string(), 1048576.0)].into();
        let ops = quota_ops(&wanted).expect("valid");
        assert_eq!(ops.len(), 3, "the other keys are removed: {ops:?}");
        assert_eq!(ops["producer_byte_rate"], Some(QuotaValue(1048576.0)));
        assert_eq!(ops["consumer_byte_rate"], None);
        assert_eq!(ops["request_percentage"], None);
        assert!(quota_ops(&HashMap::new())
            .expect("clears")
            .values()
            .all(Option::is_none));
        let bad = |k: &str, v: f64| quota_ops(&[(k.to_string(), v)].into()).unwrap_err();
        assert!(bad("producer_byte_rate", 0.0).contains("positive"));
        assert!(bad("consumer_byte_rate", 1.5).contains("whole number"));
        assert!(bad("controller_mutation_rate", 1.0).contains("unknown quota key"));
        assert!(quota_ops(&[("request_percentage".to_string(), 12.5)].into()).is_ok());
    }

    #[test]
    fn credentials_are_checked_as_alter_user_scram_credentials_is() {
        let mut r = pb::UpsertScramCredentialRequest {
            user: "alice".into(),
            mechanism: "SCRAM-SHA-512".into(),
            salt: b"salt".to_vec(),
            iterations: 4096,
            salted_password: vec![7; 64],
        };
        let (m, c) = credential(&r).expect("valid");
        assert_eq!(m, ScramMechanism::Sha512);
        assert_eq!(c.iterations, 4096);
        r.salted_password = vec![7; 32];
        assert!(credential(&r).unwrap_err().contains("64-byte"));
        r.mechanism = "SCRAM-SHA-256".into();
        assert!(credential(&r).is_ok());
        r.iterations = 100;
        assert!(credential(&r).unwrap_err().contains("iterations"));
        r.iterations = 8192;
        r.mechanism = "PLAIN".into();
        assert!(credential(&r).unwrap_err().contains("mechanism"));
    }
}
