//! The coordinator's outbound HTTP/1.1 client (guards, steady-state checks, notifications): one
//! connection per request, plain or TLS, bounded by a timeout and a body limit. Credentials are
//! read from their files at each request and go nowhere but the request itself; error texts
//! never carry them.

mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use faultline_core::experiment::{HttpAccess, HttpAuth, HttpUrl};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub use tls::client_config;

/// Largest response body read (Prometheus answers for big vectors included).
const MAX_BODY: usize = 8 << 20;

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub url: &'a HttpUrl,
    /// Sent as the request target (the URL's own path and query, or a derived one).
    pub path_and_query: &'a str,
    pub method: &'a str,
    /// Extra headers from the document or the caller (`Content-Type`, a signature).
    pub headers: &'a [(String, String)],
    pub body: Option<Bytes>,
    pub access: &'a HttpAccess,
    pub timeout: Duration,
}

/// Sends `req`: the status and body, or why there is none (in words that name the host and,
/// for TLS and auth problems, the field to fix).
pub async fn send(req: &Request<'_>) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout(req.timeout, send_inner(req)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {} within {}",
            req.url.authority(),
            humantime::format_duration(req.timeout)
        )),
    }
}

/// `Authorization` from the auth files, read now. The error names the field and file, never
/// the content.
fn authorization(access: &HttpAccess) -> Result<Option<String>, String> {
    let read = |field: &str, path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("reading {field} {path}: {e}"))
    };
    Ok(match &access.auth {
        None => None,
        Some(HttpAuth::BearerTokenFile(f)) => {
            let token = read("auth.bearerTokenFile", f)?;
            if token.is_empty() || token.chars().any(char::is_control) {
                return Err(format!(
                    "auth.bearerTokenFile {f}: the file is empty or holds control characters"
                ));
            }
            Some(format!("Bearer {token}"))
        }
        Some(HttpAuth::Basic {
            username,
            password_file,
        }) => {
            let password = read("auth.basicAuth.passwordFile", password_file)?;
            let pair = format!("{username}:{password}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
    })
}

static WARNED_INSECURE: AtomicBool = AtomicBool::new(false);

async fn send_inner(req: &Request<'_>) -> Result<(u16, Bytes), String> {
    let url = req.url;
    let auth = authorization(req.access)?;
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connecting to {}: {e}", url.authority()))?;
    let _ = tcp.set_nodelay(true);
    if !url.https {
        return exchange(tcp, req, auth).await;
    }
    if req.access.tls.insecure_skip_verify && !WARNED_INSECURE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            url = %url,
            "tls.insecureSkipVerify: the server's certificate is NOT verified (logged once)"
        );
    }
    let config = client_config(&req.access.tls)?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| format!("{}: not a TLS server name: {e}", url.host))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let hint = if e.to_string().contains("UnknownIssuer") {
                " (set tls.caFile to the CA that signs the server's certificate)"
            } else {
                ""
            };
            format!("TLS handshake with {}: {e}{hint}", url.authority())
        })?;
    exchange(stream, req, auth).await
}

async fn exchange<S>(io: S, req: &Request<'_>, auth: Option<String>) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = req.url;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", url.authority()))?;
    let conn = tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method)
        .uri(req.path_and_query)
        .header(hyper::header::HOST, url.authority())
        .header(
            hyper::header::USER_AGENT,
            concat!("faultline-coordinator/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::ACCEPT, "application/json, */*")
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in req.access.headers.iter().chain(req.headers) {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(a) = auth {
        builder = builder.header(hyper::header::AUTHORIZATION, a);
    }
    let body = req.body.clone().unwrap_or_default();
    let request = builder
        .body(Full::new(body))
        .map_err(|e| format!("building the {} request for {url}: {e}", req.method))?;
    let target = format!(
        "{} {}://{}{}",
        req.method,
        if url.https { "https" } else { "http" },
        url.authority(),
        req.path_and_query
    );
    let result = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {target}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    conn.abort();
    result
}

/// What a 401 or 403 means for a guard's configuration.
pub fn auth_hint(status: u16, access: &HttpAccess) -> Option<String> {
    match (status, &access.auth) {
        (401, None) => Some(
            "HTTP 401 Unauthorized: the server requires credentials; set auth.basicAuth {username, passwordFile} or auth.bearerTokenFile".into(),
        ),
        (401, Some(_)) => Some("HTTP 401 Unauthorized: the server refused the credentials from the auth file".into()),
        (403, _) => Some("HTTP 403 Forbidden: the credentials are not allowed this request".into()),
        _ => None,
    }
}
