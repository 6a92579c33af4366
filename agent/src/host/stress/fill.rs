//! Planning and starting a `disk-fill`: the directory is one of the io paths, found in the
//! TARGET's filesystem exactly as for io faults (see [`io`](super::io)); the plan checks that
//! there is something to fill without leaving less than `keepFree` available, and the worker
//! (see [`host::fill`](crate::host::fill)) takes the space with a file that has no name, so the
//! kernel gives it back whenever the worker ends, with the agent or without it.

use std::time::Duration;

use faultline_core::fault::{DiskAmount, DiskFillFault, Target};

use super::io::IoTarget;
use super::StressDriver;
use crate::engine::driver::{DriverError, FaultCtx};
use crate::host::child::Running;
use crate::host::fill::{self, FILLED};
use crate::host::rootfs::{Dir, Root};
use crate::host::scan;
use crate::host::target::Resolved;

/// How long apply waits for the worker to have allocated its space.
const FILL_WAIT: Duration = Duration::from_secs(60);

impl StressDriver {
    /// Finds the directory and checks the space: changes nothing.
    pub(super) fn plan_fill(
        &self,
        ctx: &FaultCtx,
        f: &DiskFillFault,
        target: &Target,
        resolved: &Resolved,
    ) -> Result<(IoTarget, Vec<Vec<String>>), DriverError> {
        let dir = self.allowed_io_dir(&f.path)?;
        let (root, found) = self.io_root(target, resolved, &dir)?;
        let space = fill::space_of(found.fd())
            .map_err(|e| DriverError::io(format!("statvfs {}", found.shown().display()), e))?;
        let (percent, size) = match f.amount {
            DiskAmount::Percent(p) => (Some(p), 0),
            DiskAmount::Bytes(b) => (None, b),
        };
        let (bytes, capped) = fill::fill_bytes(space, percent, size, f.keep_free_bytes);
        if bytes == 0 {
            let why = if capped {
                format!(
                    "keepFree: {} has {} bytes available; keeping {} free leaves nothing to fill",
                    found.shown().display(),
                    space.avail,
                    f.keep_free_bytes
                )
            } else {
                format!(
                    "percent: {} is already {}% full",
                    found.shown().display(),
                    (u128::from(space.used) * 100)
                        .checked_div(u128::from(space.used) + u128::from(space.avail))
                        .unwrap_or(0)
                )
            };
            return Err(DriverError::Refused(why));
        }
        let name = scan::io_file_name(&ctx.fault_id, 0);
        let mut args = vec![
            "--dir".to_string(),
            found.shown().display().to_string(),
            "--file".into(),
            name.clone(),
            "--keep-free".into(),
            f.keep_free_bytes.to_string(),
        ];
        match percent {
            Some(p) => args.extend(["--percent".into(), p.to_string()]),
            None => args.extend(["--size".into(), size.to_string()]),
        }
        let t = IoTarget {
            root,
            dir,
            dev: found.id.dev,
            ino: found.id.ino,
            names: vec![name],
        };
        Ok((t, vec![args]))
    }

    /// Opens the planned directory again for the worker; fails, naming it, when it changed.
    pub(super) fn open_fill_dir(&self, t: &IoTarget) -> Result<Dir, DriverError> {
        let dir = Root::of(self.host.proc(), t.root)
            .and_then(|r| r.dir(&t.dir))
            .map_err(|e| DriverError::Other(format!("disk-fill directory: {e}")))?;
        if dir.id.dev != t.dev || dir.id.ino != t.ino {
            return Err(DriverError::Other(format!(
                "disk-fill directory {} is not the directory planned (it was replaced or remounted)",
                dir.shown().display()
            )));
        }
        Ok(dir)
    }
}

/// Waits until a fill worker has taken its space; the error says why it did not.
pub(super) fn wait_filled(w: &mut Running) -> Result<(), DriverError> {
    if w.wait_line(FILLED, FILL_WAIT) {
        return Ok(());
    }
    let why = w
        .reports()
        .error
        .unwrap_or_else(|| match w.wait(Duration::from_millis(200)) {
            Some(st) => format!("it exited ({st})"),
            None => format!("it did not finish within {} s", FILL_WAIT.as_secs()),
        });
    Err(DriverError::Other(format!(
        "disk-fill worker pid {} did not fill: {why}",
        w.pid()
    )))
}
