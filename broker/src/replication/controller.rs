//! The controller's loop, run on the Raft leader every half second: it fences
//! brokers whose heartbeats stopped and elects new leaders from the ISR, creates
//! `__consumer_offsets` once enough brokers registered, and moves reassignments,
//! drains and preferred-leader elections forward. The decisions themselves are pure
//! functions in `metadata::cluster`; this module only gathers the state, proposes
//! the commands (never forwarding: only the leader's own view counts) and logs them.

use std::sync::Arc;

use tracing::{info, warn};
use uuid::Uuid;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::cluster::{self, Command};
use crate::metadata::TopicRecord;

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
        if let Some(cmd) = offsets_topic_command(b, &state) {
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

/// Creates `__consumer_offsets` once enough brokers registered for its replication
/// factor (capped at the voter count, so a single broker gets RF 1).
fn offsets_topic_command(b: &Broker, state: &cluster::ClusterState) -> Option<Command> {
    let voters = b.config.voters().map(|v| v.len()).unwrap_or(1);
    let rf = (b.config.offsets_topic_replication_factor as usize).min(voters);
    let alive = state
        .brokers
        .values()
        .filter(|x| x.status == cluster::BrokerStatus::Alive)
        .count();
    if alive < rf {
        return None;
    }
    let partitions = b.config.offsets_topic_partitions;
    let assignment = cluster::assign_replicas(state, partitions, rf as i16, 0).ok()?;
    let mut configs = std::collections::BTreeMap::new();
    configs.insert(
        "segment.bytes".to_string(),
        b.config.offsets_segment_bytes.to_string(),
    );
    configs.insert("retention.ms".to_string(), "-1".to_string());
    configs.insert("retention.bytes".to_string(), "-1".to_string());
    configs.insert(
        "min.insync.replicas".to_string(),
        if rf >= 3 { "2" } else { "1" }.to_string(),
    );
    Some(Command::CreateTopic {
        record: TopicRecord {
            name: OFFSETS_TOPIC.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf as i16,
            configs,
            internal: true,
        },
        assignment,
    })
}
