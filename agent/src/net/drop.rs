//! The `drop` and `partition` driver: resolves the target to an interface in a netns (TCX
//! links) or to a cgroup2 directory (cgroup_skb links), takes one `ebpf/drop.bpf.c` object per
//! fault (the verified spare of [`super::warm`]), fills its rules and deadline, attaches it with
//! unpinned links, and holds the objects in memory until revert (revert = deadline 0, then the
//! links are dropped, [`super::attach::release`]; the kernel also drops them if the agent
//! dies). Every object's `fl_session` map follows the agent's control connections
//! ([`super::control`]). Counters feed Health and `faultline_agent_ebpf_packets_total`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use aya::programs::links::FdLink;
use aya::Ebpf;
use faultline_core::fault::{FaultKind, FaultSpec};
use metrics::{counter, describe_counter};

use super::attach::{self, Attached};
use super::control::{ChannelHolder, ConnKey, ControlChannel};
use super::ebpf::{self, Counters, EbpfError};
use super::plan::{self, Wanted};
use super::rules::{self, Config, ProtectedTraffic};
use super::{NetConfig, Renewable};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::host::target::Resolver;

pub use super::plan::{DropRecipe, Scope};

/// Packets seen by the eBPF programs, by fault kind and verdict (`matched`, `dropped`).
pub const EBPF_PACKETS: &str = "faultline_agent_ebpf_packets_total";
/// Health counter names.
pub const MATCHED: &str = "packets_matched";
pub const DROPPED: &str = "packets_dropped";
/// Packets of the agent's own session the rules alone would have matched (left alone).
pub const SPARED: &str = "session_packets_spared";
/// Kernel names of this driver's programs start with this.
pub const PROGRAM_PREFIX: &str = "fl_drop_";

pub fn describe_metrics() {
    describe_counter!(
        EBPF_PACKETS,
        "Packets the drop/partition eBPF programs matched and dropped, and packets of the agent's own session they spared, by fault kind and verdict."
    );
}

/// One applied fault's objects. Dropping it detaches the links and unloads the programs.
struct Loaded {
    kind: FaultKind,
    // Field order = drop order: links first, then the object.
    links: Vec<FdLink>,
    /// Places in kept TCX links (interface scope); dropping them clears them.
    slots: Vec<super::keep::Slot>,
    ebpf: Ebpf,
    /// The rules' config with deadline 0; the armed deadline is written over it.
    config: Config,
    deadline: SystemTime,
    /// The completed recipe (what apply returned).
    recipe: DropRecipe,
    /// Counters already added to the metric.
    reported: Counters,
}

/// The eBPF fault driver for kinds `drop` and `partition`.
pub struct DropDriver {
    resolver: Resolver,
    protected: ProtectedTraffic,
    lease: super::KernelLease,
    control: ControlChannel,
    proc_root: PathBuf,
    held: Mutex<BTreeMap<String, Loaded>>,
}

fn ebpf_err(e: EbpfError) -> DriverError {
    DriverError::Other(ebpf::chain(&e))
}

impl DropDriver {
    pub fn new(cfg: &NetConfig) -> Self {
        DropDriver {
            resolver: Resolver::new(&cfg.host),
            protected: cfg.protected.clone(),
            lease: cfg.lease.clone(),
            control: cfg.control.clone(),
            proc_root: cfg.host.proc_root.clone(),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<String, Loaded>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds counter growth since the last report to the metric; returns the totals.
    fn report(kind: FaultKind, l: &mut Loaded) -> Result<Counters, EbpfError> {
        let c = ebpf::counters(&l.ebpf)?;
        let k = kind.as_str();
        for (verdict, now, before) in [
            ("matched", c.matched, l.reported.matched),
            ("dropped", c.acted, l.reported.acted),
            ("spared", c.spared, l.reported.spared),
        ] {
            counter!(EBPF_PACKETS, "fault_kind" => k, "verdict" => verdict)
                .increment(now.saturating_sub(before));
        }
        l.reported = c;
        Ok(c)
    }

    fn arm(&self, l: &mut Loaded, until: SystemTime) -> Result<(), EbpfError> {
        let deadline_ns = ebpf::monotonic_ns(until.min(l.deadline))?;
        ebpf::write_config(
            &mut l.ebpf,
            &Config {
                deadline_ns,
                ..l.config
            },
        )
    }
}

impl Renewable for DropDriver {
    fn renew(&self, until: SystemTime) {
        let mut held = self.held();
        for (id, l) in held.iter_mut() {
            if let Err(e) = self.arm(l, until) {
                tracing::warn!(fault_id = %id, error = %e, "cannot renew an eBPF fault's deadline");
            }
        }
    }
}

impl ChannelHolder for DropDriver {
    fn channel_changed(&self, keys: &[ConnKey]) {
        let mut held = self.held();
        for (id, l) in held.iter_mut() {
            if let Err(e) = ebpf::write_session(&mut l.ebpf, keys) {
                tracing::warn!(fault_id = %id, error = %e, "cannot update an eBPF fault's session exemption");
            }
        }
    }
}

impl Driver for DropDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        &[FaultKind::Drop, FaultKind::Partition]
    }

    fn available(&self) -> Result<(), String> {
        super::warm::DROP.fill().map_err(|e| {
            format!(
                "{} (eBPF faults need root, or CAP_BPF with CAP_NET_ADMIN)",
                ebpf::chain(&e)
            )
        })
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let w = Wanted::of(spec)?;
        w.rules(&self.protected)?;
        let scope = plan::scope(&self.resolver, &spec.target, w.interface.as_deref())?;
        let hooks = rules::hooks(w.matcher.direction).to_vec();
        let programs = hooks
            .iter()
            .map(|h| attach::program_name(&scope, *h).to_string())
            .collect();
        DropRecipe {
            fault_id: ctx.fault_id.clone(),
            scope,
            hooks,
            programs,
            prog_ids: Vec::new(),
            link_ids: Vec::new(),
            holder_pid: 0,
        }
        .to_recipe(w.kind.as_str())
    }

    fn apply(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let mut data = DropRecipe::from_recipe(recipe)?;
        if let Some(l) = self.held().get(&data.fault_id) {
            return l.recipe.to_recipe(&recipe.kind);
        }
        let w = Wanted::of(spec)?;
        let rules = w.rules(&self.protected)?;
        let mut obj = super::warm::DROP.take().map_err(ebpf_err)?;
        let until = self.lease.bound(ctx.deadline);
        let deadline_ns = ebpf::monotonic_ns(until).map_err(ebpf_err)?;
        ebpf::write_rules(&mut obj, &rules, deadline_ns).map_err(ebpf_err)?;
        ebpf::write_session(&mut obj, &self.control.keys()).map_err(ebpf_err)?;
        let Attached {
            ebpf: mut obj,
            links,
            slots,
            prog_ids,
            link_ids,
        } = attach::attach(obj, &data.scope, &data.hooks)?;
        data.prog_ids = prog_ids;
        data.link_ids = link_ids;
        data.holder_pid = std::process::id();
        tracing::info!(
            fault_id = %data.fault_id,
            kind = %w.kind,
            scope = %data.scope.describe(),
            programs = ?data.programs,
            "eBPF fault attached"
        );
        let mut held = self.held();
        // Under the lock channel changes are written under: a connection (un)registered while
        // this object was attached is in its map from here on.
        ebpf::write_session(&mut obj, &self.control.keys()).map_err(ebpf_err)?;
        held.insert(
            data.fault_id.clone(),
            Loaded {
                kind: w.kind,
                links,
                slots,
                ebpf: obj,
                config: rules.config,
                deadline: ctx.deadline,
                recipe: data.clone(),
                reported: Counters::default(),
            },
        );
        drop(held);
        data.to_recipe(&recipe.kind)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let data = DropRecipe::from_recipe(recipe)?;
        let taken = self.held().remove(&data.fault_id);
        if let Some(mut l) = taken {
            let _ = Self::report(l.kind, &mut l);
            let links = std::mem::take(&mut l.links);
            let slots = std::mem::take(&mut l.slots);
            attach::release(
                &data.fault_id,
                l.ebpf,
                l.config,
                links,
                slots,
                &l.recipe.prog_ids,
            );
            return Ok(RevertOutcome::Reverted);
        }
        attach::disarm_unheld(PROGRAM_PREFIX, &data.prog_ids)
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let data = match DropRecipe::from_recipe(recipe) {
            Ok(d) => d,
            Err(e) => {
                return Health::Failed {
                    error: e.to_string(),
                    counters: Vec::new(),
                }
            }
        };
        let mut held = self.held();
        let Some(l) = held.get_mut(&data.fault_id) else {
            return Health::Failed {
                error: format!(
                    "the eBPF objects of fault {} are not held by this agent process",
                    data.fault_id
                ),
                counters: Vec::new(),
            };
        };
        match Self::report(l.kind, l) {
            Ok(c) => Health::Ok(vec![
                (MATCHED.into(), c.matched),
                (DROPPED.into(), c.acted),
                (SPARED.into(), c.spared),
            ]),
            Err(e) => Health::Failed {
                error: format!("reading the eBPF counters: {e}"),
                counters: Vec::new(),
            },
        }
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        let mut mine: Vec<u32> = self
            .held()
            .values()
            .flat_map(|l| l.recipe.prog_ids.clone())
            .collect();
        mine.extend(super::warm::DROP.prog_ids());
        for r in known {
            if let Ok(d) = DropRecipe::from_recipe(r) {
                mine.extend(d.prog_ids);
            }
        }
        ebpf::disarm_strays(&self.proc_root, PROGRAM_PREFIX, &mine, "eBPF")
    }
}
