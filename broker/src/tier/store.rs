//! The object store behind the tier: S3-compatible (any endpoint, path-style, with
//! static credentials) or a local directory (dev mode), through the `object_store`
//! crate. Transient failures are retried with exponential backoff here; callers see an
//! error only after the retries are spent, and an upload error only delays local
//! deletion, it never loses data.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tracing::debug;

use super::sweeper::Listed;

/// Where tiered segments go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierBackend {
    /// A directory on the broker's own disk (dev mode, tests).
    Local { dir: PathBuf },
    /// An S3-compatible service.
    S3 {
        endpoint: String,
        region: String,
        bucket: String,
        access_key: String,
        secret_key: String,
    },
}

#[derive(Clone)]
pub struct TierStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    attempts: u32,
    /// Counts every failed request (each attempt), labelled by operation.
    errors: Option<Counter<u64>>,
}

impl std::fmt::Debug for TierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl TierStore {
    pub fn new(backend: &TierBackend, prefix: &str) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = match backend {
            TierBackend::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("cannot create tier directory {}: {e}", dir.display())
                })?;
                Arc::new(LocalFileSystem::new_with_prefix(dir)?)
            }
            TierBackend::S3 {
                endpoint,
                region,
                bucket,
                access_key,
                secret_key,
            } => Arc::new(
                AmazonS3Builder::new()
                    // Client options first: they carry `allow_http`, set below.
                    .with_client_options(
                        ClientOptions::default()
                            .with_connect_timeout(Duration::from_secs(2))
                            .with_timeout(Duration::from_secs(30)),
                    )
                    .with_endpoint(endpoint)
                    .with_region(region)
                    .with_bucket_name(bucket)
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false)
                    // Retries are ours (below, bounded); the client's own default
                    // would keep a request retrying for up to three minutes.
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: 1,
                        retry_timeout: Duration::from_secs(10),
                    })
                    .build()?,
            ),
        };
        Ok(TierStore {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            attempts: 5,
            errors: None,
        })
    }

    /// Counts failed requests in `counter` (label `op`).
    pub fn with_error_counter(mut self, counter: Counter<u64>) -> Self {
        self.errors = Some(counter);
        self
    }

    /// Gives up after `attempts` tries (at least one).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The full object path of `key` under the configured prefix.
    pub fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    async fn retry<T, F, Fut>(&self, what: &str, key: &str, mut op: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = op().await;
            if let Some(c) = &self.errors {
                // Successes add 0, so every operation's series exists before its
                // first failure (rate() cannot see the first sample of a series).
                let failed =
                    matches!(&result, Err(e) if !matches!(e, object_store::Error::NotFound { .. }));
                c.add(u64::from(failed), &[KeyValue::new("op", what.to_string())]);
            }
            match result {
                Ok(v) => return Ok(v),
                Err(e @ object_store::Error::NotFound { .. }) => return Err(e),
                Err(e) if attempt >= self.attempts => return Err(e),
                Err(e) => {
                    // Callers log the final failure; an outage would otherwise log
                    // every attempt of every object.
                    debug!(%key, attempt, error = %e, "object store {what} failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    /// Uploads an object (overwriting: uploads are idempotent by key).
    pub async fn put(&self, key: &str, data: Bytes) -> object_store::Result<()> {
        let path = self.path(key);
        self.retry("put", key, || {
            self.store.put(&path, PutPayload::from(data.clone()))
        })
        .await
        .map(drop)
    }

    pub async fn get(&self, key: &str) -> object_store::Result<Bytes> {
        let path = self.path(key);
        self.retry("get", key, || async {
            self.store.get(&path).await?.bytes().await
        })
        .await
    }

    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> object_store::Result<Bytes> {
        let path = self.path(key);
        self.retry("ranged get", key, || {
            self.store.get_range(&path, range.clone())
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        let path = self.path(key);
        match self.retry("delete", key, || self.store.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Keys (relative to the prefix) under `dir`.
    pub async fn list(&self, dir: &str) -> object_store::Result<Vec<String>> {
        Ok(self
            .list_objects(dir)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// Objects under `dir`: keys relative to the prefix, with their last-modified time.
    pub async fn list_objects(&self, dir: &str) -> object_store::Result<Vec<Listed>> {
        let base = self.path(dir);
        let metas: Vec<_> = self
            .retry("list", dir, || self.store.list(Some(&base)).try_collect())
            .await?;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                key: m
                    .location
                    .to_string()
                    .get(strip..)
                    .unwrap_or_default()
                    .to_string(),
                last_modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect())
    }

    /// Deletes every object under `dir` (topic deletion).
    pub async fn delete_prefix(&self, dir: &str) -> object_store::Result<usize> {
        let keys = self.list(dir).await?;
        for k in &keys {
            self.delete(k).await?;
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_backend_round_trips_ranges_and_prefix_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = TierStore::new(
            &TierBackend::Local {
                dir: dir.path().to_path_buf(),
            },
            "cluster-a",
        )
        .unwrap();
        let data = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
        s.put("t/0/00000000000000000000.log", data.clone())
            .await
            .unwrap();
        s.put("t/0/00000000000000000000.index", Bytes::from_static(b"idx"))
            .await
            .unwrap();
        assert_eq!(s.get("t/0/00000000000000000000.log").await.unwrap(), data);
        assert_eq!(
            s.get_range("t/0/00000000000000000000.log", 100..110)
                .await
                .unwrap(),
            data.slice(100..110)
        );
        let mut keys = s.list("t").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "t/0/00000000000000000000.index",
                "t/0/00000000000000000000.log"
            ]
        );
        assert!(matches!(
            s.get("missing").await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert_eq!(s.delete_prefix("t").await.unwrap(), 2);
        assert!(s.list("t").await.unwrap().is_empty());
        assert!(dir.path().join("cluster-a").exists());
    }
}
