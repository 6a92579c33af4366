//! Authentication and authorization refusals over real mutual TLS on 127.0.0.1: clients
//! without a valid certificate fail the TLS handshake (no HTTP/2 byte reaches them) and the
//! coordinator logs and counts who was refused from where; authenticated callers get
//! PERMISSION_DENIED naming what they lack, and refused mutations land in the audit log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::http::sample;
use common::*;
use faultline_identity::test_util::{raw_config, raw_exchange, Pki};
use faultline_identity::tls::{self, CertPaths, TlsError};
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::AlertDescription;
use tonic::Code;

/// This test binary's Prometheus recorder and log capture (one of each per process).
struct Observed {
    metrics: PrometheusHandle,
    logs: Arc<Mutex<Vec<u8>>>,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let metrics = PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder in this test binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        Observed { metrics, logs }
    })
}

impl Observed {
    fn refusals(&self, reason: &str) -> f64 {
        sample(
            &self.metrics.render(),
            &format!("faultline_coordinator_auth_refusals_total{{reason=\"{reason}\"}}"),
        )
    }

    /// The log line that mentions `needle`, waiting up to 5 s for it.
    async fn log_line(&self, needle: &str) -> String {
        eventually(Duration::from_secs(5), needle, || async {
            let logs = String::from_utf8_lossy(&self.logs.lock().expect("log lock")).into_owned();
            logs.lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
        .await
    }
}

/// Whether `tls::connect` (the agent's, faultctl's and the simulator's dial) is refused, and
/// the sentence it gets.
async fn dial_refusal(c: &faultline_coordinator::Coordinator, paths: &CertPaths) -> String {
    match tls::connect(&url(c), paths, TIMEOUT).await {
        Err(TlsError::Refused { reason, .. }) => reason,
        Err(other) => panic!("expected a refused client certificate, got: {other}"),
        Ok(_) => panic!("{} connected", paths.cert.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_fail_the_handshake_and_are_counted() {
    let o = observed();
    let env = Env::new();
    let c = env.start().await;
    let certs = Pki::sharing_ca(&env.certs());
    let foreign = certs.foreign();
    let expired = certs.expired();
    let ca = env.certs().join("ca.pem");

    // A control: a valid client gets the coordinator's HTTP/2 SETTINGS right away.
    let viewer = env.paths("viewer");
    let (_, ok) = raw_exchange(c.grpc_addr(), raw_config(&ca, Some(&viewer))).await;
    assert!(ok.is_h2_settings(), "a valid client reaches HTTP/2: {ok:?}");

    let cases = [
        (
            "no certificate",
            raw_config(&ca, None),
            AlertDescription::CertificateRequired,
            "no_certificate",
            "no client certificate presented",
        ),
        (
            "another CA",
            raw_config(&ca, Some(&foreign)),
            AlertDescription::UnknownCA,
            "certificate_rejected",
            "(certificate for viewer/viewer): client certificate refused: issued by a CA this coordinator does not trust",
        ),
        (
            "expired",
            raw_config(&ca, Some(&expired)),
            AlertDescription::CertificateExpired,
            "certificate_rejected",
            "(certificate for viewer/viewer): client certificate refused: certificate expired",
        ),
    ];
    for (case, config, alert, reason, logged) in cases {
        let before = o.refusals(reason);
        let (local, outcome) = raw_exchange(c.grpc_addr(), config).await;
        assert!(
            !outcome.is_h2_settings(),
            "{case}: reached HTTP/2: {outcome:?}"
        );
        assert_eq!(outcome.alert(), Some(alert), "{case}: {outcome:?}");
        let line = o.log_line(&format!("client {local}")).await;
        assert!(
            line.contains("WARN")
                && line.contains(logged)
                && line.contains(&format!("reason=\"{reason}\"")),
            "{case}: {line}"
        );
        eventually(Duration::from_secs(5), "the refusal is counted", || async {
            (o.refusals(reason) == before + 1.0).then_some(())
        })
        .await;
    }

    // Our own dial turns the alert into a sentence.
    assert_eq!(
        dial_refusal(&c, &foreign).await,
        "issued by a CA the coordinator does not trust (unknown CA) (TLS alert unknown_ca)"
    );
    let reason = dial_refusal(&c, &expired).await;
    assert!(reason.starts_with("certificate expired on "), "{reason}");

    // Nothing reached a service: nothing was audited for the strangers.
    let entries = audit(&mut fleet(&env, &c, "viewer").await).await;
    assert!(entries.is_empty(), "{entries:#?}");
    c.shutdown().await;
}

#[tokio::test]
async fn roles_decide_who_may_call_what() {
    let env = Env::new();
    let c = env.start().await;
    let halt = || pb::HaltAllRequest {
        reason: "game day".into(),
    };

    let err = fleet(&env, &c, "viewer")
        .await
        .halt_all(halt())
        .await
        .expect_err("viewer may not halt");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity viewer/viewer (role viewer) may not call Fleet.HaltAll: it requires role admin"
    );

    let err = fleet(&env, &c, "operator")
        .await
        .halt_all(halt())
        .await
        .expect_err("operator may not halt");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity operator/operator (role operator) may not call Fleet.HaltAll: it requires role admin"
    );

    let err = fleet(&env, &c, "agent-node-a")
        .await
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect_err("agent may not list");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity agent/node-a (role agent) may not call Fleet.ListAgents: agent certificates may only open an AgentSession"
    );

    // A viewer reads; creating experiments is refused to it; an operator's empty document is
    // refused for what it lacks.
    let mut viewer = fleet(&env, &c, "viewer").await;
    assert!(list_agents(&mut viewer).await.is_empty());
    let create = || pb::CreateExperimentRequest {
        document: "{}".into(),
        dry_run: true,
        start: false,
    };
    let err = ExperimentsClient::new(channel(&env, &c, "viewer").await)
        .create(create())
        .await
        .expect_err("viewer may not create");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("it requires role operator or admin"),
        "{}",
        err.message()
    );
    let err = ExperimentsClient::new(channel(&env, &c, "operator").await)
        .create(create())
        .await
        .expect_err("an empty document");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "apiVersion: is required (faultline.dev/v1)");

    // The admin may halt; no agent is connected, so none is signalled.
    let mut admin = fleet(&env, &c, "admin").await;
    let resp = admin
        .halt_all(halt())
        .await
        .expect("admin halts")
        .into_inner();
    assert_eq!(resp.agents_signalled, 0);

    // Refused mutations are in the audit log with allowed=false, next to the allowed one.
    let entries = audit(&mut viewer).await;
    let find = |who: &str, action: &str| {
        entries
            .iter()
            .find(|e| e.identity == who && e.action == action)
            .unwrap_or_else(|| panic!("no audit entry for {who} {action} in {entries:#?}"))
    };
    let refused = find("viewer/viewer", "Fleet.HaltAll");
    assert!(!refused.allowed);
    assert!(
        refused.detail.contains("it requires role admin"),
        "{}",
        refused.detail
    );
    assert!(!find("operator/operator", "Fleet.HaltAll").allowed);
    assert!(!find("viewer/viewer", "Experiments.Create").allowed);
    let refused = find("operator/operator", "Experiments.Create");
    assert!(!refused.allowed, "not carried out: {refused:?}");
    assert_eq!(
        refused.detail,
        "refused: apiVersion: is required (faultline.dev/v1)"
    );
    let halted = find("admin/admin", "Fleet.HaltAll");
    assert!(
        halted.allowed && halted.detail.contains("game day"),
        "{halted:?}"
    );
    assert!(halted.at_unix_ms > 0 && halted.at_unix_ms <= now_ms());
    // Reads are not audited.
    assert!(entries.iter().all(|e| e.action != "Fleet.ListAgents"));
    // Newest first.
    assert!(entries
        .windows(2)
        .all(|w| w[0].at_unix_ms >= w[1].at_unix_ms));
    c.shutdown().await;
}

#[tokio::test]
async fn an_agent_may_only_open_a_session_for_its_own_node() {
    let env = Env::new();
    let c = env.start().await;
    let ch = channel(&env, &c, "agent-node-a").await;
    let err = session_refusal(ch, hello("node-b", &[])).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "identity agent/node-a may only open a session for node \"node-a\", not \"node-b\""
    );

    // Only agent certificates open sessions.
    let ch = channel(&env, &c, "admin").await;
    let err = session_refusal(ch, hello("node-a", &[])).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "identity admin/admin (role admin) may not call AgentSession.Connect: it requires role agent"
    );

    let mut viewer = fleet(&env, &c, "viewer").await;
    assert!(
        list_agents(&mut viewer).await.is_empty(),
        "nobody registered"
    );
    let entries = audit(&mut viewer).await;
    let refused = entries
        .iter()
        .find(|e| e.identity == "agent/node-a" && e.action == "AgentSession.Connect")
        .unwrap_or_else(|| panic!("refused session not audited: {entries:#?}"));
    assert!(
        !refused.allowed && refused.detail.contains("not \"node-b\""),
        "{refused:?}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn an_invalid_hello_is_refused_naming_the_field() {
    let env = Env::new();
    let c = env.start().await;
    let ch = channel(&env, &c, "agent-node-a").await;
    let err = session_refusal(ch.clone(), hello("node-a", &[("zone", "a b")])).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("hello.labels: label zone"),
        "{}",
        err.message()
    );

    let err = session_refusal(ch.clone(), hello("Node_A", &[])).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("hello.node_name: node name \"Node_A\""),
        "{}",
        err.message()
    );

    let err = session_refusal(ch, telemetry(0.1, 1)).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "the first message of an AgentSession must be Hello, got Telemetry"
    );
    c.shutdown().await;
}
