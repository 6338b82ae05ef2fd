//! One Kafka request from this broker to another broker's Kafka listener, as a
//! client would send it: what the transaction coordinator and partition leaders use
//! to talk to each other (WriteTxnMarkers, the AddPartitionsToTxn verification).
//! One connection per call; these calls are rare next to produce and fetch.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted from a peer.
const MAX_RESPONSE: usize = 16 << 20;

/// Sends `req` as `api` `version` to `host:port` and decodes the answer, all within
/// `timeout`.
pub async fn call<Req: Encodable, Resp: Decodable>(
    host: &str,
    port: i32,
    api: ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> anyhow::Result<Resp> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("strata-broker"));
    let mut body = BytesMut::new();
    encode_request_header_into_buffer(&mut body, &header)?;
    req.encode(&mut body, version)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(i32::try_from(body.len())?);
    frame.extend_from_slice(&body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, u16::try_from(port)?)).await?;
        stream.write_all(&frame).await?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let n = usize::try_from(i32::from_be_bytes(len))?;
        anyhow::ensure!(n <= MAX_RESPONSE, "{api:?} response of {n} bytes");
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf).await?;
        anyhow::Ok(Bytes::from(buf))
    };
    let mut buf = tokio::time::timeout(timeout, exchange).await??;
    let rh = ResponseHeader::decode(&mut buf, api.response_header_version(version))?;
    anyhow::ensure!(rh.correlation_id == 1, "{api:?} answered another request");
    Resp::decode(&mut buf, version)
}
