//! Network faults on this node: the netns thread, the shared traffic-match rules, the eBPF
//! `drop`/`partition` driver, the kernel side of the lease ([`KernelLease`], in `crate::lease`) bounds every deadline (qdisc
//! faults live in `tc` and `network`), and the agent's own control channel, which no fault
//! ever matches (`control`).
//!
//! Kernel-enforced expiry: eBPF links are never pinned, so the kernel detaches them when the
//! agent process exits; each program's map also holds a deadline (the fault's, cut to the
//! session lease by [`KernelLease::renew`]) past which it leaves every packet alone.

mod attach;
pub mod control;
pub mod drop;
pub mod ebpf;
pub mod keep;
pub mod netns;
pub mod network;
mod plan;
pub mod rules;
pub mod tc;
pub mod warm;
// dns (issue 13)
pub mod dns;
mod dns_plan;
pub mod dns_rules;

use std::sync::{Arc, Weak};

use crate::engine::driver::Driver;
use crate::host::HostConfig;
pub use crate::lease::{KernelLease, Renewable};

pub use control::ControlChannel;
pub use rules::ProtectedTraffic;

/// What the network drivers need from the agent config.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// `/proc` and cgroup mounts, and what may never be targeted (target resolution).
    pub host: HostConfig,
    /// Never impaired unless a spec says `include_protected`: the coordinator's addresses
    /// ([`ProtectedTraffic::for_coordinator`]); SSH (port 22) always.
    pub protected: ProtectedTraffic,
    /// Renewed with the session lease; bounds every kernel-side deadline.
    pub lease: KernelLease,
    /// The agent's session connections: never matched by any program, whatever the spec.
    pub control: ControlChannel,
    /// Names the agent itself resolves (the coordinator's host name): a `dns` fault matching
    /// one is refused.
    pub protected_names: Vec<String>,
}

/// The eBPF network drivers (`drop`, `partition`; `dns`), subscribed to `cfg.lease` and
/// `cfg.control`.
pub fn drivers(cfg: &NetConfig) -> Vec<Arc<dyn Driver>> {
    drop::describe_metrics();
    let d = Arc::new(drop::DropDriver::new(cfg));
    let weak: Weak<drop::DropDriver> = Arc::downgrade(&d);
    cfg.lease.subscribe(weak.clone());
    cfg.control.subscribe(weak);
    // dns (issue 13)
    dns::describe_metrics();
    let dns = Arc::new(dns::DnsDriver::new(cfg));
    let weak: Weak<dns::DnsDriver> = Arc::downgrade(&dns);
    cfg.lease.subscribe(weak);
    vec![d, dns]
}
