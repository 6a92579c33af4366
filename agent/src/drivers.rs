//! Every fault family's driver, built in one place from the agent's configuration: cpu,
//! memory, io and process (host), drop and partition (eBPF), network (netem/tbf).

use std::sync::Arc;

use faultline_identity::tls::CoordinatorUrl;

use crate::engine::driver::Driver;
use crate::host::{self, HostConfig};
use crate::net::{self, rules::ProtectedTraffic, Lease, NetConfig};

/// The drivers of a daemon (`coordinator` set: its address is never impaired) or of a
/// standalone run (`None`). Network drivers' kernel-side deadlines follow `lease`.
pub fn all(
    host: &HostConfig,
    coordinator: Option<&CoordinatorUrl>,
    lease: &Lease,
) -> Vec<Arc<dyn Driver>> {
    let protected = coordinator
        .map(|c| ProtectedTraffic::for_coordinator(&c.host, c.port))
        .unwrap_or_default();
    let net = NetConfig {
        host: host.clone(),
        protected,
        lease: lease.clone(),
    };
    let mut drivers = host::drivers(host);
    drivers.extend(net::drivers(&net));
    drivers.extend(net::network::drivers(&net));
    drivers
}
