//! The block device an io-limit throttles: `device` names a block device (`/dev/sda`,
//! `/dev/disk/by-id/...`), or any other path, whose filesystem's device is meant. Both resolve
//! on the node's view of the filesystem (through `/proc/1/root`, so an agent in a DaemonSet pod
//! with hostPID sees the node's `/dev`, not its container's) to `MAJ:MIN`; a partition resolves
//! to its whole disk, because the kernel throttles whole disks only. A filesystem with no block
//! device under it (tmpfs, overlayfs, NFS) is refused, naming it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::files::DevNum;

/// Where the kernel lists block devices by number.
pub const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// `device` resolved: the whole disk's number and how it was found (for messages).
pub fn resolve(device: &str, sys: &Path) -> Result<(DevNum, String), String> {
    resolve_in(device, None, sys)
}

/// As [`resolve`], looking `device` up below `root` (`/proc/1/root`) when that is given and
/// can be read.
pub fn resolve_in(
    device: &str,
    root: Option<&Path>,
    sys: &Path,
) -> Result<(DevNum, String), String> {
    let on_node = root
        .filter(|r| std::fs::metadata(r).is_ok())
        .map(|r| r.join(device.trim_start_matches('/')));
    let meta = std::fs::metadata(on_node.as_deref().unwrap_or(Path::new(device)))
        .map_err(|e| format!("device: {device}: {e}"))?;
    let (raw, how) = if meta.file_type().is_block_device() {
        (meta.rdev(), "block device")
    } else {
        (meta.dev(), "filesystem on")
    };
    let dev = DevNum {
        major: nix::sys::stat::major(raw) as u32,
        minor: nix::sys::stat::minor(raw) as u32,
    };
    let entry = sys.join(dev.to_string());
    if !entry.exists() {
        return Err(format!(
            "device: {device} is on {dev}, which is not a block device (tmpfs, overlayfs and \
             network filesystems have none to throttle); name the disk, e.g. /dev/sda"
        ));
    }
    let whole = whole_disk(&entry).map_err(|e| format!("device: {device} ({dev}): {e}"))?;
    let shown = if whole == dev {
        format!("{device} ({how} {dev})")
    } else {
        format!("{device} ({how} partition {dev} of disk {whole})")
    };
    Ok((whole, shown))
}

/// The whole disk of `/sys/dev/block/MAJ:MIN`: itself, or its parent when it is a partition.
fn whole_disk(entry: &Path) -> Result<DevNum, String> {
    let own = read_dev(entry)?;
    if !entry.join("partition").exists() {
        return Ok(own);
    }
    let real: PathBuf = std::fs::canonicalize(entry).map_err(|e| e.to_string())?;
    let parent = real
        .parent()
        .ok_or_else(|| format!("{} has no parent disk", real.display()))?;
    read_dev(parent)
}

fn read_dev(dir: &Path) -> Result<DevNum, String> {
    let f = dir.join("dev");
    std::fs::read_to_string(&f)
        .map_err(|e| format!("{}: {e}", f.display()))?
        .parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tmpfs_path_has_no_device_to_throttle() {
        // /dev is a devtmpfs; /dev/shm a tmpfs: neither has a block device under it.
        let err = resolve("/dev/shm", Path::new(SYS_DEV_BLOCK)).expect_err("tmpfs");
        assert!(err.contains("which is not a block device"), "{err}");
        let err = resolve("/nonexistent/x", Path::new(SYS_DEV_BLOCK)).expect_err("missing");
        assert!(err.starts_with("device: /nonexistent/x: "), "{err}");
    }

    #[test]
    fn a_partition_resolves_to_its_disk() {
        let sys = tempfile::tempdir().expect("tempdir");
        let disk = sys.path().join("devices/sda");
        std::fs::create_dir_all(disk.join("sda1")).expect("mkdir");
        std::fs::write(disk.join("dev"), "8:0\n").expect("write");
        std::fs::write(disk.join("sda1/dev"), "8:1\n").expect("write");
        std::fs::write(disk.join("sda1/partition"), "1\n").expect("write");
        std::os::unix::fs::symlink(disk.join("sda1"), sys.path().join("8:1")).expect("link");
        std::os::unix::fs::symlink(&disk, sys.path().join("8:0")).expect("link");
        assert_eq!(
            whole_disk(&sys.path().join("8:1")),
            Ok(DevNum { major: 8, minor: 0 })
        );
        assert_eq!(
            whole_disk(&sys.path().join("8:0")),
            Ok(DevNum { major: 8, minor: 0 })
        );
    }
}
