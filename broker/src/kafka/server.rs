//! TCP listener and per-connection loop: length-prefixed frames in, responses out in
//! request order (as Kafka requires, one request per connection is handled at a
//! time). Oversized, negative or truncated frames close only that connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use super::dispatch::{dispatch, Outcome};
use crate::broker::Broker;

/// Close connections idle this long (Kafka's connections.max.idle.ms).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Once a frame's length has arrived, its body must follow within this time.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            warn!(%peer, "refusing connection: max_connections reached");
            broker.metrics.connections_rejected.add(1, &[]);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            broker.metrics.connections.add(1, &[]);
            if let Err(reason) = connection(stream, peer, &broker, shutdown).await {
                broker.metrics.protocol_errors.add(1, &[]);
                warn!(%peer, %reason, "closing connection");
            }
            broker.metrics.connections.add(-1, &[]);
            drop(permit);
        });
    }
    info!("kafka listener stopped");
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    debug!(%peer, "connection opened");
    let (r, w) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut writer = BufWriter::with_capacity(64 * 1024, w);
    let max = broker.config.max_request_bytes;
    loop {
        let mut len_buf = [0u8; 4];
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut len_buf)) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        match read {
            Err(_) => {
                debug!(%peer, "closing idle connection");
                return Ok(());
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                debug!(%peer, "connection closed by client");
                return Ok(());
            }
            Ok(Err(e)) => return Err(format!("read error: {e}")),
            Ok(Ok(_)) => {}
        }
        let len = i32::from_be_bytes(len_buf);
        if len < 0 {
            return Err(format!("negative frame length {len}"));
        }
        let len = len as usize;
        if len > max {
            return Err(format!(
                "frame of {len} bytes exceeds max_request_bytes {max}"
            ));
        }
        let mut frame = BytesMut::zeroed(len);
        match tokio::time::timeout(FRAME_TIMEOUT, reader.read_exact(&mut frame)).await {
            Err(_) => {
                return Err(format!(
                    "frame of {len} bytes not received within {FRAME_TIMEOUT:?}"
                ))
            }
            Ok(Err(e)) => return Err(format!("truncated frame ({len} bytes announced): {e}")),
            Ok(Ok(_)) => {}
        }
        match dispatch(broker, frame.freeze()).await {
            Outcome::Reply(bytes) => {
                writer
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("write error: {e}"))?;
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                let _ = writer.flush().await;
                return Err(reason);
            }
        }
        // Pipelined requests already buffered are answered before one flush.
        if reader.buffer().is_empty() {
            writer
                .flush()
                .await
                .map_err(|e| format!("write error: {e}"))?;
        }
    }
}
