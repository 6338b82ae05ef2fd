//! The tier's instruments (OpenTelemetry, exported with the broker's others on
//! `/metrics`): uploads and upload lag, reads served from the tier, the chunk cache and
//! object-store errors.

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::KeyValue;

#[derive(Clone)]
pub struct TierMetrics {
    pub uploaded_segments: Counter<u64>,
    pub uploaded_bytes: Counter<u64>,
    pub upload_errors: Counter<u64>,
    /// Closed segments (and their bytes) not yet committed to the tier, per partition.
    pub upload_lag_segments: Gauge<u64>,
    pub upload_lag_bytes: Gauge<u64>,
    pub fetch_bytes: Counter<u64>,
    pub fetch_latency: Histogram<f64>,
    pub read_errors: Counter<u64>,
    pub cache_hits: Counter<u64>,
    pub cache_misses: Counter<u64>,
    pub cache_bytes: Gauge<u64>,
    pub object_store_errors: Counter<u64>,
    pub remote_segments_deleted: Counter<u64>,
    pub orphans_deleted: Counter<u64>,
}

impl TierMetrics {
    pub fn new(meter: &Meter) -> Self {
        TierMetrics {
            uploaded_segments: meter
                .u64_counter("strata_tier_uploaded_segments")
                .with_description("Segments uploaded to the tier, per topic")
                .build(),
            uploaded_bytes: meter
                .u64_counter("strata_tier_uploaded_bytes")
                .with_description("Segment bytes uploaded to the tier, per topic")
                .build(),
            upload_errors: meter
                .u64_counter("strata_tier_upload_errors")
                .with_description("Failed tier upload passes (object store errors), per topic")
                .build(),
            upload_lag_segments: meter
                .u64_gauge("strata_tier_upload_lag_segments")
                .with_description("Closed segments waiting for upload, per partition")
                .build(),
            upload_lag_bytes: meter
                .u64_gauge("strata_tier_upload_lag_bytes")
                .with_description("Bytes of closed segments waiting for upload, per partition")
                .build(),
            fetch_bytes: meter
                .u64_counter("strata_tier_fetch_bytes")
                .with_description("Record bytes served from the tier to fetchers, per topic")
                .build(),
            fetch_latency: meter
                .f64_histogram("strata_tier_fetch_duration")
                .with_unit("s")
                .with_description("Time to serve one partition's read from the tier")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .build(),
            read_errors: meter
                .u64_counter("strata_tier_read_errors")
                .with_description(
                    "Reads from the tier answered with an error, per topic and kind \
                     (unavailable, missing, corrupt)",
                )
                .build(),
            cache_hits: meter
                .u64_counter("strata_tier_cache_hits")
                .with_description("Chunk reads served by the local chunk cache")
                .build(),
            cache_misses: meter
                .u64_counter("strata_tier_cache_misses")
                .with_description("Chunk reads that had to GET from the object store")
                .build(),
            cache_bytes: meter
                .u64_gauge("strata_tier_cache_bytes")
                .with_description("Bytes held by the chunk cache on disk")
                .build(),
            object_store_errors: meter
                .u64_counter("strata_tier_object_store_errors")
                .with_description("Failed object-store requests (each attempt), per operation")
                .build(),
            remote_segments_deleted: meter
                .u64_counter("strata_tier_remote_segments_deleted")
                .with_description("Remote segments deleted by total retention, per topic")
                .build(),
            orphans_deleted: meter
                .u64_counter("strata_tier_orphaned_objects_deleted")
                .with_description(
                    "Objects under a partition prefix that no committed remote segment \
                     listed (refused or interrupted uploads, failed deletes), deleted, per topic",
                )
                .build(),
        }
    }

    pub fn partition(topic: &str, partition: i32) -> [KeyValue; 2] {
        [
            KeyValue::new("topic", topic.to_string()),
            KeyValue::new("partition", i64::from(partition)),
        ]
    }
}
