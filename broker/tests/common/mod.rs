//! A broker started in-process on free loopback ports, and a minimal Kafka client
//! built on `kafka-protocol` for protocol-level tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Encodable, StrBytes};
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::{DescribeTopicRequest, PartitionDescription};
use strata_broker::config::BrokerConfig;
use strata_broker::metadata::remote_log::{RemoteLog, RemoteSegment};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A free loopback address, on a port outside the ephemeral range (see
/// `strata_e2e::net::free_port`), so no outgoing connection takes it before the
/// broker binds it.
pub fn free_addr() -> SocketAddr {
    let port = strata_e2e::net::free_port().expect("free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub struct TestBroker {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Waits (bounded, 10 s) until the broker's `/readyz` answers 200: registered with its
/// quorum and serving partitions.
#[allow(dead_code)]
pub async fn wait_ready(metrics: std::net::SocketAddr) {
    for _ in 0..400 {
        if ready(metrics).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn ready(metrics: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(metrics).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}

impl TestBroker {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = BrokerConfig::dev();
        cfg.data_dir = dir.path().to_path_buf();
        cfg.kafka_listen = free_addr();
        cfg.metrics_listen = free_addr();
        cfg.admin_listen = free_addr();
        cfg.group_initial_rebalance_delay_ms = 0;
        cfg.offsets_topic_partitions = 4;
        let addr = cfg.kafka_listen;
        let admin = cfg.admin_listen;
        let metrics = cfg.metrics_listen;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(strata_broker::app::run(cfg, async move {
            let _ = rx.await;
        }));
        wait_ready(metrics).await;
        TestBroker {
            addr,
            admin,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(20), t).await;
            assert!(
                matches!(r, Ok(Ok(Ok(())))),
                "broker did not stop cleanly: {r:?}"
            );
        }
    }
}

pub struct Client {
    stream: TcpStream,
    corr: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            corr: 0,
        }
    }

    /// Connects within 5 s, or `None` (a broker that is down).
    pub async fn try_connect(addr: SocketAddr) -> Option<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        Some(Client { stream, corr: 0 })
    }

    /// Like [`Client::call`], but `None` instead of a panic when the broker goes
    /// away or does not answer within 30 s.
    pub async fn try_call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<Resp> {
        self.corr += 1;
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(StrBytes::from_static_str("strata-test"));
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &h).ok()?;
        req.encode(&mut body, version).ok()?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await.ok()?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await.ok()?;
            let mut buf = vec![0u8; usize::try_from(i32::from_be_bytes(len)).ok()?];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .ok()??;
        let mut b = Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut b, key.response_header_version(version)).ok()?;
        if rh.correlation_id != self.corr {
            return None;
        }
        Resp::decode(&mut b, version).ok()
    }

    /// Sends one request and decodes the response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        self.corr += 1;
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(StrBytes::from_static_str("strata-test"));
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &h).expect("header");
        req.encode(&mut body, version).expect("encode");
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await.expect("write");
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(30), self.stream.read_exact(&mut len))
            .await
            .expect("response in time")
            .expect("read len");
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).await.expect("read body");
        let mut b = Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut b, key.response_header_version(version))
            .expect("response header");
        assert_eq!(rh.correlation_id, self.corr);
        let resp = Resp::decode(&mut b, version).expect("decode response");
        assert!(!b.has_remaining(), "trailing bytes in response");
        resp
    }
}

/// Joins a fresh member (v5: one round trip for the member id, one to join).
pub async fn join(c: &mut Client, group: &str) -> kafka_protocol::messages::JoinGroupResponse {
    let mut req = kafka_protocol::messages::JoinGroupRequest::default();
    req.group_id = kafka_protocol::messages::GroupId(StrBytes::from_string(group.to_string()));
    req.session_timeout_ms = 10_000;
    req.rebalance_timeout_ms = 10_000;
    req.protocol_type = StrBytes::from_static_str("consumer");
    let mut p = kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    p.metadata = Bytes::from_static(b"\x00\x00");
    req.protocols = vec![p];
    let first: kafka_protocol::messages::JoinGroupResponse =
        c.call(ApiKey::JoinGroup, 5, &req).await;
    assert_eq!(
        first.error_code,
        kafka_protocol::error::ResponseError::MemberIdRequired.code()
    );
    req.member_id = first.member_id;
    c.call(ApiKey::JoinGroup, 5, &req).await
}

/// A partition as a broker's admin API describes it (`None` while unreachable).
pub async fn describe_partition(
    admin: SocketAddr,
    topic: &str,
    partition: i32,
) -> Option<PartitionDescription> {
    let connect = AdminClient::connect(format!("http://{admin}"));
    let mut c = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let req = DescribeTopicRequest {
        name: topic.to_string(),
    };
    let t = tokio::time::timeout(Duration::from_secs(5), c.describe_topic(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    t.partition_details
        .into_iter()
        .find(|p| p.partition == partition)
}

/// The committed remote log in a partition description (from the metadata quorum).
pub fn remote_log(d: &PartitionDescription) -> RemoteLog {
    let mut log = RemoteLog::default();
    for s in &d.remote_segments {
        log.commit(RemoteSegment {
            base_offset: s.base_offset,
            end_offset: s.end_offset,
            max_timestamp: s.max_timestamp,
            size_bytes: s.size_bytes as u64,
            leader_epoch: s.leader_epoch,
            log_key: s.log_key.clone(),
        })
        .expect("the quorum's remote log is contiguous");
    }
    log
}

/// [`remote_log`] of a partition, for synchronous polling closures in a multi-thread
/// runtime (the worker hands its tasks over while this asks on a thread of its own).
/// Empty while the broker does not answer.
pub fn remote_log_blocking(admin: SocketAddr, topic: &str, partition: i32) -> RemoteLog {
    let topic = topic.to_string();
    let ask = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(describe_partition(admin, &topic, partition))
    });
    tokio::task::block_in_place(|| ask.join())
        .ok()
        .flatten()
        .map(|d| remote_log(&d))
        .unwrap_or_default()
}
