//! The agent's Linux side for resource and process faults: `/proc` and cgroup adapters, target
//! resolution with the never-targetable rules, stress worker processes (cpu, memory, io) and
//! process kill/pause with a guard that resumes paused processes even if the agent dies.
//!
//! Layout: [`proc`] and [`cgroup`] read the system; [`cgroupns`] joins the host's cgroup
//! namespace at start; [`pods`] reads the kubelet's pods from cgroup paths and its log
//! directories; [`nsfile`] opens network namespace files safely; [`target`] resolves targets
//! and [`protect`] holds the never-targetable rules it checks; [`os`] holds the spawner thread,
//! the descriptors handed to children and identity-checked signals; [`rootfs`] opens
//! directories and files in a process's filesystem without following links; [`worker`] and
//! [`guard`] are the child processes (`faultline-agent __worker ...`, `__guard ...`); [`stress`]
//! and [`process`] are the [`Driver`]s the engine calls; [`scan`] finds owned artifacts by name
//! for revert and sweep.

pub mod cgroup;
pub mod cgroupns;
pub mod child;
#[cfg(test)]
mod fake_tree;
pub mod fill;
pub mod guard;
pub mod iolimit;
pub mod kill;
pub mod nsfile;
pub mod os;
pub mod pods;
pub mod proc;
pub mod process;
pub mod protect;
pub mod rootfs;
pub mod scan;
pub mod stress;
pub mod target;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::driver::{Driver, DriverError};

/// What may never be targeted, from the agent config (on top of PID 1, the agent and its
/// ancestors, which are always refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    pub pids: Vec<u32>,
    /// Regular expressions matched against a process's name (comm) and its command line
    /// (argv joined by spaces): a match on either protects it.
    pub names: Vec<String>,
    /// cgroup paths; everything at or below them is protected, and so is every cgroup above
    /// them as a cgroup target.
    pub cgroups: Vec<String>,
    /// Kubernetes namespaces whose pods' processes, cgroups and network namespaces are never
    /// targets (the agent's own namespace always is).
    pub namespaces: Vec<String>,
}

impl Protected {
    /// Checks that every name pattern compiles; the error names the entry.
    pub fn validate(&self) -> Result<(), String> {
        match protect::Protection::new(self).errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Where the host adapters look and what they may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub protected: Protected,
    /// The only directories io faults may write into (and the sweep scans), as paths in the
    /// target's filesystem.
    pub io_paths: Vec<PathBuf>,
    /// Where cgroup hierarchies are mounted (mounts elsewhere are ignored).
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    /// The kubelet's pod log directories (`<namespace>_<name>_<uid>`): where the agent learns
    /// which namespace a pod is in.
    pub pod_logs_dir: PathBuf,
    /// The kubelet's container log links (`<pod>_<namespace>_<container>-<id>.log`): where
    /// container-kill learns which container IDs a pod's container names have.
    pub container_logs_dir: PathBuf,
    /// The executable re-run as worker and guard; `None` = this process's own (read once, when
    /// the drivers are made, so a replaced binary still works). Tests point it at the built
    /// `faultline-agent`.
    pub agent_exe: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            protected: Protected::default(),
            io_paths: vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")],
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            pod_logs_dir: PathBuf::from(pods::DEFAULT_POD_LOGS_DIR),
            container_logs_dir: PathBuf::from(kill::DEFAULT_CONTAINER_LOGS_DIR),
            agent_exe: None,
        }
    }
}

/// What both drivers share: target resolution, the io paths and the executable.
#[derive(Debug)]
pub struct Host {
    pub resolver: target::Resolver,
    pub io_paths: Vec<PathBuf>,
    exe: Result<PathBuf, String>,
}

impl Host {
    pub fn new(cfg: &HostConfig) -> Self {
        let exe = match &cfg.agent_exe {
            Some(p) => Ok(p.clone()),
            None => std::fs::read_link("/proc/self/exe")
                .map(|p| {
                    let s = p.to_string_lossy();
                    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
                })
                .map_err(|e| format!("cannot read /proc/self/exe: {e}")),
        };
        Host {
            resolver: target::Resolver::new(cfg),
            io_paths: cfg.io_paths.clone(),
            exe,
        }
    }

    pub fn proc(&self) -> &proc::ProcTable {
        &self.resolver.proc
    }

    pub fn exe(&self) -> Result<&Path, DriverError> {
        self.exe
            .as_deref()
            .map_err(|e| DriverError::Other(e.clone()))
    }

    /// Whether faults can work here; `Err` says why not.
    pub fn available(&self) -> Result<(), String> {
        if let Some(e) = self.resolver.protection.errors.first() {
            return Err(e.clone());
        }
        let exe = self.exe.as_ref().map_err(Clone::clone)?;
        if !exe.is_file() {
            return Err(format!("the agent executable {} is missing", exe.display()));
        }
        self.proc().pids().map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The host's drivers: stress (cpu, memory, io) and process (kill, pause).
pub fn drivers(cfg: &HostConfig) -> Vec<Arc<dyn Driver>> {
    let host = Arc::new(Host::new(cfg));
    vec![
        Arc::new(stress::StressDriver::new(host.clone())),
        Arc::new(process::ProcessDriver::new(host)),
    ]
}

/// Runs a worker or guard: `args[0]` is `__worker`, `__guard` or `__io-guard`; returns the exit code. Only
/// for a process started as one (it closes every inherited descriptor above stderr first).
pub fn worker_main(args: &[String]) -> i32 {
    if matches!(
        args.first().map(String::as_str),
        Some(worker::WORKER_ARG | worker::GUARD_ARG | worker::IO_GUARD_ARG)
    ) {
        os::close_inherited_fds(worker::passed_fds_through(args));
    }
    worker::main(args)
}
