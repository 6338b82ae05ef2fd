//! Key/value record batches the broker writes to its own internal topics
//! (`__consumer_offsets`, `__transaction_state`): encoded with the protocol crate,
//! uncompressed, optionally inside a producer's transaction (a transactional offset
//! commit).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch;

/// One record: key and value (`None` value: a tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Encodes `records` as one batch stamped `now_ms`; `txn` makes it part of that
/// producer's transaction `(producer id, epoch)`.
pub fn encode_key_values(
    records: Vec<KeyValue>,
    now_ms: i64,
    txn: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch) = txn.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: txn.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(key),
            value,
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

/// The records of one stored batch (`batch` holds exactly it) as key/value pairs;
/// records without a key are skipped. `None` when the batch cannot be decoded.
pub fn decode_key_values(batch: &Bytes) -> Option<Vec<KeyValue>> {
    let mut one = batch.clone();
    let set = RecordBatchDecoder::decode(&mut one).ok()?;
    Some(
        set.records
            .into_iter()
            .filter_map(|r| Some((r.key?, r.value)))
            .collect(),
    )
}

/// Splits a run of whole stored batches into `(header, batch bytes)`.
pub fn split_stored(data: &Bytes) -> impl Iterator<Item = (batch::BatchHeader, Bytes)> + '_ {
    batch::headers(data).map(|(h, at)| (h, data.slice(at..at + h.total_len())))
}
