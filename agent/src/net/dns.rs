//! The `dns` driver: resolves the target to an interface in its netns (and, for cgroup,
//! container and pod targets, to the cgroup2 directory whose sockets are in scope), takes one
//! `ebpf/dns.bpf.c` object per fault (the verified spare of [`super::warm`]), writes its
//! names, action, probability and deadline, attaches `fl_dns_tc_eg` to the interface's egress
//! with an unpinned TCX link, and holds the object until revert (revert = deadline 0, then the
//! link is dropped, [`super::attach::release`]; the kernel also drops it if the agent dies,
//! and the program itself stops at the deadline in its map). Counters feed Health and
//! `faultline_agent_dns_queries_total`. Planning (scope, recipe) is in `dns_plan`, the map
//! encodings in `dns_rules`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use aya::programs::links::FdLink;
use aya::Ebpf;
use faultline_core::fault::{DnsAction, DnsFault, Fault, FaultKind, FaultSpec};
use metrics::{counter, describe_counter};

use super::attach::{self, Attached};
use super::dns_plan::{self, netns_err};
use super::dns_rules::{self, STATS, STAT_ACTED, STAT_ERRORS, STAT_MATCHED, STAT_QUERIES};
use super::ebpf::{self, EbpfError};
use super::netns;
use super::rules::{self, Config, Hook};
use super::{NetConfig, Renewable};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::host::target::Resolver;

pub use super::dns_plan::{CgroupScope, DnsRecipe};

/// DNS queries seen by the dns programs, by action and verdict (`inspected`, `matched`,
/// `failed`, `error`).
pub const DNS_QUERIES: &str = "faultline_agent_dns_queries_total";
/// Health counter names.
pub const INSPECTED: &str = "dns_queries_inspected";
pub const MATCHED: &str = "dns_queries_matched";
pub const FAILED: &str = "dns_queries_failed";
pub const ERRORS: &str = "dns_answer_errors";
/// Kernel names of this driver's programs start with this.
pub const PROGRAM_PREFIX: &str = "fl_dns_";
/// The one program of `ebpf/dns.bpf.c`.
pub const PROGRAM: &str = "fl_dns_tc_eg";

pub fn describe_metrics() {
    describe_counter!(
        DNS_QUERIES,
        "DNS queries the dns eBPF programs inspected, matched (a listed name, in scope), failed (answered NXDOMAIN/SERVFAIL or dropped) and could not answer, by action and verdict."
    );
}

/// One applied fault's object. Dropping it detaches the link and unloads the program.
struct Loaded {
    action: DnsAction,
    // Field order = drop order: links first, then the object.
    links: Vec<FdLink>,
    /// Places in kept TCX links (interface scope); dropping them clears them.
    slots: Vec<super::keep::Slot>,
    ebpf: Ebpf,
    config: Config,
    deadline: SystemTime,
    recipe: DnsRecipe,
    /// Counters already added to the metric.
    reported: Vec<u64>,
}

/// The eBPF driver of kind `dns`.
pub struct DnsDriver {
    resolver: Resolver,
    protected_names: Vec<String>,
    lease: super::KernelLease,
    proc_root: PathBuf,
    held: Mutex<BTreeMap<String, Loaded>>,
}

fn ebpf_err(e: EbpfError) -> DriverError {
    DriverError::Other(ebpf::chain(&e))
}

fn dns_of(spec: &FaultSpec) -> Result<&DnsFault, DriverError> {
    match &spec.fault {
        Fault::Dns(d) => Ok(d),
        other => Err(DriverError::Other(format!(
            "the dns driver got a {} fault",
            other.kind()
        ))),
    }
}

impl DnsDriver {
    pub fn new(cfg: &NetConfig) -> Self {
        DnsDriver {
            resolver: Resolver::new(&cfg.host),
            protected_names: cfg.protected_names.clone(),
            lease: cfg.lease.clone(),
            proc_root: cfg.host.proc_root.clone(),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<String, Loaded>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds counter growth since the last report to the metric; returns the totals.
    fn report(l: &mut Loaded) -> Result<Vec<u64>, EbpfError> {
        let now = ebpf::stats(&l.ebpf, STATS)?;
        let action = l.action.as_str();
        for (idx, verdict) in [
            (STAT_QUERIES, "inspected"),
            (STAT_MATCHED, "matched"),
            (STAT_ACTED, "failed"),
            (STAT_ERRORS, "error"),
        ] {
            let i = idx as usize;
            let before = l.reported.get(i).copied().unwrap_or(0);
            counter!(DNS_QUERIES, "action" => action, "verdict" => verdict)
                .increment(now[i].saturating_sub(before));
        }
        l.reported = now.clone();
        Ok(now)
    }

    fn arm(l: &mut Loaded, until: SystemTime) -> Result<(), EbpfError> {
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

impl Renewable for DnsDriver {
    fn renew(&self, until: SystemTime) {
        let mut held = self.held();
        for (id, l) in held.iter_mut() {
            if let Err(e) = Self::arm(l, until) {
                tracing::warn!(fault_id = %id, error = %e, "cannot renew a dns fault's deadline");
            }
        }
    }
}

impl Driver for DnsDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        &[FaultKind::Dns]
    }

    fn available(&self) -> Result<(), String> {
        ebpf::tcx_available()?;
        super::warm::DNS.fill().map_err(|e| {
            format!(
                "{} (dns faults need root, or CAP_BPF with CAP_NET_ADMIN)",
                ebpf::chain(&e)
            )
        })
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let d = dns_of(spec)?;
        for (i, n) in d.names.iter().enumerate() {
            if let Some(p) = self.protected_names.iter().find(|p| n.matches(p)) {
                return Err(DriverError::Refused(format!(
                    "names[{i}]: {n} matches {p}, the name this agent resolves to reach its coordinator; failing it would cut the agent off"
                )));
            }
        }
        ebpf::tcx_available().map_err(DriverError::Refused)?;
        let (ns, cgroup) = dns_plan::scope(&self.resolver, &self.proc_root, &spec.target)?;
        let interface =
            netns::pick_interface(ns.as_deref(), d.interface.as_deref()).map_err(netns_err)?;
        DnsRecipe {
            fault_id: ctx.fault_id.clone(),
            netns: ns,
            interface,
            cgroup,
            programs: vec![PROGRAM.to_string()],
            prog_ids: Vec::new(),
            link_ids: Vec::new(),
            holder_pid: 0,
        }
        .to_recipe(FaultKind::Dns.as_str())
    }

    fn apply(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let mut data = DnsRecipe::from_recipe(recipe)?;
        if let Some(l) = self.held().get(&data.fault_id) {
            return l.recipe.to_recipe(&recipe.kind);
        }
        let d = dns_of(spec)?;
        let seed: u64 = rand::random();
        let mut obj = super::warm::DNS.take().map_err(ebpf_err)?;
        let cgroup_id = data.cgroup.as_ref().map_or(0, |c| c.id);
        ebpf::write_dns(
            &mut obj,
            &dns_rules::entries(seed, &d.names),
            &dns_rules::opts_bytes(seed, cgroup_id, d.action),
        )
        .map_err(ebpf_err)?;
        let config = Config {
            deadline_ns: 0,
            threshold: rules::threshold(d.probability),
            flags: 0,
            protocol: 0,
        };
        let deadline_ns = ebpf::monotonic_ns(self.lease.bound(ctx.deadline)).map_err(ebpf_err)?;
        ebpf::write_config(
            &mut obj,
            &Config {
                deadline_ns,
                ..config
            },
        )
        .map_err(ebpf_err)?;
        let iface = data.interface.clone();
        let Attached {
            ebpf: obj,
            links,
            slots,
            prog_ids,
            link_ids,
        } = netns::run_in(data.netns.as_deref(), move || {
            attach::attach_tc_programs(obj, &iface, &[(PROGRAM, Hook::Egress)])
        })
        .map_err(netns_err)??;
        data.prog_ids = prog_ids;
        data.link_ids = link_ids;
        data.holder_pid = std::process::id();
        tracing::info!(
            fault_id = %data.fault_id,
            action = %d.action,
            names = d.names.len(),
            scope = %data.describe(),
            "dns fault attached"
        );
        self.held().insert(
            data.fault_id.clone(),
            Loaded {
                action: d.action,
                links,
                slots,
                ebpf: obj,
                config,
                deadline: ctx.deadline,
                recipe: data.clone(),
                reported: Vec::new(),
            },
        );
        data.to_recipe(&recipe.kind)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let data = DnsRecipe::from_recipe(recipe)?;
        let taken = self.held().remove(&data.fault_id);
        if let Some(mut l) = taken {
            let _ = Self::report(&mut l);
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
        let failed = |error: String| Health::Failed {
            error,
            counters: Vec::new(),
        };
        let data = match DnsRecipe::from_recipe(recipe) {
            Ok(d) => d,
            Err(e) => return failed(e.to_string()),
        };
        let mut held = self.held();
        let Some(l) = held.get_mut(&data.fault_id) else {
            return failed(format!(
                "the eBPF object of dns fault {} is not held by this agent process",
                data.fault_id
            ));
        };
        match Self::report(l) {
            Ok(c) => Health::Ok(vec![
                (INSPECTED.into(), c[STAT_QUERIES as usize]),
                (MATCHED.into(), c[STAT_MATCHED as usize]),
                (FAILED.into(), c[STAT_ACTED as usize]),
                (ERRORS.into(), c[STAT_ERRORS as usize]),
            ]),
            Err(e) => failed(format!("reading the dns counters: {e}")),
        }
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        let mut mine: Vec<u32> = self
            .held()
            .values()
            .flat_map(|l| l.recipe.prog_ids.clone())
            .collect();
        mine.extend(super::warm::DNS.prog_ids());
        for r in known {
            if let Ok(d) = DnsRecipe::from_recipe(r) {
                mine.extend(d.prog_ids);
            }
        }
        ebpf::disarm_strays(&self.proc_root, PROGRAM_PREFIX, &mine, "dns")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use faultline_core::fault::{DnsAction, DnsFault, DnsName, Fault, FaultSpec, Target};

    use super::*;

    #[test]
    fn names_matching_the_coordinators_host_are_refused_before_anything_is_resolved() {
        let d = DnsDriver::new(&NetConfig {
            protected_names: vec!["faultline.example.com".into()],
            ..NetConfig::default()
        });
        let spec = |name: &str| FaultSpec {
            target: Target::Host,
            fault: Fault::Dns(DnsFault {
                interface: None,
                names: vec![
                    DnsName::parse("api.other.org").expect("name"),
                    DnsName::parse(name).expect("name"),
                ],
                action: DnsAction::Nxdomain,
                probability: 1.0,
            }),
        };
        let ctx = FaultCtx {
            fault_id: "t".into(),
            deadline: SystemTime::now() + Duration::from_secs(10),
        };
        for name in [
            "faultline.example.com",
            "*.example.com",
            "FAULTLINE.example.com.",
        ] {
            let err = d.plan(&ctx, &spec(name)).expect_err(name);
            assert!(matches!(err, DriverError::Refused(_)), "{err:?}");
            assert!(
                err.to_string().starts_with("names[1]: ")
                    && err.to_string().contains("faultline.example.com, the name this agent resolves to reach its coordinator"),
                "{err}"
            );
        }
    }
}
