//! How a session stream is opened: over mutual TLS to the coordinator in production, over
//! in-memory channels in tests (so session logic runs with paused time). The TCP connection
//! under the TLS is a control connection ([`crate::net::control`]): marked and registered, so
//! this agent's own network faults never cut it.

use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::tls::{self, CertPaths, CoordinatorUrl};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
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
            let channel = connect(
                &self.url,
                &self.certs,
                CONNECT_TIMEOUT,
                ControlChannel::process(),
            )
            .await?;
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

/// A gRPC channel to the coordinator over mutual TLS 1.3 whose every TCP connection (the first
/// and the channel's reconnects) is a control connection registered with `control`. The same
/// TLS client configuration and HTTP/2 settings as `tls::connect`; only the TCP dial differs
/// (the TLS layer has no dialer hook), so the two must stay in step.
pub async fn connect(
    url: &CoordinatorUrl,
    certs: &CertPaths,
    connect_timeout: Duration,
    control: ControlChannel,
) -> Result<tonic::transport::Channel, SessionError> {
    // The log line already names the coordinator: errors say what failed, not where.
    let config =
        tls::client_config(certs).map_err(|e| SessionError::Connect(tls::error_chain(&e)))?;
    let server_name = ServerName::try_from(url.host.clone()).map_err(|e| {
        SessionError::Connect(format!("host is not a valid DNS name or IP address: {e}"))
    })?;
    let endpoint =
        tonic::transport::Endpoint::from_shared(url.to_string().replacen("https://", "http://", 1))
            .map_err(|e| SessionError::Connect(e.to_string()))?
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
    let host = url.host.clone();
    let port = url.port;
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let (config, server_name, host, control) = (
            config.clone(),
            server_name.clone(),
            host.clone(),
            control.clone(),
        );
        async move {
            let tcp = dial::dial(&host, port, &control).await?;
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let connecting = endpoint.connect_with_connector(connector);
    match tokio::time::timeout(connect_timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(SessionError::Connect(tls::error_chain(&e))),
        Err(_) => Err(SessionError::Connect(format!(
            "timed out after {connect_timeout:?}"
        ))),
    }
}
