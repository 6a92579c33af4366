//! Faultline's qdisc tree on an interface, over rtnetlink: `TCA_OPTIONS` encoders ([`encode`],
//! [`dist`]), the rtnetlink port ([`qdisc`]), the desired-state tree ([`tree`], [`sync`]) and
//! the TCX program that steers matching packets into impaired classes ([`steer`]); ingress
//! trees live on an IFB device ([`ifb`]).
//!
//! Handles (all reserved for Faultline; a sweep recognises the tree by its root handle):
//! - `fa17:` the HTB root, replacing the interface's kernel-default root qdisc;
//! - `fa17:1` the default class: unimpaired, 100 Gbit/s, where every packet goes unless steered;
//! - `fa17:N` (N = 2..=255) one impaired class per distinct traffic match;
//! - `fbNN:` the netem leaf of class N (NN = N in hex), `fcNN:` its tbf (a child of the netem,
//!   `fbNN:1`, or the class's only leaf).

pub mod dist;
pub mod encode;
pub mod iface;
pub mod ifb;
pub mod orphans;
pub mod qdisc;
pub mod steer;
pub mod sync;
pub mod tree;

/// Which packets of an interface a tree impairs: those it sends (the tree is on the interface)
/// or those it receives (the tree is on the interface's IFB device, [`ifb::name`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Egress,
    Ingress,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Egress => "egress",
            Side::Ingress => "ingress",
        }
    }
}

/// Major of the Faultline HTB root handle.
pub const ROOT_MAJOR: u16 = 0xfa17;
/// `fa17:0`.
pub const ROOT_HANDLE: u32 = (ROOT_MAJOR as u32) << 16;
/// Minor of the unimpaired default class.
pub const DEFAULT_MINOR: u16 = 1;
/// Minors of impaired classes.
pub const FIRST_MINOR: u16 = 2;
pub const LAST_MINOR: u16 = 0xff;
/// Majors of the netem and tbf leaves are these plus the class minor.
pub const NETEM_MAJOR_BASE: u16 = 0xfb00;
pub const TBF_MAJOR_BASE: u16 = 0xfc00;

/// Rate and ceil of every class (bytes per second: 100 Gbit/s). Classes never limit traffic
/// themselves; the leaves do.
pub const CLASS_RATE: u64 = 12_500_000_000;
/// Burst of every class, so a class never throttles below its rate (bytes).
pub const CLASS_BURST: u32 = 1_000_000;
/// DRR quantum of every class (the kernel's cap for computed quanta, set explicitly so it does
/// not warn).
pub const CLASS_QUANTUM: u32 = 200_000;
/// Queue length of every netem leaf, in packets (tc's default is 1,000, which starts dropping
/// at 10,000 packets per second under a 100 ms delay).
pub const NETEM_LIMIT: u32 = 10_000;

/// `fa17:minor`.
pub fn classid(minor: u16) -> u32 {
    ROOT_HANDLE | u32::from(minor)
}

/// The handle of the netem leaf of class `minor` (`fbNN:`).
pub fn netem_handle(minor: u16) -> u32 {
    u32::from(NETEM_MAJOR_BASE + minor) << 16
}

/// The handle of the tbf leaf of class `minor` (`fcNN:`).
pub fn tbf_handle(minor: u16) -> u32 {
    u32::from(TBF_MAJOR_BASE + minor) << 16
}

/// Whether `handle` is one of Faultline's leaves.
pub fn is_leaf_handle(handle: u32) -> bool {
    let major = (handle >> 16) as u16;
    (NETEM_MAJOR_BASE + FIRST_MINOR..=NETEM_MAJOR_BASE + LAST_MINOR).contains(&major)
        || (TBF_MAJOR_BASE + FIRST_MINOR..=TBF_MAJOR_BASE + LAST_MINOR).contains(&major)
}

/// The htb parameters of every Faultline class.
pub fn class_options() -> encode::HtbClass {
    encode::HtbClass {
        rate: CLASS_RATE,
        ceil: CLASS_RATE,
        burst: CLASS_BURST,
        cburst: CLASS_BURST,
        quantum: CLASS_QUANTUM,
        prio: 0,
    }
}
