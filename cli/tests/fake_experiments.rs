//! The experiment commands against an in-process Experiments service over real mutual TLS on
//! 127.0.0.1: what reaches the coordinator, what the operator sees, and the exit statuses.
//! (The real coordinator is exercised end-to-end by the lead's tests in the `tests` crate.)

mod experiments_fake;

use experiments_fake::start;
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const DOC: &str =
    "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: checkout-loss}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_prints_the_plan_and_sends_dry_run() {
    let s = start().await;
    let file = s.document("exp.yaml", DOC);
    let out = s
        .faultctl(&["--identity", "operator", "apply", "-f", &file, "--dry-run"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with(
            "dry run: experiment checkout-loss would run for 1m on 1 agent(s); nothing was \
             created\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\n  node-a  zone=a\n"), "{stdout}");
    assert!(stdout.contains("  1. cpu load 80%, 1 worker\n"), "{stdout}");
    assert!(
        stdout.contains("\n  node-b  not connected  zone=b\n"),
        "{stdout}"
    );
    let seen = s.seen.lock().expect("lock");
    assert_eq!(seen.creates.len(), 1);
    assert_eq!(seen.creates[0].document, DOC, "the file is sent as is");
    assert!(seen.creates[0].dry_run);
    assert!(!seen.creates[0].start);
}

const PODS_DOC: &str = "apiVersion: faultline.dev/v1\nkind: Experiment\n\
metadata: {name: checkout-pods}\nspec:\n  targets:\n    pods: {namespace: shop, labelSelector: \
app=checkout, containers: [app]}\n    mode: all\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_of_pod_targets_names_pods_and_their_nodes() {
    let s = start().await;
    let file = s.document("pods.yaml", PODS_DOC);
    let out = s
        .faultctl(&["--identity", "operator", "apply", "-f", &file, "--dry-run"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stdout,
        "dry run: experiment checkout-pods would run for 30s on 2 container(s) in 2 pod(s) on 2 \
         node(s); nothing was created\n\
         \n\
         Selected containers (2):\n  \
           POD                  NODE    CONTAINER\n  \
           shop/checkout-abcde  node-a  app (a1b2c3d4e5f6)\n  \
           shop/checkout-fghij  node-b  app (f6e5d4c3b2a1)\n\
         Selection: pods (namespace shop, labelSelector app=checkout, containers app): mode all \
         of 3 eligible pods = 3; namespace share 2 -> 2 pod(s) selected on 2 node(s)\n\
         Faults on each selected container (1):\n  \
           1. cpu load 80%, 1 worker\n\
         Excluded pods (4):\n  \
           POD                        NODE    REASON\n  \
           kube-system/coredns-x2x7q  node-a  protected namespace kube-system \
         (policy.protected_namespaces)\n  \
           shop/checkout-klmno        node-c  no agent on node node-c: no Faultline agent has \
         connected from it\n  \
           shop/checkout-pqrst        -       not Running (phase Pending)\n  \
           shop/checkout-vwxyz        node-b  over namespace share \
         (policy.max_pod_percent_per_namespace 50% of 5 matching Running pod(s) in shop = 2, 0 \
         already under fault, room 2)\n"
    );
    assert_eq!(s.seen.lock().expect("lock").creates[0].document, PODS_DOC);

    let out = s
        .faultctl(&["-o", "json", "apply", "-f", &file, "--dry-run"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["plan"]["target_kind"], "pods");
    assert_eq!(v["plan"]["excluded"][3]["pod"], "shop/checkout-vwxyz");
    let pod = &v["plan"]["selected"][1]["target"]["container"];
    assert_eq!(pod["pod_name"], "checkout-fghij");
    assert_eq!(pod["container_name"], "app");
    assert_eq!(v["plan"]["selected"][1]["agent"], "node-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_starts_unless_no_start_and_json_has_both_parts() {
    let s = start().await;
    let file = s.document("exp.yaml", DOC);
    let out = s.faultctl(&["apply", "-f", &file]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("experiment checkout-loss created (id id-checkout-loss), phase running"),
        "{stdout}"
    );
    assert!(stdout.contains("faultctl watch checkout-loss"), "{stdout}");

    let out = s
        .faultctl(&["-o", "json", "apply", "-f", &file, "--no-start"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["experiment"]["phase"], "pending");
    assert_eq!(v["plan"]["excluded"][0]["reason"], "not connected");
    assert_eq!(v["plan"]["faults"][0]["cpu"]["load_percent"], 80);
    let seen = s.seen.lock().expect("lock");
    let starts: Vec<bool> = seen.creates.iter().map(|c| c.start).collect();
    assert_eq!(starts, [true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_printed_as_the_coordinator_words_them() {
    let s = start().await;
    let bad = s.document("bad.yaml", "spec:\n  faults:\n  - {kind: cpu, load: 150}\n");
    let out = s.faultctl(&["apply", "-f", &bad]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: spec.faults[0].load: 150 is outside 1..=100\n"
    );
    assert!(out.stdout.is_empty());

    let halted = s.document("halted.yaml", "while-halted\n");
    let out = s.faultctl(&["apply", "-f", &halted]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: the fleet is halted (game day over)"),
        "{stderr}"
    );
    assert!(stderr.contains("`faultctl resume`"), "{stderr}");

    let out = s
        .faultctl(&["--identity", "viewer", "apply", "-f", &halted])
        .await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "error: permission denied: identity viewer/viewer (role viewer) may not call \
             Experiments.Create"
        ),
        "{stderr}"
    );
    let out = s.faultctl(&["describe", "experiment", "nope"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: no experiment named nope\nhint: `faultctl get experiments`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_describe_abort_and_report() {
    let s = start().await;
    let out = s
        .faultctl(&["get", "experiments", "--phase", "aborted"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 2, "the filter applies: {stdout}");
    assert!(rows[1].starts_with("old-one  aborted"), "{stdout}");

    let out = s.faultctl(&["-o", "json", "get", "experiments"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["new-one", "old-one"], "newest first");
    assert_eq!(s.seen.lock().expect("lock").list_phases, ["aborted", ""]);

    let out = s
        .faultctl(&["describe", "experiment", "checkout-loss"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Phase:       aborted\n"), "{stdout}");
    assert!(stdout.contains("abort latency 50 ms"), "{stdout}");
    assert!(stdout.contains("\nGuards\n"), "{stdout}");

    let out = s
        .faultctl(&["abort", "checkout-loss", "--reason", "customer impact"])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("experiment checkout-loss is aborted: 1 agent(s)"),
        "{stdout}"
    );
    assert_eq!(
        s.seen.lock().expect("lock").aborts,
        [("checkout-loss".to_string(), "customer impact".to_string())]
    );

    let out = s.faultctl(&["report", "checkout-loss"]).await;
    assert_eq!(
        text(&out.stdout),
        "# Experiment checkout-loss\n\nVerdict: aborted\n"
    );
    let out = s.faultctl(&["-o", "json", "report", "checkout-loss"]).await;
    assert_eq!(text(&out.stdout), "{\"name\":\"checkout-loss\"}\n");
    let out = s
        .faultctl(&["report", "checkout-loss", "--format", "json"])
        .await;
    assert!(out.status.success());
    assert_eq!(
        s.seen.lock().expect("lock").report_formats,
        ["md", "json", "json"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_appends_lines_and_exits_by_outcome() {
    let s = start().await;
    let out = s.faultctl(&["watch", "ends-completed"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "22:13:21.000  running      elapsed 1s of 1m (59s left)  faults 1: 1 applied"
        ),
        "{stdout}"
    );
    assert!(lines[0].ends_with("| fault applied on node-a"), "{stdout}");
    assert!(lines[2].contains("completed"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no terminal codes in a pipe: {stdout:?}"
    );
    assert!(
        stdout.contains("experiment ends-completed completed after"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("report: faultctl report ends-completed\n"),
        "{stdout}"
    );

    let out = s.faultctl(&["watch", "ends-aborted"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("abort: guard breach at 22:13:24.000, last revert acknowledged at 22:13:24.050: abort latency 50 ms\n"),
        "{stdout}"
    );

    let out = s.faultctl(&["watch", "ends-failed"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("failed after"),
        "{}",
        text(&out.stdout)
    );

    let out = s.faultctl(&["-o", "json", "watch", "ends-aborted"]).await;
    assert_eq!(out.status.code(), Some(3));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["experiment"]["phase"], "running");
    assert_eq!(events[1]["experiment"]["phase"], "aborted");
    assert_eq!(events[1]["message"], "aborted: guard error-rate breached");

    let out = s.faultctl(&["watch", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: no experiment named nope"));
}
