//! Wall-clock time. The state machines (partition, ISR, groups) never read the clock
//! themselves: every decision that depends on time takes `now` (milliseconds since
//! the epoch) as an argument, and only the tasks and handlers that drive them call
//! [`now_ms`], so tests and the replication simulation run them on a time of their
//! own.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
