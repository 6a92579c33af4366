//! Stress worker processes of the agents a test started, found in /proc: by parent, by
//! executable, and with the fault each one works for.

use crate::binary;

/// Live worker processes whose parent is `pid` (an agent's stress workers).
pub fn workers_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        if ppid == pid && state != "Z" && String::from_utf8_lossy(&cmd).contains("__worker") {
            out.push(child);
        }
    }
    out
}

/// Live `__worker` processes of the workspace's agent binary, whoever their parent is.
pub fn all_agent_workers() -> Vec<u32> {
    let exe = binary("faultline-agent");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same_exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| {
                p.starts_with(&exe)
                    || p.display()
                        .to_string()
                        .starts_with(&exe.display().to_string())
            })
            .unwrap_or(false);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if same_exe && String::from_utf8_lossy(&cmd).contains("__worker") {
            out.push(pid);
        }
    }
    out
}

/// Live stress workers that the agent with PID `agent_pid` started, each with the fault id it
/// works for: `(pid, fault id)`. They are recognised by the `--parent-pid` on their command
/// line, so a worker its agent lost (re-parented to init) still counts. Zombies do not: they
/// hold no CPU or memory.
pub fn worker_faults(agent_pid: u32) -> Vec<(u32, String)> {
    let parent = agent_pid.to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some("__worker") {
            continue;
        }
        let value = |key: &str| {
            args.iter()
                .position(|a| a == key)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        if value("--parent-pid").as_deref() != Some(parent.as_str()) || is_zombie(pid) {
            continue;
        }
        out.push((pid, value("--fault-id").unwrap_or_default()));
    }
    out.sort();
    out
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        // Gone between the directory listing and the read: not running either.
        .unwrap_or(true)
}
