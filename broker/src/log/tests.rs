//! Tests of the partition log as a whole: rolling, reading across segments, retention
//! and crash recovery (property-tested against random torn and corrupt tails).

use super::batch::tests::{make_batch, make_idempotent_batch};
use super::*;
use proptest::prelude::*;
use std::fs;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn append(log: &mut PartitionLog, count: i32, ts: i64, payload: &[u8]) -> AppendInfo {
    let b = make_batch(0, count, ts, payload);
    let v = ValidatedRecords::new(&b, 1 << 20).unwrap();
    log.append(v, 0, ts).unwrap()
}

/// Runs the log's sync job the way `Partition::sync` does (without a lock here).
fn sync(log: &mut PartitionLog) {
    if let Some(job) = log.take_sync(0, true).unwrap() {
        job.run().unwrap();
        log.synced(&job, true);
    }
}

fn read_all(log: &PartitionLog, from: i64) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let data = log.plan_read(off, 1 << 20, true).unwrap().read().unwrap();
        if data.is_empty() {
            return out;
        }
        for (h, _) in batch::headers(&data) {
            off = h.last_offset() + 1;
            out.push(h);
        }
    }
}

#[test]
fn offsets_are_assigned_contiguously_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..100 {
        let info = append(&mut log, 3, 1000 + i, &[1u8; 50]);
        assert_eq!(info.base_offset, i * 3);
        assert_eq!(info.last_offset, i * 3 + 2);
    }
    assert!(log.segment_count() > 5);
    let hs = read_all(&log, 0);
    assert_eq!(hs.len(), 100);
    assert!(hs
        .windows(2)
        .all(|w| w[1].base_offset == w[0].last_offset() + 1));
    // A read from the middle of a batch starts at that batch.
    let d = log.plan_read(151, 1, true).unwrap().read().unwrap();
    assert_eq!(BatchHeader::parse(&d).unwrap().base_offset, 150);
    assert!(matches!(
        log.plan_read(301, 10, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log
        .plan_read(300, 10, true)
        .unwrap()
        .read()
        .unwrap()
        .is_empty());
}

#[test]
fn reopen_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..40 {
        append(&mut log, 2, i, b"abc");
    }
    log.close(0).unwrap();
    drop(log);
    for clean in [true, false] {
        let log = PartitionLog::open(dir.path(), cfg(), clean, 0).unwrap();
        assert_eq!(log.log_end_offset(), 80);
        assert_eq!(read_all(&log, 0).len(), 40);
    }
    let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert_eq!(append(&mut log, 1, 0, b"x").base_offset, 80);
}

#[test]
fn timestamp_lookup_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..50 {
        append(&mut log, 1, 1000 + i * 10, b"v");
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1205).unwrap(), Some((21, 1210)));
    assert_eq!(log.offset_for_timestamp(1210).unwrap(), Some((21, 1210)));
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((49, 1490)));
}

#[test]
fn size_retention_moves_log_start_forward() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.retention_bytes = 4096;
    c.retention_ms = -1;
    let mut log = PartitionLog::open(dir.path(), c, true, 0).unwrap();
    for i in 0..200 {
        append(&mut log, 1, i, &[0u8; 100]);
    }
    let removed = log.apply_retention(1000).unwrap();
    assert!(removed > 0);
    assert!(log.log_start_offset() > 0);
    assert!(log.size_bytes() <= 4096 + 2048);
    let hs = read_all(&log, log.log_start_offset());
    assert_eq!(hs.last().unwrap().last_offset(), 199);
    assert!(matches!(
        log.plan_read(0, 10, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn time_retention_deletes_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.retention_ms = 1000;
    let mut log = PartitionLog::open(dir.path(), c, true, 0).unwrap();
    for i in 0..100 {
        append(&mut log, 1, i, &[0u8; 100]);
    }
    for i in 0..10 {
        append(&mut log, 1, 10_000 + i, &[0u8; 100]);
    }
    log.apply_retention(10_500).unwrap();
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 100);
}

#[test]
fn tiered_log_keeps_segments_until_the_tier_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.retention_ms = -1;
    c.remote = Some(retention::LocalRetention {
        local_retention_ms: -2,
        local_retention_bytes: 4096,
    });
    let mut log = PartitionLog::open(dir.path(), c, true, 0).unwrap();
    for i in 0..200 {
        append(&mut log, 1, i, &[0u8; 100]);
    }
    let segments = log.segment_count();
    // Far beyond local retention, but nothing is uploaded: nothing goes.
    assert_eq!(log.apply_retention(1000).unwrap(), 0);
    assert_eq!(log.segment_count(), segments);
    // The tier has everything below offset 100: only segments ending there may go.
    log.set_remote_end_offset(100);
    assert!(log.apply_retention(1000).unwrap() > 0);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 100);
    let start = log.log_start_offset();
    // A stale, lower end offset never moves the bound back.
    log.set_remote_end_offset(10);
    log.set_remote_end_offset(log.log_end_offset());
    assert!(log.apply_retention(1000).unwrap() > 0);
    assert!(log.log_start_offset() > start);
    assert!(log.size_bytes() <= 4096 + 2048 * 2);
    assert_eq!(
        read_all(&log, log.log_start_offset())
            .last()
            .unwrap()
            .last_offset(),
        199
    );
}

#[test]
fn truncate_to_removes_tail_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..100 {
        append(&mut log, 1, i, &[0u8; 100]);
    }
    log.truncate_to(37).unwrap();
    assert_eq!(log.log_end_offset(), 37);
    assert_eq!(append(&mut log, 1, 0, b"z").base_offset, 37);
    assert_eq!(read_all(&log, 0).len(), 38);
}

/// Appends batches, then damages the last segment file at a random point the way a
/// crash or a bad disk would, and checks that recovery keeps exactly the intact prefix.
fn recovery_case(batches: usize, cut_frac: f64, corrupt: bool) {
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), c.clone(), true, 0).unwrap();
    let mut ends = Vec::new();
    let mut pos = 0u64;
    for i in 0..batches {
        append(
            &mut log,
            1 + (i % 3) as i32,
            i as i64,
            &vec![i as u8; 10 + i % 50],
        );
        pos = log.size_bytes();
        ends.push((pos, log.log_end_offset()));
    }
    drop(log);
    let seg = dir.path().join(format!("{}.log", segment::file_stem(0)));
    let cut = ((pos as f64) * cut_frac) as u64;
    if corrupt {
        let mut data = fs::read(&seg).unwrap();
        if (cut as usize) < data.len() {
            data[cut as usize] ^= 0x5a;
        }
        fs::write(&seg, data).unwrap();
    } else {
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut).unwrap();
    }
    // Expected survivors: every batch that ends at or before the cut; for a flipped
    // byte, every batch before the one containing it. The leader epoch (bytes 12..16
    // of a batch) is outside the CRC and not validated, so a flip there is harmless.
    let mut starts = vec![0u64];
    starts.extend(ends.iter().map(|e| e.0));
    let expected = if corrupt {
        let k = starts.iter().rposition(|s| *s <= cut).unwrap_or(0);
        let in_epoch = (12..16).contains(&(cut - starts[k]));
        if k >= ends.len() || in_epoch {
            ends.last().copied().unwrap_or((0, 0))
        } else if k == 0 {
            (0, 0)
        } else {
            ends[k - 1]
        }
    } else {
        ends.iter()
            .take_while(|(end, _)| *end <= cut)
            .last()
            .map_or((0, 0), |e| *e)
    };
    let mut log = PartitionLog::open(dir.path(), c, false, 0).unwrap();
    assert_eq!(log.log_end_offset(), expected.1, "cut at {cut} of {pos}");
    assert_eq!(log.size_bytes(), expected.0);
    let hs = read_all(&log, 0);
    assert!(hs.iter().all(|h| h.last_offset() < expected.1));
    assert_eq!(hs.last().map_or(0, |h| h.last_offset() + 1), expected.1);
    let next = append(&mut log, 1, 0, b"after").base_offset;
    assert_eq!(next, expected.1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn recovery_keeps_exactly_the_intact_prefix(batches in 1usize..60, cut in 0.0f64..1.0, corrupt in any::<bool>()) {
        recovery_case(batches, cut, corrupt);
    }
}

#[test]
fn recovery_of_header_only_tail() {
    recovery_case(10, 0.999, false);
    recovery_case(10, 0.0, true);
}

fn append_idem(
    log: &mut PartitionLog,
    pid: i64,
    epoch: i16,
    seq: i32,
) -> Result<AppendInfo, LogError> {
    let b = make_idempotent_batch(2, pid, epoch, seq);
    log.append(ValidatedRecords::new(&b, 1 << 20).unwrap(), 0, 0)
}

#[test]
fn retried_idempotent_batches_are_not_appended_twice_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..30 {
        let info = append_idem(&mut log, 42, 0, i * 2).unwrap();
        assert!(!info.duplicate);
    }
    let dup = append_idem(&mut log, 42, 0, 56).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 56);
    assert_eq!(log.log_end_offset(), 60);
    assert!(matches!(
        append_idem(&mut log, 42, 0, 70),
        Err(LogError::Sequence(_))
    ));
    drop(log);
    // Unclean restart: state comes back from the roll snapshots plus replay.
    let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert!(log.segment_count() > 1);
    assert!(
        log.producer_batches_replayed() < 30,
        "replayed {} of 30 batches: the snapshot was not used",
        log.producer_batches_replayed()
    );
    assert!(append_idem(&mut log, 42, 0, 58).unwrap().duplicate);
    assert!(!append_idem(&mut log, 42, 0, 60).unwrap().duplicate);
    assert!(matches!(
        append_idem(&mut log, 42, -1, 10),
        Err(LogError::Sequence(_))
    ));
}

#[test]
fn a_follower_drops_the_segments_wholly_below_the_leaders_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..60 {
        append(&mut log, 3, 1000 + i, &[1u8; 50]);
    }
    let bases: Vec<i64> = log
        .closed_segments()
        .iter()
        .map(|s| s.base_offset)
        .collect();
    assert!(bases.len() > 3);
    let leo = log.log_end_offset();
    // Nothing goes while what replaces it may still be only in the page cache.
    assert_eq!(log.follow_log_start(bases[2] + 1).unwrap(), 0);
    assert_eq!(log.log_start_offset(), 0);
    assert!(log.sync_wanted());
    sync(&mut log);
    // A start inside the third segment: the two before it go, the third stays whole.
    assert_eq!(log.follow_log_start(bases[2] + 1).unwrap(), 2);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert_eq!(read_all(&log, bases[2])[0].base_offset, bases[2]);
    assert_eq!(log.follow_log_start(bases[2] + 1).unwrap(), 0);
    assert_eq!(log.follow_log_start(bases[1]).unwrap(), 0, "never back");
    // The leader's start is not below our end yet: what replaces the history is
    // still missing here, so the history stays.
    assert_eq!(log.follow_log_start(leo).unwrap(), 0);
    assert_eq!(log.follow_log_start(leo + 100).unwrap(), 0);
    assert_eq!(log.log_start_offset(), bases[2]);
    // The active segment always stays.
    let active = log.segment_count() - 1;
    assert_eq!(log.follow_log_start(leo - 1).unwrap(), active);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), leo);
    // A reopened log starts where it was left.
    let start = log.log_start_offset();
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    assert_eq!(log.log_start_offset(), start);
}

/// Batches in the active segment (the ones after the newest roll snapshot).
fn batches_in_active_segment(log: &PartitionLog) -> u64 {
    let from = log
        .closed_segments()
        .last()
        .map_or(log.log_start_offset(), |s| s.end_offset);
    read_all(log, from).len() as u64
}

#[test]
fn a_restart_replays_only_the_segments_after_the_newest_producer_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    // Producer 7 writes once, in the first segment; producer 42 keeps writing.
    assert_eq!(append_idem(&mut log, 7, 0, 0).unwrap().base_offset, 0);
    for i in 0..100 {
        append_idem(&mut log, 42, 0, i * 2).unwrap();
    }
    let closed = log.closed_segments();
    assert!(closed.len() >= 3, "{} closed segments", closed.len());
    // Every roll left the state as of the new segment's base beside the segment.
    for s in &closed {
        assert!(s.producer_snapshot.exists(), "{:?}", s.producer_snapshot);
        assert_eq!(
            s.producer_snapshot,
            producer::snapshot_path(dir.path(), s.end_offset)
        );
    }
    let total = 101;
    let tail = batches_in_active_segment(&log);
    assert!(tail < total / 2);
    drop(log);

    let check = |log: &mut PartitionLog| {
        // Producer 7's only batch lives in the first segment, which no replay read:
        // its retry is still recognised, from the snapshot.
        let dup = append_idem(log, 7, 0, 0).unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, 0);
        assert!(append_idem(log, 42, 0, 198).unwrap().duplicate);
        assert!(matches!(
            append_idem(log, 42, 0, 210),
            Err(LogError::Sequence(_))
        ));
    };
    for clean in [true, false] {
        let mut log = PartitionLog::open(dir.path(), cfg(), clean, 0).unwrap();
        assert_eq!(log.producer_batches_replayed(), tail, "clean={clean}");
        check(&mut log);
    }

    // A damaged newest snapshot: the one before it is used, and one more segment is
    // replayed. No panic, same state.
    let newest = closed.last().unwrap();
    let previous = &closed[closed.len() - 2];
    let in_newest_closed = read_all(
        &PartitionLog::open(dir.path(), cfg(), true, 0).unwrap(),
        previous.end_offset,
    )
    .iter()
    .filter(|h| h.base_offset < newest.end_offset)
    .count() as u64;
    let mut raw = fs::read(&newest.producer_snapshot).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x20;
    fs::write(&newest.producer_snapshot, raw).unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert_eq!(log.producer_batches_replayed(), tail + in_newest_closed);
    check(&mut log);
    drop(log);

    // No snapshot at all: the whole log is replayed, still the same state.
    for s in &closed {
        let _ = fs::remove_file(&s.producer_snapshot);
    }
    let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert_eq!(
        log.producer_batches_replayed(),
        read_all(&log, 0).len() as u64
    );
    check(&mut log);
}

#[test]
fn retention_deletes_the_producer_snapshots_of_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.retention_bytes = 4096;
    c.retention_ms = -1;
    let mut log = PartitionLog::open(dir.path(), c.clone(), true, 0).unwrap();
    for i in 0..150 {
        append_idem(&mut log, 42, 0, i * 2).unwrap();
    }
    let before = log.closed_segments();
    assert!(log.apply_retention(1000).unwrap() > 0);
    let start = log.log_start_offset();
    for s in &before {
        // The snapshot at the log start stays: it is where recovery begins.
        assert_eq!(s.producer_snapshot.exists(), s.end_offset >= start, "{s:?}");
    }
    drop(log);
    let mut log = PartitionLog::open(dir.path(), c, false, 0).unwrap();
    assert_eq!(
        log.producer_batches_replayed(),
        batches_in_active_segment(&log)
    );
    assert!(append_idem(&mut log, 42, 0, 298).unwrap().duplicate);
}

#[test]
fn a_replica_restarted_at_the_leaders_log_start_installs_the_older_producer_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), cfg(), true, 0).unwrap();
    // Producer 7 wrote only long ago; producer 42 keeps writing.
    append_idem(&mut leader, 7, 0, 0).unwrap();
    for i in 0..100 {
        append_idem(&mut leader, 42, 0, i * 2).unwrap();
    }
    let start = leader.closed_segments()[1].end_offset;
    // What the tier holds for the segment ending at `start`: the roll snapshot.
    let (at, table) = producer::load_snapshot(leader_dir.path(), start)
        .unwrap()
        .unwrap();
    assert_eq!(at, start);

    // The follower restarts empty at `start` and copies everything after it.
    let dir = tempfile::tempdir().unwrap();
    let mut follower = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    follower.reset_to(start, 0).unwrap();
    let mut off = start;
    while off < leader.log_end_offset() {
        let data = leader
            .plan_read(off, 1 << 20, true)
            .unwrap()
            .read()
            .unwrap();
        let v = ValidatedRecords::new(&data, usize::MAX).unwrap();
        let last = v.batches().last().unwrap().last_offset();
        follower.append_replicated(v, 0).unwrap();
        off = last + 1;
    }
    assert!(!follower
        .install_producer_snapshot(start + 1, table.clone())
        .unwrap());
    assert!(follower.install_producer_snapshot(start, table).unwrap());
    let check = |log: &mut PartitionLog| {
        let dup = append_idem(log, 7, 0, 0).unwrap();
        assert!(dup.duplicate, "producer 7 is known from the snapshot");
        assert_eq!(dup.base_offset, 0);
        assert!(append_idem(log, 42, 0, 198).unwrap().duplicate);
    };
    check(&mut follower);
    drop(follower);
    // The installed state is also the local snapshot at the log start.
    let mut follower = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    check(&mut follower);
}

#[test]
fn appends_leave_fsyncs_to_a_sync_job_run_outside_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_messages: 1,
        ..cfg()
    };
    let mut log = PartitionLog::open(dir.path(), config, true, 0).unwrap();
    assert_eq!(log.durable_end(), 0);
    for i in 0..40 {
        append(&mut log, 2, 1000 + i, &[7u8; 40]);
    }
    assert!(log.segment_count() > 2, "rolled");
    // flush.messages=1 asks for a sync; the append itself did none.
    assert!(log.sync_wanted());
    assert_eq!(log.durable_end(), 0);
    let job = log.take_sync(0, false).unwrap().expect("a job");
    assert!(!log.sync_wanted());
    // A job taken before a truncation proves nothing about what follows it.
    let leo = log.log_end_offset();
    log.truncate_to(leo - 2).unwrap();
    job.run().unwrap();
    log.synced(&job, true);
    assert_eq!(log.durable_end(), 0);
    append(&mut log, 2, 2000, &[7u8; 40]);
    sync(&mut log);
    assert_eq!(log.durable_end(), log.log_end_offset());
    // A failed fsync means nothing is known to be durable any more.
    append(&mut log, 2, 2001, &[7u8; 40]);
    let job = log.take_sync(0, true).unwrap().expect("a job");
    log.synced(&job, false);
    assert_eq!(log.durable_end(), log.log_start_offset());
}

#[test]
fn unclean_recovery_restores_leader_epochs_the_checkpoint_file_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
        for (epoch, n) in [(1, 10), (4, 10), (6, 3)] {
            log.start_epoch(epoch).unwrap();
            for i in 0..n {
                let b = make_batch(0, 2, 1000 + i, &[3u8; 50]);
                log.append(ValidatedRecords::new(&b, 1 << 20).unwrap(), epoch, 1000 + i)
                    .unwrap();
            }
        }
        assert!(log.segment_count() > 2);
    }
    let want = {
        let log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
        log.epochs().entries().to_vec()
    };
    assert_eq!(want.len(), 3);
    // A power failure took the file's newest entry (the rename reached the disk, its
    // last write did not): epoch 6 is in the batches of the active segment only.
    let path = dir.path().join(epochs::EPOCH_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert_eq!(log.epochs().entries(), &want[..]);
    // After an unclean open nothing is assumed durable until a sync job ran.
    assert_eq!(log.durable_end(), log.log_start_offset());
    assert!(log.sync_wanted());
}

#[test]
fn cached_reads_serve_what_the_page_cache_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..10 {
        append(&mut log, 2, 1000 + i, &[5u8; 30]);
    }
    // Just written, so cached: the RWF_NOWAIT path returns the same bytes as a
    // blocking read (or, on a file system without RWF_NOWAIT, says WouldBlock).
    let blocking = log.plan_read(4, 1 << 20, true).unwrap().read().unwrap();
    match log.plan_read_with(4, 1 << 20, true, ReadMode::Cached) {
        Ok(plan) => match plan.read_with(ReadMode::Cached) {
            Ok(cached) => assert_eq!(cached, blocking),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        },
        Err(e) => assert!(e.would_block(), "{e}"),
    }
}

/// A batch of `count` records in producer `pid`'s transaction.
fn txn_batch(count: i32, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = make_idempotent_batch(count, pid, epoch, seq);
    let attrs = i16::from_be_bytes([b[21], b[22]]) | 0x10;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn append_raw(log: &mut PartitionLog, raw: &[u8]) -> Result<AppendInfo, LogError> {
    log.append(ValidatedRecords::new(raw, 1 << 20).unwrap(), 0, 1)
}

fn marker(
    log: &mut PartitionLog,
    pid: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<AppendInfo, LogError> {
    let m = batch::ControlRecord {
        marker: if commit {
            batch::Marker::Commit
        } else {
            batch::Marker::Abort
        },
        coordinator_epoch,
    };
    append_raw(log, &batch::control_batch(pid, epoch, m, 1))
}

#[test]
fn open_transactions_hold_the_last_stable_offset_and_aborts_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    append(&mut log, 2, 1, b"plain"); // 0-1
    append_raw(&mut log, &txn_batch(3, 7, 0, 0)).unwrap(); // 2-4, producer 7
    append_raw(&mut log, &txn_batch(2, 8, 0, 0)).unwrap(); // 5-6, producer 8
    append(&mut log, 1, 1, b"plain"); // 7
    let hw = log.log_end_offset();
    assert_eq!(log.last_stable_offset(hw), 2);
    // 8 aborts at offset 8: still unstable until the high watermark passes it.
    marker(&mut log, 8, 0, false, 0).unwrap();
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 2);
    // 7 commits at offset 9.
    marker(&mut log, 7, 0, true, 0).unwrap();
    // With the high watermark at 9 the commit marker at 9 is not replicated yet.
    assert_eq!(log.last_stable_offset(9), 2);
    assert_eq!(log.last_stable_offset(10), 10);
    let aborted = log.aborted_transactions(0, 10);
    assert_eq!(
        aborted,
        vec![AbortedTxn {
            producer_id: 8,
            first_offset: 5,
            last_offset: 8
        }]
    );
    assert!(log.aborted_transactions(9, 10).is_empty());
    assert!(log.aborted_transactions(0, 5).is_empty());
    // A marker from an older epoch or an older coordinator is refused.
    assert!(matches!(
        marker(&mut log, 7, -1, false, 0),
        Err(LogError::Sequence(SequenceError::InvalidEpoch { .. }))
    ));
    marker(&mut log, 7, 1, false, 5).unwrap();
    assert!(matches!(
        marker(&mut log, 7, 1, false, 4),
        Err(LogError::Sequence(SequenceError::CoordinatorFenced {
            current: 5,
            got: 4
        }))
    ));
    // The fencing marker bumped producer 7's epoch: its old epoch is refused.
    assert!(matches!(
        append_raw(&mut log, &txn_batch(1, 7, 0, 3)),
        Err(LogError::Sequence(SequenceError::InvalidEpoch {
            current: 1,
            got: 0
        }))
    ));
}

#[test]
fn transactions_survive_restarts_crashes_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    // Enough data to roll segments, so the state spans snapshots and replay.
    for i in 0..60 {
        append_raw(&mut log, &txn_batch(2, 1, 0, i * 2)).unwrap();
        marker(&mut log, 1, 0, i % 2 == 1, 0).unwrap();
    }
    append_raw(&mut log, &txn_batch(1, 2, 0, 0)).unwrap();
    let open_at = log.log_end_offset() - 1;
    let end = log.log_end_offset();
    let aborted_before = log.aborted_transactions(0, end);
    assert_eq!(aborted_before.len(), 30);
    assert!(log.segment_count() > 2);
    sync(&mut log);
    // An unclean reopen (no close) rebuilds the open transaction and the aborts.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
    assert_eq!(log.aborted_transactions(0, end), aborted_before);
    assert_eq!(log.last_stable_offset(end), open_at);
    assert_eq!(log.open_transactions(), vec![(2, 0, open_at)]);
    // Truncating the last abort marker reopens that transaction.
    let last_abort = aborted_before.last().unwrap();
    log.truncate_to(last_abort.last_offset).unwrap();
    assert_eq!(log.aborted_transactions(0, end).len(), 29);
    assert_eq!(log.last_stable_offset(i64::MAX), last_abort.first_offset);
    // And a clean restart keeps all of that.
    log.close(0).unwrap();
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    assert_eq!(log.aborted_transactions(0, end).len(), 29);
    assert_eq!(log.last_stable_offset(i64::MAX), last_abort.first_offset);
}

/// The batches a fetch locates (to send from the file) are exactly those it would
/// read into memory, for every start, size, first-batch rule and offset limit.
#[test]
fn located_slices_are_the_bytes_a_read_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..60 {
        // Batches of different sizes, some larger than the smaller budgets below.
        append(
            &mut log,
            1 + (i % 4),
            1000 + i64::from(i),
            &vec![i as u8; 40 + 37 * (i as usize % 7)],
        );
    }
    let end = log.log_end_offset();
    let mut located = 0;
    for offset in (0..end).step_by(3) {
        for max_bytes in [0usize, 50, 200, 333, 1000, 5000, 1 << 20] {
            for min_one in [false, true] {
                for limit in [i64::MAX, end, offset + 1, offset + 7] {
                    let plan = log
                        .plan_read(offset, max_bytes, min_one)
                        .unwrap()
                        .limit(limit);
                    let read = plan.read().unwrap();
                    let slice = plan.locate_with(ReadMode::Blocking).unwrap();
                    match slice {
                        None => assert!(read.is_empty(), "{offset} {max_bytes} {min_one} {limit}"),
                        Some(s) => {
                            located += 1;
                            assert_eq!(
                                s.read().unwrap(),
                                read,
                                "{offset} {max_bytes} {min_one} {limit}"
                            );
                            let records: u64 = batch::headers(&read)
                                .map(|(h, _)| h.records_count as u64)
                                .sum();
                            assert_eq!(s.records(), records);
                        }
                    }
                }
            }
        }
    }
    assert!(located > 100, "only {located} non-empty reads");
}

/// A slice planned before a truncation knows it: its bytes may have changed.
#[test]
fn a_truncation_after_planning_invalidates_located_slices() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
    for i in 0..10 {
        append(&mut log, 2, 1000 + i, &[7u8; 30]);
    }
    let plan = log.plan_read(4, 1 << 20, true).unwrap();
    let slice = plan.locate_with(ReadMode::Blocking).unwrap().unwrap();
    assert!(slice.unchanged());
    // Retention-style deletion and rolls do not rewrite bytes; a truncation does.
    append(&mut log, 2, 2000, &[8u8; 30]);
    assert!(slice.unchanged());
    log.truncate_to(6).unwrap();
    assert!(!slice.unchanged());
    assert!(slice.read().is_err());
    let fresh = log.plan_read(4, 1 << 20, true).unwrap();
    assert!(fresh
        .locate_with(ReadMode::Blocking)
        .unwrap()
        .unwrap()
        .unchanged());
}
