//! Client of the broker admin gRPC API (`broker/proto/admin.proto`), generated
//! at build time. The operator reaches brokers by pod IP (from the Cluster's
//! status), which works in-cluster and on the e2e process kubelet alike.
//! The controllers take their clients from [`AdminChannels`], one connection
//! per Cluster; [`connect`] opens a connection of its own (tests, one-off calls).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Generated protobuf types and the `Admin` client.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("strata.admin.v1");
}

mod pool;

pub use pb::admin_client::AdminClient;
pub use pool::{reusable, Admin, AdminChannel, AdminChannels, Target};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed admin call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    #[error("no broker reachable (tried {tried}): {last}")]
    Unreachable { tried: String, last: String },
    #[error("{code:?}: {message}")]
    Status { code: tonic::Code, message: String },
}

impl AdminError {
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            AdminError::Status { code, .. } => Some(*code),
            AdminError::Unreachable { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// The broker rejected the request as written (bad value): retry will not help.
    pub fn is_invalid_argument(&self) -> bool {
        self.code() == Some(tonic::Code::InvalidArgument)
    }
}

impl From<tonic::Status> for AdminError {
    fn from(s: tonic::Status) -> Self {
        AdminError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// Connects to the first reachable `host:port` of `addrs`.
pub async fn connect(addrs: &[String]) -> Result<AdminClient<Channel>, AdminError> {
    let (_, channel) = connect_channel(addrs, None).await?;
    Ok(AdminClient::new(channel))
}

/// A channel to the first reachable `host:port` of `addrs` (with `tls`, when
/// given), and that address.
async fn connect_channel(
    addrs: &[String],
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<(String, Channel), AdminError> {
    let mut last = String::from("no broker addresses known yet");
    let scheme = if tls.is_some() { "https" } else { "http" };
    for addr in addrs {
        let endpoint = match Endpoint::from_shared(format!("{scheme}://{addr}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT),
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let endpoint = match tls {
            Some(t) => match endpoint.tls_config(t.clone()) {
                Ok(e) => e,
                Err(e) => {
                    last = format!("{addr}: TLS settings: {e}");
                    continue;
                }
            },
            None => endpoint,
        };
        match endpoint.connect().await {
            Ok(channel) => return Ok((addr.clone(), channel)),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(AdminError::Unreachable {
        tried: addrs.join(", "),
        last,
    })
}
