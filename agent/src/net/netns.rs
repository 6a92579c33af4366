//! Runs work inside a network namespace on a dedicated thread that calls `setns` (never on an
//! async executor's thread), and finds interfaces there: the list of interfaces and the one of
//! the default route, read from `/proc/thread-self/net/*` so they reflect that thread's netns.
//! Namespace files are opened through [`nsfile::open_netns`], which refuses anything that is
//! not a network namespace before an open that could block (a FIFO) or wake a device.

use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::host::nsfile::{self, NsFileError};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: NsFileError,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start the netns thread: {0}")]
    Thread(std::io::Error),
    #[error("the netns thread panicked")]
    Panicked,
    #[error("cannot read {what} in {netns}: {source}")]
    Read {
        what: &'static str,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name:?} does not exist in {netns}; interfaces there: {}", existing.join(", "))]
    UnknownInterface {
        name: String,
        netns: String,
        existing: Vec<String>,
    },
    #[error("{netns} has no default route, so no default interface; name one with `interface` (interfaces there: {})", existing.join(", "))]
    NoDefaultRoute {
        netns: String,
        existing: Vec<String>,
    },
}

/// A description for messages: `the host netns` or `netns /run/netns/x`.
pub fn describe(netns: Option<&Path>) -> String {
    match netns {
        None => "the host netns".into(),
        Some(p) => format!("netns {}", p.display()),
    }
}

/// Runs `f` on a new thread that first enters `netns` (`None` = stay in the agent's own
/// namespace), and waits for it. The thread ends with `f`, so the namespace never leaks into
/// other threads.
pub fn run_in<T, F>(netns: Option<&Path>, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = match netns {
        None => None,
        Some(p) => Some((
            p.to_path_buf(),
            nsfile::open_netns(p)
                .map_err(|source| NetnsError::Open {
                    path: p.to_path_buf(),
                    source,
                })?
                .file,
        )),
    };
    let handle = std::thread::Builder::new()
        .name("fl-netns".into())
        .spawn(move || -> Result<T, NetnsError> {
            let _t = tracing::debug_span!("netns_thread").entered();
            if let Some((path, file)) = file {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { path, source })?;
            }
            Ok(f())
        })
        .map_err(NetnsError::Thread)?;
    handle.join().map_err(|_| NetnsError::Panicked)?
}

/// Starts a background thread in the agent's own network namespace, whichever namespace the
/// calling thread is in. A thread inherits its creator's namespaces, so one started from a
/// netns thread (an apply's refill or reaper) would otherwise stay in the target's netns and
/// keep it, and its devices, alive after `ip netns del` or a pod's teardown. The agent's own
/// netns is the thread group leader's (`/proc/self/ns/net`): only netns threads enter others.
pub fn spawn_home<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let home = std::fs::File::open("/proc/self/ns/net")?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
                // The work still runs: a refill or an idle expiry skipped would cost more
                // than a namespace kept a while longer.
                tracing::warn!(error = %e, "cannot return to the agent's netns; this background thread keeps its creator's");
            }
            drop(home);
            f();
        })
}

/// The interface a fault should use in `netns`: `requested` when it exists there, else the one
/// of the default route. Refusals name the interface and list the ones that exist.
pub fn pick_interface(netns: Option<&Path>, requested: Option<&str>) -> Result<String, NetnsError> {
    let requested = requested.map(str::to_owned);
    let where_ = describe(netns);
    run_in(netns, move || {
        pick_interface_here(&where_, requested.as_deref())
    })?
}

/// [`pick_interface`] in the calling thread's netns (a netns thread doing more work there);
/// `where_` names that netns in messages.
pub fn pick_interface_here(where_: &str, requested: Option<&str>) -> Result<String, NetnsError> {
    let read = |what: &'static str, file: &str| {
        std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).map_err(|source| {
            NetnsError::Read {
                what,
                netns: where_.to_string(),
                source,
            }
        })
    };
    let existing = parse_dev(&read("interfaces", "dev")?);
    if let Some(name) = requested {
        return if existing.iter().any(|e| e == name) {
            Ok(name.to_string())
        } else {
            Err(NetnsError::UnknownInterface {
                name: name.to_string(),
                netns: where_.to_string(),
                existing,
            })
        };
    }
    let v4 = parse_default_route_v4(&read("routes", "route")?);
    let v6 = || {
        std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
            .ok()
            .and_then(|t| parse_default_route_v6(&t))
    };
    match v4.or_else(v6) {
        Some(i) => Ok(i),
        None => Err(NetnsError::NoDefaultRoute {
            netns: where_.to_string(),
            existing,
        }),
    }
}

/// Interface names from `/proc/net/dev` (two header lines, then `name: counters`).
pub fn parse_dev(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

/// The interface of the IPv4 default route with the lowest metric, from `/proc/net/route`
/// (`Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, hex fields).
pub fn parse_default_route_v4(text: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric: u32 = f[6].parse().ok()?;
            (f[1] == "00000000" && f[7] == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, f[0].to_string()))
        })
        .min()
        .map(|(_, i)| i)
}

/// The interface of the IPv6 default route with the lowest metric, from
/// `/proc/net/ipv6_route` (`dest plen src splen nexthop metric refcnt use flags iface`).
pub fn parse_default_route_v6(text: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let default = f[0].chars().all(|c| c == '0') && f[1] == "00";
            (default && flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && f[9] != "lo")
                .then(|| (metric, f[9].to_string()))
        })
        .min()
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_names() {
        let text = "Inter-|   Receive                            |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
            lo:  1234      10    0    0    0     0          0         0     1234\n  \
            eth0: 99 1 0 0 0 0 0 0 99\nveth-a@if3: 0 0\n";
        assert_eq!(parse_dev(text), vec!["eth0", "lo", "veth-a@if3"]);
    }

    #[test]
    fn default_route_v4_lowest_metric() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_default_route_v4(text).as_deref(), Some("eth0"));
        let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
            veth0\t00C80A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_default_route_v4(no_default), None);
    }

    #[test]
    fn default_route_v6_skips_lo_and_reject() {
        let z = "00000000000000000000000000000000";
        let text = format!(
            "{z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200 lo\n\
             {z} 00 {z} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003 ens3\n\
             fd000000000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001 ens3\n"
        );
        assert_eq!(parse_default_route_v6(&text).as_deref(), Some("ens3"));
    }

    #[test]
    fn run_in_host_runs_on_another_thread() {
        let main = std::thread::current().id();
        let other = run_in(None, move || std::thread::current().id()).expect("run");
        assert_ne!(main, other);
    }

    #[test]
    fn a_fifo_is_refused_at_once_not_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("initctl");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let started = std::time::Instant::now();
        let e = run_in(Some(&fifo), || ()).expect_err("a fifo is no netns");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(200),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(
            e.to_string(),
            format!(
                "cannot open network namespace {}: not a network namespace (a fifo)",
                fifo.display()
            )
        );
    }

    #[test]
    fn missing_netns_names_the_path() {
        let e = run_in(Some(Path::new("/run/netns/fl-does-not-exist")), || ())
            .expect_err("missing netns");
        assert!(
            e.to_string()
                .starts_with("cannot open network namespace /run/netns/fl-does-not-exist"),
            "{e}"
        );
    }
}
