//! Network faults on this node: the netns thread, the shared traffic-match rules, the eBPF
//! `drop`/`partition` driver, the lease that bounds every kernel-side deadline (qdisc
//! faults live in `tc` and `network`), and the agent's own control channel, which no fault
//! ever matches (`control`).
//!
//! Kernel-enforced expiry: eBPF links are never pinned, so the kernel detaches them when the
//! agent process exits; each program's map also holds a deadline (the fault's, cut to the
//! session lease by [`Lease::renew`]) past which it leaves every packet alone.

mod attach;
pub mod control;
pub mod drop;
pub mod ebpf;
pub mod netns;
pub mod network;
mod plan;
pub mod rules;
pub mod tc;

use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use crate::engine::driver::Driver;
use crate::host::HostConfig;

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
    pub lease: Lease,
    /// The agent's session connections: never matched by any program, whatever the spec.
    pub control: ControlChannel,
}

/// Something holding kernel-side deadlines that follow the lease.
pub trait Renewable: Send + Sync {
    /// The lease now runs until `until`: rewrite every deadline as min(fault's, `until`).
    fn renew(&self, until: SystemTime);
}

#[derive(Default)]
struct LeaseInner {
    until: Mutex<Option<SystemTime>>,
    holders: Mutex<Vec<Weak<dyn Renewable>>>,
}

/// The session lease as the kernel-side deadlines see it. Cheap to clone (shared). Until the
/// first renewal (standalone runs have none) only the faults' own deadlines count.
#[derive(Clone, Default)]
pub struct Lease(Arc<LeaseInner>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("until", &self.until())
            .finish()
    }
}

impl Lease {
    pub fn new() -> Self {
        Lease::default()
    }

    /// The lease now runs until `until`; every holder rewrites its map deadlines. Blocking
    /// (a few bpf syscalls per fault): call it off the async executor.
    pub fn renew(&self, until: SystemTime) {
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        let holders: Vec<Arc<dyn Renewable>> = {
            let mut hs = self.0.holders.lock().unwrap_or_else(|p| p.into_inner());
            hs.retain(|w| w.strong_count() > 0);
            hs.iter().filter_map(Weak::upgrade).collect()
        };
        for h in holders {
            h.renew(until);
        }
    }

    pub fn until(&self) -> Option<SystemTime> {
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel-side deadline for a fault ending at `deadline`.
    pub fn bound(&self, deadline: SystemTime) -> SystemTime {
        match self.until() {
            Some(u) => u.min(deadline),
            None => deadline,
        }
    }

    /// Registers a holder (kept weakly; dropped holders are forgotten).
    pub fn subscribe(&self, holder: Weak<dyn Renewable>) {
        self.0
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(holder);
    }
}

/// The eBPF network drivers (`drop`, `partition`), subscribed to `cfg.lease` and
/// `cfg.control`.
pub fn drivers(cfg: &NetConfig) -> Vec<Arc<dyn Driver>> {
    drop::describe_metrics();
    let d = Arc::new(drop::DropDriver::new(cfg));
    let weak: Weak<drop::DropDriver> = Arc::downgrade(&d);
    cfg.lease.subscribe(weak.clone());
    cfg.control.subscribe(weak);
    vec![d]
}
