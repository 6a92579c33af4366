//! The coordinator's TLS handshake seen by an independent TLS stack (Python's `ssl`, that is
//! OpenSSL): without a certificate the handshake ends in the `certificate_required` alert and no
//! HTTP/2 byte arrives; with a valid certificate the coordinator's SETTINGS frame does. (Before
//! handshake verification, a client without a certificate got SETTINGS back.)

use std::process::Command;
use std::time::Duration;

use faultline_tests::*;

/// Runs Python's ssl client against `port`: TLS 1.3, ALPN h2, trusting `ca`, presenting
/// `cert`/`key` if given; sends the HTTP/2 preface and prints what came back.
fn python_client(port: u16, ca: &str, cert: Option<(&str, &str)>) -> String {
    let load = match cert {
        Some((c, k)) => format!("ctx.load_cert_chain({c:?}, {k:?})"),
        None => String::new(),
    };
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations({ca:?})
ctx.set_alpn_protocols(["h2"])
{load}
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
try:
    t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    data = t.recv(64)
    print("BYTES", data.hex() if data else "", flush=True)
except ssl.SSLError as e:
    print("SSLERROR", e.reason, flush=True)
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for this test ({e}); install it with `apt-get install -y python3`")
        });
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_without_a_certificate_gets_an_alert_and_no_http2() {
    let certs = Certs::new(&[]);
    let data = tempfile::tempdir().expect("data dir");
    let coord = start_coordinator(&certs, data.path(), 0, Duration::from_secs(5)).await;
    let port = coord.grpc_addr().port();
    let path = |f: &str| certs.path().join(f).display().to_string();
    let ca = path("ca.pem");

    let anonymous = tokio::task::spawn_blocking(move || python_client(port, &ca, None))
        .await
        .expect("python client");
    assert_eq!(anonymous, "SSLERROR TLSV13_ALERT_CERTIFICATE_REQUIRED");

    // The control: the same client with the viewer's certificate gets the SETTINGS frame
    // (9-byte header, type 0x04 on stream 0).
    let (ca, cert, key) = (path("ca.pem"), path("viewer.pem"), path("viewer-key.pem"));
    let valid = tokio::task::spawn_blocking(move || python_client(port, &ca, Some((&cert, &key))))
        .await
        .expect("python client");
    let hex = valid
        .strip_prefix("BYTES ")
        .unwrap_or_else(|| panic!("expected bytes, got {valid}"));
    assert!(hex.len() >= 18, "{valid}");
    assert_eq!(&hex[6..8], "04", "a SETTINGS frame: {valid}");
    assert_eq!(&hex[10..18], "00000000", "on stream 0: {valid}");
    coord.shutdown().await;
}
