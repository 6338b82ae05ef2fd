//! Produce and replication hand record sets to `ValidatedRecords::new`, which
//! decides what reaches the log: any bytes must be accepted as well-formed batches
//! or rejected, never panic; and what it accepts must be what the log can append
//! (offsets that add up, lengths inside the buffer).
//!
//! Random bytes almost never carry a valid CRC-32C, so the fuzzer would stop at the
//! checksum. When the first input byte is odd, the harness writes the right CRC into
//! every batch it can frame before validating, so the checks behind the checksum
//! (magic, counts, offset delta, lengths) are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::alloc_guard::GuardedAlloc;
use strata_broker::log::batch::compute_crc;
use strata_broker::log::ValidatedRecords;

#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

/// Batch header: base offset (8), batch length (4), leader epoch (4), magic (1),
/// CRC (4), then the CRC-covered part.
const LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const COVERED_FROM: usize = 21;

fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0;
    while pos + COVERED_FROM <= buf.len() {
        let len = i32::from_be_bytes([
            buf[pos + LENGTH_AT],
            buf[pos + LENGTH_AT + 1],
            buf[pos + LENGTH_AT + 2],
            buf[pos + LENGTH_AT + 3],
        ]);
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = pos + 12 + len;
        if len < COVERED_FROM - 12 || end > buf.len() {
            return;
        }
        let crc = compute_crc(&buf[pos..end]);
        buf[pos + CRC_AT..pos + COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut buf);
    }
    let Ok(records) = ValidatedRecords::new(&buf, 1 << 20) else {
        return;
    };
    let mut bytes = 0usize;
    let mut count = 0u64;
    for h in records.batches() {
        assert!(h.records_count > 0);
        assert_eq!(
            i64::from(h.last_offset_delta),
            i64::from(h.records_count) - 1
        );
        bytes += h.total_len();
        count += h.records_count as u64;
    }
    assert_eq!(bytes, records.byte_len());
    assert_eq!(count, records.record_count());
});
