//! The bench's own network: two network namespaces joined by a veth pair (`fla0` in A,
//! 10.77.0.1/24; `flb0` in B, 10.77.0.2/24). Dropping [`World`] deletes both namespaces,
//! which removes the veth pair, every qdisc and every iptables rule made in them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const IFACE_A: &str = "fla0";
pub const IFACE_B: &str = "flb0";
pub const ADDR_A: &str = "10.77.0.1";
pub const ADDR_B: &str = "10.77.0.2";

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {program} (is it installed? scripts/install-deps.sh bench)")
        })?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command and returns how long it took from spawn to exit.
pub fn timed(program: &str, args: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    sh(program, args)?;
    Ok(t.elapsed())
}

/// Two namespaces and the veth pair between them; deleted on drop.
pub struct World {
    pub a: String,
    pub b: String,
}

impl World {
    pub fn new() -> Result<World> {
        let pid = std::process::id();
        let w = World {
            a: format!("flbench-{pid}-a"),
            b: format!("flbench-{pid}-b"),
        };
        sh("ip", &["netns", "add", &w.a])?;
        sh("ip", &["netns", "add", &w.b])?;
        sh(
            "ip",
            &[
                "link", "add", IFACE_A, "netns", &w.a, "type", "veth", "peer", "name", IFACE_B,
                "netns", &w.b,
            ],
        )?;
        for (ns, iface, addr) in [(&w.a, IFACE_A, ADDR_A), (&w.b, IFACE_B, ADDR_B)] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", iface],
            )?;
            sh("ip", &["-n", ns, "link", "set", iface, "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(w)
    }

    /// `/run/netns/<a>`.
    pub fn path_a(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.a))
    }

    pub fn path_b(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.b))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(e) = sh("ip", &["netns", "del", ns]) {
                eprintln!("warning: cannot delete netns {ns}: {e:#}");
            }
        }
    }
}

/// The bench's state dir (the engine's journal), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        TempDir::named("state")
    }

    /// `$TMPDIR/flbench-<pid>-<tag>`.
    pub fn named(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("flbench-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
