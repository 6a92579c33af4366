//! A kubelet-shaped pod for the container-kill tests (root): a pause process and two
//! containers (`app`, `sidecar`), each a process in cgroups named as the kubelet's systemd or
//! cgroupfs driver names them (cgroup2 and the v1 `pids` and `cpu` hierarchies, from
//! [`kube_pod_support`]), the kubelet's pod log directory (`shop_checkout-1_<uid>`) and its
//! container log links (`checkout-1_shop_<name>-<id>.log`, none for the sandbox). The test
//! plays the container runtime: [`KillPod::restart`] starts a container again with a new ID and
//! a new link. Drop guards kill every process by PID and remove every cgroup and directory.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_agent::host::cgroup::Hierarchy;
use faultline_agent::host::HostConfig;
use faultline_core::fault::{ContainerKillFault, ContainerRef, Fault, FaultSpec, Target};

use crate::kube_pod_support::{hex, place, pod_paths, pod_uid, CgroupDriver, CgroupTree, Mounts};

pub const NAMESPACE: &str = "shop";
pub const POD: &str = "checkout-1";

/// One container: its name, runtime ID, hierarchy path and its (only) process.
pub struct Container {
    pub name: String,
    pub id: String,
    pub path: String,
    pub child: Child,
}

impl Container {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The signal that ended it, waiting up to `limit`; `None` while it runs.
    pub fn ended_by(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.signal();
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod: pause first, then the containers (in start order); containers killed earlier
/// stay in `dead` until the pod goes.
pub struct KillPod {
    // Processes first: they die before the cgroups (tree) and directories go.
    pub pause: Container,
    pub containers: Vec<Container>,
    pub dead: Vec<Container>,
    pub uid: String,
    pub driver: CgroupDriver,
    pub pod_path: String,
    pub hierarchies: Vec<Hierarchy>,
    pub tree: CgroupTree,
    /// `pods/` (the kubelet's pod log directories) and `containers/` (its links).
    pub logs: tempfile::TempDir,
}

fn spawn_sleep() -> Child {
    Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

impl KillPod {
    pub fn new(driver: CgroupDriver) -> KillPod {
        let mounts = Mounts::find();
        let mut tree = CgroupTree::new();
        let uid = pod_uid();
        let (pod_path, _, pause_path) = pod_paths(driver, &tree.top, &uid, "0", &hex(64));
        let mut hierarchies = vec![mounts.v2.clone()];
        hierarchies.extend(mounts.v1.iter().cloned());
        let logs = tempfile::tempdir().expect("tempdir");
        let pod_log = logs
            .path()
            .join("pods")
            .join(format!("{NAMESPACE}_{POD}_{uid}"));
        std::fs::create_dir_all(&pod_log).expect("pod log dir");
        std::fs::create_dir_all(logs.path().join("containers")).expect("links dir");
        let pause_child = spawn_sleep();
        for h in &hierarchies {
            place(&tree.make(h, &pause_path), pause_child.id());
        }
        let pause = Container {
            name: "POD".into(),
            id: pause_path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            path: pause_path,
            child: pause_child,
        };
        let mut pod = KillPod {
            pause,
            containers: Vec::new(),
            dead: Vec::new(),
            uid,
            driver,
            pod_path,
            hierarchies,
            tree,
            logs,
        };
        pod.start("app");
        pod.start("sidecar");
        pod
    }

    /// The pause container's runtime ID (the last component of its cgroup, without the
    /// systemd driver's `cri-containerd-` and `.scope`).
    pub fn pause_id(&self) -> String {
        self.pause
            .id
            .trim_start_matches("cri-containerd-")
            .trim_end_matches(".scope")
            .to_string()
    }

    /// Starts container `name` (again): a new ID, its cgroups, its process, the kubelet's log
    /// directory and link. A container of that name that ran before moves to `dead`.
    pub fn start(&mut self, name: &str) -> u32 {
        if let Some(i) = self.containers.iter().position(|c| c.name == name) {
            let old = self.containers.remove(i);
            self.dead.push(old);
        }
        let id = hex(64);
        let (_, path, _) = pod_paths(self.driver, &self.tree.top, &self.uid, &id, "0");
        let child = spawn_sleep();
        for h in &self.hierarchies.clone() {
            place(&self.tree.make(h, &path), child.id());
        }
        let dir = self
            .logs
            .path()
            .join("pods")
            .join(format!("{NAMESPACE}_{POD}_{}", self.uid))
            .join(name);
        std::fs::create_dir_all(&dir).expect("container log dir");
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("{n}.log"));
        std::fs::write(&log, "").expect("log file");
        std::os::unix::fs::symlink(
            &log,
            self.links_dir()
                .join(format!("{POD}_{NAMESPACE}_{name}-{id}.log")),
        )
        .expect("container log link");
        let pid = child.id();
        self.containers.push(Container {
            name: name.into(),
            id,
            path,
            child,
        });
        pid
    }

    pub fn container(&mut self, name: &str) -> &mut Container {
        self.containers
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    pub fn links_dir(&self) -> PathBuf {
        self.logs.path().join("containers")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.logs.path().join("pods")
    }

    /// The agent's host configuration for this pod's log directories.
    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            pod_logs_dir: self.pods_dir(),
            container_logs_dir: self.links_dir(),
            agent_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_faultline-agent"))),
            ..HostConfig::default()
        }
    }

    /// An agent config file in `dir` pointing at this pod's log directories.
    pub fn agent_config(&self, dir: &std::path::Path) -> PathBuf {
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "[limits]\npod_logs_dir = \"{}\"\ncontainer_logs_dir = \"{}\"\n",
                self.pods_dir().display(),
                self.links_dir().display()
            ),
        )
        .expect("write the agent config");
        file
    }

    /// The whole pod as a target (UID, namespace, name).
    pub fn pod_target(&self) -> Target {
        Target::Container(ContainerRef {
            pod_uid: self.uid.clone(),
            pod_namespace: NAMESPACE.into(),
            pod_name: POD.into(),
            ..ContainerRef::default()
        })
    }

    /// One container as the target, by runtime ID (`containerd://` as Kubernetes reports it).
    pub fn container_target(&self, id: &str) -> Target {
        Target::Container(ContainerRef {
            container_id: format!("containerd://{id}"),
            pod_uid: self.uid.clone(),
            pod_namespace: NAMESPACE.into(),
            pod_name: POD.into(),
            ..ContainerRef::default()
        })
    }
}

/// A container-kill of `containers` aimed at `target`.
pub fn container_kill(
    target: Target,
    containers: &[&str],
    interval: Option<Duration>,
) -> FaultSpec {
    FaultSpec {
        target,
        fault: Fault::ContainerKill(ContainerKillFault {
            containers: containers.iter().map(|s| s.to_string()).collect(),
            interval,
        }),
    }
}
