//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the SCRAM
//! users of the cluster, as `kafka-configs --entity-type users --alter
//! --add-config 'SCRAM-SHA-512=[iterations=8192,password=…]'` and `--describe`
//! manage them. The client sends the salted password; the broker derives the
//! server's verifier from it (`security::scram`) and commits only that through the
//! metadata quorum, one command per user (all of a user's changes or none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::Command;
use crate::security::scram::{
    ScramCredential, ScramMechanism, UserCredentials, MAX_ITERATIONS, MIN_ITERATIONS,
};

pub async fn describe(
    broker: &Arc<Broker>,
    req: DescribeUserScramCredentialsRequest,
    _version: i16,
) -> DescribeUserScramCredentialsResponse {
    let state = broker.cluster();
    let mut resp = DescribeUserScramCredentialsResponse::default();
    resp.results = describe_users(
        &state.scram_credentials,
        req.users
            .map(|u| u.into_iter().map(|u| u.name.to_string()).collect()),
    );
    resp
}

/// One result per user asked for (None or none named: every user with
/// credentials, as Kafka answers).
fn describe_users(
    creds: &UserCredentials,
    users: Option<Vec<String>>,
) -> Vec<DescribeUserScramCredentialsResult> {
    let users = users.filter(|u| !u.is_empty());
    let all = users.is_none();
    let users = users.unwrap_or_else(|| creds.keys().cloned().collect());
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<&String> = users.iter().filter(|u| !seen.insert(*u)).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for user in &users {
        if !done.insert(user) {
            continue;
        }
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = str_bytes(user.clone());
        if duplicated.contains(user) {
            r.error_code = ResponseError::DuplicateResource.code();
            r.error_message = Some(str_bytes(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}")));
        } else {
            match creds.get(user) {
                Some(c) if !c.is_empty() => {
                    r.credential_infos = c
                        .iter()
                        .map(|(m, cred)| {
                            let mut i = CredentialInfo::default();
                            i.mechanism = m.code();
                            i.iterations = cred.iterations;
                            i
                        })
                        .collect();
                }
                _ if all => continue,
                _ => {
                    r.error_code = ResponseError::ResourceNotFound.code();
                    r.error_message = Some(str_bytes(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    )));
                }
            }
        }
        out.push(r);
    }
    out
}

/// A user's changes, checked: the upserts (verifiers) and the deletions.
#[derive(Debug, Default)]
struct UserChange {
    upsert: Vec<(ScramMechanism, ScramCredential)>,
    delete: Vec<ScramMechanism>,
    error: Option<(ResponseError, String)>,
}

/// What is wrong with one deletion or upsertion before its mechanism is looked at:
/// an empty user name, or a user and mechanism already altered in this request
/// (`touched` records each one seen).
fn entry_error(
    user: &str,
    mechanism: i8,
    touched: &mut BTreeSet<(String, i8)>,
) -> Option<(ResponseError, String)> {
    if user.is_empty() {
        return Some((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    if !touched.insert((user.to_string(), mechanism)) {
        return Some((
            ResponseError::DuplicateResource,
            format!("A user credential cannot be altered twice in the same request: {user}"),
        ));
    }
    None
}

fn plan(
    creds: &UserCredentials,
    req: &AlterUserScramCredentialsRequest,
) -> BTreeMap<String, UserChange> {
    let mut changes: BTreeMap<String, UserChange> = BTreeMap::new();
    let mut touched: BTreeSet<(String, i8)> = BTreeSet::new();
    let refuse = |c: &mut UserChange, e: ResponseError, why: String| {
        if c.error.is_none() {
            c.error = Some((e, why));
        }
    };
    for d in &req.deletions {
        let user = d.name.to_string();
        let c = changes.entry(user.clone()).or_default();
        if let Some((e, why)) = entry_error(&user, d.mechanism, &mut touched) {
            refuse(c, e, why);
            continue;
        }
        match ScramMechanism::from_code(d.mechanism) {
            None => refuse(
                c,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", d.mechanism),
            ),
            Some(m) if !creds.get(&user).is_some_and(|x| x.contains_key(&m)) => refuse(
                c,
                ResponseError::ResourceNotFound,
                format!(
                    "Attempt to delete a user credential that does not exist: {user} {}",
                    m.name()
                ),
            ),
            Some(m) => c.delete.push(m),
        }
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        let c = changes.entry(user.clone()).or_default();
        if let Some((e, why)) = entry_error(&user, u.mechanism, &mut touched) {
            refuse(c, e, why);
            continue;
        }
        let Some(m) = ScramMechanism::from_code(u.mechanism) else {
            refuse(
                c,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", u.mechanism),
            );
            continue;
        };
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&u.iterations) {
            refuse(
                c,
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {} must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}",
                    u.iterations
                ),
            );
            continue;
        }
        if u.salt.is_empty() || u.salted_password.len() != m.key_len() {
            refuse(
                c,
                ResponseError::UnacceptableCredential,
                format!(
                    "A {} credential needs a salt and a {}-byte salted password",
                    m.name(),
                    m.key_len()
                ),
            );
            continue;
        }
        c.upsert.push((
            m,
            ScramCredential::from_salted_password(m, &u.salt, u.iterations, &u.salted_password),
        ));
    }
    changes
}

pub async fn alter(
    broker: &Arc<Broker>,
    req: AlterUserScramCredentialsRequest,
    _version: i16,
) -> AlterUserScramCredentialsResponse {
    let changes = plan(&broker.cluster().scram_credentials, &req);
    let mut resp = AlterUserScramCredentialsResponse::default();
    let mut last_index = None;
    for (user, change) in changes {
        let mut r = AlterUserScramCredentialsResult::default();
        r.user = str_bytes(user.clone());
        let outcome = match change.error {
            Some(e) => Err(e),
            None => {
                let mechanisms: Vec<&str> = change.upsert.iter().map(|(m, _)| m.name()).collect();
                let deleted: Vec<&str> = change.delete.iter().map(|m| m.name()).collect();
                let cmd = Command::AlterScramCredentials {
                    user: user.clone(),
                    upsert: change.upsert.clone(),
                    delete: change.delete.clone(),
                };
                match broker.quorum.propose(cmd).await {
                    Ok((index, _)) => {
                        info!(%user, upserted = ?mechanisms, deleted = ?deleted, "SCRAM credentials altered");
                        last_index = Some(index);
                        Ok(())
                    }
                    Err(e) => Err((metadata_error_code(&e), e.to_string())),
                }
            }
        };
        if let Err((code, why)) = outcome {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(why));
        }
        resp.results.push(r);
    }
    // Answer once this broker applied the change: a client that authenticates here
    // next finds its credential.
    if let Some(index) = last_index {
        broker.wait_reconciled(index).await;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };

    fn upsert(name: &str, mech: i8, iterations: i32, len: usize) -> ScramCredentialUpsertion {
        let mut u = ScramCredentialUpsertion::default();
        u.name = str_bytes(name);
        u.mechanism = mech;
        u.iterations = iterations;
        u.salt = Bytes::from_static(b"salt");
        u.salted_password = Bytes::from(vec![7u8; len]);
        u
    }

    fn delete(name: &str, mech: i8) -> ScramCredentialDeletion {
        let mut d = ScramCredentialDeletion::default();
        d.name = str_bytes(name);
        d.mechanism = mech;
        d
    }

    #[test]
    fn alterations_are_checked_per_user() {
        let mut creds = UserCredentials::default();
        let c = ScramCredential::from_salted_password(ScramMechanism::Sha256, b"s", 4096, &[1; 32]);
        creds
            .entry("bob".into())
            .or_default()
            .insert(ScramMechanism::Sha256, c);
        let mut req = AlterUserScramCredentialsRequest::default();
        req.upsertions = vec![
            upsert("alice", 2, 8192, 64),
            upsert("alice", 1, 4096, 32),
            upsert("carol", 2, 100, 64),
            upsert("dave", 3, 4096, 64),
            upsert("erin", 1, 4096, 64),
            upsert("frank", 1, 4096, 32),
            upsert("frank", 1, 4096, 32),
        ];
        req.deletions = vec![delete("bob", 1), delete("gina", 2)];
        let p = plan(&creds, &req);
        assert_eq!(p["alice"].upsert.len(), 2);
        assert!(p["alice"].error.is_none());
        assert_eq!(p["bob"].delete, [ScramMechanism::Sha256]);
        let code = |u: &str| p[u].error.as_ref().map(|e| e.0);
        assert_eq!(code("carol"), Some(ResponseError::UnacceptableCredential));
        assert_eq!(code("dave"), Some(ResponseError::UnsupportedSaslMechanism));
        assert_eq!(code("erin"), Some(ResponseError::UnacceptableCredential));
        assert_eq!(code("frank"), Some(ResponseError::DuplicateResource));
        assert_eq!(code("gina"), Some(ResponseError::ResourceNotFound));
    }

    #[test]
    fn describe_lists_mechanisms_and_iterations() {
        let mut creds = UserCredentials::default();
        let c = ScramCredential::from_salted_password(ScramMechanism::Sha512, b"s", 8192, &[1; 64]);
        creds
            .entry("alice".into())
            .or_default()
            .insert(ScramMechanism::Sha512, c);
        let all = describe_users(&creds, None);
        assert_eq!(all.len(), 1);
        assert_eq!(describe_users(&creds, Some(vec![])), all);
        assert_eq!(
            (
                all[0].credential_infos[0].mechanism,
                all[0].credential_infos[0].iterations
            ),
            (2, 8192)
        );
        let some = describe_users(&creds, Some(vec!["alice".into(), "nobody".into()]));
        assert_eq!(some[1].error_code, ResponseError::ResourceNotFound.code());
        let dup = describe_users(&creds, Some(vec!["alice".into(), "alice".into()]));
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].error_code, ResponseError::DuplicateResource.code());
    }
}
