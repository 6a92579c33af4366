//! The io-limit guard: `faultline-agent __io-guard --fault-id ID --deadline-unix-ms N
//! --settings JSON`. A cgroup file stays written when the agent dies, so this small process
//! holds the fault's old values and puts them back (see [`files::restore`]) when its stdin
//! reaches EOF (the agent died), at the deadline, or when the lease the agent forwards
//! (`lease <unix-ms>` lines) runs out, whichever comes first; `release` (the agent restored
//! them itself) ends it without touching anything. Like the pause guard it has no
//! PR_SET_PDEATHSIG, blocks the terminal and service-manager signals, leaves the agent's
//! session, and is moved out of the agent's cgroups (into the root cgroup of every hierarchy)
//! once it says `ready`, so that a kill of the agent's whole cgroup does not reach it.

use std::io::{BufRead, Write};
use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};

use super::files::{self, Setting};
use crate::host::worker::{deadline_instant, opt, parse_opts, EXIT_USAGE};

/// The guard's first line once it is watching.
pub const READY: &str = "ready";
/// The agent restored the values itself: end without touching them.
pub const RELEASE: &str = "release";
/// `lease <unix-ms>`: the agent's lease now ends then.
pub const LEASE: &str = "lease";

enum Wake {
    Release,
    Lease(u64),
    Eof,
}

pub fn main(args: &[String]) -> i32 {
    let parsed = parse_opts(args).and_then(|o| {
        let deadline: u64 = opt(&o, "deadline-unix-ms")?;
        let text = o.get("settings").ok_or("--settings is missing")?;
        let settings: Vec<Setting> =
            serde_json::from_str(text).map_err(|e| format!("--settings: {e}"))?;
        Ok((deadline, settings))
    });
    let (deadline, settings) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultline io-limit guard: {e}");
            return EXIT_USAGE;
        }
    };
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
            let Ok(l) = line else { break };
            let l = l.trim();
            if l == RELEASE {
                let _ = tx.send(Wake::Release);
                return;
            }
            if let Some(ms) = l
                .strip_prefix(LEASE)
                .and_then(|r| r.trim().parse::<u64>().ok())
            {
                let _ = tx.send(Wake::Lease(ms));
            }
        }
        let _ = tx.send(Wake::Eof);
    });
    say(READY);

    let mut end_ms = deadline;
    let why = loop {
        let end = deadline_instant(end_ms);
        match rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
            Ok(Wake::Release) => {
                say(&serde_json::json!({ "restored": 0, "why": "release" }).to_string());
                return 0;
            }
            Ok(Wake::Lease(ms)) => end_ms = deadline.min(ms),
            Ok(Wake::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break "agent gone",
            Err(mpsc::RecvTimeoutError::Timeout) if end_ms < deadline => break "lease",
            Err(mpsc::RecvTimeoutError::Timeout) => break "deadline",
        }
    };
    let (restored, errors) = files::restore_all(&settings);
    say(&serde_json::json!({ "restored": restored, "why": why, "errors": errors }).to_string());
    i32::from(!errors.is_empty())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(main(&["--deadline-unix-ms".into(), "1".into()]), EXIT_USAGE);
        assert_eq!(
            main(&[
                "--deadline-unix-ms".into(),
                "1".into(),
                "--settings".into(),
                "nope".into()
            ]),
            EXIT_USAGE
        );
    }
}
