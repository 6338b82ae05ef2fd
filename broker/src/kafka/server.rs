//! The Kafka listeners and the per-connection loop: length-prefixed frames in,
//! responses out in request order (as Kafka requires, one request per connection is
//! handled at a time). Oversized, negative or truncated frames close only that
//! connection. A connection is TCP or, on SSL / SASL_SSL listeners, TLS over TCP
//! (`security::tls`); on SASL listeners its frames pass the SASL state machine
//! (`security::sasl`) before the dispatcher, which gets the connection's
//! listener and principal with every request.
//!
//! Memory: every frame's bytes come out of one broker-wide [`RequestBudget`]
//! (`queued_max_request_bytes`, Kafka's `queued.max.request.bytes`), taken before the
//! body is read and given back once the request has been handled. Many connections
//! announcing large frames therefore wait for room (their bytes stay in the kernel's
//! socket buffers, and TCP pushes back on the clients) instead of each allocating up
//! to `max_request_bytes` at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::dispatch::{dispatch, Outcome};
use super::fetch_frame::{FetchFrame, Frame};
use crate::broker::Broker;
use crate::security::sasl::{SaslSession, Step};
use crate::security::{ClientContext, ListenerSecurity, Principal};

/// Close connections idle this long (Kafka's connections.max.idle.ms).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Once a frame's length has arrived, its body must follow within this time.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes of request frames the broker holds in memory at once, over all
/// connections: one semaphore permit per byte.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl RequestBudget {
    /// A budget of `total` bytes (at most `u32::MAX`: one frame takes its permits in
    /// one call, which counts in `u32`).
    pub fn new(total: usize) -> Self {
        let total = total.min(u32::MAX as usize);
        RequestBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not taken by a request right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until a frame of `len` bytes fits; an error when it never can.
    async fn acquire(&self, len: usize) -> Result<OwnedSemaphorePermit, String> {
        let n = u32::try_from(len)
            .ok()
            .filter(|_| len <= self.total)
            .ok_or_else(|| {
                format!(
                    "frame of {len} bytes exceeds queued_max_request_bytes {}",
                    self.total
                )
            })?;
        Arc::clone(&self.permits)
            .acquire_many_owned(n)
            .await
            .map_err(|_| "request budget closed".to_string())
    }
}

/// The framing limits every connection shares.
#[derive(Debug, Clone)]
pub struct FrameLimits {
    /// Largest frame accepted (`max_request_bytes`).
    pub max_request_bytes: usize,
    pub budget: RequestBudget,
}

/// Accepts connections on every listener until `shutdown` flips to true.
/// `max_connections` and the request budget are shared by all listeners.
pub async fn serve(
    listeners: Vec<(TcpListener, ListenerSecurity)>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let limits = FrameLimits {
        max_request_bytes: broker.config.max_request_bytes,
        budget: RequestBudget::new(broker.config.queued_max_request_bytes),
    };
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, security)| {
            tokio::spawn(accept_loop(
                listener,
                Arc::new(security),
                Arc::clone(&broker),
                Arc::clone(&limit),
                limits.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for task in accepting {
        let _ = task.await;
    }
    info!("kafka listeners stopped");
}

async fn accept_loop(
    listener: TcpListener,
    security: Arc<ListenerSecurity>,
    broker: Arc<Broker>,
    limit: Arc<Semaphore>,
    limits: FrameLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, listener = %security.name, "accept failed");
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
        let limits = limits.clone();
        let security = Arc::clone(&security);
        tokio::spawn(async move {
            broker.metrics.connections.add(1, &[]);
            if let Err(reason) =
                connection(stream, peer, &security, &broker, &limits, shutdown).await
            {
                broker.metrics.protocol_errors.add(1, &[]);
                warn!(%peer, listener = %security.name, %reason, "closing connection");
            }
            broker.metrics.connections.add(-1, &[]);
            drop(permit);
        });
    }
}

/// A TLS client must finish its handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    security: &ListenerSecurity,
    broker: &Arc<Broker>,
    limits: &FrameLimits,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    debug!(%peer, listener = %security.name, "connection opened");
    let mut session = Session {
        broker,
        ctx: ClientContext {
            listener: Arc::clone(&security.name),
            principal: Principal::anonymous(),
            peer,
        },
        sasl: security
            .sasl
            .as_ref()
            .map(|c| SaslSession::new(Arc::clone(c), Arc::clone(&security.name), peer)),
    };
    let Some(tls) = &security.tls else {
        let (r, w) = stream.into_split();
        return serve_frames(r, w, peer, limits, shutdown, session).await;
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await
    {
        Err(_) => {
            return Err(format!(
                "TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}"
            ))
        }
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Ok(Ok(s)) => s,
    };
    if session.sasl.is_none() {
        // SSL: a client certificate, when there is one, names the principal.
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        if let Some(cert) = cert {
            let (principal, subject) = security.mapping.certificate_principal(cert)?;
            session.ctx.principal = principal;
            info!(%peer, listener = %security.name, %subject, principal = %session.ctx.principal, "client certificate accepted");
        }
    }
    let (r, w) = tokio::io::split(stream);
    serve_frames(r, w, peer, limits, shutdown, session).await
}

/// The write side of a connection; a plaintext TCP one exposes its socket, to which
/// Fetch responses are sent from the segment files (`sendfile`).
pub trait FrameSink: AsyncWrite + Unpin {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl FrameSink for tokio::net::tcp::OwnedWriteHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<T: AsyncRead + AsyncWrite> FrameSink for tokio::io::WriteHalf<T> {}

/// Whether plaintext connections send fetched records with `sendfile`: yes unless
/// `STRATA_FETCH_ZERO_COPY=false` (a switch for A/B measurements and for file
/// systems where `sendfile` misbehaves).
fn zero_copy_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let on = !matches!(
            std::env::var("STRATA_FETCH_ZERO_COPY").as_deref(),
            Ok("false") | Ok("0")
        );
        info!(zero_copy = on, "fetch responses on plaintext listeners");
        on
    })
}

/// Writes a Fetch frame: from the files on a plaintext socket (the buffered bytes
/// go first), through memory otherwise.
async fn write_fetch<W: FrameSink>(
    writer: &mut BufWriter<W>,
    frame: &FetchFrame,
) -> Result<(), String> {
    writer
        .flush()
        .await
        .map_err(|e| format!("write error: {e}"))?;
    let socket = writer.get_ref().socket().filter(|_| zero_copy_enabled());
    match socket {
        Some(sock) => frame
            .send(sock)
            .await
            .map_err(|e| format!("write error (zero-copy fetch): {e}")),
        None => {
            let bytes = frame
                .to_bytes()
                .map_err(|e| format!("cannot read fetched records: {e}"))?;
            writer
                .write_all(&bytes)
                .await
                .map_err(|e| format!("write error: {e}"))
        }
    }
}

async fn write_frame<W: FrameSink>(writer: &mut BufWriter<W>, frame: &Frame) -> Result<(), String> {
    match frame {
        Frame::Bytes(bytes) => writer
            .write_all(bytes)
            .await
            .map_err(|e| format!("write error: {e}")),
        Frame::Fetch(f) => write_fetch(writer, f).await,
    }
}

/// Handles the request frames of one connection, in order.
pub trait FrameHandler {
    /// The largest frame accepted now (`max`: `max_request_bytes`).
    fn frame_limit(&self, max: usize) -> usize {
        max
    }

    fn handle(&mut self, frame: Bytes) -> impl Future<Output = Outcome>;
}

impl<F, Fut> FrameHandler for F
where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Outcome>,
{
    fn handle(&mut self, frame: Bytes) -> impl Future<Output = Outcome> {
        self(frame)
    }
}

/// A client connection: who it is and, on a SASL listener, its authentication,
/// which sees every frame before the dispatcher does.
struct Session<'a> {
    broker: &'a Arc<Broker>,
    ctx: ClientContext,
    sasl: Option<SaslSession>,
}

impl FrameHandler for Session<'_> {
    fn frame_limit(&self, max: usize) -> usize {
        self.sasl.as_ref().map_or(max, |s| s.frame_limit(max))
    }

    async fn handle(&mut self, frame: Bytes) -> Outcome {
        if let Some(sasl) = &mut self.sasl {
            if let Step::Done(outcome) = sasl.on_frame(self.broker, &frame).await {
                if let Some(p) = sasl.principal() {
                    self.ctx.principal = p.clone();
                }
                return outcome;
            }
        }
        dispatch(self.broker, &self.ctx, frame).await
    }
}

/// The per-connection loop over any byte stream: reads a frame (within the limits),
/// hands it to `handle` and writes the answer, one request at a time.
async fn serve_frames<R, W, H>(
    r: R,
    w: W,
    peer: SocketAddr,
    limits: &FrameLimits,
    mut shutdown: watch::Receiver<bool>,
    mut handler: H,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: FrameSink,
    H: FrameHandler,
{
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut writer = BufWriter::with_capacity(64 * 1024, w);
    let max = limits.max_request_bytes;
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
        let limit = handler.frame_limit(max);
        if len > limit {
            if len_buf[..2] == [0x16, 0x03] {
                return Err("a TLS handshake on a plaintext listener".into());
            }
            if limit < max {
                return Err(format!(
                    "frame of {len} bytes before authentication exceeds sasl_server_max_receive_size {limit}"
                ));
            }
            return Err(format!(
                "frame of {len} bytes exceeds max_request_bytes {max}"
            ));
        }
        // Room for the body first: until the budget has it, the body stays unread.
        let budget = tokio::select! {
            b = limits.budget.acquire(len) => b?,
            _ = shutdown.changed() => return Ok(()),
        };
        // Exactly the announced length, read into capacity that is never zeroed.
        let mut frame = BytesMut::with_capacity(len);
        match tokio::time::timeout(FRAME_TIMEOUT, read_body(&mut reader, &mut frame, len)).await {
            Err(_) => {
                return Err(format!(
                    "frame of {len} bytes not received within {FRAME_TIMEOUT:?}"
                ))
            }
            Ok(Err(e)) => return Err(format!("truncated frame ({len} bytes announced): {e}")),
            Ok(Ok(())) => {}
        }
        let outcome = handler.handle(frame.freeze()).await;
        // Handled: the request's bytes are free (the response is not counted; it is
        // written before the next request is read).
        drop(budget);
        match outcome {
            Outcome::Reply(bytes) => {
                writer
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("write error: {e}"))?;
            }
            Outcome::Fetch(frame) => write_fetch(&mut writer, &frame).await?,
            Outcome::Silent => {}
            Outcome::Throttled { reply, mute } => {
                // KIP-219: the client learns its throttle time at once; the broker then
                // reads nothing more from it until the throttle has passed.
                if let Some(frame) = &reply {
                    write_frame(&mut writer, frame).await?;
                }
                writer
                    .flush()
                    .await
                    .map_err(|e| format!("write error: {e}"))?;
                tokio::select! {
                    _ = tokio::time::sleep(mute) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            }
            Outcome::Close(reason) => {
                let _ = writer.flush().await;
                return Err(reason);
            }
            Outcome::CloseAfter(bytes) => {
                let _ = writer.write_all(&bytes).await;
                let _ = writer.flush().await;
                let _ = writer.shutdown().await;
                return Ok(());
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

/// Reads exactly `len` bytes into `frame` (whose capacity is `len`): the bytes go
/// into its spare capacity, which `read_buf` never exposes uninitialized.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame: &mut BytesMut,
    len: usize,
) -> std::io::Result<()> {
    while frame.len() < len {
        let rest = (len - frame.len()) as u64;
        if (&mut *reader).take(rest).read_buf(frame).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, DuplexStream};
    use tokio::sync::{mpsc, Notify};

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = (len as i32).to_be_bytes().to_vec();
        f.resize(4 + len, 7);
        f
    }

    /// Replies to every frame with its length; `gate`, when set, holds each request
    /// until notified. Every request that starts is reported as `(name, len)`.
    fn spawn_connection(
        name: &'static str,
        limits: &FrameLimits,
        gate: Option<Arc<Notify>>,
        started: mpsc::UnboundedSender<(&'static str, usize)>,
    ) -> (DuplexStream, tokio::task::JoinHandle<Result<(), String>>) {
        let (client, server) = duplex(1 << 20);
        let (r, w) = tokio::io::split(server);
        let limits = limits.clone();
        let (keep_open, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _keep_open = keep_open;
            serve_frames(r, w, peer(), &limits, shutdown, move |f: Bytes| {
                let gate = gate.clone();
                let started = started.clone();
                async move {
                    let _ = started.send((name, f.len()));
                    if let Some(g) = gate {
                        g.notified().await;
                    }
                    Outcome::Reply(Bytes::from((f.len() as u32).to_be_bytes().to_vec()))
                }
            })
            .await
        });
        (client, task)
    }

    async fn reply(c: &mut DuplexStream) -> u32 {
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        u32::from_be_bytes(b)
    }

    // The wait is shown by B not starting within 500 ms: while A holds the budget it
    // never can, so a slow machine cannot make this fail spuriously.
    #[tokio::test]
    async fn a_second_large_request_waits_for_the_budget_until_the_first_is_handled() {
        let limits = FrameLimits {
            max_request_bytes: 10_000,
            budget: RequestBudget::new(1000),
        };
        let (tx, mut started) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let (mut a, _ta) = spawn_connection("a", &limits, Some(Arc::clone(&gate)), tx.clone());
        let (mut b, _tb) = spawn_connection("b", &limits, None, tx);
        a.write_all(&frame(600)).await.unwrap();
        assert_eq!(started.recv().await, Some(("a", 600)));
        assert_eq!(limits.budget.available(), 400);
        b.write_all(&frame(600)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), started.recv())
                .await
                .is_err(),
            "the second request must wait while the first holds the budget"
        );
        // A small request still fits beside the first one.
        b.write_all(&frame(0)).await.unwrap();
        // The first is handled: its bytes are free, and the second one runs.
        gate.notify_one();
        assert_eq!(reply(&mut a).await, 600);
        assert_eq!(started.recv().await, Some(("b", 600)));
        assert_eq!(reply(&mut b).await, 600);
        assert_eq!(started.recv().await, Some(("b", 0)));
        assert_eq!(reply(&mut b).await, 0);
        assert_eq!(limits.budget.available(), 1000);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_whole_budget_closes_only_its_connection() {
        let limits = FrameLimits {
            max_request_bytes: 10_000,
            budget: RequestBudget::new(1000),
        };
        let (tx, mut started) = mpsc::unbounded_channel();
        let (mut big, tbig) = spawn_connection("big", &limits, None, tx.clone());
        let (mut ok, _tok) = spawn_connection("ok", &limits, None, tx);
        // Only the length is sent: the refusal must not wait for (or allocate) a body.
        big.write_all(&5000i32.to_be_bytes()).await.unwrap();
        let reason = tbig.await.unwrap().unwrap_err();
        assert!(reason.contains("queued_max_request_bytes"), "{reason}");
        let mut rest = Vec::new();
        big.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed without an answer");
        // The budget is intact and other connections are served.
        assert_eq!(limits.budget.available(), 1000);
        ok.write_all(&frame(1000)).await.unwrap();
        assert_eq!(reply(&mut ok).await, 1000);
        assert_eq!(started.recv().await, Some(("ok", 1000)));
    }
}
