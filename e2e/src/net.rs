//! Loopback networking helpers: free ports, TCP checks and a minimal HTTP GET
//! used for readiness probes and health endpoints (plain HTTP only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, Result};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Asks the kernel for a currently free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((LOCALHOST, 0)).map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("reading local address", e))?
        .port();
    Ok(port)
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
}
