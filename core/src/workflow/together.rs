//! Parallel steps are planned together: each experiment is planned as if alone, then the
//! combined selection must fit the coordinator's policy (fleet share under fault, concurrent
//! experiments) and each member's own blast radius; otherwise none of them starts.

use std::collections::BTreeSet;

use crate::experiment::BlastRadius;

/// One experiment of a parallel step, as planned alone.
#[derive(Debug, Clone)]
pub struct Member {
    pub step: String,
    /// The agents its plan selected.
    pub agents: BTreeSet<String>,
    pub blast_radius: BlastRadius,
}

/// The fleet and policy the members are checked against.
#[derive(Debug, Clone)]
pub struct Room<'a> {
    pub connected: usize,
    /// Agents already under fault by other runs.
    pub under_fault: &'a BTreeSet<String>,
    pub running_experiments: u32,
    pub max_concurrent_experiments: u32,
    pub max_fleet_percent_under_fault: f64,
}

fn percent_floor(n: usize, pct: f64) -> usize {
    ((n as f64) * pct / 100.0 + 1e-9).floor().max(0.0) as usize
}

/// Why the members may not run together, or `Ok`.
pub fn check(parent: &str, members: &[Member], room: &Room<'_>) -> Result<(), String> {
    let n = members.len() as u32;
    if room.running_experiments + n > room.max_concurrent_experiments {
        return Err(format!(
            "parallel step {parent}: its {n} experiments with the {} running would exceed \
             policy.max_concurrent_experiments {}",
            room.running_experiments, room.max_concurrent_experiments
        ));
    }
    let combined: BTreeSet<&String> = members.iter().flat_map(|m| m.agents.iter()).collect();
    let mut busy: BTreeSet<&String> = room.under_fault.iter().collect();
    busy.extend(combined.iter().copied());
    let share = percent_floor(room.connected, room.max_fleet_percent_under_fault);
    if busy.len() > share {
        return Err(format!(
            "parallel step {parent}: together its steps select {} agent(s); with {} already \
             under fault that is {} of {} connected, more than \
             policy.max_fleet_percent_under_fault {}% allows ({share})",
            combined.len(),
            room.under_fault.len(),
            busy.len(),
            room.connected,
            room.max_fleet_percent_under_fault
        ));
    }
    for m in members {
        if let Some(max) = m.blast_radius.max_targets {
            if combined.len() > max as usize {
                return Err(format!(
                    "parallel step {parent}: together its steps select {} agent(s), more than \
                     step {}'s blastRadius.maxTargets {max}",
                    combined.len(),
                    m.step
                ));
            }
        }
        if let Some(p) = m.blast_radius.max_percent {
            let allowed = percent_floor(room.connected, p);
            if combined.len() > allowed {
                return Err(format!(
                    "parallel step {parent}: together its steps select {} agent(s), more than \
                     step {}'s blastRadius.maxPercent {p}% of {} connected ({allowed})",
                    combined.len(),
                    m.step,
                    room.connected
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(step: &str, agents: &[&str], max_targets: Option<u32>) -> Member {
        Member {
            step: step.into(),
            agents: agents.iter().map(|a| a.to_string()).collect(),
            blast_radius: BlastRadius {
                max_targets,
                max_percent: None,
            },
        }
    }

    #[test]
    fn the_combined_selection_must_fit() {
        let none = BTreeSet::new();
        let room = Room {
            connected: 4,
            under_fault: &none,
            running_experiments: 0,
            max_concurrent_experiments: 8,
            max_fleet_percent_under_fault: 50.0,
        };
        let a = member("a", &["n1"], None);
        let b = member("b", &["n2"], None);
        assert_eq!(check("p", &[a.clone(), b.clone()], &room), Ok(()));
        // Each fits alone; together 3 of 4 is over 50%.
        let c = member("c", &["n3"], None);
        let e = check("p", &[a.clone(), b.clone(), c], &room).expect_err("share");
        assert!(
            e.contains(
                "3 of 4 connected, more than policy.max_fleet_percent_under_fault 50% allows (2)"
            ),
            "{e}"
        );
        // b's own blast radius is one agent: together they select two.
        let b1 = member("b", &["n2"], Some(1));
        let e = check("p", &[a.clone(), b1], &room).expect_err("blast");
        assert!(
            e.contains("more than step b's blastRadius.maxTargets 1"),
            "{e}"
        );
        // Concurrency.
        let busy = Room {
            running_experiments: 7,
            ..room
        };
        let e = check("p", &[a, b], &busy).expect_err("concurrent");
        assert!(e.contains("policy.max_concurrent_experiments 8"), "{e}");
    }
}
