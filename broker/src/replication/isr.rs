//! ISR changes: every quarter second each leader asks its partitions whether a
//! follower fell behind for longer than `replica.lag.time.max.ms` or caught up
//! (`Partition::isr_change`), and proposes the new ISR to the quorum with its leader
//! epoch, so a deposed leader's proposal is refused.

use std::sync::Arc;

use tracing::{debug, info};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metadata::cluster::Command;

/// How many ISR changes a leader proposes at once.
const BATCH: usize = 256;

/// Leaders propose ISR shrinks and expansions their followers' progress calls for:
/// together, a batch at a time (the partitions are independent), so a broker coming
/// back to thousands of ISRs rejoins them in a few quorum writes, not one each.
pub(super) async fn propose_isr_changes(b: &Arc<Broker>) {
    let now = now_ms();
    let lag = b.config.replica_lag_time_max_ms;
    let mut changes = Vec::new();
    for t in b.replicas.all_topics() {
        for p in t.local() {
            let Some((leader_epoch, isr)) = p.isr_change(now, lag) else {
                continue;
            };
            info!(topic = %p.topic, partition = p.index, ?isr, "proposing ISR change");
            changes.push(Command::ChangeIsr {
                topic: p.topic.to_string(),
                partition: p.index,
                leader_epoch,
                isr,
            });
        }
    }
    while !changes.is_empty() {
        let rest = changes.split_off(changes.len().min(BATCH));
        let batch = std::mem::replace(&mut changes, rest);
        let results =
            futures::future::join_all(batch.iter().map(|cmd| b.quorum.propose(cmd.clone()))).await;
        for (cmd, r) in batch.iter().zip(results) {
            if let (
                Err(e),
                Command::ChangeIsr {
                    topic, partition, ..
                },
            ) = (r, cmd)
            {
                debug!(topic = %topic, partition, error = %e, "ISR change refused");
            }
        }
    }
}
