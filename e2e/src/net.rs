//! Loopback networking helpers: free ports, TCP checks and a minimal HTTP GET
//! used for readiness probes and health endpoints (plain HTTP only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, Result};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range
/// (32768–60999), so an outgoing connection of some other process cannot take a
/// port between the moment it is chosen and the moment its server binds it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Where [`free_port`] looks next; process-wide, so no two callers in a process
/// get the same port. Starts at a pseudo-random offset so parallel test processes
/// rarely look at the same ports.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range
/// when one can be found there (the kernel's choice otherwise).
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::Ordering;
    let span = u32::from(PORTS.end - PORTS.start);
    let _ =
        NEXT_PORT.compare_exchange(u32::MAX, seed() % span, Ordering::AcqRel, Ordering::Acquire);
    for _ in 0..200 {
        let i = NEXT_PORT.fetch_add(1, Ordering::AcqRel) % span;
        let port = PORTS.start + i as u16;
        if TcpListener::bind((LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let l = TcpListener::bind((LOCALHOST, 0)).map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("reading local address", e))?
        .port();
    Ok(port)
}

fn seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().wrapping_mul(2_654_435_761)
}

/// Fails with [`Error::PortTaken`] when something already listens on the port.
pub fn ensure_port_free(port: u16, owner: &str) -> Result<()> {
    match TcpListener::bind((LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::PortTaken {
            port,
            owner: owner.to_string(),
        }),
    }
}

/// True when a TCP connection to `addr` succeeds within `timeout`.
pub async fn tcp_open(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Sends `GET path` over plain HTTP/1.0 and returns the status code.
pub async fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        // The status line fits in the first bytes; stop reading once we have it.
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        parse_status_line(&buf)
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(buf).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Unavailable\r\nX: y"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"garbage"), None);
    }

    #[test]
    fn a_bound_port_is_reported_taken() {
        let l = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(matches!(
            ensure_port_free(port, "test"),
            Err(Error::PortTaken { .. })
        ));
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in &ports {
            assert!(PORTS.contains(p), "{p}");
            TcpListener::bind((LOCALHOST, *p)).expect("bindable");
        }
    }
}
