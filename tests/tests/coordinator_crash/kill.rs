//! The five points of an experiment's life where a trial SIGKILLs the coordinator, each at a
//! random moment within it.

use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_tests::stack::{worker_faults, Stack};
use faultline_tests::trials::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// While Create (with start) is being served.
    Create,
    /// Right after Create returned, while the ApplyFaults are out.
    Apply,
    /// Every fault applied, anywhere in the rest of the run.
    Running,
    /// Right after Abort returned (its RevertFaults just went out).
    Abort,
    /// While RevertFault acks are outstanding: one agent is stopped (SIGSTOP) before the end
    /// (by Abort or by the deadline), so its acknowledgement cannot come.
    Revert,
}

impl Point {
    pub const ALL: [Point; 5] = [
        Point::Create,
        Point::Apply,
        Point::Running,
        Point::Abort,
        Point::Revert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Point::Create => "create",
            Point::Apply => "apply",
            Point::Running => "running",
            Point::Abort => "abort",
            Point::Revert => "revert",
        }
    }
}

/// The create point's SIGKILL lands this long after Create was sent, at most.
const CREATE_WINDOW: Duration = Duration::from_millis(10);

/// One trial's experiment.
pub struct Experiment<'a> {
    pub name: &'a str,
    pub document: &'a str,
    pub duration: Duration,
    /// Agents x faults.
    pub faults: usize,
}

/// What a kill left behind.
pub struct Killed {
    /// What was going on at the kill.
    pub what: String,
    /// An agent still stopped (revert point): it continues when this is dropped.
    pub frozen: Option<Frozen>,
}

/// Runs `e` up to `point` and SIGKILLs the coordinator at a random moment there.
pub async fn at(point: Point, stack: &mut Stack, rng: &mut Rng, e: &Experiment<'_>) -> Killed {
    if point == Point::Revert {
        return revert(stack, rng, e).await;
    }
    let what = match point {
        Point::Create => create(stack, rng, e).await,
        Point::Apply => {
            let mut client = stack.experiments("operator").await;
            let sent = Instant::now();
            client
                .create(create_request(e))
                .await
                .unwrap_or_else(|s| panic!("Create refused: {s:?}"));
            let took = sent.elapsed();
            let after = rng.between(Duration::ZERO, Duration::from_millis(30));
            tokio::time::sleep(after).await;
            let up = faults_up(stack, e.name);
            kill(stack);
            format!(
                "{} ms after Create returned (it took {} ms), {up} of {} faults' workers up",
                after.as_millis(),
                took.as_millis(),
                e.faults
            )
        }
        Point::Running => {
            let end = started(stack, e).await;
            let left = end.saturating_duration_since(Instant::now() + Duration::from_millis(100));
            let after = rng.between(Duration::ZERO, left);
            tokio::time::sleep(after).await;
            kill(stack);
            format!(
                "every fault up, {} ms before the end",
                end.saturating_duration_since(Instant::now()).as_millis()
            )
        }
        Point::Abort => {
            let end = started(stack, e).await;
            let left = end.saturating_duration_since(Instant::now() + Duration::from_millis(300));
            let mut client = stack.experiments("operator").await;
            tokio::time::sleep(rng.between(Duration::ZERO, left / 2)).await;
            abort(&mut client, e.name).await;
            kill(stack);
            format!(
                "right after Abort returned, {} ms before the end",
                end.saturating_duration_since(Instant::now()).as_millis()
            )
        }
        Point::Revert => unreachable!("handled above"),
    };
    Killed { what, frozen: None }
}

fn create_request(e: &Experiment<'_>) -> pb::CreateExperimentRequest {
    pb::CreateExperimentRequest {
        document: e.document.to_string(),
        dry_run: false,
        start: true,
    }
}

fn kill(stack: &mut Stack) {
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
}

/// Create (with start) on its way, and the SIGKILL up to [`CREATE_WINDOW`] after it was sent.
async fn create(stack: &mut Stack, rng: &mut Rng, e: &Experiment<'_>) -> String {
    let mut client = stack.experiments("operator").await;
    let req = create_request(e);
    let call = tokio::spawn(async move { client.create(req).await.map(|_| ()) });
    let after = rng.between(Duration::ZERO, CREATE_WINDOW);
    tokio::time::sleep(after).await;
    kill(stack);
    let answer = match call.await {
        Ok(Ok(())) => "it had answered".to_string(),
        Ok(Err(s)) => format!("it had not answered: {:?}", s.code()),
        Err(j) => format!("the call panicked: {j}"),
    };
    format!(
        "{} ms after Create was sent ({answer}); {} of {} faults' workers up",
        after.as_millis(),
        faults_up(stack, e.name),
        e.faults
    )
}

/// One agent stopped before the end, so that its acknowledgement of the RevertFault cannot
/// come; it continues right after the kill, or only when the coordinator restarts.
async fn revert(stack: &mut Stack, rng: &mut Rng, e: &Experiment<'_>) -> Killed {
    let end = started(stack, e).await;
    let i = rng.below(stack.agents.len() as u64) as usize;
    let agent = stack.agents[i].name.clone();
    let by_abort = rng.one_in(2);
    let mut operator = stack.experiments("operator").await;
    let mut viewer = stack.experiments("viewer").await;
    let frozen = if by_abort {
        let left = end.saturating_duration_since(Instant::now() + Duration::from_millis(300));
        tokio::time::sleep(rng.between(Duration::ZERO, left / 2)).await;
        let frozen = Frozen::stop(stack.agents[i].proc.pid());
        abort(&mut operator, e.name).await;
        frozen
    } else {
        let before = end.saturating_duration_since(Instant::now() + Duration::from_millis(150));
        tokio::time::sleep(before).await;
        Frozen::stop(stack.agents[i].proc.pid())
    };
    // The coordinator has sent the frozen agent's RevertFaults and waits for the acks.
    let deadline = Instant::now() + Duration::from_secs(3);
    let outstanding = loop {
        let x = viewer
            .get(pb::GetExperimentRequest {
                name: e.name.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("Get {}: {s:?}", e.name))
            .into_inner();
        let mine: Vec<_> = x.targets.iter().filter(|t| t.agent == agent).collect();
        let waiting = mine
            .iter()
            .filter(|t| t.revert_sent_unix_ms > 0 && t.reverted_unix_ms == 0)
            .count();
        if !mine.is_empty() && waiting == mine.len() {
            break waiting;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator did not send {agent} its RevertFaults within 3 s: {:?}",
            x.targets
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    kill(stack);
    let stopped_for = frozen.since.elapsed();
    let pid = stack.agents[i].proc.pid();
    let alive = worker_faults(pid).len();
    let until_restart = rng.one_in(2);
    let what = format!(
        "ended by {}, {outstanding} RevertFault(s) to {agent} unacknowledged ({agent} stopped {} ms before the kill with {alive} worker(s) alive, {})",
        if by_abort { "Abort" } else { "the deadline" },
        stopped_for.as_millis(),
        if until_restart {
            "continued at the restart"
        } else {
            "continued right after it"
        }
    );
    Killed {
        what,
        frozen: until_restart.then_some(frozen),
    }
}

/// Creates and starts `e` and waits until every fault's worker runs; returns its end.
async fn started(stack: &Stack, e: &Experiment<'_>) -> Instant {
    let sent = Instant::now();
    stack.run_experiment(e.document).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while faults_up(stack, e.name) < e.faults {
        assert!(
            Instant::now() < deadline,
            "{}: only {} of {} faults' workers within 10 s",
            e.name,
            faults_up(stack, e.name),
            e.faults
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent + e.duration
}

async fn abort(
    client: &mut pb::experiments_client::ExperimentsClient<tonic::transport::Channel>,
    name: &str,
) {
    client
        .abort(pb::AbortExperimentRequest {
            name: name.to_string(),
            reason: "coordinator crash trial".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("Abort {name}: {s:?}"));
}

/// How many of the experiment's faults have a live worker, over all agents.
pub fn faults_up(stack: &Stack, experiment: &str) -> usize {
    let prefix = format!("{experiment}-");
    let mut ids: Vec<(String, String)> = stack
        .agents
        .iter()
        .flat_map(|a| {
            worker_faults(a.proc.pid())
                .into_iter()
                .filter(|(_, f)| f.starts_with(&prefix))
                .map(|(_, f)| (a.name.clone(), f))
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

/// An agent stopped with SIGSTOP, continued (SIGCONT) when dropped, even by a panic.
pub struct Frozen {
    pid: u32,
    since: Instant,
}

impl Frozen {
    pub fn stop(pid: u32) -> Frozen {
        signal("STOP", pid);
        Frozen {
            pid,
            since: Instant::now(),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("CONT", self.pid);
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}
