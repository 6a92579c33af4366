//! A fake host for tests of target resolution and protection: a `/proc` and cgroup mounts in
//! a temp dir, shaped like kubelet nodes, with the kubelet's pod log directories.
#![allow(dead_code)]

use faultline_core::fault::{ContainerRef, Target};

use super::target::{Resolved, Resolver};
use super::{HostConfig, Protected};
use crate::engine::driver::DriverError;

pub const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const UID: &str = "5f0e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
/// The agent's fake PID, its parent and grandparent (whose parent is PID 1).
pub const SELF: u32 = 500;

pub struct Fake {
    pub dir: tempfile::TempDir,
}

impl Fake {
    /// `mounts`: (mount point under <tmp>/cg, type, super options).
    pub fn new(mounts: &[(&str, &str, &str)]) -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fake { dir };
        let mut info = String::new();
        for (i, (m, ty, opts)) in mounts.iter().enumerate() {
            let mp = f.cg().join(m);
            std::fs::create_dir_all(&mp).expect("mkdir mount");
            info.push_str(&format!(
                "{} 1 0:{i} / {} rw - {ty} {ty} {opts}\n",
                30 + i,
                mp.display()
            ));
        }
        let me = f.proc_dir().join("self");
        std::fs::create_dir_all(&me).expect("mkdir");
        std::fs::write(me.join("mountinfo"), info).expect("mountinfo");
        f.process(1, 0, "systemd", 1, "0::/init.scope\n");
        f.process(
            300,
            1,
            "containerd",
            10,
            "0::/system.slice/containerd.service\n",
        );
        f.process(400, 300, "bash", 20, "0::/\n");
        f.process(SELF, 400, "faultline-agent", 30, "0::/\n");
        f
    }

    pub fn cg(&self) -> std::path::PathBuf {
        self.dir.path().join("cg")
    }

    pub fn proc_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("proc")
    }

    pub fn process(&self, pid: u32, ppid: u32, comm: &str, start: u64, cgroup: &str) {
        let d = self.proc_dir().join(pid.to_string());
        std::fs::create_dir_all(&d).expect("mkdir proc");
        let stat = format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 5 1 0 0 20 0 1 0 {start} 1000 10"
        );
        std::fs::write(d.join("stat"), stat).expect("stat");
        std::fs::write(d.join("cmdline"), format!("{comm}\0--flag\0")).expect("cmdline");
        std::fs::write(d.join("cgroup"), cgroup).expect("cgroup");
    }

    /// Replaces a process's command line.
    pub fn cmdline(&self, pid: u32, argv: &[&str]) {
        let text: String = argv.iter().map(|a| format!("{a}\0")).collect();
        std::fs::write(self.proc_dir().join(pid.to_string()).join("cmdline"), text)
            .expect("cmdline");
    }

    /// The kubelet's pod log directories.
    pub fn pods_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pods")
    }

    /// A pod's log directory, `<namespace>_<name>_<uid>`.
    pub fn pod(&self, namespace: &str, name: &str, uid: &str) {
        std::fs::create_dir_all(self.pods_dir().join(format!("{namespace}_{name}_{uid}")))
            .expect("mkdir pod log dir");
    }

    pub fn mkcg(&self, rel: &str) -> std::path::PathBuf {
        let d = self.cg().join(rel);
        std::fs::create_dir_all(&d).expect("mkdir cgroup");
        d
    }

    pub fn resolver(&self, protected: Protected) -> Resolver {
        let cfg = HostConfig {
            protected,
            cgroup_root: self.cg(),
            proc_root: self.proc_dir(),
            pod_logs_dir: self.pods_dir(),
            ..HostConfig::default()
        };
        let mut r = Resolver::new(&cfg);
        r.self_pid = SELF;
        r
    }
}

pub fn refused(r: Result<Resolved, DriverError>) -> String {
    match r {
        Err(DriverError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn container(id: &str, uid: &str) -> Target {
    Target::Container(ContainerRef {
        container_id: id.into(),
        pod_uid: uid.into(),
        ..ContainerRef::default()
    })
}
