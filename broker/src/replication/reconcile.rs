//! Following the metadata: whenever the applied metadata changes (and after this
//! broker registers), the broker reconciles its replicas and group coordination
//! with it ([`crate::broker::Broker::reconcile_blocking`], on the blocking pool), and
//! this module then restarts the follower fetchers to match and deletes the files
//! of removed replicas, once each, off the runtime. One reconcile runs at a time.

use std::sync::Arc;

use tokio::sync::Mutex as AsyncMutex;
use tracing::warn;

use super::fetcher::Fetchers;
use crate::broker::Broker;
use crate::replica_removal;

/// The follower fetchers and the lock that keeps reconciles one at a time.
#[derive(Default)]
pub struct Reconciler {
    fetchers: Fetchers,
    lock: AsyncMutex<()>,
}

impl Reconciler {
    /// Brings the local replicas, the groups and the fetchers in line with the
    /// metadata this broker applied.
    pub async fn reconcile(&self, broker: &Arc<Broker>) {
        let _g = self.lock.lock().await;
        let b = Arc::clone(broker);
        match tokio::task::spawn_blocking(move || b.reconcile_blocking()).await {
            Ok(applied) => {
                self.fetchers.update(broker, applied.followed);
                if !applied.removed.is_empty() {
                    let removed = applied.removed;
                    tokio::task::spawn_blocking(move || replica_removal::remove(&removed));
                }
            }
            Err(e) => warn!(error = %e, "reconcile task failed"),
        }
    }

    /// Stops every follower fetcher (shutdown).
    pub fn stop(&self) {
        self.fetchers.stop_all();
    }
}
