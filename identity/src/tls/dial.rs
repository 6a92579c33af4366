//! Dialling the coordinator: TCP, the TLS handshake, and one confirmation read before the
//! connection is handed to HTTP/2.
//!
//! In TLS 1.3 the client finishes its side of the handshake before the server has checked the
//! client's certificate, so a refusal (a TLS alert) would otherwise surface later as an opaque
//! HTTP/2 error. The coordinator always speaks first on a good connection (its HTTP/2 SETTINGS
//! frame), so the dial waits for those first bytes: either they arrive (kept and replayed to
//! HTTP/2) or the alert does, and the alert becomes a sentence ([`TlsError::Refused`]).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::server_only_client_config;
use super::client_verify::describe_server_cert_error;
use super::{alert_name, client_config, error_chain, CertPaths, CoordinatorUrl, TlsError};

/// The connected byte stream a [`Dial`] returns (a TCP connection).
pub trait DialStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DialStream for T {}

/// How a client opens the TCP connection under the TLS, from the URL's host and port: for the
/// first connection and every reconnect. [`connect`] uses `TcpStream::connect`; the agent dials
/// its session socket itself ([`connect_via`]), so that its own network faults never cut it.
pub type Dial = Arc<
    dyn Fn(String, u16) -> futures::future::BoxFuture<'static, io::Result<Box<dyn DialStream>>>
        + Send
        + Sync,
>;

/// Plain TCP, without Nagle.
fn tcp_dial() -> Dial {
    Arc::new(|host, port| {
        Box::pin(async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn DialStream>)
        })
    })
}

/// A TLS stream whose first bytes were already read; they are replayed first.
pub(crate) struct Confirmed {
    first: Vec<u8>,
    pos: usize,
    inner: TlsStream<Box<dyn DialStream>>,
}

impl AsyncRead for Confirmed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.first.len() {
            let n = (self.first.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.first[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Confirmed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How one dial failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// TCP connect or I/O.
    Io(io::Error),
    /// This client refused the server's certificate.
    ServerCertificate(String),
    /// The server refused this client's certificate with a TLS alert.
    Refused(AlertDescription),
    /// Any other TLS failure.
    Tls(String),
    /// The server closed the connection right after the handshake without a word.
    Closed,
}

impl DialError {
    fn from_io(e: io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(c)) => {
                DialError::ServerCertificate(describe_server_cert_error(c))
            }
            Some(rustls::Error::AlertReceived(alert)) => DialError::Refused(*alert),
            Some(other) => DialError::Tls(other.to_string()),
            None => DialError::Io(e),
        }
    }

    fn into_tls_error(self, url: &CoordinatorUrl, cert: &Path) -> TlsError {
        let url = url.to_string();
        match self {
            DialError::Io(e) => TlsError::Connect {
                url,
                reason: error_chain(&e),
            },
            DialError::ServerCertificate(reason) => TlsError::ServerCertificate { url, reason },
            DialError::Refused(alert) => TlsError::Refused {
                url,
                cert: cert.to_path_buf(),
                reason: describe_refusal(alert, cert),
            },
            DialError::Tls(reason) => TlsError::Connect {
                url,
                reason: format!("TLS handshake failed: {reason}"),
            },
            DialError::Closed => TlsError::Connect {
                url,
                reason: "the server closed the connection right after the TLS handshake".into(),
            },
        }
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Io(e) => write!(f, "{}", error_chain(e)),
            DialError::ServerCertificate(why) => f.write_str(why),
            DialError::Refused(alert) => write!(
                f,
                "client certificate refused by the coordinator (TLS alert {})",
                alert_name(*alert)
            ),
            DialError::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            DialError::Closed => {
                f.write_str("the server closed the connection right after the TLS handshake")
            }
        }
    }
}

impl std::error::Error for DialError {}

/// TCP, TLS, and the first bytes from the server.
async fn dial(
    how: &Dial,
    url: &CoordinatorUrl,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> Result<Confirmed, DialError> {
    let tcp = how(url.host.clone(), url.port)
        .await
        .map_err(DialError::Io)?;
    let mut tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(DialError::from_io)?;
    let mut first = vec![0u8; 1024];
    let n = tls.read(&mut first).await.map_err(DialError::from_io)?;
    if n == 0 {
        return Err(DialError::Closed);
    }
    first.truncate(n);
    Ok(Confirmed {
        first,
        pos: 0,
        inner: tls,
    })
}

/// The coordinator's refusal alert in words. The alert says only the category; the client adds
/// what it knows about its own certificate (for an expiry: the dates).
pub(crate) fn describe_refusal(alert: AlertDescription, cert: &Path) -> String {
    let name = alert_name(alert);
    let what = match alert {
        AlertDescription::CertificateRequired => {
            "no client certificate presented: every Faultline connection needs a certificate \
             signed by the Faultline CA"
                .to_string()
        }
        AlertDescription::UnknownCA => {
            "issued by a CA the coordinator does not trust (unknown CA)".to_string()
        }
        AlertDescription::CertificateExpired => match validity(cert) {
            Some(v) => v.describe(),
            None => "certificate expired or not yet valid".to_string(),
        },
        AlertDescription::CertificateRevoked => "certificate is revoked".to_string(),
        AlertDescription::DecryptError => "certificate signature does not verify against the \
                                           coordinator's CA (issued by a different CA, perhaps \
                                           one with the same name)"
            .to_string(),
        AlertDescription::UnsupportedCertificate => "certificate is not valid for TLS client \
                                                     authentication (its extended key usage \
                                                     lacks clientAuth)"
            .to_string(),
        AlertDescription::AccessDenied => "certificate carries no Faultline identity (expected \
                                           a SAN URI spiffe://faultline/<role>/<name>)"
            .to_string(),
        _ => "the coordinator did not accept the client certificate".to_string(),
    };
    format!("{what} (TLS alert {name})")
}

/// The validity window of the certificate at `path`, relative to now.
struct Validity {
    not_before: String,
    not_after: String,
    now_before: bool,
    now_after: bool,
}

impl Validity {
    fn describe(&self) -> String {
        if self.now_after {
            format!("certificate expired on {}", self.not_after)
        } else if self.now_before {
            format!("certificate is not valid before {}", self.not_before)
        } else {
            format!(
                "the coordinator finds the certificate expired or not yet valid, though it is \
                 valid from {} to {} by this host's clock (are the clocks apart?)",
                self.not_before, self.not_after
            )
        }
    }
}

fn validity(cert: &Path) -> Option<Validity> {
    let certs = super::load_certs(cert).ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let v = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    Some(Validity {
        not_before: v.not_before.to_string(),
        not_after: v.not_after.to_string(),
        now_before: now < v.not_before,
        now_after: now > v.not_after,
    })
}

/// Opens a gRPC channel to the coordinator over mutual TLS 1.3. Fails fast (within
/// `connect_timeout`) when the coordinator cannot be reached, when this client refuses its
/// certificate ([`TlsError::ServerCertificate`]) or when it refuses this client's
/// ([`TlsError::Refused`]). Later reconnects of the channel dial the same way.
pub async fn connect(
    url: &CoordinatorUrl,
    paths: &CertPaths,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    let config = client_config(paths)?;
    connect_with(url, config, &paths.cert, connect_timeout, tcp_dial()).await
}

/// [`connect`] over TCP connections the caller makes with `how`.
pub async fn connect_via(
    url: &CoordinatorUrl,
    paths: &CertPaths,
    connect_timeout: Duration,
    how: Dial,
) -> Result<tonic::transport::Channel, TlsError> {
    let config = client_config(paths)?;
    connect_with(url, config, &paths.cert, connect_timeout, how).await
}

/// Opens a gRPC channel to the coordinator's enrollment listener: TLS 1.3 that authenticates
/// the server only (the coordinator's identity, chain to `ca`, host name), for a client that
/// has no certificate yet.
pub async fn connect_server_only(
    url: &CoordinatorUrl,
    ca: &Path,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    let config = server_only_client_config(ca)?;
    connect_with(url, config, ca, connect_timeout, tcp_dial()).await
}

async fn connect_with(
    url: &CoordinatorUrl,
    config: Arc<ClientConfig>,
    cert: &Path,
    connect_timeout: Duration,
    how: Dial,
) -> Result<tonic::transport::Channel, TlsError> {
    let server_name = ServerName::try_from(url.host.clone()).map_err(|e| TlsError::Url {
        url: url.to_string(),
        reason: format!("host is not a valid DNS name or IP address: {e}"),
    })?;
    let authority = url.authority();
    let timed_out = || TlsError::Connect {
        url: url.to_string(),
        reason: format!("timed out after {connect_timeout:?}"),
    };
    // The first dial is ours, so its failure keeps its type; the channel's reconnects dial anew.
    let first = tokio::time::timeout(
        connect_timeout,
        dial(&how, url, server_name.clone(), config.clone()),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| e.into_tls_error(url, cert))?;
    let first = Arc::new(Mutex::new(Some(first)));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| TlsError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let target = url.clone();
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let ready = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (how, url, config, server_name) = (
            how.clone(),
            target.clone(),
            config.clone(),
            server_name.clone(),
        );
        async move {
            let stream = match ready {
                Some(stream) => stream,
                None => dial(&how, &url, server_name, config).await?,
            };
            Ok::<_, DialError>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let connecting = endpoint.connect_with_connector(connector);
    match tokio::time::timeout(connect_timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(TlsError::Connect {
            url: url.to_string(),
            reason: error_chain(&e),
        }),
        Err(_) => Err(timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Usage, Validity as Window};
    use crate::test_util::Pki;
    use faultline_core::{Identity, Role};

    #[test]
    fn an_expiry_alert_is_explained_with_the_certificates_own_dates() {
        let pki = Pki::new();
        let now = time::OffsetDateTime::now_utc();
        let viewer = Identity::new(Role::Viewer, "v");
        let issue = |stem: &str, from: time::Duration, to: time::Duration| {
            let window = Window {
                not_before: now + from,
                not_after: now + to,
            };
            pki.issued(stem, &pki.ca(), &viewer, &[], window, Usage::Client)
                .cert
        };
        let alert = AlertDescription::CertificateExpired;
        let future = issue("future", time::Duration::days(1), time::Duration::days(2));
        let text = describe_refusal(alert, &future);
        assert!(
            text.starts_with("certificate is not valid before "),
            "{text}"
        );
        assert!(text.ends_with(" (TLS alert certificate_expired)"), "{text}");
        let past = issue("past", -time::Duration::days(2), -time::Duration::days(1));
        let text = describe_refusal(alert, &past);
        assert!(text.starts_with("certificate expired on "), "{text}");
        let valid = issue("valid", -time::Duration::days(1), time::Duration::days(1));
        let text = describe_refusal(alert, &valid);
        assert!(text.contains("(are the clocks apart?)"), "{text}");
        let missing = pki.dir.path().join("missing.pem");
        assert_eq!(
            describe_refusal(alert, &missing),
            "certificate expired or not yet valid (TLS alert certificate_expired)"
        );
        assert_eq!(
            describe_refusal(AlertDescription::InternalError, &missing),
            "the coordinator did not accept the client certificate (TLS alert internal_error)"
        );
    }
}
