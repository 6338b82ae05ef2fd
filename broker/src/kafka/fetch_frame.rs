//! A Fetch response frame whose record bytes stay in the segment files: the frame
//! is a list of parts, each some encoded bytes (headers, partition fields) followed
//! by an optional [`FileSlice`]. On a plaintext TCP connection the encoded bytes are
//! written with `writev` and each slice with `sendfile(2)` from the segment file to
//! the socket, so record bytes never pass through user space; elsewhere (TLS, tests
//! over in-memory streams) the slices are read and the frame is written as bytes.
//!
//! The encoding is Kafka's, byte for byte (the tests compare it with the encoder of
//! `kafka-protocol` run on the same response with its records in memory): the
//! response and topic levels are written here, each partition by `kafka-protocol`
//! with its records left out, then the records' length prefix and the slice.
//!
//! A slice may be truncated in place while it is sent (a leader change cuts a
//! divergent tail): the log counts such rewrites, and the frame checks the count
//! after every file byte was taken and before its last byte goes out. A changed
//! count closes the connection with the frame incomplete, so a client never
//! parses bytes that were not the ones planned.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::fetch::FetchAnswer;
use crate::log::FileSlice;

/// A response frame ready to be written.
#[derive(Debug)]
pub enum Frame {
    /// The whole frame (length prefix included) in memory.
    Bytes(Bytes),
    /// A Fetch response with record bytes in segment files.
    Fetch(FetchFrame),
}

/// What [`encode`] made of an answer.
#[derive(Debug)]
pub enum Encoded {
    /// Records in files: send this frame.
    Files(FetchFrame),
    /// Every record in memory: encode this response as any other.
    Memory(FetchResponse),
}

/// Encoded bytes, each followed by an optional slice of a segment file.
#[derive(Debug)]
pub struct FetchFrame {
    parts: Vec<(Bytes, Option<FileSlice>)>,
    /// Counts the record bytes by how they were sent.
    counter: Option<Counter<u64>>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) -> Result<(), String> {
    let n = u32::try_from(n).map_err(|_| "array too long".to_string())?;
    if flexible {
        put_uvarint(buf, n + 1);
    } else {
        buf.put_i32(n as i32);
    }
    Ok(())
}

/// Whether a partition's encoding ends with its records and no tagged fields, so
/// that the slice can take the place of the records.
fn plain_tail(p: &PartitionData) -> bool {
    p.unknown_tagged_fields.is_empty()
        && p.diverging_epoch == Default::default()
        && p.current_leader == Default::default()
        && p.snapshot_id == Default::default()
}

/// Encodes a Fetch answer: a [`Frame::Fetch`] when some records are in files and the
/// response has nothing beyond what this encoder writes; otherwise the slices are
/// read and the response is encoded in memory.
pub fn encode(
    version: i16,
    correlation_id: i32,
    answer: FetchAnswer,
    counter: Option<Counter<u64>>,
) -> Result<Encoded, String> {
    let resp = &answer.resp;
    let simple = resp.node_endpoints.is_empty()
        && resp.unknown_tagged_fields.is_empty()
        && resp.responses.iter().zip(&answer.files).all(|(t, files)| {
            t.unknown_tagged_fields.is_empty()
                && t.partitions.len() == files.len()
                && t.partitions
                    .iter()
                    .zip(files)
                    .all(|(p, f)| f.is_none() || (plain_tail(p) && p.records.is_none()))
        })
        && answer.files.len() == resp.responses.len();
    if answer.slices().next().is_none() || !simple {
        let copied = answer.file_bytes() as u64;
        let resp = answer
            .materialize()
            .map_err(|e| format!("cannot read fetched records: {e}"))?;
        if let Some(c) = &counter {
            if copied > 0 {
                c.add(copied, &[KeyValue::new("path", "copy")]);
            }
        }
        return Ok(Encoded::Memory(resp));
    }
    encode_parts(version, correlation_id, answer)
        .map(|parts| Encoded::Files(FetchFrame { parts, counter }))
        .map_err(|e| format!("cannot encode Fetch v{version} response: {e}"))
}

fn encode_parts(
    version: i16,
    correlation_id: i32,
    answer: FetchAnswer,
) -> Result<Vec<(Bytes, Option<FileSlice>)>, String> {
    let FetchAnswer { resp, files } = answer;
    let flexible = version >= 12;
    let err = |e: anyhow::Error| e.to_string();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let inline = resp.compute_size(version).map_err(err)?;
    let mut buf = BytesMut::with_capacity(4 + 16 + inline + 8 * files.len());
    buf.put_i32(0);
    header
        .encode(&mut buf, ApiKey::Fetch.response_header_version(version))
        .map_err(err)?;
    buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(resp.error_code);
        buf.put_i32(resp.session_id);
    }
    put_array_len(&mut buf, resp.responses.len(), flexible)?;
    let mut parts: Vec<(BytesMut, Option<FileSlice>)> = Vec::new();
    for (t, files) in resp.responses.iter().zip(files) {
        if version <= 12 {
            let name = t.topic.0.as_bytes();
            if flexible {
                put_uvarint(
                    &mut buf,
                    u32::try_from(name.len() + 1).map_err(|_| "topic name too long")?,
                );
            } else {
                buf.put_i16(i16::try_from(name.len()).map_err(|_| "topic name too long")?);
            }
            buf.put_slice(name);
        }
        if version >= 13 {
            buf.put_slice(t.topic_id.as_bytes());
        }
        put_array_len(&mut buf, t.partitions.len(), flexible)?;
        for (p, file) in t.partitions.iter().zip(files) {
            p.encode(&mut buf, version).map_err(err)?;
            let Some(file) = file else { continue };
            // Null records, then (flexible) an empty tagged-field section.
            let tail: &[u8] = if flexible {
                &[0, 0]
            } else {
                &[0xff, 0xff, 0xff, 0xff]
            };
            if !buf.ends_with(tail) {
                return Err("unexpected partition encoding".into());
            }
            buf.truncate(buf.len() - tail.len());
            let len = file.len();
            if flexible {
                put_uvarint(
                    &mut buf,
                    u32::try_from(len + 1).map_err(|_| "records too large")?,
                );
            } else {
                buf.put_i32(i32::try_from(len).map_err(|_| "records too large")?);
            }
            parts.push((buf.split(), Some(file)));
            if flexible {
                buf.put_u8(0);
            }
        }
        if flexible {
            buf.put_u8(0);
        }
    }
    if flexible {
        buf.put_u8(0);
    }
    parts.push((buf, None));
    let total: usize = parts
        .iter()
        .map(|(b, f)| b.len() + f.as_ref().map_or(0, FileSlice::len))
        .sum();
    let len = i32::try_from(total - 4).map_err(|_| "response too large")?;
    parts[0].0[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(parts.into_iter().map(|(b, f)| (b.freeze(), f)).collect())
}

impl FetchFrame {
    fn slices(&self) -> impl Iterator<Item = &FileSlice> {
        self.parts.iter().filter_map(|(_, f)| f.as_ref())
    }

    fn file_bytes(&self) -> u64 {
        self.slices().map(|f| f.len() as u64).sum()
    }

    fn count(&self, path: &'static str) {
        if let Some(c) = &self.counter {
            c.add(self.file_bytes(), &[KeyValue::new("path", path)]);
        }
    }

    /// The whole frame in memory (the slices read from their files).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let total: usize = self
            .parts
            .iter()
            .map(|(b, f)| b.len() + f.as_ref().map_or(0, FileSlice::len))
            .sum();
        let mut out = BytesMut::with_capacity(total);
        for (b, f) in &self.parts {
            out.put_slice(b);
            if let Some(f) = f {
                out.put_slice(&f.read()?);
            }
        }
        self.count("copy");
        Ok(out.freeze())
    }

    /// Writes the frame to `sock`: encoded bytes with `writev`, slices with
    /// `sendfile`. An error leaves the frame incomplete: the connection must close.
    pub async fn send(&self, sock: &TcpStream) -> io::Result<()> {
        let last_file = self.parts.iter().rposition(|(_, f)| f.is_some());
        let mut pending: Vec<Bytes> = Vec::new();
        for (i, (bytes, file)) in self.parts.iter().enumerate() {
            if !bytes.is_empty() {
                pending.push(bytes.clone());
            }
            let Some(file) = file else { continue };
            write_all_vectored(sock, &mut pending).await?;
            // The frame's last byte waits for the rewrite check: when a slice ends
            // the frame, its last byte is read, not sent from the file.
            let ends_frame =
                Some(i) == last_file && self.parts[i + 1..].iter().all(|(b, _)| b.is_empty());
            let n = if ends_frame {
                file.len() - 1
            } else {
                file.len()
            };
            send_file(sock, file, n).await?;
            if ends_frame {
                let mut last = [0u8; 1];
                std::os::unix::fs::FileExt::read_exact_at(
                    file.file(),
                    &mut last,
                    file.pos() + n as u64,
                )?;
                pending.push(Bytes::copy_from_slice(&last));
            }
        }
        if !self.slices().all(FileSlice::unchanged) {
            return Err(io::Error::other(
                "a segment was truncated while its records were being sent",
            ));
        }
        write_all_vectored(sock, &mut pending).await?;
        self.count("zero_copy");
        Ok(())
    }
}

/// Writes every buffer of `pending` (and empties it), as few `writev` calls as the
/// socket allows.
async fn write_all_vectored(sock: &TcpStream, pending: &mut Vec<Bytes>) -> io::Result<()> {
    let mut first = 0;
    while first < pending.len() {
        let slices: Vec<IoSlice<'_>> = pending[first..]
            .iter()
            .take(64)
            .map(|b| IoSlice::new(b))
            .collect();
        sock.writable().await?;
        let mut n = match sock.try_write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        drop(slices);
        while n > 0 {
            let b = &mut pending[first];
            if n >= b.len() {
                n -= b.len();
                first += 1;
            } else {
                let _ = b.split_to(n);
                n = 0;
            }
        }
    }
    pending.clear();
    Ok(())
}

/// Sends the first `len` bytes of `file` with `sendfile(2)`, waiting for the socket
/// to be writable whenever it is full.
async fn send_file(sock: &TcpStream, file: &FileSlice, len: usize) -> io::Result<()> {
    let fd = file.file().as_raw_fd();
    let mut offset = libc::off_t::try_from(file.pos()).map_err(io::Error::other)?;
    let end = offset + libc::off_t::try_from(len).map_err(io::Error::other)?;
    while offset < end {
        sock.writable().await?;
        let want = ((end - offset) as usize).min(1 << 30);
        let sent = sock.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (the socket is borrowed,
            // the file is held by the slice); `offset` is a valid `off_t` the call
            // advances by the bytes it sent.
            let n = unsafe { libc::sendfile(sock.as_raw_fd(), fd, &mut offset, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the planned read",
                ))
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::fetch::FetchAnswer;
    use crate::log::batch::tests::make_batch;
    use crate::log::{LogConfig, PartitionLog, ReadMode, ValidatedRecords};
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch,
    };
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn log_with_batches(dir: &std::path::Path, n: i64) -> PartitionLog {
        let cfg = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            retention_bytes: 20_000,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir, cfg, true, 0).unwrap();
        for i in 0..n {
            append(&mut log, i);
        }
        log
    }

    fn append(log: &mut PartitionLog, i: i64) {
        let b = make_batch(
            0,
            1 + (i % 3) as i32,
            1000 + i,
            &vec![i as u8; 100 + (i as usize % 5) * 30],
        );
        log.append(ValidatedRecords::new(&b, 1 << 20).unwrap(), 0, 1000 + i)
            .unwrap();
    }

    fn slice(log: &PartitionLog, offset: i64, max: usize) -> Option<FileSlice> {
        log.plan_read(offset, max, true)
            .unwrap()
            .locate_with(ReadMode::Blocking)
            .unwrap()
    }

    /// Two topics: partitions with file records, in-memory records, none, an error.
    fn answer(log: &PartitionLog, version: i16) -> FetchAnswer {
        let mut resp = FetchResponse::default();
        resp.throttle_time_ms = 5;
        let mut files = Vec::new();
        for (ti, name) in ["alpha", "beta-topic"].into_iter().enumerate() {
            let mut t = FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = uuid::Uuid::from_u128(0x1234 + ti as u128);
            } else {
                t.topic = TopicName(StrBytes::from_static_str(name));
            }
            let mut fs = Vec::new();
            for i in 0..4 {
                let mut p = PartitionData::default();
                p.partition_index = i;
                p.high_watermark = 100 + i64::from(i);
                p.last_stable_offset = 90;
                p.log_start_offset = if version >= 5 { 3 } else { -1 };
                let mut a = AbortedTransaction::default();
                a.producer_id = ProducerId(7);
                a.first_offset = 11;
                p.aborted_transactions = Some(if i == 1 { vec![a] } else { Vec::new() });
                let f = match i {
                    0 | 1 => slice(
                        log,
                        log.log_start_offset() + 2 + i64::from(i) * 5 + ti as i64,
                        700,
                    ),
                    2 => {
                        p.records = Some(Bytes::from_static(b"in memory"));
                        None
                    }
                    _ => {
                        p.error_code = 6;
                        if version >= 12 {
                            let mut l = LeaderIdAndEpoch::default();
                            l.leader_id = 2.into();
                            l.leader_epoch = 4;
                            p.current_leader = l;
                        }
                        p.records = Some(Bytes::new());
                        None
                    }
                };
                if f.is_some() {
                    p.records = None;
                }
                fs.push(f);
                t.partitions.push(p);
            }
            resp.responses.push(t);
            files.push(fs);
        }
        FetchAnswer { resp, files }
    }

    fn reference(log: &PartitionLog, version: i16) -> Bytes {
        let resp = answer(log, version).materialize().unwrap();
        crate::kafka::dispatch::encode(ApiKey::Fetch, version, 9, &resp).unwrap()
    }

    #[test]
    fn frames_are_kafkas_encoding_byte_for_byte_in_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_batches(dir.path(), 40);
        for version in 4..=16 {
            let frame = match encode(version, 9, answer(&log, version), None).unwrap() {
                Encoded::Files(f) => f,
                Encoded::Memory(_) => panic!("v{version}: records were copied"),
            };
            assert_eq!(frame.slices().count(), 4, "v{version}");
            assert_eq!(
                frame.to_bytes().unwrap(),
                reference(&log, version),
                "v{version}"
            );
        }
    }

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (s, c)
    }

    /// Frames sent with sendfile over a real socket (small socket buffers: many
    /// partial writes) are the copying path's bytes, while the log rolls segments
    /// and retention deletes the ones being sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sent_frames_match_the_copying_path_under_rolls_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(parking_lot::Mutex::new(log_with_batches(dir.path(), 60)));
        let (server, mut client) = socket_pair().await;
        let _ = socket2_sndbuf(&server, 4096);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Batches the writer appended: each round waits for at least one, so the
        // log moves under the sends however the threads are scheduled (a busy
        // machine once let the writer append only 15 batches in 200 rounds).
        let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let (log, stop, progress) =
                (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&progress));
            std::thread::spawn(move || {
                let mut i = 60;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut l = log.lock();
                    append(&mut l, i);
                    l.apply_retention(1000 + i).unwrap();
                    i += 1;
                    drop(l);
                    progress.fetch_add(1, std::sync::atomic::Ordering::Release);
                    std::thread::yield_now();
                }
                i
            })
        };
        let mut sent = 0;
        for round in 0..200 {
            let before = progress.load(std::sync::atomic::Ordering::Acquire);
            let (version, answer) = {
                let l = log.lock();
                let version = 4 + (round % 13) as i16;
                let start = l.log_start_offset();
                let mut a = answer(&l, version);
                // Read from the oldest segment: the one retention deletes next.
                a.files[0][0] = slice(&l, start, 1 << 20);
                (version, a)
            };
            let expected = {
                let r = FetchAnswer {
                    resp: answer.resp.clone(),
                    files: answer.files.clone(),
                };
                let resp = r.materialize().unwrap();
                crate::kafka::dispatch::encode(ApiKey::Fetch, version, 9, &resp).unwrap()
            };
            let Encoded::Files(frame) = encode(version, 9, answer, None).unwrap() else {
                panic!("copied");
            };
            let (res, got) = tokio::join!(frame.send(&server), async {
                let mut got = vec![0u8; expected.len()];
                client.read_exact(&mut got).await.map(|_| got)
            });
            res.unwrap();
            assert_eq!(got.unwrap(), expected, "round {round} v{version}");
            sent += 1;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while progress.load(std::sync::atomic::Ordering::Acquire) == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the writer appended nothing for 30 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let appended = writer.join().unwrap();
        assert_eq!(sent, 200);
        assert!(appended >= 60 + 200, "the log hardly moved: {appended}");
        assert!(log.lock().log_start_offset() > 0, "retention never ran");
    }

    /// A truncation while a frame is under way: the frame is never completed, in
    /// the layouts where a slice ends the frame (v4–v11) and where it does not.
    #[tokio::test]
    async fn a_truncated_slice_is_not_sent_whole() {
        for version in [4i16, 11, 12, 16] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = log_with_batches(dir.path(), 10);
            let (server, mut client) = socket_pair().await;
            let mut a = answer(&log, version);
            a.files[0][0] = None;
            let Encoded::Files(frame) = encode(version, 9, a, None).unwrap() else {
                panic!("copied");
            };
            let len = frame.to_bytes().unwrap().len();
            log.truncate_to(log.log_end_offset() - 1).unwrap();
            append(&mut log, 99);
            assert!(frame.send(&server).await.is_err(), "v{version}");
            drop(server);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert!(got.len() < len, "v{version}: a whole frame was delivered");
        }
    }

    fn socket2_sndbuf(s: &TcpStream, bytes: i32) -> std::io::Result<()> {
        // SAFETY: a valid socket descriptor and a pointer to an int of the given size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
