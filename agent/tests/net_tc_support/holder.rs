//! Kernel-enforced expiry helpers: a child test process that applies a fault and holds it until
//! it is killed, a driver on a lease the test controls, and the time traffic takes to get back
//! to line rate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::Driver;
use faultline_agent::net::{network, KernelLease, NetConfig};

use super::traffic::Flow;

/// Above this a flow counts as at line rate (every shaping test limits to about 10 Mbit/s).
pub const LINE_RATE_FLOOR: f64 = 50_000_000.0;
/// What a holder prints once its fault is applied.
pub const APPLIED: &str = "FL-CHILD applied";

/// The child process, killed by PID when dropped.
pub struct Holder(pub Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the ignored test `test` of this binary as a child with `env=netns`, and returns once it
/// printed [`APPLIED`].
pub fn start_holder(test: &str, env: &str, netns: &str) -> Holder {
    let exe = std::env::current_exe().expect("test executable");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, netns)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let out = child.stdout.take().expect("stdout");
    let holder = Holder(child);
    for line in BufReader::new(out).lines() {
        match line {
            Ok(l) if l.contains(APPLIED) => return holder,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("the holder process exited before applying its fault")
}

/// Samples 50 ms windows until `flow` runs above [`LINE_RATE_FLOOR`]; how long after `since`.
pub fn time_to_line_rate(flow: &Flow, since: Instant, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        if flow.rate_over(Duration::from_millis(50)) > LINE_RATE_FLOOR {
            return Some(since.elapsed());
        }
    }
    None
}

/// The network driver on a lease renewed for a minute, and that lease.
pub fn leased_driver() -> (Arc<dyn Driver>, KernelLease) {
    let lease = KernelLease::new();
    let cfg = NetConfig {
        lease: lease.clone(),
        ..Default::default()
    };
    let d = network::drivers(&cfg)
        .into_iter()
        .next()
        .expect("the network driver");
    lease.renew(SystemTime::now() + Duration::from_secs(60));
    (d, lease)
}
