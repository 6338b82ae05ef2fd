//! Produce and replication hand record sets to `ValidatedRecords::new`, which
//! decides what reaches the log: any bytes must be accepted as well-formed batches
//! or rejected, never panic; and what it accepts must be what the log can append
//! (offsets that add up, lengths inside the buffer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::alloc_guard::GuardedAlloc;
use strata_broker::log::ValidatedRecords;

#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = ValidatedRecords::new(data, 1 << 20) else {
        return;
    };
    let mut bytes = 0usize;
    let mut count = 0u64;
    for h in records.batches() {
        assert!(h.records_count > 0);
        assert_eq!(i64::from(h.last_offset_delta), i64::from(h.records_count) - 1);
        bytes += h.total_len();
        count += h.records_count as u64;
    }
    assert_eq!(bytes, records.byte_len());
    assert_eq!(count, records.record_count());
});
