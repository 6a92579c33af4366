//! The revoked set the handshake consults: by serial number for the certificates this
//! coordinator issued, and by node and start time for any agent certificate (one from another
//! CA, or issued before the records began). Loaded from the store at start, written through on
//! every revocation; reads never block on I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, UNIX_EPOCH};

use faultline_core::Role;
use faultline_identity::cert::CertInfo;
use faultline_identity::revocation::RevocationCheck;

use crate::store::RevocationRecord;

/// Every revoked node, in memory.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_node: BTreeMap<String, RevocationRecord>,
    /// serial -> node
    serials: HashMap<String, String>,
}

/// A time for messages, UTC.
pub fn when(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Revocations {
    pub fn from_records(records: Vec<RevocationRecord>) -> Self {
        let r = Revocations::default();
        for rec in records {
            r.insert(rec);
        }
        r
    }

    /// Adds or replaces a node's revocation.
    pub fn insert(&self, rec: RevocationRecord) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for serial in &rec.serials {
            inner.serials.insert(serial.clone(), rec.node_name.clone());
        }
        inner.by_node.insert(rec.node_name.clone(), rec);
    }

    /// The node's revocation, if it was ever revoked.
    pub fn of_node(&self, node: &str) -> Option<RevocationRecord> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_node.get(node).cloned()
    }

    /// The sentence that says a node was revoked.
    pub fn describe(rec: &RevocationRecord) -> String {
        let reason = match rec.revoked.reason.as_str() {
            "" => String::new(),
            r => format!(": {r}"),
        };
        format!(
            "node {} was revoked by {} at {}{reason}",
            rec.node_name,
            rec.revoked.by,
            when(rec.revoked.at_unix_ms)
        )
    }
}

impl RevocationCheck for Revocations {
    fn revoked(&self, cert: &CertInfo) -> Option<String> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let node = match inner.serials.get(&cert.serial) {
            Some(node) => node.clone(),
            None => {
                let id = cert.identity.as_ref()?;
                if id.role != Role::Agent {
                    return None;
                }
                let rec = inner.by_node.get(&id.name)?;
                let started = cert
                    .not_before
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                if started > rec.revoked.at_unix_ms {
                    return None;
                }
                id.name.clone()
            }
        };
        let rec = inner.by_node.get(&node)?;
        Some(format!(
            "certificate {} is revoked: {}",
            cert.serial,
            Self::describe(rec)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Revoked;
    use faultline_core::Identity;
    use std::time::SystemTime;

    fn cert(serial: &str, node: &str, started_ms: u64) -> CertInfo {
        CertInfo {
            serial: serial.into(),
            not_before: UNIX_EPOCH + Duration::from_millis(started_ms),
            not_after: SystemTime::now(),
            is_ca: false,
            public_key: vec![],
            identity: Some(Identity::new(Role::Agent, node)),
        }
    }

    #[test]
    fn by_serial_and_by_node_and_start() {
        let r = Revocations::from_records(vec![RevocationRecord {
            node_name: "node-a".into(),
            revoked: Revoked {
                by: "admin/admin".into(),
                at_unix_ms: 10_000,
                reason: "lost".into(),
            },
            serials: vec!["AA".into()],
        }]);
        // Issued by us, listed by serial, whatever its start.
        let why = r.revoked(&cert("AA", "node-a", 20_000)).expect("revoked");
        assert_eq!(
            why,
            "certificate AA is revoked: node node-a was revoked by admin/admin at 1970-01-01T00:00:10Z: lost"
        );
        // Any other certificate of node-a that started at or before the revocation.
        assert!(r.revoked(&cert("BB", "node-a", 10_000)).is_some());
        // One that started after it (a new enrollment) is not.
        assert!(r.revoked(&cert("CC", "node-a", 11_000)).is_none());
        // Other nodes and other roles are untouched.
        assert!(r.revoked(&cert("DD", "node-b", 0)).is_none());
        let mut viewer = cert("EE", "node-a", 0);
        viewer.identity = Some(Identity::new(Role::Viewer, "node-a"));
        assert!(r.revoked(&viewer).is_none());
    }
}
