//! Client configuration (faultctl, agents, the simulator): TLS 1.3, ALPN h2, the party's own
//! certificate, and a server check that requires the coordinator's identity; and the
//! coordinator URL.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::ClientConfig;

use super::client_verify::CoordinatorVerifier;
use super::files::{load_certs, load_key, load_roots};
use super::{provider, CertPaths, TlsError};

/// Builds a client configuration from files on disk (read anew at every call).
pub fn client_config(paths: &CertPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = verifying_coordinator(&paths.ca)?
        .with_client_auth_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration with no certificate of its own (enrollment): it still requires the
/// coordinator's identity from the server.
pub(crate) fn server_only_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = verifying_coordinator(ca)?.with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn verifying_coordinator(
    ca: &Path,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let provider = provider();
    let roots = load_roots(ca)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Ca {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CoordinatorVerifier { webpki })))
}

/// A parsed `https://host:port` coordinator address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    pub host: String,
    pub port: u16,
}

impl CoordinatorUrl {
    pub fn parse(url: &str) -> Result<Self, TlsError> {
        let bad = |reason: &str| TlsError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https:// (Faultline has no plaintext mode)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("must be https://HOST:PORT with no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host.to_string(), rest.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = if port.is_empty() {
            7443
        } else {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number in 1..=65535"))?
        };
        Ok(CoordinatorUrl { host, port })
    }

    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_urls() {
        let u = CoordinatorUrl::parse("https://coord.example:7443").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("coord.example", 7443));
        let u = CoordinatorUrl::parse("https://127.0.0.1").expect("default port");
        assert_eq!(u.port, 7443);
        let u = CoordinatorUrl::parse("https://[::1]:9000/").expect("v6");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.to_string(), "https://[::1]:9000");
        for bad in [
            "http://a:1",
            "https://:1",
            "https://a:0",
            "https://a:99999",
            "https://a:1/x",
        ] {
            assert!(CoordinatorUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
