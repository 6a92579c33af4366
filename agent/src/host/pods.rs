//! Kubernetes pods on this node, read without an API server: container IDs and pod UIDs in
//! cgroup paths (the kubelet's cgroupfs and systemd spellings), and each pod's namespace and
//! name from the kubelet's per-pod log directories (`/var/log/pods/<namespace>_<name>_<uid>`,
//! made when the pod's sandbox starts, for static pods too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the kubelet keeps one log directory per pod.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

/// The container ID without a `containerd://`-style prefix, lowercased.
pub fn bare_container_id(id: &str) -> String {
    id.rsplit("://").next().unwrap_or(id).to_ascii_lowercase()
}

/// Whether a cgroup path names a container: a path component holding the ID right after its
/// start or a non-hex character (`/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>`).
pub fn path_has_container(path: &str, id: &str) -> bool {
    !id.is_empty()
        && path.split('/').any(|comp| {
            comp.match_indices(id)
                .any(|(at, _)| at == 0 || !comp.as_bytes()[at - 1].is_ascii_hexdigit())
        })
}

/// The path up to the pod's own cgroup, if the path is in the pod: `pod<uid>` as cgroupfs
/// writes it (`/kubepods/burstable/pod<uid>`) or as systemd does, dashes turned to
/// underscores (`kubepods-burstable-pod<uid_>.slice`).
pub fn pod_cgroup(path: &str, uid: &str) -> Option<String> {
    let uid = uid.to_ascii_lowercase();
    let spellings = [
        format!("pod{}", uid.replace('_', "-")),
        format!("pod{}", uid.replace('-', "_")),
    ];
    let comps: Vec<&str> = path.split('/').collect();
    let at = comps.iter().position(|comp| {
        spellings.iter().any(|s| {
            comp.match_indices(s.as_str()).any(|(i, _)| {
                let before_ok = i == 0 || matches!(comp.as_bytes()[i - 1], b'-' | b'_');
                let after = &comp[i + s.len()..];
                before_ok && (after.is_empty() || after.starts_with('.'))
            })
        })
    })?;
    Some(comps[..=at].join("/"))
}

/// A pod UID as the kubelet writes it: 36 characters `8-4-4-4-12` of hex (API pods) or 32 hex
/// digits (static pods, a hash of the manifest). Lowercased, dashes as dashes.
fn uid_like(s: &str) -> Option<String> {
    let s = s.replace('_', "-").to_ascii_lowercase();
    let hex = s.chars().filter(char::is_ascii_hexdigit).count();
    let ok = s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && hex == 32
        && (s.len() == 32 || s.len() == 36);
    ok.then_some(s)
}

/// The UID of the pod a cgroup path is in, if any: a component `pod<uid>` (cgroupfs driver)
/// or `kubepods[-<qos>]-pod<uid_>.slice` (systemd driver).
pub fn uid_in_path(path: &str) -> Option<String> {
    path.split('/').find_map(|comp| {
        if let Some(rest) = comp.strip_suffix(".slice") {
            let (_, uid) = rest.rsplit_once("-pod")?;
            return rest
                .starts_with("kubepods")
                .then(|| uid_like(uid))
                .flatten();
        }
        uid_like(comp.strip_prefix("pod")?)
    })
}

/// A pod as its log directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// `<namespace>_<name>_<uid>`: neither a namespace nor a pod name may hold `_`.
pub fn parse_log_dir(name: &str) -> Option<PodRef> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if ns.is_empty() || pod.is_empty() {
        return None;
    }
    Some(PodRef {
        namespace: ns.to_string(),
        name: pod.to_string(),
        uid: uid_like(uid)?,
    })
}

/// The pods of this node by UID, read from the kubelet's log directories.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    pub dir: PathBuf,
    by_uid: BTreeMap<String, PodRef>,
    /// Why the directory could not be read, if it could not.
    pub unreadable: Option<String>,
}

impl PodIndex {
    pub fn read(dir: &Path) -> PodIndex {
        let mut index = PodIndex {
            dir: dir.to_path_buf(),
            ..PodIndex::default()
        };
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    if let Some(p) = parse_log_dir(&e.file_name().to_string_lossy()) {
                        index.by_uid.insert(p.uid.clone(), p);
                    }
                }
            }
            Err(e) => index.unreadable = Some(format!("cannot read {}: {e}", dir.display())),
        }
        index
    }

    /// The pod with this UID (any spelling).
    pub fn get(&self, uid: &str) -> Option<&PodRef> {
        self.by_uid.get(&uid_like(uid)?)
    }
}
