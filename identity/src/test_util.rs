//! Helpers for tests over real TLS (feature `test-util`, for test targets only): a development
//! PKI in a temp dir with the certificates a server must refuse, and a raw rustls client that
//! reports what a server sent after the handshake (HTTP/2 SETTINGS, an alert, or nothing).
//! Helpers panic with a message instead of returning errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faultline_core::{Identity, Role};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pki::{self, Ca, InitOptions, Usage, Validity};
use crate::tls::{self, CertPaths};

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A temp dir with the `faultctl certs init` layout (agent node-a) in `certs/`.
#[derive(Debug)]
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        Pki::with_agents(&["node-a"])
    }

    /// The layout with agent certificates for `agents`.
    pub fn with_agents(agents: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        pki::init_dir(
            &dir.path().join("certs"),
            &InitOptions {
                sans: vec![],
                agents: agents.iter().map(|a| a.to_string()).collect(),
                days: 1,
                force: false,
            },
        )
        .expect("certs init");
        Pki { dir }
    }

    /// A temp dir whose `certs/` holds only the CA (certificate and key) of the `certs` dir of
    /// another layout, to issue more certificates from the same CA.
    pub fn sharing_ca(certs: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("certs");
        std::fs::create_dir_all(&own).expect("mkdir certs");
        for f in ["ca.pem", "ca-key.pem"] {
            std::fs::copy(certs.join(f), own.join(f))
                .unwrap_or_else(|e| panic!("copy {}: {e}", certs.join(f).display()));
        }
        Pki { dir }
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn paths(&self, stem: &str) -> CertPaths {
        CertPaths::in_dir(&self.certs(), stem)
    }

    pub fn ca(&self) -> Ca {
        Ca::load(
            &self.certs().join("ca.pem"),
            &self.certs().join("ca-key.pem"),
        )
        .expect("CA")
    }

    /// Writes `cert_pem`/`key_pem` as `other/<stem>.pem` and returns paths that present it
    /// while trusting the real CA.
    pub fn write(&self, stem: &str, cert_pem: &str, key_pem: &str) -> CertPaths {
        let dir = self.dir.path().join("other");
        std::fs::create_dir_all(&dir).expect("mkdir other");
        let paths = CertPaths {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
            ca: self.certs().join("ca.pem"),
        };
        pki::write_file(&paths.key, key_pem, true).expect("write key");
        pki::write_file(&paths.cert, cert_pem, false).expect("write cert");
        paths
    }

    /// A certificate for `identity` issued by `ca`.
    pub fn issued(
        &self,
        stem: &str,
        ca: &Ca,
        identity: &Identity,
        sans: &[&str],
        validity: Validity,
        usage: Usage,
    ) -> CertPaths {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let issued = ca
            .issue_for(identity, &sans, validity, usage)
            .expect("issue");
        self.write(stem, &issued.cert_pem, &issued.key_pem)
    }

    /// A viewer certificate from a CA nobody trusts.
    pub fn foreign(&self) -> CertPaths {
        let other = Ca::generate("Somebody else's CA", Validity::days(1)).expect("CA");
        let id = Identity::new(Role::Viewer, "viewer");
        self.issued(
            "foreign",
            &other,
            &id,
            &[],
            Validity::days(1),
            Usage::Client,
        )
    }

    /// A viewer certificate from the real CA that expired yesterday.
    pub fn expired(&self) -> CertPaths {
        let now = time::OffsetDateTime::now_utc();
        let past = Validity {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
        };
        let id = Identity::new(Role::Viewer, "viewer");
        self.issued("expired", &self.ca(), &id, &[], past, Usage::Client)
    }

    /// A client certificate from the real CA with no SPIFFE URI (only a DNS name).
    pub fn without_identity(&self) -> CertPaths {
        self.plain(
            "no-identity",
            "somebody.example",
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A certificate from the real CA for `san` (DNS name or IP) with no SPIFFE URI, like the
    /// certificates an organisation's CA issues to its other services.
    pub fn plain(&self, stem: &str, san: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> CertPaths {
        let ca_pem = std::fs::read_to_string(self.certs().join("ca.pem")).expect("ca.pem");
        let ca_key = std::fs::read_to_string(self.certs().join("ca-key.pem")).expect("ca key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &ca_pem,
            rcgen::KeyPair::from_pem(&ca_key).expect("CA key"),
        )
        .expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).expect("params");
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).expect("sign");
        self.write(stem, &cert.pem(), &key.serialize_pem())
    }
}

/// Whether the certificate at `path` allows (clientAuth, serverAuth) in its extended key usage.
pub fn key_usage(path: &Path) -> (bool, bool) {
    use x509_parser::extensions::ParsedExtension;
    let certs = tls::load_certs(path).expect("certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).expect("X.509");
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => Some((eku.client_auth, eku.server_auth)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}: no extended key usage", path.display()))
}

/// A rustls client configuration trusting `ca` and presenting `client` (or nothing).
pub fn raw_config(ca: &Path, client: Option<&CertPaths>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(ca).expect("CA") {
        roots.add(cert).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(p) => builder
            .with_client_auth_cert(
                tls::load_certs(&p.cert).expect("cert"),
                tls::load_key(&p.key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// What a raw client got from the server after its side of the handshake.
#[derive(Debug)]
pub enum Outcome {
    /// Plaintext from the server: for an HTTP/2 server, its SETTINGS frame.
    Bytes(Vec<u8>),
    /// The handshake or the first read failed (for a refusal: the server's TLS alert).
    Error(std::io::Error),
    /// The server closed the connection without a byte.
    Closed,
}

impl Outcome {
    /// True when the bytes start with an HTTP/2 SETTINGS frame (type 0x4 on stream 0).
    pub fn is_h2_settings(&self) -> bool {
        matches!(self, Outcome::Bytes(b) if b.len() >= 9 && b[3] == 0x04 && b[5..9] == [0, 0, 0, 0])
    }

    /// The TLS alert the server sent, if that is how the connection ended.
    pub fn alert(&self) -> Option<rustls::AlertDescription> {
        match self {
            Outcome::Error(e) => {
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::AlertReceived(a)) => Some(*a),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Connects with a raw rustls client, completes its side of the handshake, sends the HTTP/2
/// preface and reads what comes back (5 s at most). Returns the client's local address too.
pub async fn raw_exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (SocketAddr, Outcome) {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let local = tcp.local_addr().expect("local addr");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let outcome = async {
        let mut tls = match tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
        {
            Ok(tls) => tls,
            Err(e) => return Outcome::Error(e),
        };
        if let Err(e) = tls.write_all(H2_PREFACE).await {
            return Outcome::Error(e);
        }
        let mut buf = vec![0u8; 1024];
        match tls.read(&mut buf).await {
            Ok(0) => Outcome::Closed,
            Ok(n) => Outcome::Bytes(buf[..n].to_vec()),
            Err(e) => Outcome::Error(e),
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("the server neither answered nor closed within 5 s");
    (local, outcome)
}
