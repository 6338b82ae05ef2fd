//! The leader's view of its followers: their progress (Kafka's caught-up rule), the
//! answer to a follower's fetch (fencing, divergence, the read), and the ISR that
//! progress calls for.

use kafka_protocol::error::ResponseError;

use super::{FetchSnapshot, Partition, Role};
use crate::log::ReadMode;

#[derive(Debug, Clone, Copy)]
pub(super) struct FollowerProgress {
    /// The follower's log end offset, as its last fetch offset tells.
    pub(super) leo: i64,
    /// When the follower was last caught up (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: i64,
    /// The leader's log end offset when the follower's previous fetch was served,
    /// and when that was: a fetch that reaches it shows the follower was caught up
    /// at that time, although the leader appended more since.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl FollowerProgress {
    /// A replica with no fetch seen yet; `caught_up_ms` is the benefit of the doubt
    /// it gets (an ISR member at a leader change) or 0.
    pub(super) fn new(caught_up_ms: i64) -> Self {
        FollowerProgress {
            leo: -1,
            last_caught_up_ms: caught_up_ms,
            last_fetch_leader_leo: i64::MAX,
            last_fetch_ms: caught_up_ms,
        }
    }

    /// Records a fetch at `fetch_offset` served when the leader's log ended at
    /// `leader_leo`. Kafka's rule: the follower is caught up now if it reached the
    /// log end, and was caught up at its previous fetch if it reached the log end
    /// the leader had then. Under continuous appends a follower never reaches the
    /// *current* end, so comparing only with it drops healthy followers from the ISR.
    pub(super) fn fetched(&mut self, fetch_offset: i64, leader_leo: i64, now: i64) {
        self.leo = fetch_offset;
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = now;
        } else if fetch_offset >= self.last_fetch_leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.last_fetch_leader_leo = leader_leo;
        self.last_fetch_ms = now;
    }
}

/// What the leader answers a follower's fetch for one partition.
#[derive(Debug)]
pub enum FollowerRead {
    Data(FetchSnapshot),
    /// The follower's log diverges: truncate to where `epoch` ends here.
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
}

/// What a follower asks of one partition in a replica fetch.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub replica: i32,
    /// The leader epoch the follower believes in.
    pub epoch: i32,
    pub fetch_offset: i64,
    /// The epoch of the follower's last batch (-1: none), to detect divergence.
    pub last_fetched_epoch: i32,
    pub max_bytes: usize,
}

impl Partition {
    /// The leader's side of a follower fetch: fences stale epochs, detects a divergent
    /// follower log, records the follower's progress and plans the read.
    pub fn serve_follower(
        &self,
        replica: i32,
        epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        now: i64,
    ) -> Result<FollowerRead, ResponseError> {
        let read = FollowerFetch {
            replica,
            epoch,
            fetch_offset,
            last_fetched_epoch,
            max_bytes,
        };
        self.serve_follower_with(read, now, ReadMode::Blocking)?
            .ok_or(ResponseError::KafkaStorageError)
    }

    /// [`Partition::serve_follower`]; in `Cached` mode `None`, with nothing recorded,
    /// when planning the read needs bytes the page cache does not hold.
    pub fn serve_follower_with(
        &self,
        read: FollowerFetch,
        now: i64,
        mode: ReadMode,
    ) -> Result<Option<FollowerRead>, ResponseError> {
        let FollowerFetch {
            replica,
            epoch,
            fetch_offset,
            last_fetched_epoch,
            max_bytes,
        } = read;
        let mut st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if epoch < st.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if epoch > st.leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
        if !st.replicas.contains(&replica) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let log = self.log.lock();
        let leo = log.log_end_offset();
        if last_fetched_epoch >= 0 {
            let (e, end) = log.epochs().end_offset_for(last_fetched_epoch, leo);
            if e >= 0 && (e != last_fetched_epoch || end < fetch_offset) {
                return Ok(Some(FollowerRead::Diverging {
                    epoch: e,
                    end_offset: end,
                }));
            }
        }
        if fetch_offset > leo || fetch_offset < log.log_start_offset() {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let plan = match log.plan_read_with(fetch_offset, max_bytes, true, mode) {
            Ok(plan) => plan,
            Err(e) if e.would_block() => return Ok(None),
            Err(e) => return Err(crate::kafka::log_error_code(&e)),
        };
        let log_start = log.log_start_offset();
        drop(log);
        st.followers
            .entry(replica)
            .or_insert(FollowerProgress::new(0))
            .fetched(fetch_offset, leo, now);
        self.update_hw(&st, leo);
        let hw = self.high_watermark();
        // Followers read everything and rebuild the transaction state themselves.
        Ok(Some(FollowerRead::Data(FetchSnapshot {
            plan,
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: log_start,
            aborted: Vec::new(),
        })))
    }

    /// On the leader: the ISR this partition should have now (followers lagging more
    /// than `lag_max_ms` leave, caught-up replicas join), when it differs from the
    /// current one and no change is in flight. Marks the change as proposed.
    pub fn isr_change(&self, now: i64, lag_max_ms: i64) -> Option<(i32, Vec<i32>)> {
        let mut st = self.replica.lock();
        if st.role != Role::Leader {
            return None;
        }
        if st.isr_proposed_at.is_some_and(|t| now - t < 5_000) {
            return None;
        }
        let hw = self.high_watermark();
        let epoch_start = self
            .log
            .lock()
            .epochs()
            .start_of(st.leader_epoch)
            .unwrap_or(0);
        let mut isr: Vec<i32> = Vec::new();
        for r in &st.replicas {
            if *r == self.me {
                isr.push(*r);
                continue;
            }
            let p = st.followers.get(r);
            let in_isr = st.isr.contains(r);
            let keep = if in_isr {
                p.is_some_and(|p| now - p.last_caught_up_ms <= lag_max_ms)
            } else {
                p.is_some_and(|p| {
                    p.leo >= hw && p.leo >= epoch_start && now - p.last_caught_up_ms <= lag_max_ms
                })
            };
            if keep {
                isr.push(*r);
            }
        }
        let mut current = st.isr.clone();
        current.sort_unstable();
        let mut desired = isr.clone();
        desired.sort_unstable();
        if current == desired {
            return None;
        }
        st.isr_proposed_at = Some(now);
        Some((st.leader_epoch, isr))
    }

    /// OffsetForLeaderEpoch on the leader (KIP-320: a client checks whether its
    /// position survived a leader change): where `epoch` ends here, `(the largest
    /// epoch <= it, its end offset)`, after fencing a caller that believes in another
    /// leader epoch (`current_leader_epoch`, -1 for none).
    pub fn epoch_end_offset(
        &self,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> Result<(i32, i64), ResponseError> {
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < st.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if current_leader_epoch > st.leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
        let log = self.log.lock();
        Ok(log.epochs().end_offset_for(epoch, log.log_end_offset()))
    }
}
