//! The chunk cache of the tier's read path: remote segment objects are fetched in
//! fixed-size chunks (one ranged GET each) and kept in files under the cache
//! directory, bounded by `tier_cache_bytes` with least-recently-used eviction.
//!
//! Sits between `tier::reader` (which asks for byte ranges of a remote segment) and
//! `tier::store`. Concurrent readers of one chunk share a single download; read-ahead
//! starts downloads nobody waits for yet. Remote objects are immutable (a key always
//! names the same bytes), so a cached chunk never goes stale; the directory is emptied
//! at start so nothing half-written from a previous run is trusted.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use super::error::TierReadError;
use super::metrics::TierMetrics;
use super::store::TierStore;

/// Least-recently-used bookkeeping over sized entries (pure; no I/O).
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: u64,
    used: u64,
    tick: u64,
    entries: HashMap<K, (V, u64, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash, V: Clone> Lru<K, V> {
    pub fn new(capacity: u64) -> Self {
        Lru {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value of `k`, marking it most recently used.
    pub fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.entries.get_mut(k)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, k.clone());
        Some(v.clone())
    }

    pub fn contains(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }

    /// Inserts (or replaces) an entry of `size` bytes and returns what had to be
    /// evicted to stay within capacity. An entry larger than the whole capacity is
    /// not kept (it comes back as evicted).
    pub fn insert(&mut self, k: K, v: V, size: u64) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        if let Some(old) = self.remove(&k) {
            evicted.push((k.clone(), old));
        }
        if size > self.capacity {
            evicted.push((k, v));
            return evicted;
        }
        while self.used + size > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((ov, osize, _)) = self.entries.remove(&oldest) {
                self.used -= osize;
                evicted.push((oldest, ov));
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.entries.insert(k, (v, size, self.tick));
        self.used += size;
        evicted
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, size, t) = self.entries.remove(k)?;
        self.order.remove(&t);
        self.used -= size;
        Some(v)
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One chunk: an object key and the chunk's number within the object.
pub type ChunkId = (Arc<str>, u64);

type Outcome = Option<Result<Bytes, TierReadError>>;

struct State {
    /// Cached chunks: file number and length.
    lru: Lru<ChunkId, u64>,
    /// Downloads in progress; waiters watch for the outcome.
    inflight: HashMap<ChunkId, watch::Receiver<Outcome>>,
}

pub struct ChunkCache {
    dir: PathBuf,
    chunk_bytes: u64,
    state: Mutex<State>,
    next_file: AtomicU64,
    downloads: Arc<Semaphore>,
    metrics: TierMetrics,
}

/// Concurrent GETs the cache issues (reads and read-ahead of every partition).
const MAX_DOWNLOADS: usize = 16;

impl ChunkCache {
    /// Opens the cache in `dir`, removing chunk files left by a previous run.
    pub fn open(
        dir: &Path,
        capacity: u64,
        chunk_bytes: u64,
        metrics: TierMetrics,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".chunk") || name.ends_with(".chunk.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ChunkCache {
            dir: dir.to_path_buf(),
            chunk_bytes: chunk_bytes.max(1),
            state: Mutex::new(State {
                lru: Lru::new(capacity),
                inflight: HashMap::new(),
            }),
            next_file: AtomicU64::new(0),
            downloads: Arc::new(Semaphore::new(MAX_DOWNLOADS)),
            metrics,
        })
    }

    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    fn file(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n}.chunk"))
    }

    /// Reads `range` of the object `key` (of `object_len` bytes) through the cache.
    pub async fn read(
        self: &Arc<Self>,
        store: &TierStore,
        key: &Arc<str>,
        object_len: u64,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, TierReadError> {
        if range.end > object_len || range.start > range.end {
            return Err(TierReadError::Corrupt {
                key: key.to_string(),
                reason: format!("read {range:?} past the object's {object_len} bytes"),
            });
        }
        let c = self.chunk_bytes;
        let first = range.start / c;
        let last = range.end.saturating_sub(1) / c;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let mut out = BytesMut::new();
        for i in first..=last {
            let chunk_start = i * c;
            let lo = range.start.max(chunk_start) - chunk_start;
            let hi = range.end.min(chunk_start + c) - chunk_start;
            let part = self
                .read_in_chunk(store, key, object_len, i, lo..hi)
                .await?;
            if first == last {
                return Ok(part);
            }
            out.extend_from_slice(&part);
        }
        Ok(out.freeze())
    }

    /// Bytes `within` of chunk `index`.
    async fn read_in_chunk(
        self: &Arc<Self>,
        store: &TierStore,
        key: &Arc<str>,
        object_len: u64,
        index: u64,
        within: std::ops::Range<u64>,
    ) -> Result<Bytes, TierReadError> {
        let id: ChunkId = (Arc::clone(key), index);
        let cached = self.state.lock().lru.get(&id);
        if let Some(n) = cached {
            match read_file_range(&self.file(n), within.clone()) {
                Ok(b) => {
                    self.metrics.cache_hits.add(1, &[]);
                    return Ok(b);
                }
                // Evicted between lookup and read: fetch it again.
                Err(e) => debug!(error = %e, "cached chunk vanished; refetching"),
            }
        }
        self.metrics.cache_misses.add(1, &[]);
        let mut rx = self.download(store, id, object_len);
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        let chunk = outcome.unwrap_or_else(|| {
            Err(TierReadError::Unavailable {
                key: key.to_string(),
                reason: "chunk download was abandoned".into(),
            })
        })?;
        let lo = (within.start as usize).min(chunk.len());
        let hi = (within.end as usize).min(chunk.len());
        Ok(chunk.slice(lo..hi))
    }

    /// Starts fetching a chunk nobody needs yet (read-ahead), unless it is cached or
    /// already on its way.
    pub fn prefetch(
        self: &Arc<Self>,
        store: &TierStore,
        key: &Arc<str>,
        object_len: u64,
        index: u64,
    ) {
        if index * self.chunk_bytes >= object_len {
            return;
        }
        let id: ChunkId = (Arc::clone(key), index);
        {
            let st = self.state.lock();
            if st.lru.contains(&id) || st.inflight.contains_key(&id) {
                return;
            }
        }
        drop(self.download(store, id, object_len));
    }

    /// The receiver of a download of `id`, joining one in flight or starting one.
    fn download(
        self: &Arc<Self>,
        store: &TierStore,
        id: ChunkId,
        object_len: u64,
    ) -> watch::Receiver<Outcome> {
        let mut st = self.state.lock();
        if let Some(rx) = st.inflight.get(&id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        st.inflight.insert(id.clone(), rx.clone());
        drop(st);
        let cache = Arc::clone(self);
        let store = store.clone();
        tokio::spawn(async move {
            let outcome = cache.fetch_chunk(&store, &id, object_len).await;
            let file = match &outcome {
                Ok(data) => cache.store_file(data).await,
                Err(_) => None,
            };
            let mut evicted = Vec::new();
            {
                let mut st = cache.state.lock();
                st.inflight.remove(&id);
                if let (Some(n), Ok(data)) = (file, &outcome) {
                    evicted = st.lru.insert(id.clone(), n, data.len() as u64);
                }
                cache.metrics.cache_bytes.record(st.lru.used(), &[]);
            }
            for (_, n) in evicted {
                let _ = std::fs::remove_file(cache.file(n));
            }
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    async fn fetch_chunk(
        &self,
        store: &TierStore,
        id: &ChunkId,
        object_len: u64,
    ) -> Result<Bytes, TierReadError> {
        let (key, index) = id;
        let start = index * self.chunk_bytes;
        let end = (start + self.chunk_bytes).min(object_len);
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| TierReadError::Unavailable {
                key: key.to_string(),
                reason: "cache closed".into(),
            })?;
        let data = store
            .get_range(key, start..end)
            .await
            .map_err(|e| TierReadError::from_store(key, e))?;
        if data.len() as u64 != end - start {
            return Err(TierReadError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "object is shorter than its remote log entry: asked {start}..{end}, got {} bytes",
                    data.len()
                ),
            });
        }
        Ok(data)
    }

    /// Writes a downloaded chunk to a new file; `None` if the disk refused (the data
    /// is still served, just not cached).
    async fn store_file(&self, data: &Bytes) -> Option<u64> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.file(n);
        match tokio::fs::write(&path, data).await {
            Ok(()) => Some(n),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot write tier cache chunk");
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
        }
    }

    /// Bytes currently cached.
    pub fn used(&self) -> u64 {
        self.state.lock().lru.used()
    }
}

fn read_file_range(path: &Path, range: std::ops::Range<u64>) -> std::io::Result<Bytes> {
    let f = std::fs::File::open(path)?;
    let mut buf = BytesMut::zeroed((range.end - range.start) as usize);
    f.read_exact_at(&mut buf, range.start)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::store::TierBackend;

    #[test]
    fn lru_evicts_least_recently_used_within_capacity() {
        let mut l: Lru<&str, u32> = Lru::new(100);
        assert!(l.insert("a", 1, 40).is_empty());
        assert!(l.insert("b", 2, 40).is_empty());
        assert_eq!(l.get(&"a"), Some(1)); // b is now the oldest
        assert_eq!(l.insert("c", 3, 40), vec![("b", 2)]);
        assert_eq!(l.used(), 80);
        assert!(l.contains(&"a") && l.contains(&"c"));
        // Too large for the cache at all: refused, nothing else evicted.
        assert_eq!(l.insert("huge", 4, 101), vec![("huge", 4)]);
        assert_eq!(l.len(), 2);
        // Replacing an entry gives the old value back.
        assert_eq!(l.insert("a", 5, 10), vec![("a", 1)]);
        assert_eq!(l.used(), 50);
        assert_eq!(l.remove(&"c"), Some(3));
        assert_eq!(l.used(), 10);
    }

    #[tokio::test]
    async fn reads_across_chunks_hit_the_cache_and_stay_bounded() {
        let tier = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let store = TierStore::new(
            &TierBackend::Local {
                dir: tier.path().to_path_buf(),
            },
            "",
        )
        .unwrap();
        let data = Bytes::from((0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        store.put("t/0/seg.log", data.clone()).await.unwrap();
        let meter = opentelemetry::global::meter("test");
        let cache = Arc::new(
            ChunkCache::open(
                cache_dir.path(),
                200_000,
                64 << 10,
                TierMetrics::new(&meter),
            )
            .unwrap(),
        );
        let key: Arc<str> = Arc::from("t/0/seg.log");
        let len = data.len() as u64;
        for range in [0..10, 65_000..140_000, 299_990..300_000, 0..300_000] {
            let got = cache.read(&store, &key, len, range.clone()).await.unwrap();
            assert_eq!(got, data.slice(range.start as usize..range.end as usize));
        }
        assert!(cache.used() <= 200_000, "cache over capacity");
        let files = std::fs::read_dir(cache_dir.path()).unwrap().count();
        assert!(files <= 200_000 / (64 << 10), "{files} chunk files kept");
        // Past the end is an error, not a panic.
        assert!(cache
            .read(&store, &key, len, 299_000..300_001)
            .await
            .is_err());
        // A missing object is reported as missing.
        let gone: Arc<str> = Arc::from("t/0/gone.log");
        assert!(matches!(
            cache.read(&store, &gone, 100, 0..10).await,
            Err(TierReadError::Missing { .. })
        ));
    }
}
