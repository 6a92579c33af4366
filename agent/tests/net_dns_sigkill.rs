//! The `dns` fault through the real agent binary (root): `faultline-agent run` applies it from
//! a fault file; after a SIGKILL of the agent the name resolves again within a second (the
//! TCX link was never pinned), `recover` finds nothing left, and bad fault files are refused
//! before any driver runs, naming the field and the range.

mod net_dns_support;
mod net_ebpf_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_agent::net::dns::PROGRAM_PREFIX;
use faultline_agent::net::ebpf;
use net_dns_support::*;

const EXE: &str = env!("CARGO_BIN_EXE_faultline-agent");

fn fault_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let f = dir.join("faults.yaml");
    std::fs::write(&f, text).expect("write the fault file");
    f
}

/// Ids of `fl_dns_` programs the process `pid` holds.
fn programs_held_by(pid: u32) -> Vec<u32> {
    ebpf::programs_named(PROGRAM_PREFIX)
        .into_iter()
        .filter(|p| ebpf::holders(Path::new("/proc"), p.id).contains(&pid))
        .map(|p| p.id)
        .collect()
}

#[test]
fn after_an_agent_sigkill_the_name_resolves_again_within_a_second() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fault_file(
        dir.path(),
        &format!(
            "kind: dns\nnames: [{BAD}]\naction: nxdomain\ntarget: {{netns: {}}}\n",
            lab.netns().display()
        ),
    );
    let state = dir.path().join("state");
    let started = Instant::now();
    let agent = Command::new(EXE)
        .args(["run", "--duration", "60s", "-f"])
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start faultline-agent run");
    let mut agent = ChildGuard(agent);
    let pid = agent.0.id();
    let out = agent.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let applied = loop {
        let line = lines
            .next()
            .expect("the agent ended before applying")
            .expect("agent output");
        println!("agent: {line}");
        if line.starts_with("applied ") {
            break started.elapsed();
        }
        assert!(!line.starts_with("failed "), "{line}");
    };
    println!(
        "agent start to `applied` line: {:.1} ms",
        applied.as_secs_f64() * 1000.0
    );
    let bad = tally(&lab.client, BAD, 50, 1, Q);
    assert_eq!(bad.nxdomain, 50, "the agent's fault is in force: {bad:?}");
    assert_eq!(tally(&lab.client, GOOD, 50, 100, Q).answered, 50);
    let held = programs_held_by(pid);
    assert_eq!(
        held.len(),
        1,
        "the agent holds one fl_dns_ program: {held:?}"
    );

    // Query every few ms, SIGKILL the agent in the middle, find the first answer after it.
    let mut outcomes: Vec<(Instant, bool)> = Vec::new();
    let mut killed_at = None;
    let begin = Instant::now();
    let mut id: u16 = 1000;
    let mut unanswered = 0;
    while begin.elapsed() < Duration::from_millis(2500) {
        if killed_at.is_none() && begin.elapsed() >= Duration::from_millis(500) {
            agent.0.kill().expect("SIGKILL the agent");
            killed_at = Some(Instant::now());
        }
        id = id.wrapping_add(1);
        let sent = Instant::now();
        let a = query(&lab.client, BAD, id, false, Duration::from_millis(50));
        if a.is_none() {
            unanswered += 1;
        }
        outcomes.push((sent, a.is_some_and(|a| a.rcode == 0 && a.answers > 0)));
    }
    let killed_at = killed_at.expect("killed");
    let _ = agent.0.wait();
    assert!(
        outcomes
            .iter()
            .filter(|(t, _)| *t < killed_at)
            .all(|(_, ok)| !ok),
        "before the SIGKILL every query failed"
    );
    let first_ok = outcomes
        .iter()
        .find(|(t, ok)| *ok && *t >= killed_at)
        .map(|(t, _)| *t)
        .expect("the name never resolved again after the SIGKILL");
    let recovery = first_ok.saturating_duration_since(killed_at);
    println!(
        "{BAD} resolved again {:.1} ms after SIGKILL of the agent ({} queries, {unanswered} without any answer in 50 ms)",
        recovery.as_secs_f64() * 1000.0,
        outcomes.len()
    );
    assert!(recovery < Duration::from_secs(1), "took {recovery:?}");
    // Every later query resolves.
    assert!(outcomes
        .iter()
        .filter(|(t, _)| *t >= first_ok)
        .all(|(_, ok)| *ok));
    let left: Vec<u32> = ebpf::programs_named(PROGRAM_PREFIX)
        .into_iter()
        .map(|p| p.id)
        .filter(|id| held.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "the dead agent's program is unloaded: {left:?}"
    );

    // The next start reverts the journal entry (nothing is left to undo) and sweeps.
    let rec = Command::new(EXE)
        .arg("recover")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run faultline-agent recover");
    let text = String::from_utf8_lossy(&rec.stdout);
    println!("recover: {text}");
    assert!(rec.status.success(), "recover failed: {text}");
    assert!(
        text.contains("dns"),
        "recover names the journaled dns fault: {text}"
    );
    assert_eq!(tally(&lab.client, BAD, 20, 5000, Q).answered, 20);
}

const Q: Duration = Duration::from_millis(500);

#[test]
fn bad_fault_files_are_refused_before_any_driver_runs() {
    require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    for (doc, want) in [
        (
            "kind: dns\nnames: [a.example]\naction: refuse\n",
            "action: \"refuse\" is not an action; use nxdomain, servfail or timeout",
        ),
        (
            "kind: dns\nnames: [a.example]\naction: nxdomain\nprobability: 1.5\n",
            "probability: 1.5 is outside 0..=1",
        ),
        (
            "kind: dns\nnames: ['bad name.example']\naction: timeout\n",
            "names[0]: \"bad name.example\" has ' ' in a label",
        ),
        (
            "kind: dns\nnames: [a.example]\naction: timeout\nprobability: -0.1\n",
            "probability: -0.1 is outside 0..=1",
        ),
    ] {
        let file = fault_file(dir.path(), doc);
        let out = Command::new(EXE)
            .args(["run", "--duration", "5s", "-f"])
            .arg(&file)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .expect("run faultline-agent");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{doc}: accepted\n{all}");
        assert!(all.contains(want), "{doc}: wanted {want:?} in\n{all}");
        assert!(
            !all.contains("applied "),
            "{doc}: nothing is applied\n{all}"
        );
    }
}
