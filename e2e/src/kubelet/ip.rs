//! Loopback pod addresses: each running pod gets its own 127.B.N.M (M in
//! 2..=254). Linux routes all of 127.0.0.0/8 to `lo`. Each kubelet draws its own
//! second octet B (16..=250) at start, so two environments on one machine (a
//! `strata-e2e up` next to a test run, or two test processes) and the tests'
//! own 127.0.0.x brokers never hand out the same address.
//!
//! Pods in network namespaces of their own (see [`super::podnet`]) get their
//! addresses from the same allocator over 10.B.0.0/16 instead.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct IpAllocator {
    /// The first two octets.
    prefix: [u8; 2],
    used: BTreeSet<u32>,
    /// The address handed out last: the next search starts after it.
    last: Option<u32>,
}

impl Default for IpAllocator {
    fn default() -> Self {
        IpAllocator::new(random_block())
    }
}

/// A second octet in 16..=250 from the clock and the process id (no RNG needed:
/// it only has to differ between environments started on one machine).
pub(super) fn random_block() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 235;
    16 + u8::try_from(mixed).unwrap_or(0)
}

impl IpAllocator {
    /// Addresses 127.`block`.0.2 to 127.`block`.255.254.
    pub fn new(block: u8) -> Self {
        IpAllocator::in_network([127, block])
    }

    /// Addresses `a.b.0.2` to `a.b.255.254` (never `.0`, `.1` or `.255`).
    pub fn in_network(prefix: [u8; 2]) -> Self {
        IpAllocator {
            prefix,
            used: BTreeSet::new(),
            last: None,
        }
    }

    /// The next free address after the one handed out last (wrapping), or None
    /// when all ~65k are in use. A released address is not handed out again
    /// until the others were (as CNI's host-local IPAM does): neighbours' ARP
    /// entries and connections of a pod that just went still name it.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let [a, b] = self.prefix;
        let first = u32::from_be_bytes([a, b, 0, 2]);
        let last = u32::from_be_bytes([a, b, 255, 254]);
        let start = self.last.map_or(first, |l| l + 1);
        let ip = (start..=last)
            .chain(first..start)
            .filter(|ip| !matches!(ip & 0xff, 0 | 1 | 255))
            .find(|ip| !self.used.contains(ip))?;
        self.used.insert(ip);
        self.last = Some(ip);
        Some(Ipv4Addr::from(ip))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones_last() {
        let mut a = IpAllocator::new(40);
        let x = a.allocate().unwrap();
        let y = a.allocate().unwrap();
        assert_eq!(x, Ipv4Addr::new(127, 40, 0, 2));
        assert_eq!(y, Ipv4Addr::new(127, 40, 0, 3));
        a.release(x);
        // Not x again at once: the search goes on after y.
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(127, 40, 0, 4));
        // .255, .0 and .1 are skipped.
        let mut b = IpAllocator::in_network([10, 7]);
        b.last = Some(u32::from(Ipv4Addr::new(10, 7, 0, 254)));
        assert_eq!(b.allocate().unwrap(), Ipv4Addr::new(10, 7, 1, 2));
        // After the last address it wraps around to the released ones.
        let mut c = IpAllocator::in_network([10, 8]);
        let first = c.allocate().unwrap();
        c.release(first);
        c.last = Some(u32::from(Ipv4Addr::new(10, 8, 255, 254)));
        assert_eq!(c.allocate().unwrap(), first);
    }

    #[test]
    fn blocks_stay_clear_of_127_0_and_the_broadcast_like_octets() {
        for _ in 0..100 {
            let b = random_block();
            assert!((16..=250).contains(&b), "{b}");
        }
    }
}
