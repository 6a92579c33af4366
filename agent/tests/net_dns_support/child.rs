//! A helper test process that sends raw queries from inside a cgroup and a netns (its socket
//! belongs to the cgroup it joined), and the parent side that starts it and reads its tally.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{query_to, ChildGuard, Tally};
use crate::net_ebpf_support as ebpf_support;

/// The body of a helper test process that sends raw queries from inside a cgroup and netns:
/// `env` holds `cgroup2 dir|netns path|server addr:port|name|count`. Joins the cgroup first
/// (the socket, made after, belongs to it), prints `TALLY answered nxdomain servfail timeouts`.
pub fn query_child_main(env: &str) {
    let Ok(arg) = std::env::var(env) else {
        panic!("only run as a helper process (needs {env})");
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).expect("pdeathsig");
    let parts: Vec<&str> = arg.split('|').collect();
    let [cgroup_dir, ns, server, name, n] = parts[..] else {
        panic!("cgroup|netns|server|name|count: {arg}");
    };
    std::fs::write(
        Path::new(cgroup_dir).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the cgroup");
    let sock = ebpf_support::udp_in(Path::new(ns), "0.0.0.0:0");
    let mut t = Tally::default();
    for i in 0..n.parse::<u16>().expect("count") {
        match query_to(
            &sock,
            server,
            name,
            7 + i,
            false,
            Duration::from_millis(500),
        ) {
            None => t.timeouts += 1,
            Some(a) if a.rcode == 0 && a.answers > 0 => t.answered += 1,
            Some(a) if a.rcode == 3 => t.nxdomain += 1,
            Some(a) if a.rcode == 2 => t.servfail += 1,
            Some(_) => t.other_rcode += 1,
        }
    }
    println!(
        "TALLY {} {} {} {}",
        t.answered, t.nxdomain, t.servfail, t.timeouts
    );
}

/// Runs the helper test `test` of this test binary (which calls [`query_child_main`] with
/// `env`) and returns its (answered, nxdomain, servfail, timeouts).
#[allow(clippy::too_many_arguments)]
pub fn queries_from(
    test: &str,
    env: &str,
    cgroup_dir: &Path,
    netns: &Path,
    server: &str,
    name: &str,
    n: u32,
) -> [u32; 4] {
    let exe = std::env::current_exe().expect("test executable");
    let child = Command::new(exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            env,
            format!(
                "{}|{}|{server}|{name}|{n}",
                cgroup_dir.display(),
                netns.display()
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the helper");
    let mut child = ChildGuard(child);
    let out = child.0.stdout.take().expect("stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line.expect("helper output");
        if let Some((_, rest)) = line.split_once("TALLY ") {
            let v: Vec<u32> = rest
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            return [v[0], v[1], v[2], v[3]];
        }
    }
    panic!("the helper printed no TALLY line");
}
