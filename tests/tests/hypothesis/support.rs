//! Helpers of the hypothesis tests: a service degraded by the fault itself, the experiment
//! document, `faultctl run`, and the agent's injection counter.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_tests::procs::http_get;
use faultline_tests::stack::{workers_of, Stack, TestService};
use faultline_tests::*;

/// A service that answers 503 while `pid`'s workers run and for `delay` after they are gone
/// (and 200 otherwise, or 503 always when `broken`).
pub struct DegradedService {
    service: Arc<TestService>,
    stop: Arc<AtomicBool>,
}

impl DegradedService {
    pub fn start(agent_pid: u32, delay: Duration, broken: bool) -> DegradedService {
        let service = Arc::new(TestService::start());
        service.set_status(if broken { 503 } else { 200 });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, sp) = (service.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut gone_at: Option<Instant> = None;
            let mut had = false;
            while !sp.load(Ordering::SeqCst) {
                let busy = !workers_of(agent_pid).is_empty();
                if busy {
                    had = true;
                    gone_at = None;
                } else if had && gone_at.is_none() {
                    gone_at = Some(Instant::now());
                }
                let healthy = !broken && !busy && gone_at.is_none_or(|t| t.elapsed() >= delay);
                s.set_status(if healthy { 200 } else { 503 });
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        DegradedService { service, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.service.addr)
    }
}

impl Drop for DegradedService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn doc(name: &str, duration: &str, guards: &str, steady: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {duration}\n  targets:\n    mode: all\n  faults:\n    - {{kind: cpu, load: 20, workers: 1}}\n  guards:\n{guards}  guardInterval: 200ms\n{steady}"
    )
}

pub fn steady(url: &str, within: &str) -> String {
    format!(
        "  steadyState:\n    recoveryWithin: {within}\n    checks:\n      - {{name: checkout-health, http: {{url: '{url}', expectStatus: 200, timeout: 1s}}}}\n"
    )
}

/// `faultctl run -f FILE` as operator: (exit code, stdout + stderr).
pub fn faultctl_run(stack: &Stack, document: &str, extra: &[&str]) -> (i32, String) {
    let file = stack.dir.path().join(format!("run-{}.yaml", free_port()));
    std::fs::write(&file, document).expect("write document");
    let mut args: Vec<String> = vec![
        "--coordinator".into(),
        format!("https://{}", stack.grpc),
        "--certs-dir".into(),
        stack.certs.path().display().to_string(),
        "--identity".into(),
        "operator".into(),
        "run".into(),
        "-f".into(),
        file.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(binary("faultctl"))
        .args(&args)
        .output()
        .expect("run faultctl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The agent's `faultline_agent_fault_injections_total`, summed over its labels.
pub fn injections(stack: &Stack) -> f64 {
    let (code, body) = http_get(stack.agents[0].metrics, "/metrics").expect("agent /metrics");
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| l.starts_with("faultline_agent_fault_injections_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn one_agent(name: &str) -> Stack {
    let mut stack = Stack::start(&[name], Duration::from_secs(5));
    stack.spawn_agent(name, "");
    stack
}
