//! The aya side of Faultline's eBPF programs: the objects `agent/build.rs` compiled from
//! `ebpf/*.bpf.c`, loading them, writing one fault's rules and deadline into their maps, reading
//! their per-CPU counters, and finding or disarming `fl_` programs by kernel id.
//!
//! Any object whose C source includes `ebpf/match.h` has the maps written here (`fl_cfg`,
//! `fl_cidrs`, `fl_ports`, `fl_session`, `fl_stats`), so the qdisc steering program uses the
//! same functions.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::util::KernelVersion;
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};
use nix::time::{clock_gettime, ClockId};

use super::control::{ConnKey, KEY_SIZE, MAX_KEYS};
use super::rules::{Config, Rules, CONFIG_SIZE, KEY_DATA_SIZE};

/// `ebpf/drop.bpf.c`, compiled.
pub static DROP_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop.bpf.o"));

/// `ebpf/dns.bpf.c`, compiled.
pub static DNS_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns.bpf.o"));
/// Map names of `ebpf/dns.bpf.c` (it also has `fl_cfg` and `fl_stats`).
pub const DNS_OPTS_MAP: &str = "fl_dns_opts";
pub const DNS_NAMES_MAP: &str = "fl_dns_names";

/// Map names from `ebpf/match.h`.
pub const CONFIG_MAP: &str = "fl_cfg";
pub const CIDRS_MAP: &str = "fl_cidrs";
pub const PORTS_MAP: &str = "fl_ports";
pub const STATS_MAP: &str = "fl_stats";
pub const SESSION_MAP: &str = "fl_session";
/// Every Faultline program's name starts with this.
pub const PREFIX: &str = "fl_";

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the eBPF object: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("the eBPF object has no {0} (built from an older ebpf/ source?)")]
    Missing(String),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("loading (verifying) program {program}: {source}")]
    Verify {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("reading CLOCK_MONOTONIC: {0}")]
    Clock(nix::Error),
}

impl From<aya::EbpfError> for EbpfError {
    fn from(e: aya::EbpfError) -> Self {
        EbpfError::Load(Box::new(e))
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map {
        map,
        source: Box::new(source),
    }
}

/// An error and its sources, `a: b: c` (aya's syscall errors keep the errno in the source).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// One loader per process: `EbpfLoader::new()` parses the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`, megabytes) on every call, which was most of a fault's apply
/// time; the loader keeps it parsed and is reused for every object (no BTF on the kernel:
/// objects load without CO-RE relocations, as before).
fn loader() -> MutexGuard<'static, EbpfLoader<'static>> {
    static LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();
    LOADER
        .get_or_init(|| {
            let _t = tracing::debug_span!("kernel_btf_parse").entered();
            Mutex::new(EbpfLoader::new())
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Loads an object (maps are created, programs not yet loaded into the kernel).
pub fn load(object: &[u8]) -> Result<Ebpf, EbpfError> {
    let mut loader = loader();
    let _t = tracing::debug_span!("ebpf_object_load").entered();
    Ok(loader.load(object)?)
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, EbpfError> {
    ebpf.map_mut(name)
        .ok_or_else(|| EbpfError::Missing(format!("map {name}")))
}

/// Writes the CIDR sets and ports of `rules`, then the configuration with `deadline_ns`
/// (write the rules before attaching: until then the config is all zero, which is inert).
pub fn write_rules(ebpf: &mut Ebpf, rules: &Rules, deadline_ns: u64) -> Result<(), EbpfError> {
    {
        let mut trie: LpmTrie<&mut MapData, [u8; KEY_DATA_SIZE], u8> =
            LpmTrie::try_from(map_mut(ebpf, CIDRS_MAP)?).map_err(map_err(CIDRS_MAP))?;
        for k in &rules.cidrs {
            trie.insert(&Key::new(k.prefix_len, k.data), 1, 0)
                .map_err(map_err(CIDRS_MAP))?;
        }
    }
    {
        let mut ports: HashMap<&mut MapData, u16, u8> =
            HashMap::try_from(map_mut(ebpf, PORTS_MAP)?).map_err(map_err(PORTS_MAP))?;
        for p in &rules.ports {
            ports.insert(p, 1, 0).map_err(map_err(PORTS_MAP))?;
        }
    }
    write_config(
        ebpf,
        &Config {
            deadline_ns,
            ..rules.config
        },
    )
}

/// Makes `fl_session` hold exactly `keys` (the agent's control connections): new keys are
/// added before stale ones are removed, so a connection present before and after is never
/// unexempt in between. Keys beyond the map's capacity are left out (the mark still holds).
pub fn write_session(ebpf: &mut Ebpf, keys: &[ConnKey]) -> Result<(), EbpfError> {
    let mut map: HashMap<&mut MapData, [u8; KEY_SIZE], u8> =
        HashMap::try_from(map_mut(ebpf, SESSION_MAP)?).map_err(map_err(SESSION_MAP))?;
    let want: Vec<[u8; KEY_SIZE]> = keys.iter().take(MAX_KEYS).map(ConnKey::to_bytes).collect();
    let stale: Vec<[u8; KEY_SIZE]> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains(k))
        .collect();
    for k in &want {
        map.insert(k, 1, 0).map_err(map_err(SESSION_MAP))?;
    }
    for k in &stale {
        match map.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(SESSION_MAP)(e)),
        }
    }
    Ok(())
}

/// Rewrites `fl_cfg[0]` (how a deadline is renewed).
pub fn write_config(ebpf: &mut Ebpf, config: &Config) -> Result<(), EbpfError> {
    let mut cfg: Array<&mut MapData, [u8; CONFIG_SIZE]> =
        Array::try_from(map_mut(ebpf, CONFIG_MAP)?).map_err(map_err(CONFIG_MAP))?;
    cfg.set(0, config.to_bytes(), 0)
        .map_err(map_err(CONFIG_MAP))
}

/// Reads `fl_cfg[0]`.
pub fn read_config(ebpf: &Ebpf) -> Result<Config, EbpfError> {
    let map = ebpf
        .map(CONFIG_MAP)
        .ok_or_else(|| EbpfError::Missing(format!("map {CONFIG_MAP}")))?;
    let cfg: Array<&MapData, [u8; CONFIG_SIZE]> =
        Array::try_from(map).map_err(map_err(CONFIG_MAP))?;
    Ok(Config::from_bytes(
        &cfg.get(&0, 0).map_err(map_err(CONFIG_MAP))?,
    ))
}

/// Counters of `fl_stats`, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets the rules matched (the agent's own session excluded).
    pub matched: u64,
    /// Matched packets acted on (dropped, steered).
    pub acted: u64,
    /// Packets of the agent's own session the rules alone would have matched: left alone.
    pub spared: u64,
}

/// Reads `fl_stats`.
pub fn counters(ebpf: &Ebpf) -> Result<Counters, EbpfError> {
    let map = ebpf
        .map(STATS_MAP)
        .ok_or_else(|| EbpfError::Missing(format!("map {STATS_MAP}")))?;
    let stats: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(map_err(STATS_MAP))?;
    let sum = |i: u32| -> Result<u64, EbpfError> {
        let v = stats.get(&i, 0).map_err(map_err(STATS_MAP))?;
        Ok(v.iter().copied().fold(0u64, u64::saturating_add))
    };
    Ok(Counters {
        matched: sum(0)?,
        acted: sum(1)?,
        spared: sum(2)?,
    })
}

/// Writes a dns object's `fl_dns_names` entries and `fl_dns_opts` (before attaching; the
/// config, written last with [`write_config`], arms it).
pub fn write_dns(
    ebpf: &mut Ebpf,
    names: &[(u64, u8)],
    opts: &[u8; super::dns_rules::OPTS_SIZE],
) -> Result<(), EbpfError> {
    {
        let mut map: HashMap<&mut MapData, u64, u8> =
            HashMap::try_from(map_mut(ebpf, DNS_NAMES_MAP)?).map_err(map_err(DNS_NAMES_MAP))?;
        for (k, v) in names {
            map.insert(k, v, 0).map_err(map_err(DNS_NAMES_MAP))?;
        }
    }
    let mut arr: Array<&mut MapData, [u8; super::dns_rules::OPTS_SIZE]> =
        Array::try_from(map_mut(ebpf, DNS_OPTS_MAP)?).map_err(map_err(DNS_OPTS_MAP))?;
    arr.set(0, *opts, 0).map_err(map_err(DNS_OPTS_MAP))
}

/// The first `n` counters of `fl_stats`, each summed over CPUs.
pub fn stats(ebpf: &Ebpf, n: u32) -> Result<Vec<u64>, EbpfError> {
    let map = ebpf
        .map(STATS_MAP)
        .ok_or_else(|| EbpfError::Missing(format!("map {STATS_MAP}")))?;
    let stats: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(map_err(STATS_MAP))?;
    (0..n)
        .map(|i| {
            let v = stats.get(&i, 0).map_err(map_err(STATS_MAP))?;
            Ok(v.iter().copied().fold(0u64, u64::saturating_add))
        })
        .collect()
}

fn monotonic_now() -> Result<Duration, EbpfError> {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(EbpfError::Clock)?;
    Ok(Duration::from(ts))
}

/// A wall-clock deadline on the `bpf_ktime_get_ns()` clock (CLOCK_MONOTONIC). A deadline in
/// the past gives "now" (inert at once).
pub fn monotonic_ns(deadline: SystemTime) -> Result<u64, EbpfError> {
    let now = monotonic_now()?;
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Ok(u64::try_from((now + left).as_nanos()).unwrap_or(u64::MAX))
}

/// Whether TCX links exist here (kernel 6.6 or newer); `Err` says what runs instead.
pub fn tcx_available() -> Result<(), String> {
    match KernelVersion::current() {
        Ok(v) if v >= KernelVersion::new(6, 6, 0) => Ok(()),
        Ok(v) => Err(format!(
            "interface drops need TCX links (kernel 6.6 or newer); this kernel is {v:?}"
        )),
        Err(e) => Err(format!("cannot read the kernel version: {e}")),
    }
}

/// A loaded program found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedProgram {
    pub id: u32,
    pub name: String,
    pub map_ids: Vec<u32>,
}

/// Every loaded program whose kernel name starts with `prefix` (`fl_drop_`), bpftool-like.
pub fn programs_named(prefix: &str) -> Vec<LoadedProgram> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|info| {
            let name = info.name_as_str()?.to_string();
            name.starts_with(prefix).then(|| LoadedProgram {
                id: info.id(),
                name,
                map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
            })
        })
        .collect()
}

/// Makes a loaded program inert by zeroing the deadline of its `fl_cfg` map (used on programs
/// this process does not hold). Returns false when it has no such map.
pub fn disarm(program: &LoadedProgram) -> Result<bool, EbpfError> {
    for id in &program.map_ids {
        let Ok(data) = MapData::from_id(*id) else {
            continue;
        };
        let is_cfg = data
            .info()
            .ok()
            .is_some_and(|i| i.name_as_str() == Some(CONFIG_MAP));
        if !is_cfg {
            continue;
        }
        let map = Map::from_map_data(data).map_err(map_err(CONFIG_MAP))?;
        let mut cfg: Array<MapData, [u8; CONFIG_SIZE]> =
            Array::try_from(map).map_err(map_err(CONFIG_MAP))?;
        let mut c = Config::from_bytes(&cfg.get(&0, 0).map_err(map_err(CONFIG_MAP))?);
        c.deadline_ns = 0;
        cfg.set(0, c.to_bytes(), 0).map_err(map_err(CONFIG_MAP))?;
        return Ok(true);
    }
    Ok(false)
}

/// The start-up sweep of one program family: every loaded program named `prefix*` that is
/// not in `mine` (held by this agent or named by its journal) and that no live process holds
/// is a stray, and its deadline is set to 0. `what` names the family in the lines returned
/// ("eBPF", "dns").
pub fn disarm_strays(proc_root: &Path, prefix: &str, mine: &[u32], what: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for p in programs_named(prefix) {
        if mine.contains(&p.id) {
            continue;
        }
        let holders = holders(proc_root, p.id);
        if !holders.is_empty() {
            // A live process holds it (another agent on this host): its fault, not a stray.
            tracing::info!(program = %p.name, id = p.id, ?holders, "{what} program held by a live process; left alone");
            continue;
        }
        match disarm(&p) {
            Ok(true) => lines.push(format!(
                "sweep: disarmed stray {what} program {} (id {}): its deadline is now 0",
                p.name, p.id
            )),
            Ok(false) => {}
            Err(e) => lines.push(format!(
                "sweep: cannot disarm stray {what} program {} (id {}): {e}",
                p.name, p.id
            )),
        }
    }
    lines
}

/// PIDs of processes holding a file descriptor to the program (its own fd or a link's), from
/// `/proc/*/fdinfo` (`prog_id:` lines).
pub fn holders(proc_root: &Path, prog_id: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let needle = format!("prog_id:\t{prog_id}");
    let mut out = Vec::new();
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.filter_map(Result::ok).any(|fd| {
            let is_bpf = std::fs::read_link(fd.path())
                .map(|t| t.to_string_lossy().starts_with("anon_inode:bpf"))
                .unwrap_or(false);
            is_bpf
                && std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name()))
                    .map(|t| t.lines().any(|l| l.trim_end() == needle))
                    .unwrap_or(false)
        });
        if holds {
            out.push(pid);
        }
    }
    out
}
