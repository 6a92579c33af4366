//! Enrollment, renewal and revocation with the real binaries: a coordinator that issues agent
//! certificates (the development CA as its issuer), `faultctl tokens create`, and agents that
//! start with nothing but `--join-token-file` and `--ca`.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and root (the agent's
//! drivers).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultline_core::{Identity, Role};
use faultline_tests::procs::{http_get, run, Proc};
use faultline_tests::stack::{wait_ready, workers_of};
use faultline_tests::{binary, free_port, Certs};

struct Issuing {
    certs: Certs,
    dir: tempfile::TempDir,
    grpc: SocketAddr,
    enroll: SocketAddr,
    metrics: SocketAddr,
    coordinator: Proc,
}

impl Issuing {
    fn start(ttl: &str) -> Issuing {
        let certs = Certs::new(&[]);
        let dir = tempfile::tempdir().expect("dir");
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let enroll = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("coordinator.toml");
        std::fs::write(&config, "[policy]\nmax_fleet_percent_under_fault = 100\n").expect("cfg");
        let ca = certs.path().join("ca.pem");
        let ca_key = certs.path().join("ca-key.pem");
        let args: Vec<String> = [
            "--listen",
            &grpc.to_string(),
            "--enroll-listen",
            &enroll.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--certs-dir",
            &certs.path().display().to_string(),
            "--issuer-cert",
            &ca.display().to_string(),
            "--issuer-key",
            &ca_key.display().to_string(),
            "--agent-cert-ttl",
            ttl,
            "--config",
            &config.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let coordinator = Proc::spawn(
            "coordinator",
            &binary("faultline-coordinator"),
            &args,
            dir.path(),
        );
        wait_ready(&coordinator, metrics, Duration::from_secs(10));
        Issuing {
            certs,
            dir,
            grpc,
            enroll,
            metrics,
            coordinator,
        }
    }

    fn faultctl(&self, args: &[&str]) -> (bool, String) {
        let url = format!("https://{}", self.grpc);
        let certs = self.certs.path().display().to_string();
        let mut all = vec!["--coordinator", &url, "--certs-dir", &certs];
        all.extend_from_slice(args);
        run(&binary("faultctl"), &all)
    }

    /// `faultctl -o json tokens create ARGS`: the token.
    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["-o", "json", "tokens", "create"];
        all.extend_from_slice(args);
        let (ok, out) = self.faultctl(&all);
        assert!(ok, "tokens create failed: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["token"].as_str().expect("token").to_string()
    }

    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&p, format!("{token}\n")).expect("token file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("state-{name}"))
    }

    /// An agent with only the CA and (optionally) a token file.
    fn agent(&self, name: &str, token_file: Option<&Path>) -> (Proc, SocketAddr) {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args: Vec<String> = vec![
            "--coordinator".into(),
            format!("https://{}", self.grpc),
            "--enroll-url".into(),
            format!("https://{}", self.enroll),
            "--ca".into(),
            self.certs.path().join("ca.pem").display().to_string(),
            "--node-name".into(),
            name.into(),
            "--labels".into(),
            "rack=own,zone=z1".into(),
            "--state-dir".into(),
            self.state(name).display().to_string(),
            "--metrics-listen".into(),
            metrics.to_string(),
            "--telemetry-interval".into(),
            "500ms".into(),
        ];
        if let Some(f) = token_file {
            args.push("--join-token-file".into());
            args.push(f.display().to_string());
        }
        let p = Proc::spawn(name, &binary("faultline-agent"), &args, self.dir.path());
        (p, metrics)
    }

    fn agents_json(&self) -> serde_json::Value {
        let (ok, out) = self.faultctl(&["-o", "json", "agents", "list"]);
        assert!(ok, "agents list: {out}");
        serde_json::from_str(&out).expect("json")
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = http_get(self.metrics, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn agent_entry(v: &serde_json::Value, name: &str) -> serde_json::Value {
    let list = v
        .as_array()
        .or_else(|| v["agents"].as_array())
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .find(|a| a["node_name"] == name || a["name"] == name)
        .unwrap_or_else(|| panic!("no agent {name} in {v}"))
}

/// Waits for the agent process to exit and returns its log.
fn exits_with(mut p: Proc) -> String {
    let status = p.wait(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the agent should have exited with an error"
    );
    p.log_text()
}

#[test]
fn a_join_token_is_all_an_agent_needs_and_it_is_refused_when_expired_or_used_up() {
    let c = Issuing::start("24h");
    let token = c.token(&[
        "--uses",
        "1",
        "--labels",
        "rack=r4",
        "--description",
        "test",
    ]);
    let file = c.token_file("host-a", &token);

    // Token to connected.
    let start = Instant::now();
    let (agent, metrics) = c.agent("host-a", Some(&file));
    wait_ready(&agent, metrics, Duration::from_secs(5));
    let took = start.elapsed();
    println!("token to connected: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Its key is 0600 in its state dir and its certificate carries its SPIFFE ID.
    let identity = c.state("host-a").join("identity");
    let key = identity.join("agent-key.pem");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let dir_mode = std::fs::metadata(&identity)
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let id = faultline_identity::spiffe::identity_of_file(&identity.join("agent.pem"))
        .expect("identity");
    assert_eq!(id, Identity::new(Role::Agent, "host-a"));
    // The token's labels win over the agent's own for the same key; the others stay.
    let entry = agent_entry(&c.agents_json(), "host-a");
    assert_eq!(entry["labels"]["rack"], "r4", "{entry}");
    assert_eq!(entry["labels"]["zone"], "z1", "{entry}");

    // --uses 1: a second node is refused, saying so.
    let second = c.token_file("host-b", &token);
    let (b, _) = c.agent("host-b", Some(&second));
    let log = exits_with(b);
    assert!(
        log.contains("has been used 1 of 1 times (by host-a)"),
        "{log}"
    );
    assert!(!c.state("host-b").join("identity/agent.pem").exists());

    // --ttl 1s used 2 s later: refused, saying it expired.
    let short = c.token(&["--ttl", "1s"]);
    let id = short.split('.').next().expect("id").to_string();
    std::thread::sleep(Duration::from_secs(2));
    let (late, _) = c.agent("host-c", Some(&c.token_file("host-c", &short)));
    let log = exits_with(late);
    assert!(
        log.contains(&format!("join token {id} expired at ")),
        "{log}"
    );

    // A restart needs no token: the stored certificate is used.
    drop(agent);
    let start = Instant::now();
    let (again, metrics) = c.agent("host-a", None);
    wait_ready(&again, metrics, Duration::from_secs(5));
    println!(
        "restart with the stored certificate to connected: {:?}",
        start.elapsed()
    );

    // Every attempt is in the audit log.
    let (ok, audit) = c.faultctl(&["-o", "json", "audit", "--limit", "50"]);
    assert!(ok, "{audit}");
    assert!(audit.contains("Enrollment.Enroll"), "{audit}");
    assert!(audit.contains("Tokens.Create"), "{audit}");
    assert!(
        !audit.contains(&token[7..]),
        "the secret must not be audited"
    );
}

#[test]
fn a_revoked_agent_is_cut_off_within_a_second_and_refused_in_the_handshake() {
    let c = Issuing::start("24h");
    let token = c.token(&["--uses", "2"]);
    let (agent, metrics) = c.agent("host-r", Some(&c.token_file("host-r", &token)));
    wait_ready(&agent, metrics, Duration::from_secs(5));

    let start = Instant::now();
    let (ok, out) = c.faultctl(&["agents", "revoke", "host-r", "--reason", "disk stolen"]);
    assert!(ok, "{out}");
    assert!(out.contains("its session was closed"), "{out}");
    // The agent's readiness is its session.
    while http_get(metrics, "/readyz").map(|r| r.0) == Some(200) {
        assert!(start.elapsed() < Duration::from_secs(1), "still connected");
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = start.elapsed();
    println!("revoke to disconnected (faultctl run included): {gone:?}");
    assert!(gone < Duration::from_secs(1));
    assert_eq!(c.metric("faultline_coordinator_agents_connected "), 0.0);

    // Its reconnects are refused in the TLS handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = c.coordinator.log_text();
        if log.contains("refused in the TLS handshake")
            && log.contains("is revoked: node host-r was revoked by admin/admin")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no handshake refusal in:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log_text();
    assert!(log.contains("certificate_revoked"), "{log}");
    assert!(c.metric("faultline_coordinator_auth_refusals_total{reason=\"revoked\"} ") >= 1.0);
    drop(agent);

    // The same token (made before the revocation, one use left) does not bring it back; a
    // new one does.
    std::fs::remove_dir_all(c.state("host-r").join("identity")).expect("wipe identity");
    let (old, _) = c.agent("host-r", Some(&c.token_file("host-r-old", &token)));
    let log = exits_with(old);
    assert!(
        log.contains("node host-r was revoked by admin/admin at ")
            && log.contains("it may enroll again only with a join token created after that"),
        "{log}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = c.token(&[]);
    let (back, metrics) = c.agent("host-r", Some(&c.token_file("host-r-new", &fresh)));
    wait_ready(&back, metrics, Duration::from_secs(10));

    let (ok, audit) = c.faultctl(&["-o", "json", "audit", "--limit", "50"]);
    assert!(ok, "{audit}");
    assert!(audit.contains("Fleet.RevokeAgent"), "{audit}");
    assert!(
        audit.contains("revoked agent/host-r: disk stolen"),
        "{audit}"
    );
}

/// The serial of the certificate stored in a state dir.
fn stored_serial(state: &Path) -> Option<String> {
    let certs = faultline_identity::tls::load_certs(&state.join("identity/agent.pem")).ok()?;
    faultline_identity::cert::CertInfo::parse(&certs[0])
        .ok()
        .map(|i| i.serial)
}

#[test]
fn an_agent_renews_three_times_keeping_one_session_and_its_fault() {
    // The shortest lifetime the flag allows: renewals come about every 40 s.
    let c = Issuing::start("1m");
    let token = c.token(&[]);
    let (agent, metrics) = c.agent("host-rot", Some(&c.token_file("host-rot", &token)));
    wait_ready(&agent, metrics, Duration::from_secs(5));
    let enrolled_at = Instant::now();
    let doc = c.dir.path().join("rot.yaml");
    std::fs::write(
        &doc,
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: rot}\nspec:\n  duration: 170s\n  targets:\n    agents: {names: [host-rot]}\n    mode: all\n  faults:\n    - {kind: cpu, load: 5, workers: 1}\n",
    )
    .expect("doc");
    let (ok, out) = c.faultctl(&[
        "--identity",
        "operator",
        "apply",
        "-f",
        &doc.display().to_string(),
    ]);
    assert!(ok, "{out}");
    // The fault is a CPU worker process of the agent: the same PID must live throughout.
    let workers = || workers_of(agent.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the fault never applied:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let worker = workers();

    let mut serials = vec![stored_serial(&c.state("host-rot")).expect("enrolled serial")];
    let mut renewed_at = Vec::new();
    let deadline = enrolled_at + Duration::from_secs(160);
    while serials.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} renewals:\n{}",
            serials.len() - 1,
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
        let now = stored_serial(&c.state("host-rot")).expect("serial");
        if Some(&now) != serials.last() {
            renewed_at.push(enrolled_at.elapsed());
            serials.push(now);
            // Every renewal keeps the one session and the fault.
            assert_eq!(
                c.metric("faultline_coordinator_sessions_opened_total "),
                1.0
            );
            assert_eq!(workers(), worker, "the fault's worker must live on");
            assert_eq!(http_get(metrics, "/readyz").map(|r| r.0), Some(200));
        }
    }
    println!("renewals at {renewed_at:?} after enrollment (lifetime 60 s)");
    assert_eq!(
        c.metric("faultline_coordinator_certificates_issued_total{via=\"renew\"} "),
        3.0
    );
    assert_eq!(
        c.metric("faultline_coordinator_sessions_opened_total "),
        1.0
    );
    assert!(renewed_at[0] > Duration::from_secs(30), "{renewed_at:?}");
    // The enrollment certificate has long expired: a restart connects with the renewed one.
    assert!(enrolled_at.elapsed() > Duration::from_secs(70));
    drop(agent);
    let (again, metrics) = c.agent("host-rot", None);
    wait_ready(&again, metrics, Duration::from_secs(5));
}

#[test]
fn faultctl_refuses_bad_token_flags_naming_the_flag_and_range() {
    for (args, wanted) in [
        (
            vec!["--ttl", "0s"],
            "--ttl: 0s is outside the allowed range 1s..=7days",
        ),
        (
            vec!["--ttl", "8d"],
            "--ttl: 8days is outside the allowed range 1s..=7days",
        ),
        (vec!["--uses", "0"], "'--uses <N>': 0 is not in 1..=10000"),
        (
            vec!["--uses", "10001"],
            "'--uses <N>': 10001 is not in 1..=10000",
        ),
        (
            vec!["--labels", "bad key=1"],
            "'--labels <K=V,...>': label key \"bad key\" is invalid",
        ),
    ] {
        let mut all = vec!["tokens", "create"];
        all.extend_from_slice(&args);
        let (ok, out) = run(&binary("faultctl"), &all);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(out.contains(wanted), "{args:?}: {out}");
    }
}
