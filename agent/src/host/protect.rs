//! What may never be targeted, and the checks every target form goes through: PID 1, the agent
//! and its ancestors (always), and the agent config's protected pids, names, cgroups and
//! namespaces.
//!
//! - **Paths are canonical before any comparison.** A cgroup path is made absolute with `//`
//!   and `.` collapsed and the trailing `/` dropped; `..` is refused, never resolved
//!   ([`canonical_cgroup`]). A path is under a protected one only at a component boundary
//!   (`/x2` is not under `/x`). The resolver also resolves a target's directories on the
//!   filesystem and checks what they really are.
//! - **Names**: a pattern (a selector's or a protected one) matches a process when it matches
//!   its name (comm) *or* its command line (argv joined by spaces) ([`matches_process`]), so
//!   no selector can reach a protected process through the other of the two.
//! - **Pods**: a process is in a pod when one of its cgroup paths has the kubelet's `pod<uid>`
//!   component; the pod's namespace comes from the kubelet's log directories ([`PodIndex`]).
//!   While namespaces are protected, a pod whose namespace cannot be told counts as protected.

use regex::Regex;

use super::cgroup::CgroupDir;
use super::cgroupns;
use super::pods::{uid_in_path, PodIndex, PodRef};
use super::proc::Stat;
use super::target::Resolver;
use super::Protected;

/// The agent config's protected list, compiled, with canonical cgroup paths.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    pids: Vec<u32>,
    names: Vec<Regex>,
    cgroups: Vec<String>,
    namespaces: Vec<String>,
    /// Entries that do not compile or are not canonical paths; the drivers report them as
    /// unavailable.
    pub errors: Vec<String>,
}

/// A cgroup path in canonical form: absolute, `//` and `.` collapsed, no trailing `/`. `..` is
/// refused rather than resolved: a hierarchy path never needs it, and what it would climb to
/// depends on where the path is joined.
pub fn canonical_cgroup(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute cgroup path"));
    }
    let mut comps = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{p:?} climbs with '..'")),
            c => comps.push(c),
        }
    }
    Ok(format!("/{}", comps.join("/")))
}

/// Whether canonical `path` is `base` or below it, component by component.
pub fn under(path: &str, base: &str) -> bool {
    base == "/" || path == base || path.starts_with(&format!("{base}/"))
}

/// The command line as patterns see it: argv joined by spaces.
pub fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

/// Whether `re` matches a process: its name (comm) or its command line.
pub fn matches_process(re: &Regex, comm: &str, argv: &[String]) -> bool {
    re.is_match(comm) || (!argv.is_empty() && re.is_match(&command_line(argv)))
}

impl Protection {
    pub fn new(p: &Protected) -> Self {
        let mut names = Vec::new();
        let mut cgroups = Vec::new();
        let mut errors = Vec::new();
        for (i, n) in p.names.iter().enumerate() {
            match Regex::new(n) {
                Ok(r) => names.push(r),
                Err(e) => errors.push(format!("protected_names[{i}] {n:?} is not a regex: {e}")),
            }
        }
        for (i, c) in p.cgroups.iter().enumerate() {
            match canonical_cgroup(c) {
                Ok(c) => cgroups.push(c),
                Err(e) => errors.push(format!("protected_cgroups[{i}]: {e}")),
            }
        }
        Protection {
            pids: p.pids.clone(),
            names,
            cgroups,
            namespaces: p.namespaces.clone(),
            errors,
        }
    }

    /// The protected cgroup that holds `path` (at or above it), if any. A path that is not
    /// canonical-able (relative, `..`) is held by every rule there is.
    pub fn cgroup_of(&self, path: &str) -> Option<&str> {
        let path = canonical_cgroup(path).ok();
        self.cgroups
            .iter()
            .find(|p| path.as_deref().is_none_or(|path| under(path, p)))
            .map(String::as_str)
    }

    /// A protected cgroup strictly below canonical `path`, if any.
    fn cgroup_below(&self, path: &str) -> Option<&str> {
        self.cgroups
            .iter()
            .find(|p| p.as_str() != path && under(p, path))
            .map(String::as_str)
    }

    /// The protected namespaces (agent config).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

/// The pod rules for one check: which pods are in which namespace, and which are protected.
struct PodRules {
    index: PodIndex,
    namespaces: Vec<String>,
    /// The agent's own pod, when it runs in one whose namespace is known.
    own: Option<PodRef>,
}

impl PodRules {
    /// Whether pod rules apply at all: some namespace is protected.
    fn active(&self) -> bool {
        !self.namespaces.is_empty() || self.own.is_some()
    }

    /// Why the pod with this UID is protected: its namespace is, it is the agent's own
    /// namespace, or its namespace cannot be told.
    fn why(&self, uid: &str) -> Option<String> {
        if !self.active() {
            return None;
        }
        let Some(pod) = self.index.get(uid) else {
            let cause = match &self.index.unreadable {
                Some(e) => e.clone(),
                None => format!(
                    "{} has no <namespace>_<name>_{uid} directory",
                    self.index.dir.display()
                ),
            };
            return Some(format!(
                "pod {uid}, whose namespace the agent cannot tell ({cause}; the agent reads pods' \
                 namespaces from the kubelet's pod log directories: mount the host's /var/log/pods \
                 or set limits.pod_logs_dir): a pod of unknown namespace counts as protected \
                 (agent config limits.protected_namespaces)"
            ));
        };
        if self.namespaces.contains(&pod.namespace) {
            return Some(format!(
                "pod {pod}, in the protected namespace {} (agent config limits.protected_namespaces)",
                pod.namespace
            ));
        }
        if self
            .own
            .as_ref()
            .is_some_and(|o| o.namespace == pod.namespace)
        {
            return Some(format!(
                "pod {pod}, in the agent's own namespace {}, which is always protected",
                pod.namespace
            ));
        }
        None
    }
}

/// Protection checks with the agent's ancestry and the node's pods read once.
pub struct Checker<'a> {
    r: &'a Resolver,
    ancestors: Vec<u32>,
    pods: PodRules,
}

impl<'a> Checker<'a> {
    pub fn new(r: &'a Resolver) -> Self {
        let index = PodIndex::read(&r.pods_dir);
        let own = r
            .lines(r.self_pid)
            .iter()
            .find_map(|l| uid_in_path(&l.path))
            .and_then(|uid| index.get(&uid).cloned());
        Checker {
            r,
            ancestors: r.proc.ancestors(r.self_pid),
            pods: PodRules {
                index,
                namespaces: r.protection.namespaces.clone(),
                own,
            },
        }
    }

    /// Why `pid` (whose stat is given when known) may not be targeted.
    pub fn why(&self, pid: u32, st: Option<&Stat>) -> Option<String> {
        let r = self.r;
        let p = &r.protection;
        if pid == 1 {
            return Some("pid 1 is the host's init process and is never targetable".into());
        }
        if pid == r.self_pid {
            return Some(format!("pid {pid} is the agent itself"));
        }
        if self.ancestors.contains(&pid) {
            return Some(format!(
                "pid {pid} is an ancestor of the agent (pid {})",
                r.self_pid
            ));
        }
        if p.pids.contains(&pid) {
            return Some(format!(
                "pid {pid} is in the agent's protected pids (agent config limits.protected_pids)"
            ));
        }
        if let Some(st) = st {
            let argv = r.proc.cmdline(pid).unwrap_or_default();
            if let Some(re) = p
                .names
                .iter()
                .find(|re| matches_process(re, &st.comm, &argv))
            {
                return Some(format!(
                    "pid {pid} ({}) matches the protected name pattern {:?} on its name or command line {:?} (agent config limits.protected_names)",
                    st.comm,
                    re.as_str(),
                    command_line(&argv)
                ));
            }
        }
        self.why_placed(pid)
    }

    /// Why `pid` is protected by where it is: in a protected cgroup or a protected pod.
    pub fn why_placed(&self, pid: u32) -> Option<String> {
        let p = &self.r.protection;
        let lines = self.r.lines(pid);
        if self.pods.active() {
            for l in &lines {
                if let Some(why) = uid_in_path(&l.path).and_then(|uid| self.pods.why(&uid)) {
                    return Some(format!("pid {pid} is in {why}"));
                }
            }
        }
        if p.cgroups.is_empty() {
            return None;
        }
        for l in &lines {
            if cgroupns::outside_namespace(&l.path) {
                return Some(format!(
                    "cannot tell whether pid {pid} is in a protected cgroup: {}",
                    cgroupns::refusal(pid, l)
                ));
            }
            if let Some(c) = p.cgroup_of(&l.path) {
                return Some(format!(
                    "pid {pid} is in the protected cgroup {c} ({}) (agent config limits.protected_cgroups)",
                    l.path
                ));
            }
        }
        None
    }

    /// Why a container or pod target may not be targeted by the namespace it names.
    pub fn why_namespace(&self, namespace: &str) -> Option<String> {
        (!namespace.is_empty() && self.pods.namespaces.iter().any(|n| n == namespace)).then(|| {
            format!(
                "its pod namespace {namespace} is protected (agent config limits.protected_namespaces)"
            )
        })
    }

    /// Why a cgroup target (canonical `path`, found at `dirs`) may not be targeted: it is in or
    /// above a protected cgroup or pod, or something below it holds a process protected by
    /// where it is (a fault on a cgroup reaches everything below it: cgroup-skb programs,
    /// memory limits and the OOM killer).
    pub fn why_cgroup(&self, path: &str, dirs: &[CgroupDir]) -> Option<String> {
        let p = &self.r.protection;
        if let Some(c) = p.cgroup_of(path) {
            return Some(format!(
                "cgroup {path} is under the protected cgroup {c} (agent config limits.protected_cgroups)"
            ));
        }
        if let Some(c) = p.cgroup_below(path) {
            return Some(format!(
                "cgroup {path} holds the protected cgroup {c} (agent config limits.protected_cgroups), and a fault on a cgroup reaches the cgroups below it"
            ));
        }
        if !self.pods.active() && p.cgroups.is_empty() {
            return None;
        }
        if let Some(why) = uid_in_path(path).and_then(|uid| self.pods.why(&uid)) {
            return Some(format!("cgroup {path} is in {why}"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in dirs {
            for (sub, dir) in subtree(d) {
                if let Some(why) = uid_in_path(&sub).and_then(|uid| self.pods.why(&uid)) {
                    return Some(format!(
                        "cgroup {path} holds {} {sub} of {why}",
                        d.hierarchy.label()
                    ));
                }
                for pid in super::cgroup::procs(&dir) {
                    if !seen.insert(pid) {
                        continue;
                    }
                    if let Some(why) = self.why_placed(pid) {
                        return Some(format!(
                            "cgroup {path} holds a protected process ({} {sub}): {why}",
                            d.hierarchy.label()
                        ));
                    }
                }
            }
        }
        None
    }

    /// Why a network namespace (nsfs `dev`, `ino`) may not be targeted: a process protected by
    /// where it is (a protected cgroup or pod) lives in it.
    pub fn why_netns(&self, dev: u64, ino: u64) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        if !self.pods.active() && self.r.protection.cgroups.is_empty() {
            return None;
        }
        for pid in self.r.proc.pids().unwrap_or_default() {
            let Some(why) = self.why_placed(pid) else {
                continue;
            };
            let ns = std::fs::metadata(self.r.proc.path(pid, "ns/net"));
            if ns.is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino)) {
                return Some(format!(
                    "the network namespace of a protected process: {why}"
                ));
            }
        }
        None
    }
}

/// `d` and every cgroup below it: (hierarchy path, directory).
fn subtree(d: &CgroupDir) -> Vec<(String, std::path::PathBuf)> {
    let mut out = vec![(d.path.clone(), d.dir.clone())];
    let mut stack = vec![(d.path.clone(), d.dir.clone())];
    while let Some((path, dir)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let sub = format!("{}/{name}", path.trim_end_matches('/'));
            stack.push((sub.clone(), e.path()));
            out.push((sub, e.path()));
        }
    }
    out
}

/// The hierarchy path a directory really is, resolved on the filesystem (the mount's
/// canonical form stripped from the directory's); `Err` when it is not below its mount.
pub fn real_path(d: &CgroupDir) -> Result<String, String> {
    let (Ok(dir), Ok(mount)) = (
        std::fs::canonicalize(&d.dir),
        std::fs::canonicalize(&d.hierarchy.mount),
    ) else {
        return Ok(d.path.clone());
    };
    let Ok(rel) = dir.strip_prefix(&mount) else {
        return Err(format!(
            "{} resolves to {}, outside the {} mount {}",
            d.dir.display(),
            dir.display(),
            d.hierarchy.label(),
            mount.display()
        ));
    };
    let real = format!(
        "{}/{}",
        d.hierarchy.root.trim_end_matches('/'),
        rel.display()
    );
    Ok(canonical_cgroup(&real).unwrap_or(real))
}

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
