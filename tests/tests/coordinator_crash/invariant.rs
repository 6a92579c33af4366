//! The invariant of the lease contract, checked the way a user would: every live stress worker
//! of every agent belongs to a fault that the coordinator reports as part of an experiment in
//! phase `running`, with that target not settled. So when no experiment runs, no worker exists.
//!
//! One check reads the workers from /proc, then the coordinator's `List`, then the workers
//! again; a worker counts only when it is in both reads (it ran before and after the
//! coordinator answered). A worker whose RevertFault the restarted coordinator sent less than
//! [`REVERT_GRACE_MS`] ago is a revert in flight, not a stray: that is the normal end of an
//! experiment, which the contract does not promise to be instant.

use std::time::{Duration, Instant};

use faultline_identity::tls;
use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::stack::{worker_faults, Stack};
use faultline_tests::{now_unix_ms, url};
use tonic::transport::Channel;

type Client = pb::experiments_client::ExperimentsClient<Channel>;

/// How long a worker may outlive the RevertFault that the restarted coordinator sent for it.
pub const REVERT_GRACE_MS: i64 = 1000;
/// Time between two checks.
const EVERY: Duration = Duration::from_millis(40);

/// A worker that runs although no running experiment wants it.
#[derive(Debug, Clone)]
pub struct Stray {
    pub agent: String,
    pub pid: u32,
    pub fault: String,
    /// What the coordinator said about the fault.
    pub why: String,
}

/// What one trial's observation saw, from the restart on.
#[derive(Debug)]
pub struct Observation {
    /// From the restart to the first check of the final stretch in which every check held;
    /// `None` when the last check still failed.
    pub held_after: Option<Duration>,
    /// Failed checks later than the bound: (time since the restart, the strays).
    pub violations: Vec<(Duration, Vec<Stray>)>,
    pub checks: usize,
    /// From the restart to the coordinator's first answer.
    pub answered_after: Option<Duration>,
    /// The phase of the trial's experiment at the end ("unknown" when the coordinator's store
    /// was wiped and it never heard of it).
    pub outcome: String,
}

/// Watches one restarted coordinator and the stack's agents.
struct Watcher {
    client: Option<Client>,
    restart_unix_ms: i64,
}

struct Check {
    strays: Vec<Stray>,
    workers: usize,
    /// The coordinator's experiments; `None` while it does not answer.
    view: Option<Vec<pb::Experiment>>,
}

/// Checks the invariant every 40 ms from `restart` on, until the bound plus a little has
/// passed and nothing runs any more (no worker, no running experiment), or until `limit`
/// (then that it is still not quiet is a violation too).
pub async fn observe(
    stack: &Stack,
    experiment: &str,
    restart: Instant,
    restart_unix_ms: i64,
    bound: Duration,
    limit: Duration,
) -> Observation {
    let mut w = Watcher {
        client: None,
        restart_unix_ms,
    };
    let mut obs = Observation {
        held_after: None,
        violations: Vec::new(),
        checks: 0,
        answered_after: None,
        outcome: "unknown".into(),
    };
    let mut holds_since: Option<Duration> = None;
    loop {
        let at = restart.elapsed();
        let c = w.check(stack).await;
        obs.checks += 1;
        if c.view.is_some() && obs.answered_after.is_none() {
            obs.answered_after = Some(restart.elapsed());
        }
        if c.strays.is_empty() {
            holds_since.get_or_insert(at);
        } else {
            holds_since = None;
            if at > bound {
                obs.violations.push((at, c.strays.clone()));
            }
        }
        if let Some(e) = c.view.iter().flatten().find(|e| e.name == experiment) {
            obs.outcome = describe(e);
        }
        let quiet = c.workers == 0
            && c.view
                .as_ref()
                .is_some_and(|v| v.iter().all(|e| e.phase != Phase::Running as i32));
        if quiet && at >= bound + EVERY * 5 {
            break;
        }
        if at >= limit {
            obs.violations.push((
                at,
                vec![Stray {
                    agent: "-".into(),
                    pid: 0,
                    fault: "-".into(),
                    why: format!(
                        "still not quiet {limit:?} after the restart: {} worker(s), coordinator {}",
                        c.workers,
                        if c.view.is_some() {
                            "answering"
                        } else {
                            "not answering"
                        }
                    ),
                }],
            ));
            break;
        }
        tokio::time::sleep(EVERY).await;
    }
    obs.held_after = holds_since;
    obs
}

fn describe(e: &pb::Experiment) -> String {
    let phase = Phase::try_from(e.phase).unwrap_or(Phase::Unspecified);
    format!("{phase:?}").to_lowercase()
}

/// Every live worker of the stack's agents: (agent, pid, fault id).
pub fn workers(stack: &Stack) -> Vec<(String, u32, String)> {
    stack
        .agents
        .iter()
        .flat_map(|a| {
            worker_faults(a.proc.pid())
                .into_iter()
                .map(|(pid, fault)| (a.name.clone(), pid, fault))
        })
        .collect()
}

impl Watcher {
    async fn check(&mut self, stack: &Stack) -> Check {
        let before = workers(stack);
        let view = self.view(stack).await;
        let after = workers(stack);
        let now = now_unix_ms();
        let strays = before
            .iter()
            .filter(|w| after.contains(w))
            .filter_map(|(agent, pid, fault)| {
                let why = why_stray(view.as_deref(), agent, fault, self.restart_unix_ms, now)?;
                Some(Stray {
                    agent: agent.clone(),
                    pid: *pid,
                    fault: fault.clone(),
                    why,
                })
            })
            .collect();
        Check {
            strays,
            workers: after.len(),
            view,
        }
    }

    /// The coordinator's experiments, or `None` while it does not answer.
    async fn view(&mut self, stack: &Stack) -> Option<Vec<pb::Experiment>> {
        if self.client.is_none() {
            let paths = stack.certs.paths("viewer");
            let channel = tls::connect(&url(stack.grpc), &paths, Duration::from_millis(500))
                .await
                .ok()?;
            self.client = Some(Client::new(channel));
        }
        let client = self.client.as_mut()?;
        let list = client.list(pb::ListExperimentsRequest {
            phase: String::new(),
        });
        match tokio::time::timeout(Duration::from_secs(2), list).await {
            Ok(Ok(r)) => Some(r.into_inner().experiments),
            _ => {
                self.client = None;
                None
            }
        }
    }
}

/// Why the worker of `fault` on `agent` runs without a vouch; `None` when a running experiment
/// wants it, or when the restarted coordinator's RevertFault for it is in flight.
pub fn why_stray(
    view: Option<&[pb::Experiment]>,
    agent: &str,
    fault: &str,
    restart_unix_ms: i64,
    now_unix_ms: i64,
) -> Option<String> {
    let Some(view) = view else {
        return Some("the coordinator does not answer (yet)".into());
    };
    let mut why = "no experiment of the coordinator has it".to_string();
    for e in view {
        for t in e
            .targets
            .iter()
            .filter(|t| t.agent == agent && t.fault_id == fault)
        {
            let settled = t.reverted_unix_ms > 0 || t.state == pb::FaultState::Failed as i32;
            if e.phase == Phase::Running as i32 && !settled {
                return None;
            }
            let sent = t.revert_sent_unix_ms;
            if sent >= restart_unix_ms && now_unix_ms - sent <= REVERT_GRACE_MS {
                return None;
            }
            let phase = Phase::try_from(e.phase).unwrap_or(Phase::Unspecified);
            let state = pb::FaultState::try_from(t.state).unwrap_or(pb::FaultState::Unspecified);
            why = format!(
                "experiment {} is {phase:?}; the target is {state:?} (applied at {}, revert sent at {}, reverted at {}){}",
                e.name,
                t.applied_unix_ms,
                sent,
                t.reverted_unix_ms,
                if t.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.error)
                }
            );
        }
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(phase: Phase, target: pb::TargetResult) -> pb::Experiment {
        pb::Experiment {
            name: "e".into(),
            phase: phase as i32,
            targets: vec![target],
            ..Default::default()
        }
    }

    fn target(state: pb::FaultState, revert_sent: i64, reverted: i64) -> pb::TargetResult {
        pb::TargetResult {
            agent: "a".into(),
            fault_id: "e-a-0".into(),
            state: state as i32,
            revert_sent_unix_ms: revert_sent,
            reverted_unix_ms: reverted,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_running_experiment_with_the_target_unsettled_vouches() {
        use pb::FaultState::{Applied, Failed, Reverted};
        let (restart, now) = (10_000, 20_000);
        let stray = |view: &[pb::Experiment]| why_stray(Some(view), "a", "e-a-0", restart, now);
        assert_eq!(
            stray(&[experiment(Phase::Running, target(Applied, 0, 0))]),
            None
        );
        assert!(
            why_stray(None, "a", "e-a-0", restart, now).is_some(),
            "no answer"
        );
        assert!(stray(&[]).is_some_and(|w| w.contains("no experiment")));
        let other_agent = pb::TargetResult {
            agent: "b".into(),
            ..target(Applied, 0, 0)
        };
        assert!(stray(&[experiment(Phase::Running, other_agent)]).is_some());
        assert!(stray(&[experiment(Phase::Running, target(Failed, 0, 0))]).is_some());
        assert!(stray(&[experiment(Phase::Running, target(Reverted, 0, 15_000))]).is_some());
        assert!(
            stray(&[experiment(Phase::Interrupted, target(Applied, 0, 0))])
                .is_some_and(|w| w.contains("Interrupted"))
        );
        // A RevertFault the restarted coordinator sent under a second ago is in flight...
        assert_eq!(
            stray(&[experiment(Phase::Completed, target(Applied, now - 500, 0))]),
            None
        );
        // ...one sent longer ago, or by the coordinator before the restart, is not.
        assert!(stray(&[experiment(Phase::Completed, target(Applied, now - 1500, 0))]).is_some());
        assert!(stray(&[experiment(Phase::Aborted, target(Applied, restart - 1, 0))]).is_some());
    }
}
