//! Kafka RecordBatch (magic v2) headers: parsing, validation and the two fields the
//! leader rewrites. Batches are stored verbatim, so this is the only place that looks
//! inside the bytes a producer sent; record payloads are never decoded here.

use thiserror::Error;

/// Size of the fixed RecordBatch v2 header, up to and including `recordsCount`.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` ends: `baseOffset` (8) + `batchLength` (4).
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: the header after the length field, no records.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// Offset of the `crc` field; the CRC32C covers everything after it.
const CRC_POS: usize = 17;
const CRC_COVERED_FROM: usize = 21;

/// Why a batch was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("truncated batch: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("invalid batch length {0}")]
    BadLength(i32),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("invalid batch: {0}")]
    Invalid(&'static str),
}

/// Parsed fixed header of a v2 RecordBatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: HEADER_LEN,
            });
        }
        let magic = buf[16] as i8;
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, CRC_POS) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if h.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(h.batch_length));
        }
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(h)
    }

    /// Total bytes of the batch on disk, including the 12-byte log overhead.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// Whether the batch belongs to a transaction (data or marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (a transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
}

/// Attribute bit of a batch written inside a transaction.
const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch.
const CONTROL: i16 = 0x20;

/// What a transaction marker (the one record of a control batch) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// A transaction marker read from a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub marker: Marker,
    /// Epoch of the transaction coordinator that wrote it (fences older ones).
    pub coordinator_epoch: i32,
}

/// Reads an unsigned LEB128 zig-zag varint at `*pos`.
fn read_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Decodes the marker of a control batch (`batch` starts with its header); `None`
/// when the batch is not a control batch or its record is not a marker Kafka
/// defines (control batches are never compressed).
pub fn control_record(batch: &[u8]) -> Option<ControlRecord> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || batch.len() < h.total_len() {
        return None;
    }
    let batch = &batch[..h.total_len()];
    let mut pos = HEADER_LEN;
    let _len = read_varint(batch, &mut pos)?;
    pos += 1; // record attributes
    let _ts_delta = read_varint(batch, &mut pos)?;
    let _offset_delta = read_varint(batch, &mut pos)?;
    let key_len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
    let key = batch.get(pos..pos + key_len)?;
    pos += key_len;
    if key_len < 4 {
        return None;
    }
    let marker = match be_i16(key, 2) {
        0 => Marker::Abort,
        1 => Marker::Commit,
        _ => return None,
    };
    let value_len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
    let value = batch.get(pos..pos + value_len)?;
    let coordinator_epoch = if value.len() >= 6 {
        be_i32(value, 2)
    } else {
        -1
    };
    Some(ControlRecord {
        marker,
        coordinator_epoch,
    })
}

/// Builds the control batch that ends a transaction of `producer_id` (offset 0,
/// leader epoch 0: the log assigns both), as Kafka lays it out: key version 0 and
/// type, value version 0 and the coordinator epoch.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlRecord,
    timestamp: i64,
) -> Vec<u8> {
    let kind: i16 = match marker.marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut rec = vec![0u8]; // record attributes
    put_varint(&mut rec, 0); // timestamp delta
    put_varint(&mut rec, 0); // offset delta
    put_varint(&mut rec, 4);
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&kind.to_be_bytes());
    put_varint(&mut rec, 6);
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    put_varint(&mut rec, 0); // headers
    let mut records = Vec::with_capacity(rec.len() + 2);
    put_varint(&mut records, rec.len() as i64);
    records.extend_from_slice(&rec);
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&(TRANSACTIONAL | CONTROL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = compute_crc(&b);
    b[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Computes the CRC32C of a whole batch the way the header's `crc` field expects.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
}

/// Parses the batch at the start of `buf` and checks its length and CRC.
fn parse_checked(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    let total = h.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            have: buf.len(),
            need: total,
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != h.crc {
        return Err(BatchError::BadCrc {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Parses and fully validates (length, magic, CRC, counts) the batch at the start of `buf`.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_checked(buf)?;
    if h.last_offset_delta < 0 || h.records_count < 0 {
        return Err(BatchError::Invalid("negative record count or offset delta"));
    }
    if h.records_count == 0 {
        return Err(BatchError::Invalid("batch holds no records"));
    }
    // Offsets are assigned from the delta, consumers count records: a batch whose
    // two disagree would give records offsets another batch also has, or leave
    // offsets no record holds.
    if h.last_offset_delta != h.records_count - 1 {
        return Err(BatchError::Invalid(
            "last offset delta does not match the record count",
        ));
    }
    Ok(h)
}

/// [`validate`] for batches already in a log: a compacted log also holds batches the
/// cleaner emptied (a header kept for its producer state) or thinned (fewer records
/// than its offset range), which a producer may never send.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_checked(buf)?;
    if h.last_offset_delta < 0 || h.records_count < 0 || h.records_count > h.last_offset_delta + 1 {
        return Err(BatchError::Invalid(
            "record count does not fit the offset range",
        ));
    }
    Ok(h)
}

/// Splits a produce request's record set into validated batches, returning each batch's
/// header and byte range. Rejects trailing garbage and empty sets.
pub fn split_batches(buf: &[u8]) -> Result<Vec<(BatchHeader, std::ops::Range<usize>)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let h = validate(&buf[pos..])?;
        let end = pos + h.total_len();
        out.push((h, pos..end));
        pos = end;
    }
    if out.is_empty() {
        return Err(BatchError::Invalid("empty record set"));
    }
    Ok(out)
}

/// Rewrites `baseOffset`; not covered by the CRC.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites `partitionLeaderEpoch`; not covered by the CRC.
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the log-append-time flag and max timestamp, recomputing the CRC (both are covered).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = be_i16(batch, 21) | 0x08;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// [`set_log_append_time`] on a batch held as its header (`HEADER_LEN` bytes, patched)
/// and the rest (read only: it feeds the CRC).
pub fn set_log_append_time_split(head: &mut [u8], body: &[u8], now_ms: i64) {
    let attrs = be_i16(head, 21) | 0x08;
    head[21..23].copy_from_slice(&attrs.to_be_bytes());
    head[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[CRC_COVERED_FROM..]), body);
    head[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates batch headers in a buffer of whole batches as read from a segment, stopping
/// at the first incomplete batch. Yields `(header, start position)`.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = (BatchHeader, usize)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?).ok()?;
        if pos + h.total_len() > buf.len() {
            return None;
        }
        let at = pos;
        pos += h.total_len();
        Some((h, at))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a syntactically valid uncompressed v2 batch with `count` small records.
    pub fn make_batch(base_offset: i64, count: i32, ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            let mut rec = Vec::new();
            rec.push(0u8); // attributes
            put_varint(&mut rec, 0); // timestamp delta
            put_varint(&mut rec, i64::from(i)); // offset delta
            put_varint(&mut rec, -1); // key null
            put_varint(&mut rec, payload.len() as i64);
            rec.extend_from_slice(payload);
            put_varint(&mut rec, 0); // headers
            put_varint(&mut records, rec.len() as i64);
            records.extend_from_slice(&rec);
        }
        let mut b = Vec::with_capacity(HEADER_LEN + records.len());
        b.extend_from_slice(&base_offset.to_be_bytes());
        let batch_length = (HEADER_LEN - LOG_OVERHEAD + records.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = compute_crc(&b);
        b[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The same batch stamped with a producer id, epoch and base sequence.
    pub fn make_idempotent_batch(count: i32, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
        let mut b = make_batch(0, count, 1, b"idem");
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn control_batches_round_trip_and_data_batches_are_not_markers() {
        for (marker, epoch) in [(Marker::Commit, 7), (Marker::Abort, -1)] {
            let c = ControlRecord {
                marker,
                coordinator_epoch: epoch,
            };
            let b = control_batch(42, 3, c, 1_000);
            let h = validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            assert_eq!((h.records_count, h.base_sequence), (1, -1));
            assert_eq!(control_record(&b), Some(c));
        }
        assert_eq!(control_record(&make_batch(0, 1, 1, b"x")), None);
        // A truncated control record is not a marker, and does not panic.
        let b = control_batch(
            1,
            0,
            ControlRecord {
                marker: Marker::Commit,
                coordinator_epoch: 0,
            },
            0,
        );
        for cut in HEADER_LEN..b.len() {
            assert_eq!(control_record(&b[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn valid_batch_round_trips() {
        let b = make_batch(0, 3, 1000, b"hello");
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.max_timestamp, 1000);
    }

    #[test]
    fn offset_and_epoch_rewrites_keep_crc_valid() {
        let mut b = make_batch(0, 2, 5, b"x");
        set_base_offset(&mut b, 12345);
        set_leader_epoch(&mut b, 7);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 12345);
        assert_eq!(h.partition_leader_epoch, 7);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).unwrap();
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = make_batch(0, 2, 5, b"payload");
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::BadCrc { .. })));
        let b = make_batch(0, 2, 5, b"payload");
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut b = make_batch(0, 2, 5, b"payload");
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(1)));
        let mut b = make_batch(0, 2, 5, b"payload");
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(validate(&b), Err(BatchError::BadLength(-5)));
    }

    #[test]
    fn a_data_batch_whose_offset_delta_disagrees_with_its_record_count_is_invalid() {
        // 3 records claiming 5 offsets: the log would assign offsets no record
        // holds (or, with a smaller delta, offsets that the next batch gets too).
        for delta in [4i32, 0] {
            let mut b = make_batch(0, 3, 5, b"payload");
            b[23..27].copy_from_slice(&delta.to_be_bytes());
            let crc = compute_crc(&b);
            b[CRC_POS..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(
                validate(&b),
                Err(BatchError::Invalid(
                    "last offset delta does not match the record count"
                )),
                "delta {delta}"
            );
        }
    }

    #[test]
    fn split_rejects_trailing_garbage() {
        let mut set = make_batch(0, 1, 1, b"a");
        set.extend(make_batch(0, 1, 1, b"b"));
        assert_eq!(split_batches(&set).unwrap().len(), 2);
        set.extend_from_slice(&[1, 2, 3]);
        assert!(split_batches(&set).is_err());
        assert!(split_batches(&[]).is_err());
    }
}

#[cfg(test)]
mod split_tests {
    use super::tests::make_batch;
    use super::*;

    /// Stamping LogAppendTime on a header copy gives the bytes (and CRC) that
    /// stamping the whole batch in place gives.
    #[test]
    fn log_append_time_on_a_header_copy_matches_the_whole_batch() {
        let mut whole = make_batch(5, 4, 1000, b"payload bytes");
        let (head, body) = whole.split_at(HEADER_LEN);
        let (mut head, body) = (head.to_vec(), body.to_vec());
        set_log_append_time(&mut whole, 123_456);
        set_log_append_time_split(&mut head, &body, 123_456);
        assert_eq!([head, body].concat(), whole);
        assert!(validate_stored(&whole).is_ok());
    }
}
