//! Loopback pod addresses: each running pod gets its own 127.0.N.M (N ≥ 0, M in
//! 2..=254; 127.0.0.1 is the host's). Linux routes all of 127.0.0.0/8 to `lo`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Default)]
pub struct IpAllocator {
    used: BTreeSet<u32>,
}

const FIRST: u32 = u32::from_be_bytes([127, 0, 0, 2]);
const LAST: u32 = u32::from_be_bytes([127, 0, 255, 254]);

impl IpAllocator {
    /// Lowest free address, or None when all ~65k are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let ip = (FIRST..=LAST)
            .filter(|ip| !matches!(ip & 0xff, 0 | 1 | 255))
            .find(|ip| !self.used.contains(ip))?;
        self.used.insert(ip);
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
    fn allocates_distinct_loopback_addresses_and_reuses_released_ones() {
        let mut a = IpAllocator::default();
        let x = a.allocate().unwrap();
        let y = a.allocate().unwrap();
        assert_eq!(x, Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(y, Ipv4Addr::new(127, 0, 0, 3));
        a.release(x);
        assert_eq!(a.allocate().unwrap(), x);
    }
}
