//! `faultctl dashboard` in a real browser: Debian's chromium driven by playwright-core
//! (tests/dashboard/dashboard.mjs) against the real coordinator, two real agents and two
//! dashboards (an operator's and a viewer's). The script checks what a user sees; this test
//! checks what happened underneath (the coordinator's record, the agents' workers) and the
//! endpoint's refusals of requests without the token or from another origin.
//! Screenshots land in target/dashboard-screenshots/ (docs/dashboard.md shows them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_tests::procs::{require_root, require_tool, Proc};
use faultline_tests::stack::{worker_faults, Stack};
use faultline_tests::{binary, free_port};

/// A `faultctl dashboard` child process and the URL it printed.
struct Dashboard {
    proc: Proc,
    url: String,
    addr: SocketAddr,
}

impl Dashboard {
    fn start(stack: &Stack, identity: &str) -> Dashboard {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args: Vec<String> = [
            "--coordinator",
            &format!("https://{}", stack.grpc),
            "--certs-dir",
            &stack.certs.path().display().to_string(),
            "--identity",
            identity,
            "dashboard",
            "--listen",
            &addr.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn(
            &format!("dashboard-{identity}"),
            &binary("faultctl"),
            &args,
            stack.dir.path(),
        );
        let started = Instant::now();
        let url = loop {
            let log = proc.log_text();
            if let Some(line) = log.lines().find(|l| l.starts_with("http://")) {
                break line.trim().to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "faultctl dashboard printed no URL within 15 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Dashboard { proc, url, addr }
    }

    fn token(&self) -> &str {
        self.url.split("token=").nth(1).expect("token in URL")
    }
}

/// One raw HTTP/1.1 request; the status code and body.
fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect to the dashboard");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

fn node_modules(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let npm = require_tool("npm", "nodejs (Node.js 20 or newer with npm)");
    let out = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("run npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed (it needs the npm registry): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_chromium() {
    require_root("the agents' cpu workers and cgroups");
    let chromium = require_tool("chromium", "chromium");
    let node = require_tool("node", "nodejs (Node.js 20 or newer)");
    let script_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    node_modules(&script_dir);
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let agents = ["dash-a", "dash-b"];
    let mut stack = Stack::start(&agents, Duration::from_secs(5));
    stack.spawn_agent("dash-a", "zone=a");
    stack.spawn_agent("dash-b", "zone=b");
    let operator = Dashboard::start(&stack, "operator");
    let viewer = Dashboard::start(&stack, "viewer");

    // The endpoint's own refusals, before any browser is involved.
    let host = format!("Host: {}", operator.addr);
    let token = format!("X-Faultline-Token: {}", operator.token());
    let (code, body) = request(
        operator.addr,
        &format!("GET /api/agents HTTP/1.1\r\n{host}"),
        "",
    );
    assert_eq!(code, 401, "no token: {body}");
    let (code, body) = request(
        operator.addr,
        &format!(
            "GET /api/agents HTTP/1.1\r\n{host}\r\nCookie: faultline_dashboard={}",
            operator.token()
        ),
        "",
    );
    assert_eq!(
        code, 401,
        "a cookie is no credential (cookies cross ports): {body}"
    );
    let (code, body) = request(
        operator.addr,
        &format!("GET /api/agents HTTP/1.1\r\n{host}\r\nX-Faultline-Token: wrong"),
        "",
    );
    assert_eq!(code, 401, "a wrong token: {body}");
    let (code, body) = request(
        operator.addr,
        &format!("GET /api/agents HTTP/1.1\r\n{host}\r\n{token}"),
        "",
    );
    assert_eq!(code, 200, "the token opens the API: {body}");
    let (code, body) = request(operator.addr, &format!("GET / HTTP/1.1\r\n{host}"), "");
    assert_eq!(code, 200, "the page itself is public");
    assert!(
        !body.contains(operator.token()),
        "the page carries no token"
    );
    let (code, body) = request(
        operator.addr,
        &format!(
            "POST /api/fleet/halt HTTP/1.1\r\n{host}\r\n{token}\r\nOrigin: http://evil.example\r\n\
             Content-Type: application/json"
        ),
        "{}",
    );
    assert_eq!(code, 403, "another origin is refused: {body}");
    assert!(body.contains("evil.example"), "{body}");
    let (code, body) = request(
        operator.addr,
        &format!(
            "POST /api/fleet/halt?token={} HTTP/1.1\r\n{host}\r\nContent-Type: application/json",
            operator.token()
        ),
        "{}",
    );
    assert_eq!(
        code, 401,
        "the query form of the token does not make a write: {body}"
    );
    let (code, body) = request(
        operator.addr,
        &format!(
            "GET /api/agents HTTP/1.1\r\nHost: rebound.example:{}\r\n{token}",
            operator.addr.port()
        ),
        "",
    );
    assert_eq!(
        code, 403,
        "a foreign Host (DNS rebinding) is refused: {body}"
    );

    // A workflow waiting for approval and a suspended schedule, for their pages.
    let mut wf = pb::workflows_client::WorkflowsClient::new(stack.channel("operator").await);
    wf.create(pb::CreateWorkflowRequest {
        document: "apiVersion: faultline.dev/v1\nkind: Workflow\nmetadata: {name: ui-flow}\n\
                   spec:\n  steps:\n    - name: gate\n      suspend: {approval: true}\n    \
                   - name: rest\n      suspend: {duration: 1s}\n"
            .into(),
    })
    .await
    .expect("create workflow");
    let mut sc = pb::schedules_client::SchedulesClient::new(stack.channel("operator").await);
    sc.apply(pb::ApplyScheduleRequest {
        document: "apiVersion: faultline.dev/v1\nkind: Schedule\nmetadata: {name: ui-nightly}\n\
                   spec:\n  schedule: '0 3 * * *'\n  suspend: true\n  experiment:\n    \
                   duration: 1m\n    targets: {mode: one}\n    faults: [{kind: cpu, load: 10, workers: 1}]\n"
            .into(),
    })
    .await
    .expect("apply schedule");

    let experiment = "ui-cpu";
    let out = Command::new(node)
        .arg(script_dir.join("dashboard.mjs"))
        .env("OPERATOR_URL", &operator.url)
        .env("VIEWER_URL", &viewer.url)
        .env("SHOTS", &shots)
        .env("AGENTS", agents.join(","))
        .env("EXPERIMENT", experiment)
        .env("CHROMIUM", &chromium)
        .current_dir(&script_dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{}\n--- operator dashboard log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        operator.proc.log_text()
    );

    // Underneath: the coordinator says aborted by the operator, every target reverted, and the
    // agents' cpu workers are gone.
    let e = stack.get(experiment).await;
    assert_eq!(e.phase, pb::ExperimentPhase::Aborted as i32, "{e:?}");
    let abort = e.abort.as_ref().expect("abort info");
    assert_eq!(abort.trigger, "api");
    assert!(abort.by.contains("operator"), "aborted by {}", abort.by);
    assert!(e
        .targets
        .iter()
        .all(|t| t.state == pb::FaultState::Reverted as i32));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = stack
            .agents
            .iter()
            .flat_map(|a| worker_faults(a.proc.pid()))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers left after the abort: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The viewer's forged abort is in the audit log as refused.
    let mut fleet = pb::fleet_client::FleetClient::new(stack.channel("admin").await);
    let audit = fleet
        .audit_log(pb::AuditLogRequest { limit: 100 })
        .await
        .expect("audit log")
        .into_inner();
    assert!(
        audit.entries.iter().any(|a| !a.allowed
            && a.identity.contains("viewer")
            && a.action == "Experiments.Abort"),
        "the refused viewer abort is not in the audit log: {:?}",
        audit.entries
    );
    // The approval given in the page let the workflow finish.
    let mut wf = pb::workflows_client::WorkflowsClient::new(stack.channel("admin").await);
    let flow = wf
        .get(pb::GetWorkflowRequest {
            name: "ui-flow".into(),
        })
        .await
        .expect("get workflow")
        .into_inner();
    assert_eq!(flow.phase, "succeeded", "{flow:?}");
    drop(viewer);
    drop(operator);
}
