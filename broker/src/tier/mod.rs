//! Tiered storage: closed segments go to object storage and are read back from it.
//! `service` is the broker's handle on the tier and runs the periodic pass;
//! `uploader` copies closed segments to the store and `manifest` records what is
//! remote; `reader` serves Fetch and ListOffsets below the local log start through
//! the on-disk `cache` of chunks; `store` talks to the object store. Local deletion
//! of uploaded segments is `log::retention`. See docs/tiered-storage.md.

pub mod cache;
pub mod manifest;
pub mod metrics;
pub mod reader;
pub mod service;
pub mod store;
pub mod uploader;

pub use service::Tier;
