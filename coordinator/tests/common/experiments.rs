//! Helpers for experiment tests: documents, the Experiments client, waiting for a phase or
//! for the end of a run, tiny HTTP servers standing in for a service and for Prometheus.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_coordinator::{Config, Coordinator, Policy};
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Status;

use super::{channel, Env};

/// A policy that lets tests use the whole (small) fleet.
pub fn open_policy() -> Policy {
    Policy {
        max_fleet_percent_under_fault: 100.0,
        ..Policy::default()
    }
}

impl Env {
    /// The default test config with `policy`.
    pub fn config_with(&self, policy: Policy) -> Config {
        Config {
            policy,
            ..self.config()
        }
    }
}

pub async fn start_open(env: &Env) -> Coordinator {
    super::start(env.config_with(open_policy())).await
}

pub async fn experiments(env: &Env, c: &Coordinator, stem: &str) -> ExperimentsClient<Channel> {
    ExperimentsClient::new(channel(env, c, stem).await)
}

/// A document named `name` with `spec` (YAML lines of the spec, indented by two).
pub fn doc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

pub async fn create(
    client: &mut ExperimentsClient<Channel>,
    document: &str,
    start: bool,
) -> Result<pb::CreateExperimentResponse, Status> {
    client
        .create(pb::CreateExperimentRequest {
            document: document.into(),
            dry_run: false,
            start,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn get(client: &mut ExperimentsClient<Channel>, name: &str) -> pb::Experiment {
    client
        .get(pb::GetExperimentRequest { name: name.into() })
        .await
        .unwrap_or_else(|s| panic!("Get {name}: {s:?}"))
        .into_inner()
}

pub fn phase(e: &pb::Experiment) -> pb::ExperimentPhase {
    pb::ExperimentPhase::try_from(e.phase).unwrap_or(pb::ExperimentPhase::Unspecified)
}

/// Follows Watch until the stream ends (the run is over); every event received.
pub async fn watch_to_end(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    within: Duration,
) -> Vec<pb::ExperimentEvent> {
    let mut stream = client
        .watch(pb::WatchExperimentRequest { name: name.into() })
        .await
        .unwrap_or_else(|s| panic!("Watch {name}: {s:?}"))
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!(
                "the Watch of {name} did not end within {within:?}; last event: {:#?}",
                events.last()
            ),
            Ok(Ok(Some(e))) => events.push(e),
            Ok(Ok(None)) => return events,
            Ok(Err(s)) => panic!("Watch {name} failed: {s:?}"),
        }
    }
}

/// Polls Get until every target of `name` is applied.
pub async fn wait_applied(client: &mut ExperimentsClient<Channel>, name: &str) -> pb::Experiment {
    super::eventually(Duration::from_secs(5), "every fault applied", || {
        let mut client = client.clone();
        async move {
            let e = get(&mut client, name).await;
            let applied = !e.targets.is_empty()
                && e.targets
                    .iter()
                    .all(|t| t.state == pb::FaultState::Applied as i32);
            applied.then_some(e)
        }
    })
    .await
}

/// Polls Get until `name` is in `want` (within 15 s).
pub async fn wait_phase(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    want: pb::ExperimentPhase,
) -> pb::Experiment {
    super::eventually(Duration::from_secs(15), "the phase", || {
        let mut client = client.clone();
        async move {
            let e = get(&mut client, name).await;
            (e.phase == want as i32).then_some(e)
        }
    })
    .await
}

/// A tiny HTTP/1.1 server on 127.0.0.1: answers every request with the status and body that
/// `respond(path)` gives at that moment. Aborted on drop.
pub struct TinyHttp {
    pub addr: std::net::SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TinyHttp {
    pub async fn start<F>(respond: F) -> TinyHttp
    where
        F: Fn(&str) -> (u16, String) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let respond = Arc::new(respond);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let respond = respond.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().expect("requests").push(path.clone());
                    let (status, body) = respond(&path);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TinyHttp {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

/// A service whose /healthz answers the status held in the returned cell.
pub async fn health_server() -> (TinyHttp, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let server = TinyHttp::start(move |_| (s.load(Ordering::SeqCst), "{}".to_string())).await;
    (server, status)
}

/// A fake Prometheus answering instant queries in the real API's JSON shape with the value
/// held in the returned cell (`None`: an empty vector).
pub async fn fake_prometheus() -> (TinyHttp, Arc<Mutex<Option<f64>>>) {
    let value = Arc::new(Mutex::new(Some(0.01)));
    let v = value.clone();
    let server = TinyHttp::start(move |path| {
        if !path.starts_with("/api/v1/query?query=") {
            return (404, "{\"status\":\"error\",\"errorType\":\"not_found\",\"error\":\"no such path\"}".into());
        }
        let result = match *v.lock().expect("value") {
            Some(x) => format!(
                "[{{\"metric\":{{\"job\":\"demo\"}},\"value\":[1700000000.123,\"{x}\"]}}]"
            ),
            None => "[]".into(),
        };
        (
            200,
            format!("{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":{result}}}}}"),
        )
    })
    .await;
    (server, value)
}
