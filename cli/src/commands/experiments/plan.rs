//! The plan as text: the selected agents, or pods with their node, the faults each gets, and
//! the excluded ones with the reason.

use faultline_proto::pb;

use super::render::indent;
use crate::faults;
use crate::table::Table;
use crate::targets::{self, Kind};

/// The plan: selected targets, the faults each gets, and the excluded ones with the reason.
pub fn plan(p: &pb::Plan) -> String {
    let kind = targets::plan_kind(p);
    let mut out = String::new();
    out.push_str(&format!(
        "Selected {} ({}):\n",
        kind.plural(),
        p.selected.len()
    ));
    if p.selected.is_empty() {
        out.push_str("  (none)\n");
    } else if kind.is_pods() {
        out.push_str(&indent(&selected_pods(p)));
    } else {
        let mut t = Table::new(&["AGENT", "DETAIL"]);
        for s in &p.selected {
            t.row([s.agent.as_str(), s.description.as_str()]);
        }
        out.push_str(&indent(&t.render()));
    }
    if !p.selection.is_empty() {
        out.push_str(&format!("Selection: {}\n", p.selection));
    }
    out.push_str(&format!(
        "Faults on each selected {} ({}):\n",
        kind.noun(),
        p.faults.len()
    ));
    for (i, f) in p.faults.iter().enumerate() {
        out.push_str(&format!("  {}. {}", i + 1, faults::describe(f)));
        // Per-fault timing: a fault that ends before the experiment says when.
        match p.fault_duration_ms.get(i) {
            Some(&ms) if ms > 0 => out.push_str(&format!(
                " (for its own {}, then reverted while the others go on)\n",
                crate::format::duration_ms(ms)
            )),
            _ => out.push('\n'),
        }
    }
    // Excluded pods are whole pods, even when the faults aim at containers.
    let excluded = if kind.is_pods() { Kind::Pods } else { kind };
    out.push_str(&format!(
        "Excluded {} ({}):\n",
        excluded.plural(),
        p.excluded.len()
    ));
    if p.excluded.is_empty() {
        out.push_str("  (none)\n");
    } else if kind.is_pods() {
        let mut t = Table::new(&["POD", "NODE", "REASON"]);
        for x in &p.excluded {
            t.row([targets::excluded_pod(x), x.agent.clone(), x.reason.clone()]);
        }
        out.push_str(&indent(&t.render()));
    } else {
        let mut t = Table::new(&["AGENT", "REASON", "DETAIL"]);
        for x in &p.excluded {
            t.row([x.agent.as_str(), x.reason.as_str(), x.description.as_str()]);
        }
        out.push_str(&indent(&t.render()));
    }
    out
}

/// One row per selected pod (or container): the pod, its node, the container.
fn selected_pods(p: &pb::Plan) -> String {
    let mut t = Table::new(&["POD", "NODE", "CONTAINER"]);
    for s in &p.selected {
        match targets::container(s.target.as_ref()) {
            Some(c) => t.row([
                targets::pod_name(c),
                s.agent.clone(),
                targets::container_label(c),
            ]),
            // A coordinator that did not send the target: its description names the pod.
            None => t.row([s.description.clone(), s.agent.clone(), "-".to_string()]),
        }
    }
    t.render()
}
