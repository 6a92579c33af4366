//! Fault specs: what to inject, where, and the limits every spec must respect. The same
//! validation runs on the coordinator and on the agent, whether the spec came from a YAML
//! document ([`doc`]) or from the wire.

pub mod disk;
pub mod doc;
pub mod kill;
pub mod net;
// dns (issue 13)
pub mod dns;

use std::fmt;
use std::str::FromStr;

pub use disk::{DiskAmount, DiskFillFault, IoLimitFault};
pub use kill::{ContainerKillFault, PodKillFault};
pub use net::{Cidr, Direction, Distribution, Netem, Protocol, Tbf, TrafficMatch};
// dns (issue 13)
pub use dns::{DnsAction, DnsFault, DnsName};

/// A validation failure: the field path (`spec.faults[1].load`) and what is wrong with it,
/// including the allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error under a parent path (`faults[0]` + `load` = `faults[0].load`).
    pub fn under(mut self, parent: &str) -> Self {
        if !parent.is_empty() {
            self.path = if self.path.is_empty() {
                parent.to_string()
            } else {
                format!("{parent}.{}", self.path)
            };
        }
        self
    }
}

/// Joins a parent path and a field name (`faults[0]` + `load`); an empty parent gives `load`.
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The fault kinds of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Network,
    Drop,
    Partition,
    Cpu,
    Memory,
    Io,
    Process,
    // disk faults (issue 13)
    DiskFill,
    IoLimit,
    // dns (issue 13)
    Dns,
    // Kill faults (issue 13).
    PodKill,
    ContainerKill,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Network,
        FaultKind::Drop,
        FaultKind::Partition,
        FaultKind::Cpu,
        FaultKind::Memory,
        FaultKind::Io,
        FaultKind::Process,
        FaultKind::DiskFill,
        FaultKind::IoLimit,
        // dns (issue 13)
        FaultKind::Dns,
        // Kill faults (issue 13).
        FaultKind::PodKill,
        FaultKind::ContainerKill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Network => "network",
            FaultKind::Drop => "drop",
            FaultKind::Partition => "partition",
            FaultKind::Cpu => "cpu",
            FaultKind::Memory => "memory",
            FaultKind::Io => "io",
            FaultKind::Process => "process",
            FaultKind::DiskFill => "disk-fill",
            FaultKind::IoLimit => "io-limit",
            // dns (issue 13)
            FaultKind::Dns => "dns",
            // Kill faults (issue 13).
            FaultKind::PodKill => "pod-kill",
            FaultKind::ContainerKill => "container-kill",
        }
    }

    /// Network kinds act on packets; the rest on processes and resources.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::Network | FaultKind::Drop | FaultKind::Partition | FaultKind::Dns
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                let all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?}; use one of {}", all.join(", "))
            })
    }
}

/// A container or pod on the node, as Kubernetes names it. Resolved by the agent through
/// `/proc/*/cgroup`, without talking to a container runtime.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRef {
    /// Runtime container ID (with or without a `containerd://` prefix); empty = every container
    /// of the pod.
    pub container_id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
}

impl ContainerRef {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        if self.container_id.is_empty() && self.pod_uid.is_empty() {
            return Err(SpecError::new(path, "needs a container ID or a pod UID"));
        }
        let id = self.container_id.rsplit("://").next().unwrap_or_default();
        if !id.chars().all(|c| c.is_ascii_hexdigit()) || id.len() > 128 {
            return Err(SpecError::new(
                path,
                format!(
                    "container ID {:?} must be hexadecimal (up to 128 digits)",
                    self.container_id
                ),
            ));
        }
        if !self
            .pod_uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
            || self.pod_uid.len() > 64
        {
            return Err(SpecError::new(
                path,
                format!("pod UID {:?} is not a UID", self.pod_uid),
            ));
        }
        Ok(())
    }
}

/// Where on the node a fault acts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Host,
    /// A network namespace path (`/run/netns/blue`, `/proc/123/ns/net`).
    Netns(String),
    /// A process (and its netns and cgroup).
    Pid(u32),
    /// A cgroup path relative to the cgroup root.
    Cgroup(String),
    Container(ContainerRef),
}

impl Target {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        match self {
            Target::Host => Ok(()),
            Target::Netns(p) if !p.starts_with('/') => Err(SpecError::new(
                format!("{path}.netns"),
                format!("{p:?} must be an absolute path"),
            )),
            Target::Cgroup(p) if !p.starts_with('/') || p.split('/').any(|c| c == "..") => {
                Err(SpecError::new(
                    format!("{path}.cgroup"),
                    format!("{p:?} must be an absolute cgroup path without '..'"),
                ))
            }
            Target::Pid(0) => Err(SpecError::new(format!("{path}.pid"), "must be 1 or more")),
            Target::Container(c) => c.validate(path),
            _ => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Host => "host".into(),
            Target::Netns(p) => format!("netns {p}"),
            Target::Pid(p) => format!("pid {p}"),
            Target::Cgroup(c) => format!("cgroup {c}"),
            Target::Container(c) if !c.container_id.is_empty() => {
                format!("container {}", c.container_id)
            }
            Target::Container(c) => format!("pod {}", c.pod_uid),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkFault {
    /// None = the interface of the default route in the target's netns.
    pub interface: Option<String>,
    pub matcher: TrafficMatch,
    pub netem: Option<Netem>,
    pub tbf: Option<Tbf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DropFault {
    pub interface: Option<String>,
    /// 0.0..=1.0
    pub probability: f64,
    pub matcher: TrafficMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionFault {
    pub interface: Option<String>,
    pub peers: Vec<Cidr>,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFault {
    /// 1..=100 per worker.
    pub load_percent: u32,
    /// 0 = one worker per CPU available to the target.
    pub workers: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryAmount {
    Bytes(u64),
    /// Of the target cgroup's limit, or of MemTotal for the host.
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryFault {
    pub amount: MemoryAmount,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFault {
    /// Directory the workers write into.
    pub path: String,
    pub workers: u32,
    /// Size of each worker's file.
    pub size_bytes: u64,
    /// 0 = unthrottled.
    pub rate_bytes_per_second: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessAction {
    Kill { signal: i32 },
    Pause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessSelector {
    Pid(u32),
    /// A regular expression matched against the process name (comm) and command line.
    Name(String),
    Container(ContainerRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFault {
    pub action: ProcessAction,
    pub selector: ProcessSelector,
    /// 0 = every matching process.
    pub count: u32,
}

/// One fault of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Network(NetworkFault),
    Drop(DropFault),
    Partition(PartitionFault),
    Cpu(CpuFault),
    Memory(MemoryFault),
    Io(IoFault),
    Process(ProcessFault),
    // disk faults (issue 13)
    DiskFill(DiskFillFault),
    IoLimit(IoLimitFault),
    // dns (issue 13)
    Dns(DnsFault),
    // Kill faults (issue 13).
    PodKill(PodKillFault),
    ContainerKill(ContainerKillFault),
}

/// A fault and where it acts.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub target: Target,
    pub fault: Fault,
}

pub const MAX_WORKERS: u32 = 1024;
pub const MAX_IO_WORKERS: u32 = 64;
pub const MAX_MEMORY_BYTES: u64 = 1 << 40;

pub(crate) fn check_interface(path: &str, iface: &Option<String>) -> Result<(), SpecError> {
    if let Some(i) = iface {
        let ok = !i.is_empty()
            && i.len() < 16
            && i.chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !ok {
            return Err(SpecError::new(
                join(path, "interface"),
                format!(
                    "{i:?} is not an interface name (1..=15 printable characters, no '/' or ':')"
                ),
            ));
        }
    }
    Ok(())
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Network(_) => FaultKind::Network,
            Fault::Drop(_) => FaultKind::Drop,
            Fault::Partition(_) => FaultKind::Partition,
            Fault::Cpu(_) => FaultKind::Cpu,
            Fault::Memory(_) => FaultKind::Memory,
            Fault::Io(_) => FaultKind::Io,
            Fault::Process(_) => FaultKind::Process,
            Fault::DiskFill(_) => FaultKind::DiskFill,
            Fault::IoLimit(_) => FaultKind::IoLimit,
            // dns (issue 13)
            Fault::Dns(_) => FaultKind::Dns,
            // Kill faults (issue 13).
            Fault::PodKill(_) => FaultKind::PodKill,
            Fault::ContainerKill(_) => FaultKind::ContainerKill,
        }
    }

    /// Checks every range and combination; `path` prefixes the field names in errors.
    pub fn validate(&self, path: &str) -> Result<(), SpecError> {
        let at = |f: &str| join(path, f);
        match self {
            Fault::Network(n) => {
                check_interface(path, &n.interface)?;
                n.matcher.validate(&at("match"))?;
                if let Some(netem) = &n.netem {
                    netem.validate(path)?;
                }
                if let Some(tbf) = &n.tbf {
                    tbf.validate(path)?;
                }
                let empty = n.netem.as_ref().is_none_or(Netem::is_noop) && n.tbf.is_none();
                if empty {
                    return Err(SpecError::new(
                        path,
                        "a network fault needs at least one of delay, loss, duplicate, corrupt, netemRate or rate",
                    ));
                }
                Ok(())
            }
            Fault::Drop(d) => {
                check_interface(path, &d.interface)?;
                if !(0.0..=1.0).contains(&d.probability) {
                    return Err(SpecError::new(
                        at("probability"),
                        format!("{} is outside 0..=1", d.probability),
                    ));
                }
                d.matcher.validate(&at("match"))
            }
            Fault::Partition(p) => {
                check_interface(path, &p.interface)?;
                if p.peers.is_empty() || p.peers.len() > 64 {
                    return Err(SpecError::new(at("peers"), "needs 1..=64 peer CIDRs"));
                }
                Ok(())
            }
            Fault::Cpu(c) => {
                if !(1..=100).contains(&c.load_percent) {
                    return Err(SpecError::new(
                        at("load"),
                        format!("{} is outside 1..=100", c.load_percent),
                    ));
                }
                if c.workers > MAX_WORKERS {
                    return Err(SpecError::new(
                        at("workers"),
                        format!("{} is outside 1..={MAX_WORKERS}", c.workers),
                    ));
                }
                Ok(())
            }
            Fault::Memory(m) => match m.amount {
                MemoryAmount::Bytes(b) if b == 0 || b > MAX_MEMORY_BYTES => Err(SpecError::new(
                    at("size"),
                    format!("{b} bytes is outside 1B..=1TiB"),
                )),
                MemoryAmount::Percent(p) if !(p > 0.0 && p <= 100.0) => Err(SpecError::new(
                    at("percent"),
                    format!("{p} is outside 0 (exclusive)..=100"),
                )),
                _ => Ok(()),
            },
            Fault::Io(io) => {
                if !io.path.starts_with('/') {
                    return Err(SpecError::new(
                        at("path"),
                        format!("{:?} must be an absolute directory path", io.path),
                    ));
                }
                if !(1..=MAX_IO_WORKERS).contains(&io.workers) {
                    return Err(SpecError::new(
                        at("workers"),
                        format!("{} is outside 1..={MAX_IO_WORKERS}", io.workers),
                    ));
                }
                if !((1 << 20)..=(1u64 << 40)).contains(&io.size_bytes) {
                    return Err(SpecError::new(at("size"), "must be within 1Mi..=1Ti"));
                }
                Ok(())
            }
            Fault::Process(p) => {
                if let ProcessAction::Kill { signal } = p.action {
                    if !((1..=31).contains(&signal) || (34..=64).contains(&signal)) {
                        return Err(SpecError::new(
                            at("signal"),
                            format!("{signal} is outside 1..=31 and 34..=64"),
                        ));
                    }
                }
                match &p.selector {
                    ProcessSelector::Pid(0) => {
                        Err(SpecError::new(at("selector.pid"), "must be 2 or more"))
                    }
                    ProcessSelector::Pid(1) => Err(SpecError::new(
                        at("selector.pid"),
                        "1 is the host's init process and is never targetable",
                    )),
                    ProcessSelector::Name(n) if n.is_empty() || n.len() > 256 => {
                        Err(SpecError::new(
                            at("selector.name"),
                            "must be a pattern of 1..=256 characters",
                        ))
                    }
                    ProcessSelector::Container(c) => c.validate(&at("selector.container")),
                    _ => Ok(()),
                }
            }
            Fault::DiskFill(d) => d.validate(path),
            Fault::IoLimit(l) => l.validate(path),
            // dns (issue 13)
            Fault::Dns(d) => d.validate(path),
            // Kill faults (issue 13).
            Fault::PodKill(k) => k.validate(path),
            Fault::ContainerKill(k) => k.validate(path),
        }
    }
}

impl FaultSpec {
    pub fn kind(&self) -> FaultKind {
        self.fault.kind()
    }

    pub fn validate(&self, path: &str) -> Result<(), SpecError> {
        let target_path = join(path, "target");
        self.target.validate(&target_path)?;
        self.fault.validate(path)?;
        if matches!(self.fault, Fault::Process(_)) && !matches!(self.target, Target::Host) {
            return Err(SpecError::new(
                target_path,
                "process faults choose their processes with selector; leave target unset",
            ));
        }
        if matches!(self.fault, Fault::IoLimit(_)) {
            disk::check_io_limit_target(self, path)?;
        }
        // Kill faults (issue 13).
        match &self.fault {
            Fault::PodKill(_) if !matches!(self.target, Target::Host) => Err(SpecError::new(
                target_path,
                "pod-kill takes its pods from spec.targets.pods; leave target out",
            )),
            Fault::ContainerKill(k) => k.validate_target(path, &self.target),
            _ => Ok(()),
        }
    }

    /// A one-line human description (`cpu 50% x 2 on cgroup /x`).
    pub fn describe(&self) -> String {
        let what = match &self.fault {
            Fault::Network(n) => {
                let mut parts = Vec::new();
                if let Some(ne) = &n.netem {
                    if ne.delay_us > 0 {
                        parts.push(format!("delay {}ms", ne.delay_us as f64 / 1000.0));
                    }
                    if ne.jitter_us > 0 {
                        parts.push(format!("jitter {}ms", ne.jitter_us as f64 / 1000.0));
                    }
                    if ne.loss_pct > 0.0 {
                        parts.push(format!("loss {}%", ne.loss_pct));
                    }
                    if ne.duplicate_pct > 0.0 {
                        parts.push(format!("duplicate {}%", ne.duplicate_pct));
                    }
                    if ne.corrupt_pct > 0.0 {
                        parts.push(format!("corrupt {}%", ne.corrupt_pct));
                    }
                    if ne.reorder_pct > 0.0 {
                        parts.push(format!("reorder {}%", ne.reorder_pct));
                    }
                }
                if let Some(t) = &n.tbf {
                    parts.push(format!(
                        "rate {}",
                        crate::units::format_rate_bps(t.rate_bps)
                    ));
                }
                format!("network {}", parts.join(" "))
            }
            Fault::Drop(d) => format!("drop {}%", d.probability * 100.0),
            Fault::Partition(p) => format!("partition from {} peer(s)", p.peers.len()),
            Fault::Cpu(c) if c.workers == 0 => format!("cpu {}% on every CPU", c.load_percent),
            Fault::Cpu(c) => format!("cpu {}% x {}", c.load_percent, c.workers),
            Fault::Memory(m) => match m.amount {
                MemoryAmount::Bytes(b) => format!("memory {}", crate::units::format_size(b)),
                MemoryAmount::Percent(p) => format!("memory {p}%"),
            },
            Fault::Io(io) => format!(
                "io {} x {} in {}",
                crate::units::format_size(io.size_bytes),
                io.workers,
                io.path
            ),
            Fault::Process(p) => {
                let action = match p.action {
                    ProcessAction::Kill { signal } => {
                        format!("kill {}", crate::units::signal_name(signal))
                    }
                    ProcessAction::Pause => "pause".into(),
                };
                let sel = match &p.selector {
                    ProcessSelector::Pid(pid) => format!("pid {pid}"),
                    ProcessSelector::Name(n) => format!("name /{n}/"),
                    ProcessSelector::Container(c) => format!("container {}", c.container_id),
                };
                format!("process {action} {sel}")
            }
            Fault::DiskFill(d) => d.describe(),
            Fault::IoLimit(l) => l.describe(),
            // dns (issue 13)
            Fault::Dns(d) => d.describe(),
            // Kill faults (issue 13).
            Fault::PodKill(k) => k.describe(),
            Fault::ContainerKill(k) => k.describe(),
        };
        if matches!(self.target, Target::Host) {
            what
        } else {
            format!("{what} on {}", self.target.describe())
        }
    }
}
