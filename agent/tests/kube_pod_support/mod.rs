//! Helpers for the pod-target tests on the real kernel (root): a "node" of two pods shaped the
//! way a kubelet leaves them — cgroups named like its systemd or cgroupfs driver makes them, in
//! cgroup2 and in v1 hierarchies, each pod with its own network namespace wired to the node's
//! namespace, a pause process and a UDP sender — and per-pod counts of what reached the peer.
//! Drop guards kill every process by PID, then remove every cgroup and namespace. The cgroup
//! side is in [`cgroups`]; CPU, memory and process views for resource faults in [`resources`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use faultline_agent::host::cgroup::Hierarchy;
use faultline_core::fault::{
    Cidr, ContainerRef, DropFault, Fault, FaultSpec, Protocol, Target, TrafficMatch,
};

pub use crate::net_ebpf_support::count_by_source;
use crate::net_ebpf_support::{ip, udp_in, Ns};

mod cgroups;
mod resources;

pub use cgroups::*;
// Not every test crate that includes these helpers uses the resource views.
#[allow(unused_imports)]
pub use resources::*;

/// The peer both pods send to: an address of the node namespace.
pub const PEER: &str = "10.201.0.1";
pub const PORT: u16 = 7000;

/// A child process, killed and reaped by PID on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pod's application: bash in the pod netns that sends `n` datagrams to PEER:PORT (one
/// socket each, bash's /dev/udp) for every `n` read on stdin, and answers `sent`.
pub struct App {
    proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl App {
    fn new(ns: &Path) -> App {
        let script = format!(
            "while read n; do for i in $(seq 1 $n); do echo \"$i\" 2>/dev/null > /dev/udp/{PEER}/{PORT}; \
             if [ $((i % 20)) -eq 0 ]; then sleep 0.01; fi; done; echo sent; done"
        );
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["bash", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn nsenter bash (util-linux, bash)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        App {
            proc: Proc(child),
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Starts a burst of `n` datagrams.
    pub fn start(&mut self, n: u32) {
        writeln!(self.stdin, "{n}").expect("start a burst");
    }

    /// Waits for the burst to end.
    pub fn finish(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the sender");
        assert_eq!(line.trim(), "sent", "the sender ended early");
    }
}

/// One pod: its ids, kubelet-shaped cgroup paths, netns and processes.
pub struct Pod {
    // Processes first: they die before the namespace and (in Node) the cgroups go.
    pub app: App,
    pub pause: Proc,
    pub uid: String,
    pub container_id: String,
    pub pause_id: String,
    /// Hierarchy paths (the same in every hierarchy that holds the pod).
    pub pod_path: String,
    pub container_path: String,
    pub pause_path: String,
    /// Hierarchies holding the pod's cgroups (labels: `cgroup2`, `pids`, `cpu`).
    pub hierarchies: Vec<Hierarchy>,
    /// The pod's address on its `eth0`.
    pub addr: Ipv4Addr,
    pub ns: Ns,
}

impl Pod {
    /// `container` target: pod UID + container ID (`containerd://` as Kubernetes reports it).
    pub fn container_target(&self) -> Target {
        Target::Container(ContainerRef {
            container_id: format!("containerd://{}", self.container_id),
            pod_uid: self.uid.clone(),
            pod_namespace: "shop".into(),
            pod_name: "checkout".into(),
            container_name: "app".into(),
        })
    }

    /// The whole pod: UID only.
    pub fn pod_target(&self) -> Target {
        Target::Container(ContainerRef {
            pod_uid: self.uid.clone(),
            pod_namespace: "shop".into(),
            pod_name: "checkout".into(),
            ..ContainerRef::default()
        })
    }

    /// (hierarchy label, path) of `path` in every hierarchy of the pod.
    pub fn cgroups_at(&self, path: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .hierarchies
            .iter()
            .map(|h| (h.label(), path.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Inode of the pod's network namespace.
    pub fn netns_inode(&self) -> u64 {
        std::fs::metadata(self.ns.path())
            .expect("stat the pod netns")
            .ino()
    }
}

/// Inode of a namespace file (`/proc/<pid>/ns/net`, `/run/netns/x`).
pub fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// A node with two pods (`pods[0]` the target, `pods[1]` its neighbour) sending to PEER:PORT
/// in the node's namespace, where `rx` receives.
pub struct Node {
    // Drop order: pods (processes, netns) first, then the cgroups, then the node netns.
    pub pods: Vec<Pod>,
    pub tree: CgroupTree,
    pub rx: UdpSocket,
    pub ns: Ns,
    pub mounts: Mounts,
    pub layout: Layout,
    /// V1Only: the runtime's cgroup2 cgroup holding every container process.
    pub runtime_path: Option<String>,
    /// The kubelet's pod log directories (`shop_checkout-<i>_<uid>`), where the agent reads
    /// which namespace a pod is in.
    pub pod_logs: tempfile::TempDir,
}

impl Node {
    pub fn new(layout: Layout) -> Node {
        let mounts = Mounts::find();
        let ns = Ns::new();
        ns.exec(&["addr", "add", &format!("{PEER}/32"), "dev", "lo"]);
        let rx = udp_in(&ns.path(), &format!("{PEER}:{PORT}"));
        let mut node = Node {
            pods: Vec::new(),
            tree: CgroupTree::new(),
            rx,
            ns,
            mounts,
            layout,
            runtime_path: None,
            pod_logs: tempfile::tempdir().expect("tempdir"),
        };
        if layout == Layout::V1Only {
            let path = format!("{}/system.slice/containerd.service", node.tree.top);
            node.tree.make(&node.mounts.v2.clone(), &path);
            node.runtime_path = Some(path);
        }
        for i in 1..=2u8 {
            let pod = node.add_pod(i);
            node.pods.push(pod);
        }
        node
    }

    fn add_pod(&mut self, i: u8) -> Pod {
        let uid = pod_uid();
        let (container_id, pause_id) = (hex(64), hex(64));
        let top = &self.tree.top;
        let (pod_path, container_path, pause_path) =
            pod_paths(self.layout.driver(), top, &uid, &container_id, &pause_id);
        let mut hierarchies = self.mounts.v1.clone();
        if matches!(self.layout, Layout::V2AndV1(_)) {
            hierarchies.insert(0, self.mounts.v2.clone());
        }

        std::fs::create_dir(
            self.pod_logs
                .path()
                .join(format!("shop_checkout-{i}_{uid}")),
        )
        .expect("pod log dir");
        let ns = Ns::new();
        self.wire(&ns, i);
        // The pause process starts first (the oldest process of the pod), then the app.
        let pause = Proc(
            Command::new("nsenter")
                .arg(format!("--net={}", ns.path().display()))
                .args(["sleep", "3600"])
                .spawn()
                .expect("spawn nsenter sleep"),
        );
        std::thread::sleep(Duration::from_millis(20));
        let app = App::new(&ns.path());
        for h in &hierarchies {
            place(&self.tree.make(h, &pause_path), pause.pid());
            place(&self.tree.make(h, &container_path), app.pid());
        }
        if let Some(rt) = &self.runtime_path {
            let dir = self.mounts.v2.dir(rt).expect("runtime cgroup");
            place(&dir, pause.pid());
            place(&dir, app.pid());
        }
        Pod {
            app,
            pause,
            uid,
            container_id,
            pause_id,
            pod_path,
            container_path,
            pause_path,
            hierarchies,
            addr: Ipv4Addr::new(10, 201, i, 2),
            ns,
        }
    }

    /// A veth pair: `eth0` (10.201.i.2/24, default route) in the pod, 10.201.i.1/24 in the node.
    fn wire(&self, pod: &Ns, i: u8) {
        let t = tag();
        let (p, n) = (format!("flp{t}{i}"), format!("fln{t}{i}"));
        ip(&["link", "add", &p, "type", "veth", "peer", "name", &n]);
        let moved = [(&p, &pod.name), (&n, &self.ns.name)]
            .iter()
            .all(|(l, ns)| {
                Command::new("ip")
                    .args(["link", "set", l, "netns", ns])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            });
        if !moved {
            let _ = Command::new("ip").args(["link", "del", &p]).status();
            let _ = Command::new("ip")
                .args(["-n", &self.ns.name, "link", "del", &n])
                .status();
            panic!("cannot move {p}/{n} into the pod and node namespaces");
        }
        pod.exec(&["link", "set", &p, "name", "eth0"]);
        pod.exec(&["addr", "add", &format!("10.201.{i}.2/24"), "dev", "eth0"]);
        pod.exec(&["link", "set", "eth0", "up"]);
        pod.exec(&["route", "add", "default", "via", &format!("10.201.{i}.1")]);
        self.ns
            .exec(&["addr", "add", &format!("10.201.{i}.1/24"), "dev", &n]);
        self.ns.exec(&["link", "set", &n, "up"]);
    }

    /// An agent config file in `dir` that points the agent at this node's pod log directories
    /// (the default protected namespaces apply: the pods are in `shop`).
    pub fn agent_config(&self, dir: &Path) -> std::path::PathBuf {
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "[limits]\npod_logs_dir = \"{}\"\n",
                self.pod_logs.path().display()
            ),
        )
        .expect("write the agent config");
        file
    }

    /// Both pods send `n` datagrams at the same time; returns what reached the peer from
    /// (target pod, neighbour).
    pub fn burst(&mut self, n: u32) -> (usize, usize) {
        let addrs: Vec<IpAddr> = self.pods.iter().map(|p| IpAddr::V4(p.addr)).collect();
        let pods = &mut self.pods;
        let got = count_by_source(&self.rx, || {
            for p in pods.iter_mut() {
                p.app.start(n);
            }
            for p in pods.iter_mut() {
                p.app.finish();
            }
        });
        let of = |a: &IpAddr| got.get(a).copied().unwrap_or(0);
        let strangers: usize = got
            .iter()
            .filter(|(a, _)| !addrs.contains(a))
            .map(|(_, c)| c)
            .sum();
        assert_eq!(strangers, 0, "datagrams from unknown sources: {got:?}");
        (of(&addrs[0]), of(&addrs[1]))
    }
}

/// A `drop` of every UDP datagram to PEER:PORT (probability 1), aimed at `target`.
pub fn drop_to_peer(target: Target, interface: Option<&str>) -> FaultSpec {
    FaultSpec {
        target,
        fault: Fault::Drop(DropFault {
            interface: interface.map(str::to_owned),
            probability: 1.0,
            matcher: TrafficMatch {
                destinations: vec![format!("{PEER}/32").parse::<Cidr>().expect("cidr")],
                ports: vec![PORT],
                protocol: Protocol::Udp,
                ..TrafficMatch::default()
            },
        }),
    }
}
