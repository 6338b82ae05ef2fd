//! Membership: this broker registers with the controller (the first time, after a
//! restart with a changed address, or after being forgotten) and then heartbeats
//! through the metadata quorum. A heartbeat committed and reconciled renews the
//! broker's lease, which gates everything that answers from its local view of who
//! leads what (group coordination, consumer fetches, ListOffsets).

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::Reconciler;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metadata::cluster::Command;

/// Registers this broker (first time, or after being forgotten) or heartbeats.
pub(super) async fn heartbeat(b: &Arc<Broker>, reconciler: &Reconciler) {
    let now = now_ms();
    let me = b.node_id();
    let state = b.cluster();
    let (host, port, listeners) = crate::security::listeners::registration(&b.config);
    let internal = b.config.advertised_internal();
    let known = state.brokers.get(&me).is_some_and(|x| {
        x.host == host
            && x.port == port
            && x.internal == internal
            && x.rack == b.config.rack
            && x.listeners == listeners
    });
    let cmd = if b.is_registered() && known {
        Command::Heartbeat {
            id: me,
            now_ms: now,
        }
    } else {
        Command::RegisterBroker {
            id: me,
            host,
            port,
            rack: b.config.rack.clone(),
            internal,
            listeners,
            now_ms: now,
        }
    };
    let sent = std::time::Instant::now();
    match b.quorum.propose(cmd).await {
        Ok((index, _)) => {
            if !b.is_registered() && b.quorum.wait_applied(index, Duration::from_secs(10)).await {
                b.set_registered();
                reconciler.reconcile(b).await;
            }
            if b.is_registered() && b.wait_reconciled(index).await {
                b.renew_lease(sent);
            }
        }
        Err(e) => debug!(error = %e, "heartbeat not committed"),
    }
}
