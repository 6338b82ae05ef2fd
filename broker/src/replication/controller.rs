//! The controller's loop, run on the Raft leader every half second: it fences
//! brokers whose heartbeats stopped and elects new leaders from the ISR, creates
//! `__consumer_offsets` once enough brokers registered, and moves reassignments,
//! drains and preferred-leader elections forward. The decisions themselves are pure
//! functions in `metadata::cluster`; this module only gathers the state, proposes
//! the commands (never forwarding: only the leader's own view counts) and logs them.

use std::sync::Arc;

use tracing::{info, warn};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::cluster;

/// One round of the controller's duties; runs only on the Raft leader.
pub(super) async fn controller_round(b: &Arc<Broker>, leader_since: i64) {
    let state = b.cluster();
    let now = now_ms();
    let learners: Vec<(u64, String)> = state
        .brokers
        .values()
        .filter(|x| !x.internal.is_empty())
        .map(|x| (x.id as u64, x.internal.clone()))
        .collect();
    b.quorum.sync_learners(&learners).await;
    let mut cmds = Vec::new();
    // A new controller gives brokers one session to find it before fencing anyone.
    if now - leader_since > b.config.broker_session_timeout_ms {
        // The controller is alive by definition: a slow heartbeat commit under load
        // must never make it fence itself (on a single broker that would take every
        // partition offline).
        let mut view = (*state).clone();
        if let Some(me) = view.brokers.get_mut(&b.node_id()) {
            me.last_heartbeat_ms = now;
        }
        cmds.extend(cluster::fence_and_elect(
            &view,
            now,
            b.config.broker_session_timeout_ms,
        ));
    }
    if cmds.is_empty() {
        cmds.extend(cluster::progress_actions(
            &state,
            b.config.auto_leader_rebalance_enable,
        ));
    }
    if !state.topics.contains_key(OFFSETS_TOPIC) {
        if let Some(cmd) =
            b.internal_topic_command(&state, OFFSETS_TOPIC, b.config.offsets_topic_partitions)
        {
            cmds.push(cmd);
        }
    }
    for cmd in cmds {
        let what = format!("{cmd:?}");
        match b.quorum.propose_as_leader(cmd).await {
            Ok(_) => info!(command = %truncate(&what, 200), "controller applied"),
            Err(e) => {
                warn!(command = %truncate(&what, 200), error = %e, "controller command failed")
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
