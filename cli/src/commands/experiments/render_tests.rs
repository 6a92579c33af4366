//! What the experiment pages look like, checked line by line.

use super::super::fixture::{self, T0};
use super::*;

#[test]
fn dry_run_shows_selected_faults_and_excluded_with_reason() {
    let e = fixture::running();
    let text = dry_run(Some(&e), &fixture::plan());
    assert_eq!(
        text,
        "dry run: experiment checkout-loss would run for 1m on 2 agent(s); nothing was created\n\
         \n\
         Selected agents (2):\n  \
           AGENT   DETAIL\n  \
           node-a  zone=a\n  \
           node-b  zone=a\n\
         Faults on each selected agent (2):\n  \
           1. process pause name /fl-demo-service/\n  \
           2. cpu load 80%, 1 worker\n\
         Excluded agents (1):\n  \
           AGENT   REASON                            DETAIL\n  \
           node-c  over blast radius (maxTargets 2)  zone=b\n"
    );
}

#[test]
fn empty_plan_says_none() {
    let text = plan(&pb::Plan::default());
    assert_eq!(
        text,
        "Selected agents (0):\n  (none)\nFaults on each selected agent (0):\n\
         Excluded agents (0):\n  (none)\n"
    );
}

#[test]
fn created_tells_how_to_watch_abort_and_report() {
    let e = fixture::running();
    let text = created(&e, None);
    assert_eq!(
        text,
        "experiment checkout-loss created (id exp-0001), phase running: 2 fault(s) on each of \
         2 agent(s) for 1m, 1 agent(s) excluded\n  \
         watch it:  faultctl watch checkout-loss\n  \
         abort it:  faultctl abort checkout-loss --reason TEXT\n  \
         report:    faultctl report checkout-loss\n"
    );
    let mut pending = e;
    pending.phase = pb::ExperimentPhase::Pending as i32;
    assert!(created(&pending, None).contains("start it:  faultctl start checkout-loss\n"));
}

#[test]
fn list_has_one_row_per_experiment() {
    let now = T0 + 10_000;
    let text = list(&[fixture::aborted(), fixture::running()], now);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "PHASE", "TARGETS", "FAULTS", "CREATED", "RAN", "DURATION", "VERDICT"]
    );
    assert_eq!(
        rows[1][..10],
        [
            "checkout-loss",
            "aborted",
            "2",
            "agents",
            "4",
            "10s",
            "ago",
            "4s",
            "1m",
            "guard"
        ]
    );
    assert_eq!(
        rows[2],
        [
            "checkout-loss",
            "running",
            "2",
            "agents",
            "4",
            "10s",
            "ago",
            "10s",
            "1m",
            "-"
        ]
    );
    assert!(list(&[], now).starts_with("no experiments"));
}

#[test]
fn describe_has_every_section() {
    let text = describe(&fixture::aborted(), T0 + 10_000);
    for expected in [
        "Name:        checkout-loss\n",
        "ID:          exp-0001\n",
        "Phase:       aborted\n",
        "Created:     2023-11-14T22:13:19.900Z by operator/operator\n",
        "Started:     2023-11-14T22:13:20.000Z\n",
        "Ended:       2023-11-14T22:13:24.083Z\n",
        "Duration:    1m planned, ran 4s 83ms\n",
        "Verdict:     guard error-rate breached: 0.9 above 0.05 for 2s\n",
        "Abort:       guard breach at 22:13:24.000, last revert acknowledged at 22:13:24.083: \
         abort latency 83 ms\n",
        "Targets:     2 agent(s), 4 fault(s): 4 applied, 4 reverted, 0 failed, 0 pending\n",
        "\nPlan\n  Selected agents (2):\n",
        "    1. process pause name /fl-demo-service/\n",
        "\nTarget results\n  AGENT   FAULT",
        "\nGuards\n  GUARD       SAMPLES  BREACHES  ERRORS     MIN     MAX    LAST  FIRST BREACH  \
         LAST ERROR\n",
        "  error-rate        4         1       0  0.0000  0.9000  0.9000  22:13:24.000  -\n",
        "\nDocument\n  apiVersion: faultline.dev/v1\n  kind: Experiment\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let row = text
        .lines()
        .find(|l| l.contains("checkout-loss-node-b-1"))
        .expect("target row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "node-b",
            "checkout-loss-node-b-1",
            "reverted",
            "22:13:20.150",
            "22:13:24.050",
            "abort",
            "paused=1",
            "-"
        ]
    );
}

#[test]
fn long_target_lists_are_cut_with_a_pointer_to_json() {
    let e = fixture::running();
    let text = targets_table(&e.targets, crate::targets::Kind::Agents, 2);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.ends_with("... and 2 more (faultctl -o json describe experiment NAME has them all)\n")
    );
}

#[test]
fn completed_experiments_have_no_abort_line() {
    let mut e = fixture::aborted();
    e.phase = pb::ExperimentPhase::Completed as i32;
    assert_eq!(abort_line(&e), None);
    assert!(!describe(&e, T0).contains("Abort:"));
}

#[test]
fn describe_shows_guard_definitions_telemetry_and_log_when_sent() {
    let mut e = fixture::aborted();
    e.guard_interval_ms = 1000;
    e.on_target_failure = "abort".into();
    e.guards = vec![pb::GuardInfo {
        name: "error-rate".into(),
        r#type: "prometheus".into(),
        description: "prometheus sum(rate(x[5s])) above 0.05 for 2s".into(),
        on_error: "abort".into(),
    }];
    let summary = |min: f64, avg: f64, max: f64| {
        Some(pb::MetricSummary {
            samples: 4,
            min,
            avg,
            max,
        })
    };
    e.telemetry = vec![pb::TargetTelemetry {
        agent: "node-a".into(),
        cpu_busy_ratio: summary(0.1, 0.5, 0.9),
        memory_used_bytes: summary(1024.0, 2048.0, 4096.0),
        memory_used_ratio: summary(0.25, 0.5, 0.75),
    }];
    e.log = (0..35)
        .map(|i| pb::ExperimentLogEntry {
            at_unix_ms: T0 + i * 100,
            message: format!("entry {i}"),
        })
        .collect();
    if let Some(p) = e.plan.as_mut() {
        p.selection = "percent 50% of 3 eligible -> 2".into();
    }
    let text = describe(&e, T0 + 10_000);
    for expected in [
        "Guard every: 1s\n",
        "On failure:  abort (onTargetFailure)\n",
        "  Selection: percent 50% of 3 eligible -> 2\n",
        "  GUARD       TYPE        ON ERROR  DEFINITION\n",
        "  error-rate  prometheus  abort     prometheus sum(rate(x[5s])) above 0.05 for 2s\n",
        "\nTelemetry while running (min / avg / max)\n",
        "  node-a        4  10.0% / 50.0% / 90.0%  1.0 KiB / 2.0 KiB / 4.0 KiB  25.0% / 50.0% / 75.0%\n",
        "\nLog\n  ... 5 earlier entries (faultctl report NAME)\n  22:13:20.500  entry 5\n",
        "  22:13:23.400  entry 34\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn pod_dry_run_names_each_pod_with_its_node() {
    let text = dry_run(Some(&fixture::pods_running()), &fixture::pods_plan());
    assert_eq!(
        text,
        "dry run: experiment checkout-pods would run for 1m on 3 pod(s) on 2 node(s); nothing \
         was created\n\
         \n\
         Selected pods (3):\n  \
           POD                  NODE    CONTAINER\n  \
           shop/checkout-abcde  node-a  (whole pod)\n  \
           shop/checkout-fghij  node-b  (whole pod)\n  \
           shop/checkout-vwxyz  node-b  (whole pod)\n\
         Selection: pods (namespace shop, labelSelector app=checkout): mode all of 3 eligible \
         pods = 3 -> 3 pod(s) selected on 2 node(s)\n\
         Faults on each selected pod (1):\n  \
           1. cpu load 80%, 1 worker\n\
         Excluded pods (2):\n  \
           POD                        NODE    REASON\n  \
           kube-system/coredns-x2x7q  node-a  protected namespace kube-system \
         (policy.protected_namespaces)\n  \
           shop/checkout-pqrst        -       not Running (phase Pending)\n"
    );
    assert!(
        !text.contains("agent"),
        "pods are not called agents: {text}"
    );
}

#[test]
fn container_targets_are_counted_in_their_pods() {
    let mut p = fixture::pods_plan();
    for (s, pod) in p
        .selected
        .iter_mut()
        .zip(["checkout-abcde", "checkout-fghij"])
    {
        s.target = Some(fixture::pod_target(pod, true));
    }
    p.selected.truncate(2);
    let text = plan(&p);
    assert!(
        text.starts_with(
            "Selected containers (2):\n  \
               POD                  NODE    CONTAINER\n  \
               shop/checkout-abcde  node-a  app (140000000000)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("Faults on each selected container (1):\n"),
        "{text}"
    );
    assert!(text.contains("Excluded pods (2):\n"), "{text}");
    assert!(dry_run(None, &p).contains(" on 2 container(s) in 2 pod(s) on 2 node(s);"));
}

#[test]
fn pod_experiments_say_pods_in_apply_get_and_describe() {
    let e = fixture::pods_running();
    assert!(
        created(&e, None).starts_with(
            "experiment checkout-pods created (id exp-0001), phase running: 1 fault(s) on each \
             of 3 pod(s) on 2 node(s) for 1m, 2 pod(s) excluded\n"
        ),
        "{}",
        created(&e, None)
    );
    let rows: Vec<Vec<String>> = list(&[e.clone(), fixture::running()], T0 + 10_000)
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(rows[1][..5], ["checkout-pods", "running", "3", "pods", "3"]);
    assert_eq!(
        rows[2][..5],
        ["checkout-loss", "running", "2", "agents", "4"]
    );

    let mut e = e;
    e.telemetry = vec![pb::TargetTelemetry {
        agent: "node-a".into(),
        ..Default::default()
    }];
    let text = describe(&e, T0 + 10_000);
    for expected in [
        "Targets:     3 pod(s) on 2 node(s), 3 fault(s): 3 applied, 0 reverted, 0 failed, 0 \
         pending\n",
        "\nPlan\n  Selected pods (3):\n",
        "\nTarget results\n  POD                  NODE    FAULT  ",
        "\n  shop/checkout-fghij  node-b  checkout-pods-shop-checkout-fghij-0  applied  ",
        "\nTelemetry while running (min / avg / max)\n  NODE    SAMPLES",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("AGENT"), "{text}");
}

#[test]
fn a_fault_with_its_own_duration_says_so_in_the_dry_run() {
    let e = fixture::running();
    let p = pb::Plan {
        fault_duration_ms: vec![20_000, 0],
        ..fixture::plan()
    };
    let text = dry_run(Some(&e), &p);
    assert!(
        text.contains(
            "Faults on each selected agent (2):\n  \
             1. process pause name /fl-demo-service/ (for its own 20s, then reverted while the others go on)\n  \
             2. cpu load 80%, 1 worker\n"
        ),
        "{text}"
    );
}
