//! faultctl against an in-process Fleet service over real mutual TLS on 127.0.0.1: what the
//! operator sees for answers and for refusals. (The real coordinator is exercised end-to-end in
//! the `tests` crate.)

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

mod support;

use faultline_core::{Identity, Role};
use faultline_identity::pki::{self, Usage, Validity};
use faultline_identity::test_util::Pki;
use faultline_identity::tls;
use faultline_proto::pb::{self, fleet_server::Fleet, fleet_server::FleetServer};
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_faultctl");

/// What the fake saw, for assertions.
#[derive(Default)]
struct Seen {
    halt_reasons: Vec<String>,
    audit_limits: Vec<u32>,
}

struct FakeFleet {
    seen: Arc<Mutex<Seen>>,
}

#[allow(clippy::result_large_err)]
fn require(req: &Request<impl Sized>, needs: Role, method: &str) -> Result<(), Status> {
    let who = tls::caller(req)?;
    let ok = match needs {
        Role::Admin => who.role.can_administer(),
        _ => who.role.can_view(),
    };
    if ok {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "identity {who} (role {}) may not call {method}: it requires role {needs}",
            who.role
        )))
    }
}

fn agent(name: &str, connected: bool, labels: &[(&str, &str)]) -> pb::AgentInfo {
    pb::AgentInfo {
        node_name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        version: "0.1.0".into(),
        connected,
        last_seen_unix_ms: 1,
        telemetry: connected.then(|| pb::Telemetry {
            cpu_busy_ratio: 0.5,
            memory_used_bytes: 2 * 1024 * 1024,
            load1: 1.25,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Fleet for FakeFleet {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        require(&req, Role::Viewer, "Fleet.ListAgents")?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: vec![
                agent("demo-b", false, &[("zone", "b"), ("role", "db")]),
                agent("demo-a", true, &[("zone", "a"), ("role", "web")]),
            ],
        }))
    }

    async fn halt_all(
        &self,
        req: Request<pb::HaltAllRequest>,
    ) -> Result<Response<pb::HaltAllResponse>, Status> {
        require(&req, Role::Admin, "Fleet.HaltAll")?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.halt_reasons.push(req.into_inner().reason);
        Ok(Response::new(pb::HaltAllResponse {
            agents_signalled: 2,
            experiments_aborted: 0,
        }))
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        require(&req, Role::Admin, "Fleet.Resume")?;
        Ok(Response::new(pb::ResumeResponse { was_halted: true }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        require(&req, Role::Viewer, "Fleet.GetPolicy")?;
        Ok(Response::new(pb::Policy {
            max_fleet_percent_under_fault: 50.0,
            max_concurrent_experiments: 5,
            allowed_fault_kinds: vec!["network".into()],
            max_duration_ms: 3_600_000,
            lease_ms: 5_000,
            protected_namespaces: vec!["kube-system".into(), "payments".into()],
            max_pod_percent_per_namespace: 25.0,
            ..Default::default()
        }))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        require(&req, Role::Admin, "Fleet.RevokeAgent")?;
        // Revocation is tested against the real coordinator (tests/tests/enroll.rs).
        Err(Status::unimplemented("not faked"))
    }

    async fn audit_log(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        require(&req, Role::Viewer, "Fleet.AuditLog")?;
        let limit = req.get_ref().limit;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .audit_limits
            .push(limit);
        Ok(Response::new(pb::AuditLogResponse {
            entries: vec![pb::AuditEntry {
                at_unix_ms: 1_700_000_000_000,
                identity: "viewer/viewer".into(),
                action: "Fleet.HaltAll".into(),
                detail: "refused: requires role admin".into(),
                allowed: false,
            }],
        }))
    }
}

/// A fake coordinator on 127.0.0.1; stops when dropped.
struct Fake {
    url: String,
    certs: PathBuf,
    seen: Arc<Mutex<Seen>>,
    _server: support::Listening,
}

use support::init_certs as init;

async fn start() -> Fake {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service =
        FleetServer::with_interceptor(FakeFleet { seen: seen.clone() }, tls::authenticate);
    let server = support::serve(tonic::service::Routes::new(service)).await;
    Fake {
        url: server.url.clone(),
        certs: server.certs.clone(),
        seen,
        _server: server,
    }
}

impl Fake {
    async fn run(&self, certs: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new(BIN)
            .arg("--coordinator")
            .arg(&self.url)
            .arg("--certs-dir")
            .arg(certs)
            .args(args)
            .env_remove("FAULTLINE_IDENTITY")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
    }

    async fn faultctl(&self, args: &[&str]) -> Output {
        self.run(&self.certs, args).await
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_list_as_table_and_json() {
    let fake = start().await;
    let out = fake
        .faultctl(&["--identity", "viewer", "agents", "list"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME", "STATUS", "LABELS", "LAST", "SEEN", "CPU", "MEM", "USED", "LOAD1", "FAULTS",
            "VERSION"
        ]
    );
    assert_eq!(
        lines[1][..3],
        ["demo-a", "connected", "role=web,zone=a"],
        "sorted by name"
    );
    assert_eq!(lines[1][5..], ["50.0%", "2.0", "MiB", "1.25", "0", "0.1.0"]);
    assert_eq!(lines[2][..3], ["demo-b", "disconnected", "role=db,zone=b"]);

    let out = fake.faultctl(&["-o", "json", "agents", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let agents = v.as_array().expect("array");
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["node_name"], "demo-a");
    assert_eq!(agents[0]["connected"], true);
    assert_eq!(agents[0]["labels"]["role"], "web");
    assert_eq!(agents[0]["telemetry"]["load1"], 1.25);
    assert_eq!(agents[1]["telemetry"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_halt_is_permission_denied() {
    let fake = start().await;
    let out = fake
        .faultctl(&["--identity", "viewer", "halt", "--reason", "game day"])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: permission denied: identity viewer/viewer (role viewer) may not call \
             Fleet.HaltAll: it requires role admin"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--identity"), "hint: {stderr}");
    assert!(fake.seen.lock().expect("lock").halt_reasons.is_empty());

    let out = fake.faultctl(&["halt", "--reason", "game day"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("fleet halted: revert-all sent to 2 connected agent(s)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.seen.lock().expect("lock").halt_reasons, ["game day"]);

    let out = fake.faultctl(&["resume"]).await;
    assert_eq!(
        text(&out.stdout),
        "fleet resumed: experiments may run again.\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_policy() {
    let fake = start().await;
    let out = fake.faultctl(&["audit", "--limit", "7"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("TIME "), "{stdout}");
    assert!(
        stdout.contains("2023-11-14T22:13:20Z  viewer/viewer  Fleet.HaltAll  no       refused"),
        "{stdout}"
    );
    assert_eq!(fake.seen.lock().expect("lock").audit_limits, [7]);

    let out = fake.faultctl(&["-o", "json", "policy"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["max_fleet_percent_under_fault"], 50.0);
    assert_eq!(v["lease_ms"], 5000);
    assert_eq!(v["halted"], false);
    assert_eq!(
        v["protected_namespaces"],
        serde_json::json!(["kube-system", "payments"])
    );
    assert_eq!(v["max_pod_percent_per_namespace"], 25.0);

    let out = fake.faultctl(&["--identity", "viewer", "policy"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        rows[6..],
        [
            "protected agent labels      -",
            "protected namespaces        kube-system, payments",
            "max namespace under fault   25% of its matching pods",
            "agent lease                 5s",
        ],
        "{stdout}"
    );

    let out = fake.faultctl(&["policy", "--help"]).await;
    let help = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "[policy] table of the coordinator's --config file",
        "protected namespaces         policy.protected_namespaces (namespace names, DNS-1123 labels;",
        "max namespace under fault    policy.max_pod_percent_per_namespace, 1..=100 (default 50):",
    ] {
        assert!(help.contains(needle), "policy --help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_not_authenticated() {
    let fake = start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tmp.path().join("other");
    init(&other);
    // Trust the real CA, but present an admin certificate from another CA.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).expect("mkdir");
    std::fs::copy(fake.certs.join("ca.pem"), mixed.join("ca.pem")).expect("copy ca");
    for f in ["admin.pem", "admin-key.pem"] {
        std::fs::copy(other.join(f), mixed.join(f)).expect("copy admin");
    }
    let out = fake.run(&mixed, &["agents", "list"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: not authenticated: "), "{stderr}");
    assert!(stderr.contains("client certificate refused"), "{stderr}");
    assert!(
        stderr.contains("mixed/admin.pem"),
        "hint names the file: {stderr}"
    );

    // Trusting another CA altogether: our side refuses the coordinator's certificate.
    let out = fake.run(&other, &["agents", "list"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: TLS handshake with {} failed", fake.url)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}/ca.pem", other.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_the_coordinator_is_refused() {
    let fake = start().await;
    // Swap the fake's server certificate for another agent's, signed by the same CA, valid for
    // 127.0.0.1 and even allowed to serve; the listener reloads it at the next connection.
    let pki = Pki::sharing_ca(&fake.certs);
    let impostor = pki.issued(
        "impostor",
        &pki.ca(),
        &Identity::new(Role::Agent, "node-b"),
        &["127.0.0.1"],
        Validity::days(1),
        Usage::ClientAndServer,
    );
    for (from, to) in [
        (&impostor.key, "coordinator-key.pem"),
        (&impostor.cert, "coordinator.pem"),
    ] {
        let pem = std::fs::read_to_string(from).expect("impostor file");
        pki::write_file(&fake.certs.join(to), &pem, to.ends_with("key.pem")).expect("swap");
    }
    let out = fake.faultctl(&["agents", "list"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: TLS handshake with {} failed: the server's certificate is not the \
             coordinator's: it belongs to agent/node-b, not to a coordinator",
            fake.url
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("spiffe://faultline/coordinator/<name>"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    // Accepts TCP but never speaks TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    init(tmp.path());
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(BIN)
        .args([
            "--coordinator",
            &format!("https://{addr}"),
            "--timeout",
            "300ms",
        ])
        .arg("--certs-dir")
        .arg(tmp.path())
        .args(["agents", "list"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run faultctl");
    hold.abort();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: coordinator at https://{addr} did not answer within 300ms (--timeout)"
        )),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "--timeout bounds the wait"
    );
}
