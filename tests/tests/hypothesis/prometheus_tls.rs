//! Guards against Debian's Prometheus serving HTTPS with basic auth (`--web.config.file`, a
//! test CA made here with rcgen and a bcrypt hash of the password): with `tls` and `auth` the
//! guard reads the value; without them it says why it cannot evaluate.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use faultline_tests::procs::{require_tool, Proc};
use faultline_tests::stack::Stack;
use faultline_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use super::SERIAL;

const PASSWORD: &str = "s3cret-test";
/// bcrypt (cost 4) of PASSWORD, made with `python3 -c 'import crypt; print(crypt.crypt("s3cret-test",
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))'`.
const PASSWORD_BCRYPT: &str = "$2b$04$KYcwmRXSUYnW0KgSK/rMJull.qBkB8pCmmpNozG5QYris38PJwS4y";

/// Prometheus on loopback behind TLS and basic auth.
struct SecurePrometheus {
    _proc: Proc,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl SecurePrometheus {
    fn start() -> SecurePrometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("prometheus dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "faultline test monitoring CA");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let p = |f: &str| dir.path().join(f);
        std::fs::write(p("ca.pem"), ca_cert.pem()).expect("ca.pem");
        std::fs::write(p("server.pem"), cert.pem()).expect("server.pem");
        std::fs::write(p("server-key.pem"), key.serialize_pem()).expect("key");
        std::fs::write(p("password"), format!("{PASSWORD}\n")).expect("password");
        std::fs::write(
            p("web.yml"),
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  faultline: '{PASSWORD_BCRYPT}'\n",
                p("server.pem").display(),
                p("server-key.pem").display()
            ),
        )
        .expect("web.yml");
        std::fs::write(p("prometheus.yml"), "global:\n  scrape_interval: 5s\n").expect("config");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args: Vec<String> = vec![
            format!("--config.file={}", p("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", p("data").display()),
            format!("--web.listen-address={addr}"),
            format!("--web.config.file={}", p("web.yml").display()),
        ];
        let proc = Proc::spawn("prometheus", &bin, &args, dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus (TLS) not listening; log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        SecurePrometheus {
            _proc: proc,
            addr,
            dir,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_guard_over_tls_with_basic_auth_reads_the_value_and_explains_refusals() {
    let _serial = SERIAL.lock().await;
    let prom = SecurePrometheus::start();
    let mut stack = Stack::start(&["tls-a"], Duration::from_secs(5));
    stack.spawn_agent("tls-a", "");
    let url = format!("https://127.0.0.1:{}", prom.addr.port());
    let (ca, pw) = (prom.file("ca.pem"), prom.file("password"));
    let query = "query: 'vector(0.25)', above: 0.5";
    let guards = format!(
        "    - {{name: secured, prometheus: {{url: '{url}', {query}, tls: {{caFile: '{ca}'}}, auth: {{basicAuth: {{username: faultline, passwordFile: '{pw}'}}}}}}}}\n\
         \x20   - {{name: no-tls, onError: ignore, prometheus: {{url: '{url}', {query}, auth: {{basicAuth: {{username: faultline, passwordFile: '{pw}'}}}}}}}}\n\
         \x20   - {{name: no-auth, onError: ignore, prometheus: {{url: '{url}', {query}, tls: {{caFile: '{ca}'}}}}}}\n\
         \x20   - {{name: insecure, prometheus: {{url: '{url}', {query}, tls: {{insecureSkipVerify: true}}, auth: {{basicAuth: {{username: faultline, passwordFile: '{pw}'}}}}}}}}\n"
    );
    let document = format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: tls-guards}}\nspec:\n  duration: 3s\n  targets: {{mode: all}}\n  faults: [{{kind: cpu, load: 10}}]\n  guards:\n{guards}  guardInterval: 500ms\n"
    );
    // The plan shows that one guard does not verify the certificate.
    let file = stack.dir.path().join("tls-guards.yaml");
    std::fs::write(&file, &document).expect("document");
    let (ok, plan) = faultline_tests::procs::run(
        &binary("faultctl"),
        &[
            "--coordinator",
            &format!("https://{}", stack.grpc),
            "--certs-dir",
            &stack.certs.path().display().to_string(),
            "--identity",
            "operator",
            "apply",
            "-f",
            &file.display().to_string(),
            "--dry-run",
        ],
    );
    assert!(ok, "{plan}");
    assert!(
        plan.contains("warning: insecure does not verify the server's TLS certificate (tls.insecureSkipVerify)"),
        "{plan}"
    );
    assert!(
        !plan.contains(PASSWORD),
        "the plan shows no secret:\n{plan}"
    );

    stack.run_experiment(&document).await;
    let e = stack
        .wait_phase(
            "tls-guards",
            faultline_proto::pb::ExperimentPhase::Completed,
            Duration::from_secs(30),
        )
        .await;
    let last = |name: &str| {
        e.guard_timeline
            .iter()
            .rev()
            .find(|s| s.guard == name)
            .unwrap_or_else(|| panic!("no sample of {name}: {:?}", e.guard_timeline))
            .clone()
    };
    let secured = last("secured");
    assert_eq!(
        (secured.outcome.as_str(), secured.value),
        ("ok", 0.25),
        "{secured:?}"
    );
    let insecure = last("insecure");
    assert_eq!(insecure.value, 0.25, "{insecure:?}");
    let no_tls = last("no-tls");
    assert_eq!(no_tls.outcome, "error", "{no_tls:?}");
    assert!(
        no_tls.error.contains("TLS handshake") && no_tls.error.contains("set tls.caFile"),
        "{no_tls:?}"
    );
    let no_auth = last("no-auth");
    assert!(
        no_auth
            .error
            .contains("HTTP 401 Unauthorized: the server requires credentials; set auth.basicAuth"),
        "{no_auth:?}"
    );
    eprintln!(
        "prometheus over TLS + basic auth: secured={} | no-tls: {} | no-auth: {}",
        secured.value, no_tls.error, no_auth.error
    );
    let mut client = stack.experiments("viewer").await;
    let report = client
        .report(faultline_proto::pb::ReportRequest {
            name: "tls-guards".into(),
            format: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    for text in [&report.json, &report.markdown] {
        assert!(!text.contains(PASSWORD), "a report holds the password");
    }
    let log = stack.coordinator.as_ref().expect("coordinator").log_text();
    assert!(
        !log.contains(PASSWORD),
        "the coordinator's log holds the password"
    );
    assert!(
        log.contains("tls.insecureSkipVerify: the server's certificate is NOT verified"),
        "insecureSkipVerify is logged as a warning:\n{log}"
    );
}
