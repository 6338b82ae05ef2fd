//! Cluster membership and partition replication, one module per job:
//! - [`membership`]: registration and heartbeats of this broker through the
//!   metadata quorum, which also renew its lease;
//! - [`controller`]: the controller's loop on the Raft leader (fencing silent
//!   brokers, electing leaders from the ISR, creating `__consumer_offsets`, moving
//!   reassignments and drains forward, preferred-leader election);
//! - [`isr`]: leaders proposing ISR changes from their followers' progress;
//! - [`fetcher`]: the follower fetchers (one task per leader broker, batching every
//!   partition followed there) and how a follower applies what it fetched;
//! - [`serve`]: the leader's side of a follower fetch, long-polling on the
//!   follower's own [`wakeups`] signal;
//! - [`throttle`]: the replication throttles of reassignment traffic;
//! - [`rpc`]: the internal gRPC service carrying Raft, forwarded proposals and
//!   follower fetches.
//!
//! This module only starts the periodic tasks.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::clock::now_ms;

mod controller;
mod fetcher;
mod isr;
mod membership;
mod reconcile;
mod rpc;
mod serve;
#[cfg(test)]
mod sim;
pub mod throttle;
mod wakeups;

pub use crate::quorum::proto::internal_server::InternalServer;
pub use fetcher::Fetchers;
pub use reconcile::Reconciler;
pub use rpc::InternalService;
pub use throttle::Throttles;
pub use wakeups::FollowerWakeups;

/// Spawns the reconcile-on-change, heartbeat, controller and ISR tasks. The
/// returned reconciler owns the follower fetchers; stop it at shutdown.
pub fn spawn_cluster_tasks(broker: &Arc<Broker>) -> Arc<Reconciler> {
    let reconciler = Arc::new(Reconciler::default());
    // Reconcile whenever the applied metadata changes.
    let weak = Arc::downgrade(broker);
    let mut rx = broker.quorum.subscribe();
    let r = Arc::clone(&reconciler);
    tokio::spawn(async move {
        loop {
            {
                let Some(b) = weak.upgrade() else { return };
                r.reconcile(&b).await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    let weak = Arc::downgrade(broker);
    let every = Duration::from_millis(broker.config.broker_heartbeat_interval_ms.max(50));
    let r = Arc::clone(&reconciler);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            membership::heartbeat(&b, &r).await;
        }
    });
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut term: Option<controller::ControllerTerm> = None;
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            if !b.quorum.is_leader() {
                term = None;
                continue;
            }
            let term = term.get_or_insert_with(|| controller::ControllerTerm::new(now_ms()));
            controller::controller_round(&b, term).await;
        }
    });
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            isr::propose_isr_changes(&b).await;
        }
    });
    reconciler
}
