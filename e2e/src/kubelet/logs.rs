//! The kubelet's log endpoint, so `kubectl logs` works: a TLS server on
//! 127.0.0.1 (self-signed; the API server does not verify kubelet certificates
//! unless told to) answering `GET /containerLogs/<ns>/<pod>/<container>` from
//! the per-pod log files, with `tailLines` and `follow`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// Binds the server on 127.0.0.1 (free port) and serves in the background.
/// Returns the port and the task.
pub async fn start(logs_root: PathBuf) -> Result<(u16, tokio::task::JoinHandle<()>)> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let key = KeyPair::generate().map_err(|e| Error::Pki(e.to_string()))?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| Error::Pki(e.to_string()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| Error::Pki(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| Error::io("binding the kubelet log server", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("kubelet log server address", e))?
        .port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let root = logs_root.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, &root).await;
                }
            });
        }
    });
    Ok((port, task))
}

/// A parsed `/containerLogs` request.
#[derive(Debug, PartialEq)]
struct LogRequest {
    namespace: String,
    pod: String,
    container: String,
    tail_lines: Option<usize>,
    follow: bool,
}

fn parse_request_line(line: &str) -> Option<LogRequest> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "GET" {
        return None;
    }
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut segs = path.trim_start_matches('/').split('/');
    if segs.next()? != "containerLogs" {
        return None;
    }
    let (namespace, pod, container) = (segs.next()?, segs.next()?, segs.next()?);
    let mut req = LogRequest {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        tail_lines: None,
        follow: false,
    };
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("tailLines", v)) => req.tail_lines = v.parse().ok(),
            Some(("follow", v)) => req.follow = v == "true",
            _ => {}
        }
    }
    Some(req)
}

/// Newest log file of the container among pods with that namespace/name.
fn find_log(root: &Path, r: &LogRequest) -> Option<PathBuf> {
    let prefix = format!("{}_{}_", r.namespace, r.pod);
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(format!("{}.log", r.container)))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

async fn serve<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(stream: S, root: &Path) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    // Drain the headers (bounded).
    for _ in 0..100 {
        let mut h = String::new();
        match reader.read_line(&mut h).await {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut stream = reader.into_inner();
    let Some(req) = parse_request_line(&line) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let Some(path) = find_log(root, &req) else {
        let msg = format!(
            "no logs for container {} of pod {}/{}",
            req.container, req.namespace, req.pod
        );
        let _ = stream
            .write_all(format!("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len()).as_bytes())
            .await;
        return;
    };
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let mut content = Vec::new();
    if file.read_to_end(&mut content).await.is_err() {
        return;
    }
    let body = match req.tail_lines {
        Some(n) => tail(&content, n),
        None => &content[..],
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    if req.follow {
        // Stream appended bytes until the client goes away.
        let mut pos = content.len() as u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if file.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
                return;
            }
            match file.read(&mut buf).await {
                Ok(0) => {}
                Ok(n) => {
                    pos += n as u64;
                    if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
    let _ = stream.shutdown().await;
}

fn tail(content: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let trimmed = content.strip_suffix(b"\n").unwrap_or(content);
    let mut seen = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &content[i + 1..];
            }
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_log_requests() {
        let r = parse_request_line(
            "GET /containerLogs/ns/p-0/broker?tailLines=5&follow=true HTTP/1.1\r\n",
        )
        .unwrap();
        assert_eq!(
            r,
            LogRequest {
                namespace: "ns".into(),
                pod: "p-0".into(),
                container: "broker".into(),
                tail_lines: Some(5),
                follow: true
            }
        );
        assert!(parse_request_line("GET /exec/ns/p/c HTTP/1.1").is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 5), b"a\nb\nc");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
