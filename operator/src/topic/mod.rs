//! Topic controller: keeps a topic on the brokers in line with its `Topic`
//! resource through the admin API. [`plan`] is the pure reducer (desired +
//! observed → actions + condition); [`controller`] dereferences, executes the
//! actions, writes the status, and runs the deletion finalizer.

pub mod controller;
pub mod plan;

/// Finalizer that deletes (or releases) the broker topic.
pub const FINALIZER: &str = "strata.dev/topic";
