//! The Kafka wire protocol server: framing and connection handling (`server`),
//! request decoding, version checks and routing (`dispatch`), and one handler module
//! per API group. `kafka-protocol` encodes and decodes message bodies; framing,
//! limits and semantics are ours.

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub mod authorize;
pub mod broker_configs;
pub mod client_quotas;
pub mod committed_offsets;
pub mod configs;
pub mod delete_records;
pub mod describe_cluster;
pub mod describe_topic_partitions;
pub mod describe_txn;
pub mod dispatch;
pub mod elect_leaders;
pub mod fetch;
pub mod fetch_frame;
pub mod groups;
pub mod leader_epoch;
pub mod list_offsets;
pub mod log_dirs;
pub mod peer;
pub mod produce;
pub mod producer_id;
pub mod reassignments;
pub mod scram_users;
pub mod server;
pub mod topic_metadata;
pub mod topics;
pub mod transactions;
pub mod txn_markers;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::log::LogError;
use crate::metadata::MetadataError;

/// Builds a protocol string.
pub fn str_bytes(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Maps a log error to the Kafka error code a client expects.
pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::Corrupt(_) => ResponseError::CorruptMessage,
        LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::NotLeader => ResponseError::NotLeaderOrFollower,
        LogError::Io { .. } | LogError::Decode(_) => ResponseError::KafkaStorageError,
        LogError::Sequence(crate::producer::SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        LogError::Sequence(crate::producer::SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Sequence(crate::producer::SequenceError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced
        }
        LogError::BadControlBatch(_) => ResponseError::InvalidRecord,
    }
}

/// Maps a metadata error to its Kafka error code.
pub fn metadata_error_code(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::Io { .. } | MetadataError::Corrupt { .. } => {
            ResponseError::KafkaStorageError
        }
        MetadataError::Quorum(_) => ResponseError::RequestTimedOut,
    }
}
