//! ISR changes: every quarter second each leader asks its partitions whether a
//! follower fell behind for longer than `replica.lag.time.max.ms` or caught up
//! (`Partition::isr_change`), and proposes the new ISR to the quorum with its leader
//! epoch, so a deposed leader's proposal is refused.

use std::sync::Arc;

use tracing::{debug, info};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metadata::cluster::Command;

/// Leaders propose ISR shrinks and expansions their followers' progress calls for.
pub(super) async fn propose_isr_changes(b: &Arc<Broker>) {
    let now = now_ms();
    let lag = b.config.replica_lag_time_max_ms;
    for t in b.replicas.all_topics() {
        for p in t.local() {
            let Some((leader_epoch, isr)) = p.isr_change(now, lag) else {
                continue;
            };
            info!(topic = %p.topic, partition = p.index, ?isr, "proposing ISR change");
            let cmd = Command::ChangeIsr {
                topic: p.topic.to_string(),
                partition: p.index,
                leader_epoch,
                isr,
            };
            if let Err(e) = b.quorum.propose(cmd).await {
                debug!(topic = %p.topic, partition = p.index, error = %e, "ISR change refused");
            }
        }
    }
}
