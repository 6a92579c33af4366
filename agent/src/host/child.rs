//! A worker or guard process as the agent holds it: its identity, the stdin pipe whose EOF
//! tells it the agent is gone, and the latest counters it reported on stdout.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::os;
use super::proc::{Identity, ProcTable};

/// What a child reported: the latest value of each counter and its last error text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    pub counters: BTreeMap<String, u64>,
    pub error: Option<String>,
}

/// A running child of the agent.
#[derive(Debug)]
pub struct Running {
    pub ident: Identity,
    child: Child,
    stdin: Option<ChildStdin>,
    reports: Arc<Mutex<Reports>>,
    /// Lines that are not JSON (the guard's "ready").
    text: Mutex<mpsc::Receiver<String>>,
    exit: Option<ExitStatus>,
}

impl Running {
    /// Starts `exe args...` from the spawner thread with piped stdin and stdout.
    pub fn start(exe: &Path, args: &[String], proc: &ProcTable) -> io::Result<Running> {
        Self::start_with_fds(exe, args, proc, &[])
    }

    /// As [`Running::start`], handing `fds` to the child as descriptors 3, 4, ...
    pub fn start_with_fds(
        exe: &Path,
        args: &[String],
        proc: &ProcTable,
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<Running> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let copies = os::pass_fds(&mut cmd, fds)?;
        let spawned = os::spawn(cmd);
        drop(copies);
        let mut child = spawned?;
        let ident = match proc.identity(child.id()) {
            Some(i) => i,
            None => {
                let _ = child.kill();
                let st = child.wait()?;
                return Err(io::Error::other(format!(
                    "{} exited at once ({st})",
                    exe.display()
                )));
            }
        };
        let stdin = child.stdin.take();
        let reports = Arc::new(Mutex::new(Reports::default()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let reports = reports.clone();
            std::thread::Builder::new()
                .name(format!("faultline-child-{}", ident.pid))
                .spawn(move || read_reports(BufReader::new(out), &reports, &tx))?;
        }
        Ok(Running {
            ident,
            child,
            stdin,
            reports,
            text: Mutex::new(rx),
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.ident.pid
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin already closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// Closes stdin: the child sees EOF.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a text line (not a JSON report) equal to `want`.
    pub fn wait_line(&self, want: &str, limit: Duration) -> bool {
        let Ok(rx) = self.text.lock() else {
            return false;
        };
        let end = std::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.trim() == want => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    pub fn reports(&self) -> Reports {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The exit status once the child has exited (reaping it).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `limit` for the child to exit on its own.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = os::wait_child(&mut self.child, limit);
        }
        self.exit
    }

    /// SIGKILLs the child (if still running) and reaps it; `true` if it was running.
    pub fn kill(&mut self) -> io::Result<bool> {
        self.close_stdin();
        if self.poll_exit().is_some() {
            return Ok(false);
        }
        // The child is ours and not reaped, so its PID cannot have been reused.
        self.child.kill()?;
        self.exit = os::wait_child(&mut self.child, Duration::from_secs(5));
        if self.exit.is_none() {
            return Err(io::Error::other(format!(
                "pid {} did not exit within 5 s of SIGKILL",
                self.ident.pid
            )));
        }
        Ok(true)
    }
}

fn read_reports(out: impl BufRead, reports: &Mutex<Reports>, text: &mpsc::Sender<String>) {
    for line in out.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => {
                let Ok(mut r) = reports.lock() else { break };
                for (k, v) in map {
                    if let Some(n) = v.as_u64() {
                        r.counters.insert(k, n);
                    } else if let Some(s) = v.as_str() {
                        if k == "error" {
                            r.error = Some(s.to_string());
                        }
                    }
                }
            }
            _ => {
                let _ = text.send(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_keep_the_latest_counters_and_pass_text_on() {
        let input = "ready\n{\"rss_bytes\":10}\n{\"rss_bytes\":20,\"fsyncs\":3}\n\
                     {\"error\":\"disk full\"}\nnot json\n";
        let reports = Mutex::new(Reports::default());
        let (tx, rx) = mpsc::channel();
        read_reports(input.as_bytes(), &reports, &tx);
        let r = reports.lock().expect("lock").clone();
        assert_eq!(r.counters.get("rss_bytes"), Some(&20));
        assert_eq!(r.counters.get("fsyncs"), Some(&3));
        assert_eq!(r.error.as_deref(), Some("disk full"));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec!["ready", "not json"]);
    }

    #[test]
    fn a_child_is_started_signalled_and_reaped() {
        let table = ProcTable::new("/proc");
        let mut c = Running::start(Path::new("/bin/cat"), &[], &table).expect("start cat");
        assert!(table.is_alive(c.ident));
        c.send("hello").expect("write");
        assert!(c.poll_exit().is_none());
        c.close_stdin();
        let st = c.wait(Duration::from_secs(5)).expect("cat ends at EOF");
        assert!(st.success());
        assert!(!c.kill().expect("already gone"));
    }
}
