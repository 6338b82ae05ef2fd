//! Follower long-poll wake-ups: one signal per follower broker, bumped when a leader
//! here appends to a partition that broker replicates. A follower's fetch waits on
//! its own signal only, so an append wakes the fetches of that partition's
//! followers, not every follower fetch on the broker.

use std::collections::HashMap;

use parking_lot::RwLock;
use tokio::sync::watch;

/// The wake-up signals of the follower fetches served here, by follower broker id.
#[derive(Debug, Default)]
pub struct FollowerWakeups {
    by_follower: RwLock<HashMap<i32, watch::Sender<u64>>>,
}

impl FollowerWakeups {
    /// The signal of `follower`'s fetches, created on first use. Subscribe before
    /// looking at the partitions: an append after that wakes the receiver.
    pub fn subscribe(&self, follower: i32) -> watch::Receiver<u64> {
        if let Some(tx) = self.by_follower.read().get(&follower) {
            return tx.subscribe();
        }
        self.by_follower
            .write()
            .entry(follower)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// An append to a partition replicated by `replicas`: wakes their fetches (the
    /// leader's own id, `me`, is skipped). Followers that never fetched have no
    /// signal yet and nothing to wake.
    pub fn appended(&self, me: i32, replicas: &[i32]) {
        let map = self.by_follower.read();
        for r in replicas {
            if *r == me {
                continue;
            }
            if let Some(tx) = map.get(r) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_wakes_only_the_followers_of_its_partition() {
        let w = FollowerWakeups::default();
        let mut two = w.subscribe(2);
        let mut three = w.subscribe(3);
        let mut four = w.subscribe(4);
        w.appended(1, &[1, 2, 3]);
        assert!(two.has_changed().unwrap());
        assert!(three.has_changed().unwrap());
        assert!(!four.has_changed().unwrap());
        two.borrow_and_update();
        three.borrow_and_update();
        w.appended(1, &[1, 4]);
        assert!(!two.has_changed().unwrap());
        assert!(!three.has_changed().unwrap());
        assert!(four.has_changed().unwrap());
        // A second subscriber of the same follower shares its signal.
        let again = w.subscribe(4);
        assert!(!again.has_changed().unwrap());
        four.borrow_and_update();
        w.appended(1, &[1, 4]);
        assert!(again.has_changed().unwrap() && four.has_changed().unwrap());
    }
}
