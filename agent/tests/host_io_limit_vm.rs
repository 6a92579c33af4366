//! io-limit through cgroup v2 `io.max`, in a VM: this machine's cgroup2 has no io controller
//! (the v1 blkio one holds it), so `io_max_in_a_vm` boots Debian's stock kernel under QEMU
//! (`-accel tcg`, tests/vm/run.sh) with the host root shared read-only over 9p and runs this
//! very test binary inside it (`inside_the_vm`). Inside, on a pure cgroup2 hierarchy with `+io`,
//! a process in the target cgroup writes 6 MiB with `dd oflag=direct` to a loop device: in
//! about 6 s under `writeBytesPerSecond: 1Mi` (+-15%, net of the time the same write takes
//! without a limit under emulation), at full speed after revert, and `io.max`
//! is exactly what it was before.

mod host_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_agent::lease::KernelLease;
use faultline_core::fault::{Fault, FaultKind, FaultSpec, IoLimitFault, Target};
use host_support::*;

const INSIDE_ENV: &str = "FL_IN_VM";
const CGROUP2: &str = "/sys/fs/cgroup";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// A copy of this test binary where the VM sees it (its /tmp is a fresh tmpfs); removed on drop.
struct Staged(PathBuf);

impl Staged {
    fn new() -> Staged {
        let cache = std::env::var_os("FL_VM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/cache/faultline-vm".into());
        let dir = cache.join(format!("stage-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let exe = std::env::current_exe().expect("test executable");
        std::fs::copy(&exe, dir.join("test-bin")).expect("stage the test binary");
        Staged(dir)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn io_max_in_a_vm() {
    require_root();
    let staged = Staged::new();
    let cmd = format!(
        "{INSIDE_ENV}=1 {} --ignored --exact inside_the_vm --nocapture --test-threads 1",
        staged.0.join("test-bin").display()
    );
    let run = repo_root().join("tests/vm/run.sh");
    let started = Instant::now();
    let out = Command::new(&run)
        .arg(&cmd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    let console = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in console.lines().filter(|l| l.contains("FL-VM-RESULT")) {
        println!("{}", l.trim());
    }
    println!("VM run took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "the io.max VM test failed (exit {:?}).\n{stderr}\nconsole:\n{console}\n\
         It needs qemu-system-x86, busybox-static, kmod, cpio and Debian's linux-image-amd64 \
         (tests/vm/prepare.sh installs and unpacks them; as root: apt-get install \
         qemu-system-x86 busybox-static kmod cpio)",
        out.status.code()
    );
    assert!(
        console.contains("test result: ok. 1 passed"),
        "the inside test did not run:\n{console}"
    );
}

fn result(line: String) {
    println!("FL-VM-RESULT {line}");
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Seconds a process in `cg` takes to write 6 MiB to `dev` with O_DIRECT.
fn dd_seconds(cg: &Path, dev: &Path) -> f64 {
    let start = Instant::now();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$0" && exec dd if=/dev/zero of="$1" bs=1M count=6 oflag=direct"#)
        .arg(cg.join("cgroup.procs"))
        .arg(dev)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh + dd");
    let mut guard = KillOnDrop(child);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = guard.0.try_wait().expect("wait dd") {
            assert!(st.success(), "dd failed: {st}");
            return start.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < end, "dd did not finish within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs only inside the VM (tests/vm/run.sh), where nothing else runs: the cgroup2 mount,
/// the loop device and the cgroup go with the VM.
#[test]
#[ignore = "runs inside the VM started by io_max_in_a_vm"]
fn inside_the_vm() {
    assert!(
        std::env::var_os(INSIDE_ENV).is_some(),
        "run through io_max_in_a_vm"
    );
    // A pure cgroup2 hierarchy with the io controller on for the children of the root.
    sh(&format!(
        "mountpoint -q {CGROUP2} || mount -t cgroup2 none {CGROUP2}; echo +io > {CGROUP2}/cgroup.subtree_control"
    ));
    let kdir = sh("tr ' ' '\\n' < /proc/cmdline | sed -n 's/^fl.kdir=//p'");
    sh(&format!(
        "modprobe -d {kdir} -S $(ls {kdir}/lib/modules) loop || true; \
         truncate -s 16M /tmp/disk.img"
    ));
    let dev = PathBuf::from(sh("losetup -f --show /tmp/disk.img"));
    let cg = Path::new(CGROUP2).join("fl-io-vm");
    std::fs::create_dir_all(&cg).expect("mkdir the target cgroup");
    let before = std::fs::read_to_string(cg.join("io.max")).expect("io.max exists (v2 io)");
    result(format!("io.max before: {:?}", before.trim()));

    let free = dd_seconds(&cg, &dev);
    let lease = KernelLease::new();
    let driver = faultline_agent::drivers::all(&config(&[], Default::default()), None, &lease)
        .into_iter()
        .find(|d| d.kinds().contains(&FaultKind::IoLimit))
        .expect("an io-limit driver");
    let spec = FaultSpec {
        target: Target::Cgroup("/fl-io-vm".into()),
        fault: Fault::IoLimit(IoLimitFault {
            device: dev.display().to_string(),
            read_bytes_per_second: 0,
            write_bytes_per_second: MIB,
            read_iops: 0,
            write_iops: 0,
        }),
    };
    let c = ctx("io-vm", 120);
    let planned = driver.plan(&c, &spec).expect("plan");
    let recipe = driver.apply(&c, &spec, &planned).expect("apply");
    let during = std::fs::read_to_string(cg.join("io.max")).expect("io.max");
    result(format!("io.max during: {:?}", during.trim()));
    assert!(during.contains("wbps=1048576"), "{during}");
    let limited = dd_seconds(&cg, &dev);
    driver.revert(&recipe).expect("revert");
    let after_io_max = std::fs::read_to_string(cg.join("io.max")).expect("io.max");
    let after = dd_seconds(&cg, &dev);
    result(format!(
        "6 MiB with dd oflag=direct from the target cgroup: {free:.3} s free, {limited:.3} s under \
         writeBytesPerSecond 1Mi, {after:.3} s after revert; io.max after: {:?}",
        after_io_max.trim()
    ));
    let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    // Under TCG the emulation itself costs time (`free`): the limit accounts for the rest.
    let net = limited - free;
    result(format!(
        "under the limit, net of the emulation's own time: {net:.3} s"
    ));
    assert!(
        (5.1..=6.9).contains(&net),
        "6 MiB took {limited:.3} s ({free:.3} s without a limit)"
    );
    assert!(after < limited / 3.0, "after revert {after:.3} s");
    assert_eq!(after_io_max, before, "io.max is exactly as before");
}
