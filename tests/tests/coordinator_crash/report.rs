//! How the trials report: a line per trial, a summary per kill point, every violation with
//! what repeats it and what was left running, and (FAULTLINE_TRIAL_VERBOSE) the experiment's
//! record as the restarted coordinator has it.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_proto::pb;
use faultline_tests::stack::Stack;

use super::kill::Point;
use super::{invariant, LEASE};

/// One trial, for the summary and the report of a violation.
pub struct Trial {
    pub point: Point,
    pub what: String,
    pub wiped: bool,
    pub down: Duration,
    /// Live workers right before the restart.
    pub workers_at_restart: usize,
    pub obs: invariant::Observation,
    /// For an experiment the restarted coordinator resumed: how many of its faults lasted
    /// through the restart (not reverted by the agent's lease, not failed), of how many.
    pub kept: Option<(usize, usize)>,
}

/// The experiment's log and targets as the coordinator has them (for FAULTLINE_TRIAL_VERBOSE).
pub async fn record(stack: &Stack, name: &str) -> String {
    let mut client = stack.experiments("viewer").await;
    let Ok(e) = client
        .get(pb::GetExperimentRequest { name: name.into() })
        .await
    else {
        return format!("  {name}: unknown to the coordinator");
    };
    let e = e.into_inner();
    let mut out = String::new();
    for l in &e.log {
        out.push_str(&format!("  {name} log {}: {}\n", l.at_unix_ms, l.message));
    }
    for t in &e.targets {
        out.push_str(&format!(
            "  {name} target {} state {} applied {} revert sent {} reverted {} ({}) {}\n",
            t.fault_id,
            t.state,
            t.applied_unix_ms,
            t.revert_sent_unix_ms,
            t.reverted_unix_ms,
            t.revert_reason,
            t.error
        ));
    }
    out
}

pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

pub fn line(i: u64, t: &Trial, bound: Duration) -> String {
    let held = match t.obs.held_after {
        Some(d) => format!("held {} after the restart", ms(d)),
        None => "STILL BROKEN at the end".into(),
    };
    let answered = t.obs.answered_after.map_or("never".into(), ms);
    let outcome = match t.kept {
        Some((k, n)) => format!(
            "resumed, then {} ({k} of {n} faults kept through the restart)",
            t.obs.outcome
        ),
        None => t.obs.outcome.clone(),
    };
    format!(
        "trial {i} [{}] killed {}; store {}; down {}, answering {answered} after the restart; {} worker(s) at the restart; invariant {held} (bound {}), {} checks; trial-{i}: {outcome}",
        t.point.name(),
        t.what,
        if t.wiped { "wiped" } else { "kept" },
        ms(t.down),
        t.workers_at_restart,
        ms(bound),
        t.obs.checks,
    )
}

pub fn violation(seed: u64, i: u64, t: &Trial, stack: &Stack) -> String {
    let mut out = format!(
        "VIOLATION: FAULTLINE_TRIAL_SEED={seed:#x} trial {i}, kill point {}: killed {}; store {}; restarted after {}:\n",
        t.point.name(),
        t.what,
        if t.wiped { "wiped" } else { "kept" },
        ms(t.down)
    );
    let (first, last) = (
        &t.obs.violations[0],
        &t.obs.violations[t.obs.violations.len() - 1],
    );
    out.push_str(&format!(
        "  {} failed checks after the bound, from {} to {} after the restart\n",
        t.obs.violations.len(),
        ms(first.0),
        ms(last.0)
    ));
    for s in &first.1 {
        out.push_str(&format!(
            "  left running: {} worker pid {} of fault {}: {}\n",
            s.agent, s.pid, s.fault, s.why
        ));
        if let Some(a) = stack.agents.iter().find(|a| a.name == s.agent) {
            for l in a.proc.log_text().lines().filter(|l| l.contains(&s.fault)) {
                out.push_str(&format!("    {}: {l}\n", a.name));
            }
        }
    }
    out
}

pub fn summary(trials: &[Trial], bound: Duration) -> String {
    let mut by: BTreeMap<Point, Vec<&Trial>> = BTreeMap::new();
    for t in trials {
        by.entry(t.point).or_default().push(t);
    }
    let mut out = format!(
        "kill point | trials | store wiped | workers at restart | worst restart -> invariant holds (bound {})\n",
        ms(bound)
    );
    for (p, ts) in by {
        let worst = ts
            .iter()
            .map(|t| t.obs.held_after)
            .max_by_key(|h| h.map_or(Duration::MAX, |d| d))
            .flatten();
        out.push_str(&format!(
            "{} | {} | {} | {} | {}\n",
            p.name(),
            ts.len(),
            ts.iter().filter(|t| t.wiped).count(),
            ts.iter().filter(|t| t.workers_at_restart > 0).count(),
            worst.map_or("never".into(), ms)
        ));
    }
    // An agent's last renewal came at most one renew interval (1 s) before the kill, so a
    // coordinator answering within LEASE - 1 s of the kill found every agent inside its lease.
    let in_time = |t: &&Trial| {
        t.obs
            .answered_after
            .is_some_and(|a| t.down + a <= LEASE - Duration::from_secs(1))
    };
    let kept = |ts: &[&Trial]| -> (usize, usize) {
        let k: Vec<(usize, usize)> = ts.iter().filter_map(|t| t.kept).collect();
        (k.iter().map(|k| k.0).sum(), k.iter().map(|k| k.1).sum())
    };
    let resumed: Vec<&Trial> = trials.iter().filter(|t| t.kept.is_some()).collect();
    let n_resumed = resumed.len();
    let (early, late): (Vec<&Trial>, Vec<&Trial>) = resumed.into_iter().partition(in_time);
    let (ke, ne) = kept(&early);
    let (kl, nl) = kept(&late);
    let answered = trials.iter().filter_map(|t| t.obs.answered_after).max();
    out.push_str(&format!(
        "{} experiments resumed after the restart. Faults that lasted through it: {ke} of {ne} when the coordinator answered within {} of the kill (every agent still inside its lease), {kl} of {nl} when it answered later; the others were reverted by their agent's lease or failed. The restarted coordinator answered within {} at worst.",
        n_resumed,
        ms(LEASE - Duration::from_secs(1)),
        answered.map_or("never".into(), ms)
    ));
    out
}
