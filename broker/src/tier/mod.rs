//! Tiered storage: closed segments go to object storage and are read back from it.
//! `service` is the broker's handle on the tier and runs the periodic pass;
//! `uploader` copies closed segments to the store and commits them to the remote
//! log the metadata quorum keeps (`catalog`; the type is `metadata::remote_log`);
//! `sweeper` finds objects that log does not list; `reader` serves Fetch and
//! ListOffsets below the local log start through the on-disk `cache` of chunks
//! (both fail with `error::TierReadError`);
//! `store` talks to the object store. Local deletion of uploaded segments is
//! `log::retention`. See docs/tiered-storage.md.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod metrics;
pub mod reader;
pub mod service;
pub mod store;
pub mod sweeper;
pub mod uploader;

pub use service::Tier;
