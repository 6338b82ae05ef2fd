//! User controller: a Kafka principal of a Cluster. [`plan`] is the pure part
//! (the ACL bindings of a spec and their difference to the brokers', the SCRAM
//! salted password, the Secret's keys); [`controller`] writes the Secret, sets
//! the credential and the ACLs through the admin API, and runs the finalizer
//! that removes them.

pub mod controller;
pub mod plan;

/// Finalizer that removes the user's credential and ACLs from the brokers.
pub const FINALIZER: &str = "strata.dev/user";
