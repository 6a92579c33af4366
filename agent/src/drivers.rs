//! Every fault family's driver, built in one place from the agent's configuration: cpu,
//! memory, io, disk-fill and process (host), io-limit (the cgroup io controller),
//! container-kill (host), drop and partition (eBPF), network (netem/tbf).
//!
//! The network drivers never match this process's control connections (the session's
//! sockets, [`net::control`]), and for a daemon also not the coordinator's resolved addresses
//! unless a spec says `include_protected`.

use std::sync::Arc;

use faultline_identity::tls::CoordinatorUrl;

use crate::engine::driver::Driver;
use crate::host::{self, HostConfig};
use crate::net::{self, rules::ProtectedTraffic, ControlChannel, KernelLease, NetConfig};

/// The drivers of a daemon (`coordinator` set: its address is not impaired unless a spec
/// includes protected traffic) or of a standalone run (`None`). Network drivers' kernel-side
/// deadlines follow `lease`; their session exemption follows the process's control channel.
pub fn all(
    host: &HostConfig,
    coordinator: Option<&CoordinatorUrl>,
    lease: &KernelLease,
) -> Vec<Arc<dyn Driver>> {
    let protected = coordinator
        .map(|c| ProtectedTraffic::for_coordinator(&c.host, c.port))
        .unwrap_or_default();
    let net = NetConfig {
        host: host.clone(),
        protected,
        lease: lease.clone(),
        control: ControlChannel::process(),
        protected_names: coordinator
            .filter(|c| c.host.parse::<std::net::IpAddr>().is_err())
            .map(|c| vec![c.host.clone()])
            .unwrap_or_default(),
    };
    let mut drivers = host::drivers(host);
    drivers.push(host::iolimit::driver(
        std::sync::Arc::new(host::Host::new(host)),
        lease,
    ));
    // Kill faults (issue 13).
    drivers.push(host::kill::driver(
        std::sync::Arc::new(host::Host::new(host)),
        host.container_logs_dir.clone(),
    ));
    drivers.extend(net::drivers(&net));
    drivers.extend(net::network::drivers(&net));
    drivers
}
