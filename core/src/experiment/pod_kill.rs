//! One round of a `pod-kill` with an `interval`: which pods to delete now, re-selected from the
//! cluster as it is under the experiment's mode, blast radius and the policy (protected
//! namespaces, namespace and fleet shares) exactly as [`plan_pods`] selects, with two rules of
//! its own:
//!
//! - A pod that is terminating is never selected (the planner already excludes it), and the
//!   pods this experiment deleted that are still terminating count toward the round's limits
//!   once: `mode fixed 2` with one earlier victim still shutting down deletes one more.
//! - Each round shuffles with its own seed (`<name>#<round>`), so rounds do not keep choosing
//!   the same place in the order.

use std::collections::BTreeSet;

use super::planner::percent_floor;
use super::pod_planner::{plan_pods, PodPlanInput};
use super::pods::PodView;
use super::shuffle::stable_shuffle;
use super::ExperimentSpec;

/// One pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
}

/// What one round decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KillRound {
    /// Sorted by namespace and name.
    pub victims: Vec<Victim>,
    /// Earlier victims of this experiment still terminating (counted toward the limits).
    pub in_flight: usize,
    /// How the number was reached, or why nothing is deleted this round, for people.
    pub selection: String,
}

/// The victims of round `round` (1, 2, ... after the first, which deletes the planned pods).
/// `input.spec` is the experiment; `killed` holds the UIDs this experiment deleted before.
/// `input.pods_under_fault` and `input.under_fault` must leave this experiment out.
pub fn kill_round(input: &PodPlanInput<'_>, round: u32, killed: &BTreeSet<String>) -> KillRound {
    let in_flight: BTreeSet<&str> = input
        .pods
        .iter()
        .filter(|p| p.terminating && killed.contains(&p.uid))
        .map(|p| p.uid.as_str())
        .collect();
    let f = in_flight.len();
    let spec = ExperimentSpec {
        name: format!("{}#{round}", input.spec.name),
        ..input.spec.clone()
    };
    let plan = match plan_pods(&PodPlanInput {
        spec: &spec,
        ..*input
    }) {
        Ok(p) => p,
        Err(refusal) => {
            return KillRound {
                victims: Vec::new(),
                in_flight: f,
                selection: format!("nothing to delete: {refusal}"),
            }
        }
    };
    let mut chosen: Vec<Victim> = Vec::new();
    for t in &plan.targets {
        let c = &t.container;
        if !chosen.iter().any(|v| v.uid == c.pod_uid) {
            chosen.push(Victim {
                namespace: c.pod_namespace.clone(),
                name: c.pod_name.clone(),
                uid: c.pod_uid.clone(),
                node: t.node.clone(),
            });
        }
    }
    // Every eligible pod is either chosen or left out by a limit.
    let eligible = chosen.len()
        + plan
            .excluded
            .iter()
            .filter(|x| {
                use super::pod_planner::PodExclusion as X;
                matches!(
                    x.reason,
                    X::NotChosen(_)
                        | X::OverBlastRadius(_)
                        | X::OverNamespaceShare(_)
                        | X::OverFleetShare(_)
                )
            })
            .count();
    let protected = &input.policy.protected_namespaces;
    let live = input
        .pods
        .iter()
        .filter(|p: &&PodView| p.live() && !protected.contains(&p.namespace))
        .count();
    let mut limits = vec![(
        input.spec.mode.ask(eligible + f),
        format!("mode {} of {} pod(s)", input.spec.mode, eligible + f),
    )];
    if let Some(max) = input.spec.blast_radius.max_targets {
        limits.push((max as usize, format!("blastRadius.maxTargets {max}")));
    }
    if let Some(p) = input.spec.blast_radius.max_percent {
        let n = percent_floor(live + f, p);
        limits.push((
            n,
            format!("blastRadius.maxPercent {p}% of {} = {n}", live + f),
        ));
    }
    let (cap, why) = limits
        .into_iter()
        .min_by_key(|l| l.0)
        .unwrap_or((0, String::new()));
    let budget = cap.saturating_sub(f).min(chosen.len());
    // The planner returns its choice sorted; which of it goes is the round's own draw.
    stable_shuffle(&mut chosen, &spec.name);
    chosen.truncate(budget);
    chosen.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // The planner's reasoning without its own count (`-> N pod(s) selected ...`).
    let reasoning = plan
        .selection
        .rsplit_once(" -> ")
        .map_or(plan.selection.as_str(), |(r, _)| r);
    let selection = if f == 0 {
        format!("{reasoning} -> delete {}", chosen.len())
    } else {
        format!(
            "{reasoning}; {f} pod(s) deleted earlier still terminating count toward {why} -> delete {}",
            chosen.len()
        )
    };
    KillRound {
        victims: chosen,
        in_flight: f,
        selection,
    }
}
