use super::*;
use crate::log::batch::tests::make_batch;

fn append_n(seg: &mut Segment, from: i64, n: i64, ts: i64) {
    for i in 0..n {
        let mut b = make_batch(0, 2, ts + i, &[7u8; 100]);
        batch::set_base_offset(&mut b, from + i * 2);
        let h = batch::validate(&b).unwrap();
        seg.append(&b, &h).unwrap();
    }
}

#[test]
fn append_find_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 100, 512, 0).unwrap();
    append_n(&mut seg, 100, 50, 1000);
    assert_eq!(seg.next_offset(), 200);
    let p = seg.find_position(151).unwrap().unwrap();
    let r = seg.reader();
    let h = r.header_at(p).unwrap().unwrap();
    assert_eq!(h.base_offset, 150);
    assert!(seg.find_position(200).unwrap().is_none());
    seg.seal().unwrap();
    let size = seg.size();
    drop(seg);
    for full in [false, true] {
        let (seg, rep) = Segment::open(dir.path(), 100, 512, full, 0).unwrap();
        assert_eq!(rep.truncated_bytes, 0);
        assert_eq!(seg.next_offset(), 200);
        assert_eq!(seg.size(), size);
        assert_eq!(seg.max_timestamp(), 1049);
        let p2 = seg.find_position(151).unwrap().unwrap();
        assert_eq!(p, p2);
    }
}

#[test]
fn read_respects_max_bytes_and_min_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 4096, 0).unwrap();
    append_n(&mut seg, 0, 10, 0);
    let one = make_batch(0, 2, 0, &[7u8; 100]).len();
    let r = seg.reader();
    assert_eq!(r.read_batches(0, one * 3 + 5, true).unwrap().len(), one * 3);
    assert_eq!(r.read_batches(0, 10, true).unwrap().len(), one);
    assert_eq!(r.read_batches(0, 10, false).unwrap().len(), 0);
    assert_eq!(
        r.read_batches(one as u64 * 9, 1 << 20, true).unwrap().len(),
        one
    );
}

#[test]
fn a_failed_append_leaves_nothing_that_a_reopen_would_find() {
    let dir = tempfile::tempdir().unwrap();
    // An index interval of one byte: every batch adds an offset index entry.
    let mut seg = Segment::create(dir.path(), 0, 1, 0).unwrap();
    append_n(&mut seg, 0, 3, 0);
    let (size, next) = (seg.size(), seg.next_offset());
    // The batch's bytes are written, then its index entry cannot be (a full disk
    // refuses the index file's next page while the log's last page has room).
    seg.offset_index.fail_writes().unwrap();
    let mut b = make_batch(0, 2, 10, &[7u8; 100]);
    batch::set_base_offset(&mut b, next);
    let h = batch::validate(&b).unwrap();
    assert!(seg.append(&b, &h).is_err());
    assert_eq!((seg.size(), seg.next_offset()), (size, next));
    drop(seg);
    for full in [false, true] {
        let (seg, _) = Segment::open(dir.path(), 0, 1, full, 0).unwrap();
        assert_eq!(
            (seg.size(), seg.next_offset()),
            (size, next),
            "the refused batch is back after a reopen (full recovery: {full})"
        );
    }
}

#[test]
fn an_index_cut_back_is_appended_to_after_its_last_whole_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.index");
    let mut index = IndexFile::<OffsetEntry>::create(&path).unwrap();
    for i in 0..4 {
        index
            .append(OffsetEntry {
                relative_offset: i,
                position: i * 10,
            })
            .unwrap();
    }
    index.truncate_to_len(2).unwrap();
    index
        .append(OffsetEntry {
            relative_offset: 2,
            position: 25,
        })
        .unwrap();
    drop(index);
    let loaded = IndexFile::<OffsetEntry>::load(&path).unwrap().unwrap();
    assert_eq!(
        loaded
            .entries()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        [0, 10, 25]
    );
}

#[test]
fn truncate_to_cuts_at_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 256, 0).unwrap();
    append_n(&mut seg, 0, 20, 0);
    seg.truncate_to(21).unwrap();
    assert_eq!(seg.next_offset(), 20);
    append_n(&mut seg, 20, 1, 0);
    assert_eq!(seg.next_offset(), 22);
    let (seg2, rep) = Segment::open(dir.path(), 0, 256, true, 0).unwrap();
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(seg2.next_offset(), 22);
}
