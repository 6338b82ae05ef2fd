//! DeleteRecords on a replica: the leader moves the log start (checked against the
//! high watermark), a follower follows the log start its leader reports in every
//! replica fetch response. See `log::delete_records` for what the log does.

use kafka_protocol::error::ResponseError;

use super::{Partition, Role};
use crate::log::LogError;

impl Partition {
    /// DeleteRecords on the leader: deletes every record below `offset` (-1: the high
    /// watermark). OFFSET_OUT_OF_RANGE past the high watermark, as Kafka. Returns the
    /// local log start afterwards (the tier may start higher; see
    /// [`crate::tier::Tier::log_start_offset`]).
    pub fn delete_records(&self, offset: i64) -> Result<i64, ResponseError> {
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let hw = self.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let done = self.log.lock().delete_records_before(offset);
        drop(st);
        match done {
            Ok(d) => {
                tracing::info!(topic = %self.topic, partition = self.index, offset,
                    start = d.log_start_offset, segments = d.segments, "records deleted");
                Ok(d.log_start_offset)
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, offset, error = %e,
                    "cannot delete records");
                Err(crate::kafka::log_error_code(&e))
            }
        }
    }

    /// DeleteRecords' low watermark ([`crate::log::PartitionLog::deleted_below`]).
    pub fn deleted_below(&self) -> i64 {
        self.log.lock().deleted_below()
    }

    /// On a follower of `leader` in `epoch`: moves the log start up to the leader's
    /// (DeleteRecords or retention moved it there), fsyncing first what it keeps when
    /// that is not on disk yet. Returns how many segments were removed.
    pub fn follow_leader_start(
        &self,
        leader_start: i64,
        now_ms: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<usize, LogError> {
        for _ in 0..2 {
            let st = self.replica.lock();
            Self::still_following(&st, leader, epoch)?;
            let followed = self.log.lock().follow_leader_start(leader_start)?;
            drop(st);
            match followed {
                Some(n) => return Ok(n),
                None => self.sync(now_ms, true)?,
            }
        }
        Ok(0)
    }
}
