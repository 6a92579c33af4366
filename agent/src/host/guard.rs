//! The pause guard: `faultline-agent __guard --fault-id ID --deadline-unix-ms N --pids
//! pid:start,...`. Its only job is to SIGCONT the paused processes when the agent says
//! "release", when its stdin reaches EOF (the agent died), or at the deadline, whichever comes
//! first. It deliberately has no PR_SET_PDEATHSIG: it must outlive the agent. Once it says
//! "ready" the agent moves it into the cgroups of the processes it watches (see
//! `process::placement`), so a kill of the agent's whole cgroup does not reach it; it creates
//! no thread or process after that point. The identities it carries (pid and start time) make
//! sure a recycled PID is never signalled.

use std::io::{BufRead, Write};
use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};

use super::os;
use super::proc::{Identity, ProcTable};
use super::worker::{deadline_instant, opt, parse_opts, EXIT_USAGE};

/// The guard's first line on stdout once it is watching.
pub const READY: &str = "ready";
/// What the agent writes to the guard to end a pause normally.
pub const RELEASE: &str = "release";

/// Parses `pid:start,pid:start`.
pub fn parse_pids(s: &str) -> Result<Vec<Identity>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

pub fn format_pids(ids: &[Identity]) -> String {
    ids.iter()
        .map(Identity::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

enum Wake {
    Release,
    Eof,
}

pub fn main(args: &[String]) -> i32 {
    let parsed = parse_opts(args).and_then(|o| {
        let deadline: u64 = opt(&o, "deadline-unix-ms")?;
        let pids = parse_pids(o.get("pids").ok_or("--pids is missing")?)?;
        Ok((deadline, pids))
    });
    let (deadline, pids) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultline guard: {e}");
            return EXIT_USAGE;
        }
    };
    // Terminal and service-manager signals must not end the guard before it resumes anyone:
    // block them (before any thread starts, so every thread inherits the mask). Leaving the
    // agent's session keeps a Ctrl-C aimed at the agent away from us.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let _ = nix::unistd::setsid();

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) if l.trim() == RELEASE => {
                    let _ = tx.send(Wake::Release);
                    return;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Wake::Eof);
    });
    say(READY);

    let end = deadline_instant(deadline);
    let why = match rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
        Ok(Wake::Release) => "release",
        Ok(Wake::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => "agent gone",
        Err(mpsc::RecvTimeoutError::Timeout) => "deadline",
    };
    let table = ProcTable::new("/proc");
    let mut resumed = 0u64;
    for id in &pids {
        if matches!(os::signal(&table, *id, libc::SIGCONT), Ok(true)) {
            resumed += 1;
        }
    }
    say(&serde_json::json!({ "resumed": resumed, "why": why }).to_string());
    0
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lists_round_trip() {
        let ids = vec![
            Identity { pid: 10, start: 5 },
            Identity { pid: 11, start: 99 },
        ];
        assert_eq!(format_pids(&ids), "10:5,11:99");
        assert_eq!(parse_pids("10:5,11:99"), Ok(ids));
        assert!(parse_pids("10").is_err());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(main(&["--pids".to_string()]), EXIT_USAGE);
        assert_eq!(main(&["--deadline-unix-ms".into(), "1".into()]), EXIT_USAGE);
    }
}
