//! Fetch: serve stored batches verbatim, with long polling (`max_wait_ms` until
//! `min_bytes` are available), the request-wide `max_bytes` and per-partition
//! `partition_max_bytes` limits, and KIP-74's "at least one batch" rule so a large
//! batch never stalls a consumer. Fetch sessions are not offered (session id 0), so
//! every request is a full fetch, which all clients support.
//!
//! An offset below the local log start of a tiered partition is read from the tier
//! (`tier::reader`); the partition's log start offset reported to clients is then the
//! tier's. A failed remote read is an error for that partition only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::sync::watch;
use uuid::Uuid;

use crate::broker::Broker;
use crate::log::{batch, FileSlice, LogError, ReadMode};
use crate::partition::{FetchSnapshot, Isolation, Partition};
use crate::replicas::TopicState;
use crate::telemetry::Metrics;
use crate::tier::reader::{RemoteFetch, TierReadError};

use super::log_error_code;

/// Upper bound on how long one fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// A Fetch answer: the response, whose partitions served from local segments have
/// no `records`; their batches are in `files` (by topic, then partition, as in the
/// response), to be sent from the segment files (`sendfile`) or read on the way out.
#[derive(Debug, Default)]
pub struct FetchAnswer {
    pub resp: FetchResponse,
    pub files: Vec<Vec<Option<FileSlice>>>,
}

impl FetchAnswer {
    /// Record bytes held in `files`.
    pub fn file_bytes(&self) -> usize {
        self.slices().map(FileSlice::len).sum()
    }

    pub fn slices(&self) -> impl Iterator<Item = &FileSlice> {
        self.files.iter().flatten().flatten()
    }

    /// Drops every partition (a throttled response).
    pub fn clear(&mut self) {
        self.resp.responses.clear();
        self.files.clear();
    }

    /// The response with every slice read into its partition's `records`.
    pub fn materialize(mut self) -> std::io::Result<FetchResponse> {
        for (t, files) in self.resp.responses.iter_mut().zip(&self.files) {
            for (p, f) in t.partitions.iter_mut().zip(files) {
                if let Some(f) = f {
                    p.records = Some(f.read()?);
                }
            }
        }
        Ok(self.resp)
    }
}

/// Answers a Fetch; the caller counts what is sent ([`account`]) once quotas had
/// their say.
pub async fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchAnswer {
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let max_bytes = if version >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    // Resolve topics once; by id from v13 on.
    let topics: Vec<Option<Arc<TopicState>>> = req
        .topics
        .iter()
        .map(|t| {
            if version >= 13 {
                broker.replicas.topic_by_id(&t.topic_id)
            } else {
                broker.replicas.topic(&t.topic.0)
            }
        })
        .collect();
    loop {
        // Subscribe before reading so an append between read and wait is not missed.
        let mut watchers: Vec<watch::Receiver<i64>> = Vec::new();
        let (resp, bytes, errored) =
            read_once(broker, &req, &topics, version, max_bytes, &mut watchers).await;
        let now = Instant::now();
        if bytes >= min_bytes || errored || now >= deadline || watchers.is_empty() {
            return resp;
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout(deadline - now, changed).await.is_err() {
            // Timed out with no partition changed since it was read: what we read
            // is still the answer.
            return resp;
        }
    }
}

/// One pass over the requested partitions. Returns the response, the record bytes in
/// it, and whether any partition reported an error.
async fn read_once(
    broker: &Broker,
    req: &FetchRequest,
    topics: &[Option<Arc<TopicState>>],
    version: i16,
    max_bytes: usize,
    watchers: &mut Vec<watch::Receiver<i64>>,
) -> (FetchAnswer, usize, bool) {
    let mut resp = FetchAnswer::default();
    let mut total = 0usize;
    let mut errored = false;
    let isolation = if version >= 4 {
        Isolation::from_level(req.isolation_level)
    } else {
        Isolation::ReadUncommitted
    };
    for (t, state) in req.topics.iter().zip(topics) {
        let mut tr = FetchableTopicResponse::default();
        let mut files = Vec::with_capacity(t.partitions.len());
        if version >= 13 {
            tr.topic_id = t.topic_id;
        } else {
            tr.topic = t.topic.clone();
        }
        for fp in &t.partitions {
            let mut file = None;
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            let partition = match state {
                None if version >= 13 => Err(ResponseError::UnknownTopicId),
                None => Err(ResponseError::UnknownTopicOrPartition),
                // Without a lease this broker's view may be one a pause or a network
                // cut left behind: another broker may lead now and hold newer data.
                Some(_) if !broker.holds_lease() => Err(ResponseError::NotLeaderOrFollower),
                Some(s) => s.leader_of(fp.partition),
            };
            match partition {
                Err(e) => {
                    pd.error_code = e.code();
                    errored = true;
                }
                Ok(p) => {
                    watchers.push(p.subscribe());
                    let budget = max_bytes
                        .saturating_sub(total)
                        .min(fp.partition_max_bytes.max(0) as usize);
                    let min_one = total == 0;
                    let tid = state.as_ref().map(|s| s.record.id).unwrap_or_default();
                    let read = Read {
                        offset: fp.fetch_offset,
                        budget,
                        min_one,
                        isolation,
                    };
                    match read_partition(broker, &tid, p, read).await {
                        Ok((snap, data)) => {
                            pd.high_watermark = snap.high_watermark;
                            pd.last_stable_offset = snap.last_stable_offset;
                            pd.log_start_offset = snap.log_start_offset;
                            if version >= 4 {
                                pd.aborted_transactions = Some(snap.aborted);
                            }
                            match data {
                                Records::Memory(data) => {
                                    total += data.len();
                                    pd.records = Some(data);
                                }
                                Records::File(f) => {
                                    total += f.len();
                                    pd.records = None;
                                    file = Some(f);
                                }
                            }
                        }
                        Err(code) => {
                            pd.error_code = code.code();
                            pd.high_watermark = p.high_watermark();
                            pd.last_stable_offset = p.last_stable_offset();
                            pd.log_start_offset = log_start(broker, &tid, p);
                            pd.records = Some(Bytes::new());
                            errored = true;
                        }
                    }
                }
            }
            if version >= 4 && pd.aborted_transactions.is_none() {
                pd.aborted_transactions = Some(Vec::new());
            }
            tr.partitions.push(pd);
            files.push(file);
        }
        resp.resp.responses.push(tr);
        resp.files.push(files);
    }
    (resp, total, errored)
}

/// A partition's records: in memory (tier reads, reads that had to wait for the
/// disk) or located in a segment file.
enum Records {
    Memory(Bytes),
    File(FileSlice),
}

/// What a partition's read reports besides its records.
struct Snapshot {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    aborted: Vec<AbortedTransaction>,
}

/// One partition's read, as the request asks it.
#[derive(Clone, Copy)]
struct Read {
    offset: i64,
    budget: usize,
    min_one: bool,
    isolation: Isolation,
}

fn aborted_list(aborted: Vec<crate::log::AbortedTxn>) -> Vec<AbortedTransaction> {
    aborted
        .into_iter()
        .map(|a| {
            let mut t = AbortedTransaction::default();
            t.producer_id = ProducerId(a.producer_id);
            t.first_offset = a.first_offset;
            t
        })
        .collect()
}

/// The first offset clients can read: the tier's start when it holds older data.
fn log_start(broker: &Broker, topic_id: &Uuid, p: &Partition) -> i64 {
    let local = p.log_start_offset();
    match &broker.tier {
        Some(tier) => tier.log_start_offset(topic_id, p, local),
        None => local,
    }
}

/// Reads one partition: from local disk, or from the tier below the local start.
async fn read_partition(
    broker: &Broker,
    topic_id: &Uuid,
    p: &Arc<Partition>,
    read: Read,
) -> Result<(Snapshot, Records), ResponseError> {
    if let Some(tier) = &broker.tier {
        // A replica that led when DeleteRecords ran inside the remote log moved its
        // own start; a later leader knows it from the quorum only.
        if read.offset < tier.deleted_below(topic_id, p) {
            return Err(ResponseError::OffsetOutOfRange);
        }
    }
    match read_local(p, read).await {
        Ok((snap, data)) => {
            let log_start_offset = match &broker.tier {
                Some(tier) => tier.log_start_offset(topic_id, p, snap.log_start_offset),
                None => snap.log_start_offset,
            };
            Ok((
                Snapshot {
                    high_watermark: snap.high_watermark,
                    last_stable_offset: snap.last_stable_offset,
                    log_start_offset,
                    aborted: aborted_list(snap.aborted),
                },
                data,
            ))
        }
        Err(LogError::OffsetOutOfRange { start, .. }) if read.offset < start => {
            let Some(tier) = &broker.tier else {
                return Err(ResponseError::OffsetOutOfRange);
            };
            match tier
                .fetch(topic_id, p, read.offset, read.budget, read.min_one)
                .await
            {
                // Tiered segments were uploaded only once below the last stable
                // offset: every transaction in them is decided, and the aborted ones
                // were uploaded with them (this replica may never have seen their
                // markers: it may have started from the tier).
                Ok(RemoteFetch::Records(data)) => {
                    let aborted = match read.isolation {
                        Isolation::ReadCommitted => {
                            let mut all = tier
                                .aborted_transactions(topic_id, p, read.offset)
                                .await
                                .map_err(|e| tier_error_code(&e))?;
                            all.extend(p.aborted_transactions(read.offset, start));
                            all.sort_by_key(|a| (a.producer_id, a.first_offset));
                            all.dedup();
                            aborted_list(all)
                        }
                        Isolation::ReadUncommitted => Vec::new(),
                    };
                    Ok((
                        Snapshot {
                            high_watermark: p.high_watermark(),
                            last_stable_offset: p.last_stable_offset(),
                            log_start_offset: tier.log_start_offset(topic_id, p, start),
                            aborted,
                        },
                        Records::Memory(data),
                    ))
                }
                Ok(RemoteFetch::OutOfRange) => Err(ResponseError::OffsetOutOfRange),
                Err(e) => Err(tier_error_code(&e)),
            }
        }
        Err(e) => Err(log_error_code(&e)),
    }
}

/// Reads local records: on this thread when the page cache holds their batch
/// headers (the usual case for consumers near the end of the log), located only, to
/// be sent from the file; otherwise read into memory on the blocking pool.
async fn read_local(p: &Arc<Partition>, read: Read) -> Result<(FetchSnapshot, Records), LogError> {
    let Read {
        offset,
        budget,
        min_one,
        isolation,
    } = read;
    // The page cache first; the blocking pool only when the disk must be read.
    let cached = p
        .fetch_with(offset, budget, min_one, ReadMode::Cached, isolation)
        .and_then(|snap| match snap.plan.locate_with(ReadMode::Cached) {
            Ok(Some(f)) => Ok((snap, Records::File(f))),
            Ok(None) => Ok((snap, Records::Memory(Bytes::new()))),
            Err(source) => Err(LogError::Io {
                path: p.dir(),
                source,
            }),
        });
    match cached {
        Err(e) if e.would_block() => {}
        other => return other,
    }
    let p = Arc::clone(p);
    crate::blocking::run(move || {
        let snap = p.fetch_with(offset, budget, min_one, ReadMode::Blocking, isolation)?;
        let data = snap.plan.read().map_err(|source| LogError::Io {
            path: p.dir(),
            source,
        })?;
        Ok((snap, Records::Memory(data)))
    })
    .await
    .unwrap_or_else(|| Err(LogError::Decode("the broker is shutting down".into())))
}

/// An unreachable object store is worth retrying (clients do so on a storage
/// error); a missing or corrupt object is not, and surfaces to the consumer.
pub fn tier_error_code(e: &TierReadError) -> ResponseError {
    match e {
        TierReadError::Unavailable { .. } => ResponseError::KafkaStorageError,
        TierReadError::Missing { .. } | TierReadError::Corrupt { .. } => {
            ResponseError::UnknownServerError
        }
    }
}

/// Counts bytes and records served, per topic: called on the response as sent, so
/// after a quota has emptied a throttled one (see `crate::quota::request`).
pub fn account(broker: &Broker, answer: &FetchAnswer) {
    let resp = &answer.resp;
    for (i, t) in resp.responses.iter().enumerate() {
        let name = if t.topic.0.is_empty() {
            broker
                .replicas
                .topic_by_id(&t.topic_id)
                .map(|s| s.record.name.clone())
                .unwrap_or_default()
        } else {
            t.topic.0.to_string()
        };
        let (mut bytes, mut records) = (0u64, 0u64);
        for p in &t.partitions {
            if let Some(r) = &p.records {
                bytes += r.len() as u64;
                records += batch::headers(r)
                    .map(|(h, _)| h.records_count.max(0) as u64)
                    .sum::<u64>();
            }
        }
        for f in answer.files.get(i).into_iter().flatten().flatten() {
            bytes += f.len() as u64;
            records += f.records();
        }
        if bytes > 0 {
            let labels = Metrics::topic(&name);
            broker.metrics.bytes_out.add(bytes, &labels);
            broker.metrics.records_out.add(records, &labels);
        }
    }
}
