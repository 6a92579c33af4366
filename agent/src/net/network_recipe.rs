//! The journaled recipe of a `network` fault: where its trees are (netns, interface, sides,
//! IFB device) and which classes apply put it in, all a revert after a restart needs.

use std::path::PathBuf;

use faultline_core::fault::{Direction, FaultKind};
use serde::{Deserialize, Serialize};

use crate::engine::driver::{DriverError, Recipe};
use crate::net::netns;
use crate::net::tc::Side;

fn egress_only() -> Vec<Side> {
    vec![Side::Egress]
}

/// The sides a direction impairs.
pub fn sides(d: Direction) -> Vec<Side> {
    match d {
        Direction::Egress => vec![Side::Egress],
        Direction::Ingress => vec![Side::Ingress],
        Direction::Both => vec![Side::Egress, Side::Ingress],
    }
}

/// The recipe's `data`: where the fault's tree is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecipe {
    pub fault_id: String,
    /// None = the agent's (host) netns.
    pub netns: Option<PathBuf>,
    /// Inode of that netns at plan time: a path that later names another namespace (a
    /// reused PID) is not ours to touch.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    pub interface: String,
    /// Filled by apply: the impaired class (`fa17:2`).
    #[serde(default)]
    pub class: Option<String>,
    /// Filled by apply: Faultline added a clsact qdisc for a legacy steering filter.
    #[serde(default)]
    pub clsact_added: bool,
    /// The trees the fault is a member of (journals from before ingress: egress).
    #[serde(default = "egress_only")]
    pub sides: Vec<Side>,
    /// The IFB device carrying the ingress tree (`flifb<ifindex>`), when `sides` has ingress.
    #[serde(default)]
    pub ifb: Option<String>,
    /// Filled by apply: the impaired class on the IFB.
    #[serde(default)]
    pub ingress_class: Option<String>,
}

impl NetworkRecipe {
    pub(super) fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable network recipe: {e}")))
    }

    pub(super) fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: FaultKind::Network.as_str().to_string(),
            data: serde_json::to_value(self)
                .map_err(|e| DriverError::Other(format!("encoding the recipe: {e}")))?,
        })
    }

    pub(super) fn key(&self, side: Side) -> Key {
        (self.netns.clone(), self.interface.clone(), side)
    }

    /// The device carrying the tree of `side`.
    pub(super) fn dev(&self, side: Side) -> Result<&str, DriverError> {
        match side {
            Side::Egress => Ok(&self.interface),
            Side::Ingress => self.ifb.as_deref().ok_or_else(|| {
                DriverError::Other("the network recipe has ingress but no ifb device".into())
            }),
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "interface {} in {}",
            self.interface,
            netns::describe(self.netns.as_deref())
        )
    }
}

pub(super) type Key = (Option<PathBuf>, String, Side);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_entry_from_before_ingress_reads_as_egress() {
        let old = serde_json::json!({
            "fault_id": "f1",
            "netns": "/run/netns/x",
            "netns_inode": 42,
            "interface": "eth0",
            "class": "fa17:2",
            "clsact_added": false
        });
        let r: NetworkRecipe = serde_json::from_value(old).expect("old recipe");
        assert_eq!(r.sides, vec![Side::Egress]);
        assert_eq!((&r.ifb, &r.ingress_class), (&None, &None));
        assert_eq!(r.dev(Side::Egress).expect("egress dev"), "eth0");
        assert_eq!(
            r.dev(Side::Ingress).expect_err("no ifb").to_string(),
            "the network recipe has ingress but no ifb device"
        );
    }

    #[test]
    fn sides_round_trip_in_lower_case() {
        let r = NetworkRecipe {
            fault_id: "f2".into(),
            netns: None,
            netns_inode: None,
            interface: "va".into(),
            class: None,
            clsact_added: false,
            sides: sides(Direction::Both),
            ifb: Some("flifb2".into()),
            ingress_class: Some("fa17:3".into()),
        };
        let v = serde_json::to_value(&r).expect("encode");
        assert_eq!(v["sides"], serde_json::json!(["egress", "ingress"]));
        assert_eq!(v["ifb"], "flifb2");
        let back: NetworkRecipe = serde_json::from_value(v).expect("decode");
        assert_eq!(back, r);
        assert_eq!(sides(Direction::Ingress), vec![Side::Ingress]);
        assert_eq!(sides(Direction::Egress), vec![Side::Egress]);
    }
}
