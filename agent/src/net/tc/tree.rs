//! The desired state of Faultline's qdisc tree on one interface, composed from the network
//! faults applied there (pure). Faults with the same traffic match share one impaired class
//! whose netem/tbf leaves carry all their settings together (delay from one fault, loss from
//! another, rate from a third); faults with different matches get classes of their own.
//! Two faults may not set the same setting for the same traffic: that is refused, naming both.

use std::time::SystemTime;

use faultline_core::fault::{Netem, Tbf, TrafficMatch};

use super::encode::TbfOpts;
use super::{FIRST_MINOR, LAST_MINOR};

/// Bytes of burst a derived tbf bucket holds at least.
pub const MIN_TBF_BURST: u64 = 16 * 1024;
/// A derived tbf queue holds this much traffic beyond the burst (tc's `latency 50ms`).
pub const TBF_QUEUE_MS: u64 = 50;

/// One network fault placed on the interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub fault_id: String,
    pub matcher: TrafficMatch,
    pub netem: Option<Netem>,
    pub tbf: Option<Tbf>,
    pub deadline: SystemTime,
}

/// One impaired class (`fa17:minor`) and the faults it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairedClass {
    pub minor: u16,
    pub matcher: TrafficMatch,
    pub members: Vec<Member>,
}

/// The impaired classes of an interface; empty = no Faultline tree at all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub classes: Vec<ImpairedClass>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompositionError {
    #[error("fault {fault} sets {setting} for the same traffic as fault {other}, already applied on interface {interface}; one class cannot carry two {setting} settings: put them in one fault or give them different matches")]
    Conflict {
        fault: String,
        other: String,
        setting: &'static str,
        interface: String,
    },
    #[error("interface {interface} already has {max} impaired classes (one per distinct match), the most Faultline supports")]
    Full { interface: String, max: usize },
}

/// The same match with its lists sorted, so equal matches compare equal.
pub fn normalized(m: &TrafficMatch) -> TrafficMatch {
    let mut n = m.clone();
    n.ports.sort_unstable();
    n.ports.dedup();
    for list in [&mut n.destinations, &mut n.sources] {
        list.sort_by_key(|c| (c.addr, c.prefix));
        list.dedup();
    }
    n
}

/// The settings of a netem that a fault "owns", by name.
fn netem_settings(n: &Netem) -> Vec<&'static str> {
    let mut s = Vec::new();
    if n.delay_us > 0 {
        s.push("delay");
    }
    if n.loss_pct > 0.0 {
        s.push("loss");
    }
    if n.duplicate_pct > 0.0 {
        s.push("duplicate");
    }
    if n.corrupt_pct > 0.0 {
        s.push("corrupt");
    }
    if n.rate_bps > 0 {
        s.push("netemRate");
    }
    s
}

fn settings(m: &Member) -> Vec<&'static str> {
    let mut s = m.netem.as_ref().map(netem_settings).unwrap_or_default();
    if m.tbf.is_some() {
        s.push("rate");
    }
    s
}

/// Copies the settings `from` owns into `into` (delay brings jitter, correlation,
/// distribution and reorder with it; loss its correlation).
fn merge_netem(into: &mut Netem, from: &Netem) {
    if from.delay_us > 0 {
        into.delay_us = from.delay_us;
        into.jitter_us = from.jitter_us;
        into.correlation_pct = from.correlation_pct;
        into.distribution = from.distribution;
        into.reorder_pct = from.reorder_pct;
        into.reorder_gap = from.reorder_gap;
    }
    if from.loss_pct > 0.0 {
        into.loss_pct = from.loss_pct;
        into.loss_correlation_pct = from.loss_correlation_pct;
    }
    if from.duplicate_pct > 0.0 {
        into.duplicate_pct = from.duplicate_pct;
    }
    if from.corrupt_pct > 0.0 {
        into.corrupt_pct = from.corrupt_pct;
    }
    if from.rate_bps > 0 {
        into.rate_bps = from.rate_bps;
    }
}

/// tbf parameters with the agent's defaults: burst = 10 ms of traffic (at least 16 KiB),
/// limit = burst + 50 ms of traffic.
pub fn tbf_options(t: &Tbf) -> TbfOpts {
    let rate = (t.rate_bps / 8).max(1);
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let burst = if t.burst_bytes > 0 {
        t.burst_bytes
    } else {
        (rate / 100).max(MIN_TBF_BURST)
    };
    let limit = if t.limit_bytes > 0 {
        t.limit_bytes
    } else {
        burst.saturating_add(rate.saturating_mul(TBF_QUEUE_MS) / 1000)
    };
    TbfOpts {
        rate,
        burst: clamp(burst),
        limit: clamp(limit),
    }
}

impl ImpairedClass {
    /// The class's netem settings, all members together (`None` when none sets any).
    pub fn netem(&self) -> Option<Netem> {
        let mut out = Netem::default();
        let mut any = false;
        for n in self.members.iter().filter_map(|m| m.netem.as_ref()) {
            if !netem_settings(n).is_empty() {
                merge_netem(&mut out, n);
                any = true;
            }
        }
        any.then_some(out)
    }

    pub fn tbf(&self) -> Option<TbfOpts> {
        self.members
            .iter()
            .find_map(|m| m.tbf.as_ref())
            .map(tbf_options)
    }

    /// When the class must stop steering: the latest deadline of its faults.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.members.iter().map(|m| m.deadline).max()
    }

    pub fn fault_ids(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.fault_id.as_str()).collect()
    }
}

impl Tree {
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The class carrying `fault_id`.
    pub fn class_of(&self, fault_id: &str) -> Option<&ImpairedClass> {
        self.classes
            .iter()
            .find(|c| c.members.iter().any(|m| m.fault_id == fault_id))
    }

    /// The tree with `m` added (or replaced, when a fault of that id is already there): it
    /// joins the class of the same match, else opens one at the lowest free minor.
    pub fn with(&self, m: &Member, interface: &str) -> Result<Tree, CompositionError> {
        let mut tree = self.without(&m.fault_id);
        let matcher = normalized(&m.matcher);
        let member = Member {
            matcher: matcher.clone(),
            ..m.clone()
        };
        if let Some(class) = tree.classes.iter_mut().find(|c| c.matcher == matcher) {
            let mine = settings(&member);
            for other in &class.members {
                if let Some(setting) = settings(other).into_iter().find(|s| mine.contains(s)) {
                    return Err(CompositionError::Conflict {
                        fault: m.fault_id.clone(),
                        other: other.fault_id.clone(),
                        setting,
                        interface: interface.to_string(),
                    });
                }
            }
            class.members.push(member);
            return Ok(tree);
        }
        let minor = (FIRST_MINOR..=LAST_MINOR)
            .find(|n| tree.classes.iter().all(|c| c.minor != *n))
            .ok_or_else(|| CompositionError::Full {
                interface: interface.to_string(),
                max: usize::from(LAST_MINOR - FIRST_MINOR + 1),
            })?;
        tree.classes.push(ImpairedClass {
            minor,
            matcher,
            members: vec![member],
        });
        tree.classes.sort_by_key(|c| c.minor);
        Ok(tree)
    }

    /// The tree without `fault_id` (a class left with no fault goes away).
    pub fn without(&self, fault_id: &str) -> Tree {
        let mut tree = self.clone();
        for c in &mut tree.classes {
            c.members.retain(|m| m.fault_id != fault_id);
        }
        tree.classes.retain(|c| !c.members.is_empty());
        tree
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
