//! The experiment lifecycle and the deterministic ids of the faults it dispatches.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an experiment is in its life:
/// `pending -> running -> completed | aborted | failed`, and `interrupted` for one that was
/// running when its coordinator stopped without reverting it (its agents revert on lease lapse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Running,
    Completed,
    Aborted,
    Failed,
    Interrupted,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Running,
        Phase::Completed,
        Phase::Aborted,
        Phase::Failed,
        Phase::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Completed => "completed",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
            Phase::Interrupted => "interrupted",
        }
    }

    /// Nothing happens to an experiment in a terminal phase any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }

    /// The transitions the lifecycle allows.
    pub fn can_become(self, next: Phase) -> bool {
        matches!(
            (self, next),
            (Phase::Pending, Phase::Running)
                | (Phase::Pending, Phase::Aborted)
                | (Phase::Pending, Phase::Failed)
                | (Phase::Running, Phase::Completed)
                | (Phase::Running, Phase::Aborted)
                | (Phase::Running, Phase::Failed)
                | (Phase::Running, Phase::Interrupted)
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("experiment_phase_").unwrap_or(&s);
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a phase; use pending, running, completed, aborted, failed or interrupted")
            })
    }
}

/// Most characters of a fault id (agents name kernel artifacts after it).
pub const MAX_FAULT_ID: usize = 64;

/// FNV-1a, 64 bits: a stable hash for ids and seeds (not for security).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate the parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of fault number `index` of `experiment` on `agent`: `<experiment>-<agent>-<index>`
/// when that is at most 64 characters of `[a-z0-9-]`; otherwise a shortened, sanitised form
/// with a hash of the full triple, so ids stay unique, deterministic and valid as artifact names.
pub fn fault_id(experiment: &str, agent: &str, index: usize) -> String {
    let plain = format!("{experiment}-{agent}-{index}");
    let valid = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if plain.len() <= MAX_FAULT_ID && valid(&plain) {
        return plain;
    }
    let hash = fnv1a(&[
        experiment.as_bytes(),
        agent.as_bytes(),
        index.to_string().as_bytes(),
    ]);
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let suffix = format!("-{index}-{:08x}", hash as u32);
    let room = MAX_FAULT_ID - suffix.len() - 1;
    let e: String = clean(experiment).chars().take(room / 2).collect();
    let a: String = clean(agent).chars().take(room - e.len()).collect();
    let id = format!(
        "{}-{}{suffix}",
        e.trim_end_matches('-'),
        a.trim_matches('-')
    );
    id.chars().take(MAX_FAULT_ID).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_transitions() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
        assert_eq!(
            "EXPERIMENT_PHASE_RUNNING".parse::<Phase>(),
            Ok(Phase::Running)
        );
        assert!("done".parse::<Phase>().is_err());
        assert!(Phase::Pending.can_become(Phase::Running));
        assert!(Phase::Running.can_become(Phase::Interrupted));
        assert!(!Phase::Completed.can_become(Phase::Running));
        assert!(!Phase::Pending.can_become(Phase::Completed));
        assert!(Phase::Aborted.is_terminal() && !Phase::Running.is_terminal());
    }

    #[test]
    fn fault_ids_are_deterministic_short_and_valid() {
        assert_eq!(
            fault_id("checkout-loss", "node-a", 1),
            "checkout-loss-node-a-1"
        );
        assert_eq!(fault_id("x", "node-a", 0), fault_id("x", "node-a", 0));
        let dotted = fault_id("x", "ip-10-0-0-1.ec2.internal", 0);
        assert!(
            dotted.starts_with("x-ip-10-0-0-1-ec2-internal-0-"),
            "{dotted}"
        );
        // Dots and dashes would collide without the hash.
        assert_ne!(fault_id("x", "a.b", 0), fault_id("x", "a-b", 0));
        let long = fault_id(&"e".repeat(63), &"n".repeat(253), 15);
        assert!(long.len() <= MAX_FAULT_ID, "{long}");
        assert_ne!(long, fault_id(&"e".repeat(63), &"n".repeat(252), 15));
        for id in [dotted, long, fault_id("a", "B_C", 3)] {
            assert!(id.len() <= 64);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id}"
            );
        }
    }
}
