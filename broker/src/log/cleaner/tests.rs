//! The cleaner against a model: for any sequence of keyed writes and tombstones, a
//! cleaned log holds exactly the latest record of every key, at its original offset,
//! minus the tombstones older than `delete.retention.ms`; a kill at any step of a
//! segment swap recovers to a log that cleans to the same result.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;

use super::install::SwapStep;
use super::*;
use crate::log::records::{encode_key_values, split_stored};
use crate::log::{LogConfig, PartitionLog, ValidatedRecords};

const RETENTION: i64 = 50;
const SEGMENT_MS: i64 = 1_000_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: SEGMENT_MS,
        index_interval_bytes: 128,
        compaction: Some(CompactionConfig {
            delete_retention_ms: RETENTION,
            min_cleanable_dirty_ratio_ppm: 0,
            ..CompactionConfig::default()
        }),
        ..LogConfig::default()
    }
}

/// One write: key, value (`None`: a tombstone), time step since the previous one.
type Op = (u8, Option<u8>, i64);

fn op() -> impl Strategy<Value = Op> {
    (0u8..6, prop::option::weighted(0.75, any::<u8>()), 0i64..20)
}

/// Every record of the log: offset → (key, value).
fn read_records(log: &PartitionLog) -> BTreeMap<i64, (Bytes, Option<Bytes>)> {
    let mut out = BTreeMap::new();
    let mut off = log.log_start_offset();
    loop {
        let data = log.plan_read(off, 1 << 20, true).unwrap().read().unwrap();
        if data.is_empty() {
            return out;
        }
        for (h, one) in split_stored(&data) {
            off = h.last_offset() + 1;
            if h.is_control() {
                continue;
            }
            let mut b = one.clone();
            for r in RecordBatchDecoder::decode(&mut b).unwrap().records {
                out.insert(r.offset, (r.key.unwrap(), r.value));
            }
        }
    }
}

/// Writes `ops` one batch each, then a sentinel record in a fresh (active) segment
/// so that every op is in a closed segment. Returns the time after the last write.
fn write(log: &mut PartitionLog, ops: &[Op]) -> i64 {
    let mut ts = 1_000;
    for (k, v, step) in ops {
        ts += step;
        let rec = (Bytes::from(vec![b'k', *k]), v.map(|v| Bytes::from(vec![v])));
        let raw = encode_key_values(vec![rec], ts, None).unwrap();
        log.append(ValidatedRecords::new(&raw, 1 << 20).unwrap(), 0, ts)
            .unwrap();
    }
    let sentinel = encode_key_values(
        vec![(Bytes::from_static(b"sentinel"), Some(Bytes::new()))],
        ts,
        None,
    )
    .unwrap();
    log.append(
        ValidatedRecords::new(&sentinel, 1 << 20).unwrap(),
        0,
        ts + SEGMENT_MS,
    )
    .unwrap();
    ts
}

/// What a cleaned log must hold: the latest record of every key (offset = op index),
/// without tombstones older than the retention, plus the sentinel.
fn model(ops: &[Op], now: i64) -> BTreeMap<i64, (Bytes, Option<Bytes>)> {
    let mut latest: BTreeMap<u8, (i64, Option<u8>, i64)> = BTreeMap::new();
    let mut ts = 1_000;
    for (i, (k, v, step)) in ops.iter().enumerate() {
        ts += step;
        latest.insert(*k, (i as i64, *v, ts));
    }
    let mut out: BTreeMap<i64, (Bytes, Option<Bytes>)> = latest
        .into_iter()
        .filter(|(_, (_, v, ts))| v.is_some() || *ts >= now - RETENTION)
        .map(|(k, (off, v, _))| {
            (
                off,
                (Bytes::from(vec![b'k', k]), v.map(|v| Bytes::from(vec![v]))),
            )
        })
        .collect();
    out.insert(
        ops.len() as i64,
        (Bytes::from_static(b"sentinel"), Some(Bytes::new())),
    );
    out
}

/// The latest record per key (tombstones included): what a consumer reading the
/// whole log ends up with, whether or not it was cleaned.
fn latest_view(records: &BTreeMap<i64, (Bytes, Option<Bytes>)>) -> BTreeMap<Bytes, Option<Bytes>> {
    let mut v = BTreeMap::new();
    for (k, val) in records.values() {
        v.insert(k.clone(), val.clone());
    }
    v.retain(|_, val| val.is_some());
    v
}

fn clean_fully(log: &mut PartitionLog, now: i64) -> PassStats {
    let end = log.log_end_offset();
    let Some(plan) = log.cleaning_plan(end, 0, now) else {
        return PassStats::default();
    };
    let (cleaned, stats) = clean(&plan, now, &mut Throttle::new(0)).unwrap();
    log.install_cleaned(cleaned, now).unwrap();
    stats
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cleaned_log_holds_the_latest_record_per_key(
        ops in prop::collection::vec(op(), 1..120),
        segment_bytes in 200u64..1200,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), config(segment_bytes), true, 0).unwrap();
        let now = write(&mut log, &ops);
        let before = read_records(&log);
        clean_fully(&mut log, now);
        let want = model(&ops, now);
        prop_assert_eq!(&read_records(&log), &want);
        prop_assert_eq!(latest_view(&before), latest_view(&want));
        // Cleaning again changes nothing; neither does reopening the log.
        let again = clean_fully(&mut log, now);
        prop_assert_eq!(again.records_removed, 0);
        drop(log);
        let log = PartitionLog::open(dir.path(), config(segment_bytes), false, now).unwrap();
        prop_assert_eq!(&read_records(&log), &want);
    }

    #[test]
    fn a_kill_during_a_swap_recovers_to_a_log_that_cleans_the_same(
        ops in prop::collection::vec(op(), 10..100),
        step in 0usize..4,
        victim in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), config(300), true, 0).unwrap();
        let now = write(&mut log, &ops);
        let want = model(&ops, now);
        let end = log.log_end_offset();
        let plan = log.cleaning_plan(end, 0, now).unwrap();
        let (cleaned, _) = clean(&plan, now, &mut Throttle::new(0)).unwrap();
        drop(plan);
        prop_assume!(!cleaned.is_empty());
        let victim = victim.index(cleaned.len());
        // The kill: the segments before the victim are swapped in (oldest first, as
        // `install_cleaned` does), then the victim's swap stops after the `.cleaned`
        // file is written (step 0) or at one of its steps; the later segments'
        // `.cleaned` files stay behind.
        for c in &cleaned[..victim] {
            let i = log.segments.iter().position(|s| s.base_offset() == c.base).unwrap();
            log.swap_in(i, c, now, None).unwrap();
        }
        let c = &cleaned[victim];
        let i = log.segments.iter().position(|s| s.base_offset() == c.base).unwrap();
        let stop = [None, Some(SwapStep::Renamed), Some(SwapStep::IndexesRemoved), Some(SwapStep::Replaced)][step];
        if let Some(stop) = stop {
            if c.size_after > 0 || i == 0 {
                log.swap_in(i, c, now, Some(stop)).unwrap();
            }
        }
        drop(log);
        let mut log = PartitionLog::open(dir.path(), config(300), false, now).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        prop_assert!(names.iter().all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")), "{:?}", names);
        prop_assert_eq!(latest_view(&read_records(&log)), latest_view(&want));
        clean_fully(&mut log, now);
        prop_assert_eq!(&read_records(&log), &want);
    }
}

#[test]
fn aborted_records_go_and_each_producer_keeps_its_last_batch_header() {
    use crate::log::batch::{control_batch, ControlRecord, Marker};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(1 << 20), true, 0).unwrap();
    let idempotent = |pid: i64, seq: i32, key: &'static [u8], value: &'static [u8], txn: bool| {
        let r = Record {
            transactional: txn,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: 1_000,
            key: Some(Bytes::from_static(key)),
            value: Some(Bytes::from_static(value)),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [r].iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        ValidatedRecords::new(&buf, 1 << 20).unwrap()
    };
    // Producer 9 writes k=a, producer 7 overwrites it twice, producer 8 writes k=a in
    // a transaction it aborts.
    log.append(idempotent(9, 0, b"a", b"0", false), 0, 1_000)
        .unwrap();
    log.append(idempotent(7, 0, b"a", b"1", false), 0, 1_000)
        .unwrap();
    log.append(idempotent(7, 1, b"a", b"2", false), 0, 1_000)
        .unwrap();
    log.append(idempotent(8, 0, b"a", b"aborted", true), 0, 1_000)
        .unwrap();
    let abort = control_batch(
        8,
        0,
        ControlRecord {
            marker: Marker::Abort,
            coordinator_epoch: 0,
        },
        1_000,
    );
    log.append(ValidatedRecords::new(&abort, 1 << 20).unwrap(), 0, 1_000)
        .unwrap();
    let sentinel = encode_key_values(
        vec![(Bytes::from_static(b"s"), Some(Bytes::new()))],
        1_000,
        None,
    )
    .unwrap();
    log.append(
        ValidatedRecords::new(&sentinel, 1 << 20).unwrap(),
        0,
        1_000 + SEGMENT_MS,
    )
    .unwrap();
    let now = 1_000;
    clean_fully(&mut log, now);
    let records = read_records(&log);
    let values: Vec<(i64, Option<Bytes>)> =
        records.iter().map(|(o, (_, v))| (*o, v.clone())).collect();
    assert_eq!(
        values,
        vec![(2, Some(Bytes::from_static(b"2"))), (5, Some(Bytes::new()))],
        "the aborted record and the superseded ones are gone; the marker holds no record"
    );
    // Producer 9's only batch stays as an empty header, producer 7's first batch goes,
    // the aborted batch goes and its marker stays.
    drop(log);
    let log = PartitionLog::open(dir.path(), config(1 << 20), false, now).unwrap();
    assert_eq!(log.producer_count(), 3);
    let data = log.plan_read(0, 1 << 20, true).unwrap().read().unwrap();
    let headers: Vec<(i64, i32, i32)> = split_stored(&data)
        .map(|(h, _)| (h.base_offset, h.last_offset_delta, h.records_count))
        .collect();
    assert_eq!(headers, [(0, 0, 0), (2, 0, 1), (4, 0, 1)]);
}

#[test]
fn the_throttle_holds_the_cleaner_to_its_rate() {
    let start = std::time::Instant::now();
    let mut t = Throttle::new(10_000);
    for _ in 0..4 {
        t.consumed(5_000);
    }
    // 20 000 bytes at 10 000 bytes/s: at least two seconds (a lower bound only, so
    // a busy machine cannot fail it).
    assert!(start.elapsed() >= std::time::Duration::from_millis(1_900));
}
