//! Tiered storage: closed segments go to object storage and are read back from it.
//! `store` talks to the object store, `manifest` records what is remote. (The uploader
//! and the remote read path are being built on these; see docs/architecture.md.)

pub mod manifest;
pub mod store;
