//! Running a stress fault: starting the workers in the target's cgroups (before they work),
//! and judging their health (an OOM kill is `oom_killed`, never a silent success).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{StressDriver, StressRecipe};
use crate::engine::driver::{DriverError, Health};
use crate::host::cgroup::{self, CgroupDir};
use crate::host::child::Running;
use crate::host::rootfs::Dir;
use crate::host::worker::{DISK_FILL, JOIN, JOINED};

/// A worker that ends this close to its deadline has simply finished.
const END_SLACK: Duration = Duration::from_secs(1);
/// How long a new worker may take to move itself into the target's cgroups.
const JOIN_WAIT: Duration = Duration::from_secs(5);

impl StressDriver {
    pub(super) fn start(
        &self,
        mut r: StressRecipe,
    ) -> Result<(StressRecipe, Vec<Running>), DriverError> {
        // A frozen (paused) target: a worker placed there would be frozen too, never answer,
        // and could not even be killed until thawed.
        if let Some((d, why)) = r.cgroups.iter().find_map(|d| Some((d, cgroup::frozen(d)?))) {
            return Err(DriverError::Refused(format!(
                "the target's cgroup {} is frozen ({why}; a paused container?): a stress worker \
                 there would not run; resume it first",
                d.dir.display()
            )));
        }
        let mut joined = Vec::new();
        for d in &r.cgroups {
            if cgroup::needs_leaf(d) {
                let leaf = d.child(&r.leaf_name());
                cgroup::create(&leaf.dir).map_err(|e| DriverError::Other(e.to_string()))?;
                joined.push(leaf);
            } else {
                joined.push(d.clone());
            }
        }
        if r.kind == "memory" {
            r.oom_base = joined
                .iter()
                .filter(|d| d.hierarchy.has("memory"))
                .filter_map(|d| Some((d.dir.clone(), cgroup::oom_kills(d)?)))
                .collect();
            r.host_oom_base = self.host.proc().vmstat_oom_kills();
            r.limit_hits_base = joined
                .iter()
                .filter(|d| d.hierarchy.has("memory"))
                .filter_map(|d| Some((d.dir.clone(), cgroup::limit_hits(d)?)))
                .collect();
        }
        r.joined = joined;
        // io: the files exist (created exclusively, in the target's filesystem) before any
        // worker starts; each worker gets its own as a descriptor.
        // disk-fill: only the directory; its worker makes its own nameless file.
        let files = match &r.io {
            Some(t) if r.kind == DISK_FILL => Some((self.open_fill_dir(t)?, Vec::new())),
            Some(t) => {
                let (dir, fds) = self.create_io_files(t)?;
                Some((dir, fds))
            }
            None => None,
        };
        let mut workers: Vec<Running> = Vec::new();
        let result = self.start_workers(&r, files.as_ref(), &mut workers);
        if let Err(e) = result {
            for w in &mut workers {
                let _ = w.kill();
            }
            return Err(e);
        }
        r.pids = workers.iter().map(|w| w.ident).collect();
        Ok((r, workers))
    }

    fn start_workers(
        &self,
        r: &StressRecipe,
        io: Option<&(Dir, Vec<OwnedFd>)>,
        out: &mut Vec<Running>,
    ) -> Result<(), DriverError> {
        for (i, extra) in r.workers.iter().enumerate() {
            let mut args = vec![
                crate::host::worker::WORKER_ARG.to_string(),
                r.kind.clone(),
                "--fault-id".into(),
                r.fault_id.clone(),
                "--deadline-unix-ms".into(),
                r.deadline_unix_ms.to_string(),
                "--parent-pid".into(),
                std::process::id().to_string(),
                "--index".into(),
                i.to_string(),
            ];
            args.extend(extra.iter().cloned());
            let fds: Vec<BorrowedFd<'_>> = match io {
                Some((dir, files)) if files.is_empty() => vec![dir.fd()],
                Some((dir, files)) => {
                    let file = files
                        .get(i)
                        .ok_or_else(|| DriverError::Other(format!("no io file for worker {i}")))?;
                    vec![file.as_fd(), dir.fd()]
                }
                None => Vec::new(),
            };
            let w = Running::start_with_fds(&r.exe, &args, self.host.proc(), &fds)
                .map_err(|e| DriverError::io(format!("start worker {}", r.exe.display()), e))?;
            out.push(w);
            let w = out
                .last_mut()
                .ok_or_else(|| DriverError::Other("no worker".into()))?;
            self.place(w, &r.joined)?;
            w.send("go")
                .map_err(|e| DriverError::io(format!("tell worker pid {} to go", w.pid()), e))?;
            if r.kind == DISK_FILL {
                super::fill::wait_filled(w)?;
            }
        }
        Ok(())
    }

    /// Puts a worker that has not started working into `dests`, leaving out those it is in
    /// already (read from `/proc/<pid>/cgroup`). The agent moves it into the v2 cgroups
    /// (`cgroup.procs`); the v1 ones it joins itself (see [`cgroup::self_join_file`]: no RCU
    /// grace period per apply), read back afterwards, and any it is still not in the agent
    /// moves it into. The `join` exchange happens even with nothing to join: the worker
    /// answers only after it armed its death signal, so no apply returns while a worker could
    /// outlive the agent.
    fn place(&self, w: &mut Running, dests: &[CgroupDir]) -> Result<(), DriverError> {
        let lines = |pid: u32| {
            self.host
                .proc()
                .cgroup_text(pid)
                .map(|t| cgroup::parse_proc_cgroup(&t))
                .map_err(|e| DriverError::Other(format!("worker pid {pid}: {e}")))
        };
        let pid = w.pid();
        let move_in = |d: &CgroupDir| {
            cgroup::join(&d.dir, pid).map_err(|e| DriverError::Other(e.to_string()))
        };
        let now = lines(pid)?;
        // The cgroups it joins itself (v1, with their join file), and the others (v2).
        let mut v1: Vec<&CgroupDir> = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        let mut v2: Vec<&CgroupDir> = Vec::new();
        for d in dests.iter().filter(|d| !cgroup::holds(d, &now)) {
            match cgroup::self_join_file(d) {
                Some(f) => {
                    v1.push(d);
                    files.push(f);
                }
                None => v2.push(d),
            }
        }
        // v2 first: its grace period then overlaps the worker's start-up instead of following it.
        for d in v2 {
            move_in(d)?;
        }
        let list = serde_json::to_string(&files).map_err(|e| DriverError::Other(e.to_string()))?;
        w.send(&format!("{JOIN} {list}"))
            .map_err(|e| DriverError::io(format!("tell worker pid {pid} to join"), e))?;
        if !w.wait_line(JOINED, JOIN_WAIT) {
            let why = w
                .reports()
                .error
                .unwrap_or_else(|| format!("it did not answer within {} s", JOIN_WAIT.as_secs()));
            return Err(DriverError::Other(format!(
                "worker pid {pid} could not join the target's cgroups: {why}"
            )));
        }
        if !v1.is_empty() {
            let now = lines(pid)?;
            for d in v1.into_iter().filter(|d| !cgroup::holds(d, &now)) {
                move_in(d)?;
            }
        }
        Ok(())
    }

    fn failure(&self, r: &StressRecipe, w: &mut Running) -> Option<(String, Vec<(String, u64)>)> {
        let st = w.poll_exit()?;
        use std::os::unix::process::ExitStatusExt;
        if r.kind == "memory" && st.signal() == Some(libc::SIGKILL) {
            let grew = |bases: &[(PathBuf, u64)], read: fn(&CgroupDir) -> Option<u64>| {
                bases.iter().any(|(dir, base)| {
                    r.joined
                        .iter()
                        .find(|d| &d.dir == dir)
                        .and_then(read)
                        .is_some_and(|now| now > *base)
                })
            };
            // The kill counters, or (kernels without them) the limit was hit meanwhile.
            let cg_oom = grew(&r.oom_base, cgroup::oom_kills)
                || grew(&r.limit_hits_base, cgroup::limit_hits);
            let host_oom = matches!(
                (r.host_oom_base, self.host.proc().vmstat_oom_kills()),
                (Some(a), Some(b)) if b > a
            );
            if cg_oom || host_oom {
                return Some(("oom_killed".into(), vec![("oom_killed".into(), 1)]));
            }
            return Some((
                format!("memory worker pid {} was killed by SIGKILL", w.pid()),
                Vec::new(),
            ));
        }
        let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
        if SystemTime::now() + END_SLACK >= deadline {
            return None;
        }
        let why = w
            .reports()
            .error
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Some((
            format!("{} worker pid {} exited early ({st}){why}", r.kind, w.pid()),
            Vec::new(),
        ))
    }

    pub(super) fn health_of(&self, r: &StressRecipe) -> Health {
        let mut live = self.live();
        let Some(l) = live.get_mut(&r.fault_id) else {
            let n = r
                .pids
                .iter()
                .filter(|p| self.host.proc().is_alive(**p))
                .count();
            return Health::Ok(vec![("workers_running".into(), n as u64)]);
        };
        let mut counters = sum_counters(&l.workers, counter_keys(&l.recipe.kind));
        let mut running = 0u64;
        for i in 0..l.workers.len() {
            let (rec, w) = (&l.recipe, &mut l.workers[i]);
            if let Some((error, extra)) = self.failure(rec, w) {
                counters.extend(extra);
                return Health::Failed { error, counters };
            }
            if w.poll_exit().is_none() {
                running += 1;
            }
        }
        counters.push(("workers_running".into(), running));
        Health::Ok(counters)
    }
}

fn sum_counters(workers: &[Running], keys: &[&str]) -> Vec<(String, u64)> {
    keys.iter()
        .map(|k| {
            let v = workers
                .iter()
                .filter_map(|w| w.reports().counters.get(*k).copied())
                .sum();
            (k.to_string(), v)
        })
        .collect()
}

fn counter_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "cpu" => &["cpu_ms"],
        "memory" => &["rss_bytes"],
        DISK_FILL => &["filled_bytes", "capped_by_keep_free"],
        _ => &["bytes_written", "fsyncs"],
    }
}
