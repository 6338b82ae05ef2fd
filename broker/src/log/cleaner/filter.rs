//! The cleaner's pure core: the offset map (the latest offset of every key in the
//! dirty part of a log) and the decision, batch by batch, of what a cleaned segment
//! keeps. No I/O here; `pass` reads the segments and writes the result.
//!
//! A record survives when no later record of its key exists in the dirty part, it
//! has a key, it is not a tombstone past the delete horizon and its transaction was
//! not aborted. Offsets never change: a batch that loses records is re-encoded with
//! the offsets of the records it keeps, and keeps the original last offset and
//! sequence range so the producer state derived from it stays the same.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::log::AbortedTxn;

/// Why a batch could not be cleaned (the segment is then left as it is).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("cannot decode the batch at offset {offset}: {reason}")]
    Decode { offset: i64, reason: String },
    #[error("cannot re-encode the batch at offset {offset}: {reason}")]
    Encode { offset: i64, reason: String },
}

/// Key → offset of its latest record in the dirty part of the log.
#[derive(Debug, Default)]
pub struct OffsetMap {
    latest: HashMap<Bytes, i64>,
}

impl OffsetMap {
    /// Adds the records of one batch (`bytes` holds exactly it). Control batches and
    /// aborted transactional batches name no key.
    pub fn add_batch(
        &mut self,
        h: &BatchHeader,
        bytes: &Bytes,
        aborted: &[AbortedTxn],
    ) -> Result<(), FilterError> {
        if h.is_control() || h.records_count == 0 || is_aborted(h, aborted) {
            return Ok(());
        }
        for r in decode(h, bytes)? {
            if let Some(key) = r.key {
                let e = self.latest.entry(key).or_insert(r.offset);
                *e = (*e).max(r.offset);
            }
        }
        Ok(())
    }

    /// The latest offset of `key`, if the dirty part has it.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Refuses a produced record set for a compacted topic if a record has no key (what
/// would the cleaner keep of it?), as Kafka does with `INVALID_RECORD`.
pub fn check_keys(records: &[u8]) -> Result<(), String> {
    let data = Bytes::copy_from_slice(records);
    for (h, one) in crate::log::records::split_stored(&data) {
        if h.is_control() {
            continue;
        }
        let decoded = decode(&h, &one).map_err(|e| e.to_string())?;
        if decoded.iter().any(|r| r.key.is_none()) {
            return Err("compacted topic cannot accept a record without a key".to_string());
        }
    }
    Ok(())
}

/// Whether a data batch belongs to a transaction that was aborted.
pub fn is_aborted(h: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset <= a.last_offset
        })
}

/// What one batch becomes in the cleaned segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Copied as it is.
    Keep,
    /// Left out.
    Drop,
    /// Replaced by these bytes (fewer records, same offsets; or an empty header).
    Replace(Bytes),
}

/// What a batch decision needs besides the batch.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub map: &'a OffsetMap,
    pub aborted: &'a [AbortedTxn],
    /// Tombstones with a timestamp below this are dropped (now − delete.retention.ms).
    pub delete_horizon_ms: i64,
}

/// Counters of one cleaning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilterStats {
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

/// Decides what becomes of one batch. `retain_header`: this is the last batch of its
/// producer in the cleaned range, so even with no record left its header stays (an
/// empty batch) — the producer's sequence and epoch must survive a restart, which
/// rebuilds producer state from batch headers.
pub fn filter_batch(
    h: &BatchHeader,
    bytes: &Bytes,
    ctx: &Context<'_>,
    retain_header: bool,
    stats: &mut FilterStats,
) -> Result<Decision, FilterError> {
    // Transaction markers stay: the aborted-transaction index and read_committed
    // consumers rely on them (removing them is left to a later version).
    if h.is_control() || h.records_count == 0 {
        return Ok(Decision::Keep);
    }
    let records = decode(h, bytes)?;
    let total = records.len();
    let aborted = is_aborted(h, ctx.aborted);
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| {
            let keep = !aborted && keeps(r, ctx);
            if !keep {
                stats.records_removed += 1;
                if r.value.is_none() && r.key.is_some() {
                    stats.tombstones_removed += 1;
                }
            }
            keep
        })
        .collect();
    if kept.len() == total {
        return Ok(Decision::Keep);
    }
    if kept.is_empty() {
        return Ok(if retain_header {
            Decision::Replace(empty_batch(bytes))
        } else {
            Decision::Drop
        });
    }
    reencode(h, &kept).map(Decision::Replace)
}

fn keeps(r: &Record, ctx: &Context<'_>) -> bool {
    let Some(key) = &r.key else {
        // A compacted topic refuses records without a key; any from before the
        // topic became compacted cannot be compacted and go.
        return false;
    };
    if ctx.map.latest(key).is_some_and(|latest| r.offset < latest) {
        return false;
    }
    !(r.value.is_none() && r.timestamp < ctx.delete_horizon_ms)
}

fn decode(h: &BatchHeader, bytes: &Bytes) -> Result<Vec<Record>, FilterError> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode(&mut buf)
        .map(|set| set.records)
        .map_err(|e| FilterError::Decode {
            offset: h.base_offset,
            reason: e.to_string(),
        })
}

fn compression(codec: i16) -> Compression {
    match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const MAX_TIMESTAMP: usize = 35;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

/// The header of `orig` with no records: keeps the batch's offsets, producer id,
/// epoch and sequence range (what producer state is rebuilt from).
fn empty_batch(orig: &[u8]) -> Bytes {
    let mut b = orig[..HEADER_LEN].to_vec();
    b[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
    set_crc(&mut b);
    Bytes::from(b)
}

fn set_crc(b: &mut [u8]) {
    let crc = batch::compute_crc(b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Re-encodes the records `kept` of the batch `orig`, then restores the header
/// fields the encoder derives from the records: the attributes (timestamp type), the
/// last offset (so the batch still ends where it ended), the base sequence (shifted
/// with the new base offset, so the last sequence is unchanged), the leader epoch and
/// a log-append time.
fn reencode(h: &BatchHeader, kept: &[Record]) -> Result<Bytes, FilterError> {
    let err = |reason: String| FilterError::Encode {
        offset: h.base_offset,
        reason,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        kept.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: compression(h.compression()),
        },
    )
    .map_err(|e| err(e.to_string()))?;
    let mut b = buf.to_vec();
    let new = BatchHeader::parse(&b).map_err(|e| err(e.to_string()))?;
    if new.total_len() != b.len() {
        return Err(err("the records did not fit one batch".into()));
    }
    let delta = i32::try_from(h.last_offset() - new.base_offset)
        .map_err(|_| err("offset delta out of range".into()))?;
    b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&h.attributes.to_be_bytes());
    b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
    let base_sequence = if h.base_sequence < 0 {
        h.base_sequence
    } else {
        h.base_sequence
            .wrapping_add((new.base_offset - h.base_offset) as i32)
    };
    b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    if h.attributes & 0x08 != 0 {
        b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    }
    batch::set_leader_epoch(&mut b, h.partition_leader_epoch);
    set_crc(&mut b);
    Ok(Bytes::from(b))
}
