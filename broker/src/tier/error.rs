//! Why a read from the tier failed: the error of the remote read path, shared by
//! the chunk cache (`cache`), which meets object-store failures, and the reader
//! (`reader`), which finds damaged batches. Kafka handlers map it to an error code.

use crate::metadata::remote_log::RemoteSegment;

/// Why a read from the tier failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierReadError {
    #[error("object store unavailable reading {key}: {reason}")]
    Unavailable { key: String, reason: String },
    #[error("remote object {key} is missing")]
    Missing { key: String },
    #[error("remote object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

impl TierReadError {
    pub fn from_store(key: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => TierReadError::Missing {
                key: key.to_string(),
            },
            e => TierReadError::Unavailable {
                key: key.to_string(),
                reason: e.to_string(),
            },
        }
    }

    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            TierReadError::Unavailable { .. } => "unavailable",
            TierReadError::Missing { .. } => "missing",
            TierReadError::Corrupt { .. } => "corrupt",
        }
    }

    pub(super) fn corrupt(seg: &RemoteSegment, reason: impl Into<String>) -> Self {
        TierReadError::Corrupt {
            key: seg.log_key.clone(),
            reason: reason.into(),
        }
    }
}
