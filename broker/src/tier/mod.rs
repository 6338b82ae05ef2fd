//! Tiered storage: closed segments go to object storage and are read back from it.
//! `store` talks to the object store, `manifest` records what is remote, `uploader`
//! copies closed segments there. The remote read path and local deletion after
//! upload are the next steps (see docs/architecture.md).

pub mod manifest;
pub mod store;
pub mod uploader;
