//! The kill faults of Kubernetes workloads:
//!
//! - `pod-kill`: the coordinator deletes the selected pods through the Kubernetes API (with a
//!   grace period, optionally again every `interval`); it runs only in an experiment with
//!   `spec.targets.pods`, never on an agent.
//! - `container-kill`: the agent SIGKILLs the init process of each named container of a pod
//!   (once, or every `interval`), and the container runtime restarts it. Pod or container
//!   targets only; a pod's sandbox (pause) container is never one of them.

use std::time::Duration;

use super::{join, SpecError, Target};
use crate::experiment::guard_doc::is_dns_label;

/// Shortest and longest `interval` of either kill.
pub const MIN_KILL_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_KILL_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `gracePeriod` of a pod-kill.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);
/// Why a pod-kill outside a pod experiment is refused (at its `kind`).
pub const POD_KILL_NEEDS_PODS: &str = "pod-kill is carried out by the coordinator through the \
     Kubernetes API: use it in an experiment with spec.targets.pods (never on an agent, host or \
     other target)";

/// Most containers one container-kill may name.
pub const MAX_KILL_CONTAINERS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodKillFault {
    /// Whole seconds, 0..=1h; `None` = the pod's own `terminationGracePeriodSeconds`; 0 forces.
    pub grace_period: Option<Duration>,
    /// Kill again every this long for the experiment's duration (1s..=24h); `None` = once.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerKillFault {
    /// Names of the pod's containers (1..=16 DNS labels) for a pod target; empty for a
    /// container target (the container is the target).
    pub containers: Vec<String>,
    /// Kill again every this long until the fault's end (1s..=24h); `None` = once.
    pub interval: Option<Duration>,
}

fn check_interval(path: &str, interval: Option<Duration>) -> Result<(), SpecError> {
    match interval {
        Some(i) if !(MIN_KILL_INTERVAL..=MAX_KILL_INTERVAL).contains(&i) => Err(SpecError::new(
            join(path, "interval"),
            format!("{} is outside 1s..=24h", humantime::format_duration(i)),
        )),
        _ => Ok(()),
    }
}

fn every(interval: Option<Duration>) -> String {
    match interval {
        Some(i) => format!(", every {}", humantime::format_duration(i)),
        None => ", once".to_string(),
    }
}

impl PodKillFault {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        if let Some(g) = self.grace_period {
            if g.subsec_nanos() != 0 || g > MAX_GRACE_PERIOD {
                return Err(SpecError::new(
                    join(path, "gracePeriod"),
                    format!(
                        "{} is outside 0s..=1h (whole seconds; 0s forces the deletion)",
                        humantime::format_duration(g)
                    ),
                ));
            }
        }
        check_interval(path, self.interval)
    }

    /// `gracePeriodSeconds` of the delete call; `None` leaves the pod's own.
    pub fn grace_period_seconds(&self) -> Option<i64> {
        self.grace_period.map(|g| g.as_secs() as i64)
    }

    /// `pod-kill (grace period: the pod's own), once`.
    pub fn describe(&self) -> String {
        let grace = match self.grace_period {
            None => "grace period: the pod's own".to_string(),
            Some(g) if g.is_zero() => "grace period 0s: forced".to_string(),
            Some(g) => format!("grace period {}", humantime::format_duration(g)),
        };
        format!("pod-kill ({grace}){}", every(self.interval))
    }
}

impl ContainerKillFault {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        if self.containers.len() > MAX_KILL_CONTAINERS {
            return Err(SpecError::new(
                join(path, "containers"),
                format!(
                    "has {} names; give 1..={MAX_KILL_CONTAINERS}",
                    self.containers.len()
                ),
            ));
        }
        for (i, c) in self.containers.iter().enumerate() {
            let at = join(path, &format!("containers[{i}]"));
            if !is_dns_label(c) {
                return Err(SpecError::new(
                    at,
                    format!("{c:?} is not a container name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
                ));
            }
            if self.containers[..i].contains(c) {
                return Err(SpecError::new(at, format!("{c:?} is listed twice")));
            }
        }
        check_interval(path, self.interval)
    }

    /// Checks the containers against the target: a pod needs names, a container is the one.
    pub(crate) fn validate_target(&self, path: &str, target: &Target) -> Result<(), SpecError> {
        match target {
            Target::Container(c) if c.container_id.is_empty() && self.containers.is_empty() => {
                Err(SpecError::new(
                    join(path, "containers"),
                    format!("is required for a pod target: the names of the containers to kill (1..={MAX_KILL_CONTAINERS})"),
                ))
            }
            Target::Container(c) if !c.container_id.is_empty() && !self.containers.is_empty() => {
                Err(SpecError::new(
                    join(path, "containers"),
                    "the target is one container already; leave containers out (or target the pod)",
                ))
            }
            Target::Container(_) => Ok(()),
            _ => Err(SpecError::new(
                join(path, "target"),
                "container-kill needs a pod or container target (target.pod with containers, \
                 target.container, or spec.targets.pods)",
            )),
        }
    }

    /// `container-kill app,sidecar (SIGKILL of the init process), every 10s`.
    pub fn describe(&self) -> String {
        let names = if self.containers.is_empty() {
            String::new()
        } else {
            format!(" {}", self.containers.join(","))
        };
        format!(
            "container-kill{names} (SIGKILL of the init process){}",
            every(self.interval)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::doc::parse_fault;
    use super::super::{Fault, FaultSpec};
    use super::*;

    fn err(text: &str) -> String {
        parse_fault(text).expect_err(text).to_string()
    }

    #[test]
    fn container_kill_parses_for_pod_and_container_targets() {
        let s = parse_fault(
            "{kind: container-kill, containers: [app, sidecar], interval: 10s, target: {pod: 1f0e-22}}",
        )
        .expect("pod target");
        assert_eq!(
            s.fault,
            Fault::ContainerKill(ContainerKillFault {
                containers: vec!["app".into(), "sidecar".into()],
                interval: Some(Duration::from_secs(10)),
            })
        );
        assert_eq!(
            s.describe(),
            "container-kill app,sidecar (SIGKILL of the init process), every 10s on pod 1f0e-22"
        );
        let c = parse_fault("{kind: container-kill, target: {container: abc123}}")
            .expect("container target");
        assert_eq!(
            c.describe(),
            "container-kill (SIGKILL of the init process), once on container abc123"
        );
    }

    #[test]
    fn container_kill_bad_input_names_field_and_range() {
        assert_eq!(
            err("{kind: container-kill, containers: [app]}"),
            "target: container-kill needs a pod or container target (target.pod with containers, target.container, or spec.targets.pods)"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app], target: {cgroup: /x}}"),
            "target: container-kill needs a pod or container target (target.pod with containers, target.container, or spec.targets.pods)"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [], target: {pod: 1f0e}}"),
            "containers: is required for a pod target: the names of the containers to kill (1..=16)"
        );
        assert_eq!(
            err("{kind: container-kill, target: {pod: 1f0e}}"),
            "containers: is required for a pod target: the names of the containers to kill (1..=16)"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app], target: {container: abc}}"),
            "containers: the target is one container already; leave containers out (or target the pod)"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [App], target: {pod: 1f0e}}"),
            "containers[0]: \"App\" is not a container name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app, app], target: {pod: 1f0e}}"),
            "containers[1]: \"app\" is listed twice"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app], interval: 500ms, target: {pod: 1f0e}}"),
            "interval: 500ms is outside 1s..=24h"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app], interval: 2d, target: {pod: 1f0e}}"),
            "interval: 2days is outside 1s..=24h"
        );
        assert_eq!(
            err("{kind: container-kill, containers: [app], interval: 10, target: {pod: 1f0e}}"),
            "interval: needs a unit; use e.g. 100ms, 1.5s or 250us"
        );
        let many: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
        assert_eq!(
            err(&format!(
                "{{kind: container-kill, containers: [{}], target: {{pod: 1f0e}}}}",
                many.join(",")
            )),
            "containers: has 17 names; give 1..=16"
        );
        assert!(err(
            "{kind: container-kill, containers: [app], signal: TERM, target: {pod: 1f0e}}"
        )
        .starts_with(
            "signal: is not a field of kind container-kill (its fields: containers, interval)"
        ));
    }

    #[test]
    fn pod_kill_is_refused_outside_pod_experiments() {
        // A fault document is what an agent (or `faultline-agent run`) executes: never pod-kill.
        for doc in [
            "{kind: pod-kill}",
            "{kind: pod-kill, target: {pod: 1f0e}}",
            "{kind: pod-kill, gracePeriod: 0s, target: {cgroup: /x}}",
        ] {
            assert_eq!(
                err(doc),
                "kind: pod-kill is carried out by the coordinator through the Kubernetes API: use it in an experiment with spec.targets.pods (never on an agent, host or other target)",
                "{doc}"
            );
        }
    }

    #[test]
    fn pod_kill_ranges() {
        let ok = PodKillFault {
            grace_period: Some(Duration::from_secs(0)),
            interval: Some(Duration::from_secs(30)),
        };
        ok.validate("f").expect("valid");
        assert_eq!(ok.grace_period_seconds(), Some(0));
        assert_eq!(
            ok.describe(),
            "pod-kill (grace period 0s: forced), every 30s"
        );
        let default = PodKillFault::default();
        assert_eq!(default.grace_period_seconds(), None);
        assert_eq!(
            default.describe(),
            "pod-kill (grace period: the pod's own), once"
        );
        let half = PodKillFault {
            grace_period: Some(Duration::from_millis(1500)),
            interval: None,
        };
        assert_eq!(
            half.validate("f").expect_err("fraction").to_string(),
            "f.gracePeriod: 1s 500ms is outside 0s..=1h (whole seconds; 0s forces the deletion)"
        );
        let long = PodKillFault {
            grace_period: Some(Duration::from_secs(7200)),
            interval: None,
        };
        assert_eq!(
            long.validate("f").expect_err("too long").to_string(),
            "f.gracePeriod: 2h is outside 0s..=1h (whole seconds; 0s forces the deletion)"
        );
        // A pod-kill never carries a target of its own.
        let aimed = FaultSpec {
            target: Target::Pid(5),
            fault: Fault::PodKill(ok),
        };
        assert_eq!(
            aimed.validate("f").expect_err("target").to_string(),
            "f.target: pod-kill takes its pods from spec.targets.pods; leave target out"
        );
    }

    fn experiment(
        targets: &str,
        faults: &str,
    ) -> Result<crate::experiment::ExperimentSpec, String> {
        let doc = format!(
            "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: k}}\nspec:\n  duration: 60s\n  targets: {targets}\n  faults: {faults}\n"
        );
        crate::experiment::parse_experiment(&doc, Duration::from_secs(3600))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn kill_faults_in_experiments() {
        let pods = "{pods: {namespace: shop, labelSelector: app=checkout}, mode: one}";
        let containers =
            "{pods: {namespace: shop, labelSelector: app=checkout, containers: [app]}, mode: one}";
        let agents = "{agents: {names: [node-a]}, mode: all}";

        let s = experiment(pods, "[{kind: pod-kill, gracePeriod: 0s, interval: 20s}]")
            .expect("pod-kill of pods");
        assert_eq!(
            s.faults[0].fault,
            Fault::PodKill(PodKillFault {
                grace_period: Some(Duration::ZERO),
                interval: Some(Duration::from_secs(20)),
            })
        );
        assert_eq!(s.faults[0].target, Target::Host);
        assert_eq!(
            experiment(agents, "[{kind: pod-kill}]").expect_err("agents"),
            format!("spec.faults[0].kind: {POD_KILL_NEEDS_PODS}")
        );
        assert_eq!(
            experiment(pods, "[{kind: pod-kill, gracePeriod: 90m}]").expect_err("grace"),
            "spec.faults[0].gracePeriod: 1h 30m is outside 0s..=1h (whole seconds; 0s forces the deletion)"
        );
        assert_eq!(
            experiment(pods, "[{kind: pod-kill, interval: 0s}]").expect_err("interval"),
            "spec.faults[0].interval: 0s is outside 1s..=24h"
        );

        let s = experiment(
            pods,
            "[{kind: container-kill, containers: [app], interval: 5s}]",
        )
        .expect("container-kill of pods");
        assert_eq!(s.faults[0].target, Target::Host);
        let aimed = crate::experiment::aim(
            &s.faults[0],
            &super::super::ContainerRef {
                pod_uid: "1f0e-22".into(),
                pod_namespace: "shop".into(),
                pod_name: "checkout-1".into(),
                ..Default::default()
            },
        );
        aimed
            .validate("f")
            .expect("aimed at a pod: valid for the agent");
        assert_eq!(
            experiment(pods, "[{kind: container-kill}]").expect_err("no names"),
            "spec.faults[0].containers: is required for a pod target: the names of the containers to kill (1..=16)"
        );
        experiment(containers, "[{kind: container-kill}]").expect("the selected containers");
        assert_eq!(
            experiment(containers, "[{kind: container-kill, containers: [app]}]")
                .expect_err("both"),
            "spec.faults[0].containers: the target is one container already; leave containers out (or target the pod)"
        );
        assert_eq!(
            experiment(agents, "[{kind: container-kill, containers: [app]}]").expect_err("agents"),
            "spec.faults[0].target: container-kill needs a pod or container target (target.pod with containers, target.container, or spec.targets.pods)"
        );
        assert_eq!(
            experiment(
                pods,
                "[{kind: container-kill, containers: [app], interval: 25h}]"
            )
            .expect_err("interval"),
            "spec.faults[0].interval: 1day 1h is outside 1s..=24h"
        );
    }
}
