//! The workflow's own steady-state hypothesis (`spec.steadyState`), seen from the step state
//! machine: a check that does not hold before the first step ends the run `failed` with no
//! step started. The hypothesis itself (verdict, recovery times) is
//! [`crate::experiment::steady::Hypothesis`], the same as an experiment's.

use super::progress::{Action, Progress, StepState, WorkflowPhase};

impl Progress {
    /// Ends a run that has not started (a check did not hold before the first step): every
    /// step is skipped and no experiment is started. Nothing happens once it has started.
    pub fn refuse_start(&mut self, reason: &str, now: i64) -> Vec<Action> {
        if self.phase != WorkflowPhase::Pending {
            return Vec::new();
        }
        self.started_unix_ms = now;
        for st in &mut self.steps {
            st.state = StepState::Skipped;
            st.message = "not started: the steady state did not hold".into();
        }
        self.phase = WorkflowPhase::Failed;
        self.ended_unix_ms = now;
        self.reason = reason.to_string();
        vec![Action::Finished {
            phase: WorkflowPhase::Failed,
            reason: reason.to_string(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::workflow::parse_workflow;

    fn doc(steady: &str) -> String {
        format!(
            "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {{name: gd}}
spec:
  steps:
    - name: first
      experiment: {{duration: 5s, targets: {{mode: all}}, faults: [{{kind: cpu, load: 50}}]}}
{steady}"
        )
    }

    fn parse(steady: &str) -> Result<crate::workflow::WorkflowSpec, String> {
        parse_workflow(&doc(steady), Duration::from_secs(600)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_workflow_hypothesis_is_validated_like_an_experiments() {
        let s = parse(
            "  steadyState:
    recoveryWithin: 20s
    checks:
      - {name: health, http: {url: 'http://127.0.0.1:9/healthz', expectStatus: 200}}
",
        )
        .expect("valid");
        let h = s.steady_state.expect("steady state");
        assert_eq!(h.recovery_within, Duration::from_secs(20));
        assert_eq!(h.checks[0].name, "health");
        assert!(parse("").expect("valid").steady_state.is_none());
    }

    #[test]
    fn refusals_name_the_field_and_the_range() {
        let cases = [
            (
                "  steadyState: {checks: []}\n",
                "spec.steadyState.checks: has 0 checks; give 1..=16",
            ),
            (
                "  steadyState:\n    recoveryWithin: 2h\n    checks: [{name: h, http: {url: 'http://127.0.0.1:9/'}}]\n",
                "spec.steadyState.recoveryWithin",
            ),
            (
                "  steadyState:\n    checks: [{name: t, telemetry: {metric: cpu_busy_ratio, above: 0.9}}]\n",
                "spec.steadyState.checks[0].telemetry: a workflow has no targets of its own",
            ),
            (
                "  steadyState:\n    checks: [{name: h, onError: abort, http: {url: 'http://127.0.0.1:9/'}}]\n",
                "spec.steadyState.checks[0].onError",
            ),
            (
                "  steadyState:\n    recoverWithin: 20s\n    checks: [{name: h, http: {url: 'http://127.0.0.1:9/'}}]\n",
                "spec.steadyState",
            ),
        ];
        for (steady, want) in cases {
            let err = parse(steady).expect_err(steady);
            assert!(
                err.starts_with(want),
                "{steady}: got {err:?}, want {want:?}"
            );
        }
        let err = parse(
            "  steadyState:\n    recoveryWithin: 2h\n    checks: [{name: h, http: {url: 'http://127.0.0.1:9/'}}]\n",
        )
        .expect_err("range");
        assert!(err.contains("1s") && err.contains("1h"), "{err}");
    }

    #[test]
    fn a_refused_start_skips_every_step_and_starts_nothing() {
        let spec = parse("").expect("valid");
        let mut p = Progress::new(&spec);
        let actions = p.refuse_start("steady-state check health (http): status 503", 7);
        assert_eq!(
            actions,
            vec![Action::Finished {
                phase: WorkflowPhase::Failed,
                reason: "steady-state check health (http): status 503".into()
            }]
        );
        assert_eq!(p.phase, WorkflowPhase::Failed);
        assert!(p.steps.iter().all(|s| s.state == StepState::Skipped));
        // Started already: nothing to refuse, and no second Finished.
        assert!(p.start(&spec, 8).is_empty());
        assert!(p.refuse_start("again", 9).is_empty());
    }
}
