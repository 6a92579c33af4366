//! Limits and counters of cgroups that faults need: the memory limit in effect, OOM kills and
//! limit hits, and the CPUs a cgroup may use (cpuset and quota).

use super::{CgroupDir, Version};

/// A memory limit value: `max` or anything from 2^62 up means unlimited.
pub fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v < (1u64 << 62))
}

/// The memory limit in effect for the first cgroup among `dirs` in a hierarchy with the memory
/// controller: the smallest limit of it and its parents. `None` = unlimited or no memory
/// controller; the cgroup that sets it comes with it.
pub fn memory_limit(dirs: &[CgroupDir]) -> Option<(u64, String)> {
    let d = memory_dir(dirs)?;
    let file = match d.hierarchy.version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    };
    d.upwards()
        .filter_map(|p| {
            let v = parse_limit(&d.read(p, file)?)?;
            Some((v, p.display().to_string()))
        })
        .min_by_key(|(v, _)| *v)
}

/// The first of `dirs` in a hierarchy with the memory controller.
pub fn memory_dir(dirs: &[CgroupDir]) -> Option<&CgroupDir> {
    dirs.iter().find(|d| d.hierarchy.has("memory"))
}

/// OOM kills counted for a memory cgroup (`oom_kill` of v2 memory.events or v1 memory.oom_control).
pub fn oom_kills(d: &CgroupDir) -> Option<u64> {
    let file = match d.hierarchy.version {
        Version::V1 => "memory.oom_control",
        Version::V2 => "memory.events",
    };
    d.read(&d.dir, file)?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Times a memory cgroup hit its limit (v1 `memory.failcnt`, v2 `max` of memory.events):
/// evidence of memory pressure for kernels whose v1 memory.oom_control lacks `oom_kill`.
pub fn limit_hits(d: &CgroupDir) -> Option<u64> {
    match d.hierarchy.version {
        Version::V1 => d.read(&d.dir, "memory.failcnt")?.parse().ok(),
        Version::V2 => d
            .read(&d.dir, "memory.events")?
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// Counts the CPUs of a list like `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// A v2 `cpu.max` (`max 100000`, `50000 100000`) as CPUs; `None` = unlimited.
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next().unwrap_or("100000").parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// CPUs available to the target cgroups: the smaller of their cpuset and their CPU quota
/// (theirs and their parents'), rounded up; `None` when nothing limits them.
pub fn cpus_available(dirs: &[CgroupDir]) -> Option<u32> {
    let mut best: Option<f64> = None;
    let mut take = |v: f64| best = Some(best.map_or(v, |b: f64| b.min(v)));
    for d in dirs {
        if d.hierarchy.has("cpuset") {
            let files: &[&str] = match d.hierarchy.version {
                Version::V1 => &["cpuset.effective_cpus", "cpuset.cpus"],
                Version::V2 => &["cpuset.cpus.effective", "cpuset.cpus"],
            };
            if let Some(n) = files
                .iter()
                .find_map(|f| parse_cpu_list(&d.read(&d.dir, f)?))
            {
                take(f64::from(n));
            }
        }
        if d.hierarchy.has("cpu") {
            for p in d.upwards() {
                let quota = match d.hierarchy.version {
                    Version::V2 => d.read(p, "cpu.max").and_then(|s| parse_cpu_max(&s)),
                    Version::V1 => {
                        let num = |f: &str| d.read(p, f).and_then(|s| s.parse::<f64>().ok());
                        match (num("cpu.cfs_quota_us"), num("cpu.cfs_period_us")) {
                            (Some(q), Some(per)) if q > 0.0 && per > 0.0 => Some(q / per),
                            _ => None,
                        }
                    }
                };
                if let Some(q) = quota {
                    take(q);
                }
            }
        }
    }
    best.map(|b| (b.ceil() as u32).max(1))
}

/// CPUs online on the host.
pub fn online_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1)
}
