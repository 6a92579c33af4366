//! How a session stream is opened: over mutual TLS to the coordinator in production, over
//! in-memory channels in tests (so session logic runs with paused time). The TCP connection
//! under the TLS is a control connection ([`crate::net::control`]): marked and registered, so
//! this agent's own network faults never cut it.

use std::sync::Arc;
use std::time::Duration;

use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::net::control::{dial, ControlChannel};
use crate::session::SessionError;

/// Messages from the coordinator.
pub type Inbound = BoxStream<'static, Result<pb::CoordinatorMessage, tonic::Status>>;

/// Opens one session stream. `outbound` already holds the Hello when `open` is called.
pub trait Transport: Send + Sync + 'static {
    fn open(
        &self,
        outbound: mpsc::Receiver<pb::AgentMessage>,
    ) -> BoxFuture<'_, Result<Inbound, SessionError>>;
    /// The coordinator's address, for logs.
    fn target(&self) -> String;
}

/// How long the TCP connect and TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `AgentSession.Connect` over mutual TLS. Certificates are read from disk at every attempt, so
/// rotated certificates are picked up at the next reconnect.
#[derive(Debug, Clone)]
pub struct Grpc {
    pub url: CoordinatorUrl,
    pub certs: CertPaths,
}

impl Transport for Grpc {
    fn open(
        &self,
        outbound: mpsc::Receiver<pb::AgentMessage>,
    ) -> BoxFuture<'_, Result<Inbound, SessionError>> {
        Box::pin(async move {
            let channel = tls::connect_via(&self.url, &self.certs, CONNECT_TIMEOUT, control_dial())
                .await
                .map_err(|e| match e {
                    // The log line already names the coordinator.
                    tls::TlsError::Connect { reason, .. }
                    | tls::TlsError::ServerCertificate { reason, .. } => {
                        SessionError::Connect(reason)
                    }
                    // The coordinator refused our certificate in the handshake (a TLS alert).
                    tls::TlsError::Refused { cert, reason, .. } => SessionError::Refused {
                        code: "TLS handshake",
                        message: format!("client certificate {} refused: {reason}", cert.display()),
                    },
                    other => SessionError::Connect(tls::error_chain(&other)),
                })?;
            let mut client = pb::agent_session_client::AgentSessionClient::new(channel);
            let response = client
                .connect(ReceiverStream::new(outbound))
                .await
                .map_err(SessionError::from_status)?;
            Ok(response.into_inner().boxed())
        })
    }

    fn target(&self) -> String {
        self.url.to_string()
    }
}

/// Every TCP connection of the session (the first and the channel's reconnects) is a control
/// connection of this process: marked, and registered until it closes.
fn control_dial() -> tls::Dial {
    let control = ControlChannel::process();
    Arc::new(move |host, port| {
        let control = control.clone();
        Box::pin(async move {
            let stream = dial::dial(&host, port, &control).await?;
            Ok(Box::new(stream) as Box<dyn tls::DialStream>)
        })
    })
}
