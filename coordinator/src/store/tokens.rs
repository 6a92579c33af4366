//! Durable records of enrollment, on the same sled database as the rest of the store: join
//! tokens (their hashes, never the secrets), which credential each node enrolled with, the
//! certificates issued to each node, and revoked nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, encode, sled_err, SledStore, StoreError};

/// A join token as stored: the hash of its secret and what it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    /// `<role>/<name>` of the admin who made it.
    pub created_by: String,
    pub created_unix_ms: i64,
    pub expires_unix_ms: i64,
    /// Enrollments it allows.
    pub uses: u32,
    /// Enrollments it was used for.
    pub used: u32,
    pub revoked: Option<Revoked>,
    /// The nodes that enrolled with it, in order.
    pub nodes: Vec<String>,
}

/// Who revoked something, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub by: String,
    pub at_unix_ms: i64,
    #[serde(default)]
    pub reason: String,
}

/// How a node got its identity, and the labels that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub node_name: String,
    /// `join-token` (Kubernetes ServiceAccount enrollment will add its own kind).
    pub credential: String,
    /// The join token's id, for `join-token`.
    pub token_id: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_unix_ms: i64,
    pub remote_address: String,
}

/// One certificate the issuer signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    pub node_name: String,
    pub serial: String,
    pub not_before_unix_ms: i64,
    pub not_after_unix_ms: i64,
    /// `enroll` or `renew`.
    pub via: String,
}

/// A revoked node: its certificates that started at or before `revoked.at_unix_ms` are refused
/// in the handshake (by serial for those this coordinator issued, by start time for any other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub node_name: String,
    pub revoked: Revoked,
    /// Serials of the node's certificates that were still valid when it was revoked.
    pub serials: Vec<String>,
}

/// The enrollment part of the coordinator's durable state. Every write is durable when the
/// call returns.
pub trait EnrollStore: Send + Sync {
    /// Inserts or replaces token `rec.id`.
    fn put_token(&self, rec: &TokenRecord) -> Result<(), StoreError>;
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, sorted by id.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    fn put_enrollment(&self, rec: &EnrollmentRecord) -> Result<(), StoreError>;
    /// Every node's enrollment, sorted by node name.
    fn enrollments(&self) -> Result<Vec<EnrollmentRecord>, StoreError>;
    /// Records an issued certificate and forgets the node's certificates that expired before
    /// `now_unix_ms`.
    fn put_issued(&self, rec: &IssuedRecord, now_unix_ms: i64) -> Result<(), StoreError>;
    /// The node's certificates on record, oldest first.
    fn issued(&self, node_name: &str) -> Result<Vec<IssuedRecord>, StoreError>;
    /// Inserts or replaces the revocation of `rec.node_name`.
    fn put_revocation(&self, rec: &RevocationRecord) -> Result<(), StoreError>;
    fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError>;
}

const TOKENS: &str = "tokens";
const ENROLLMENTS: &str = "enrollments";
const ISSUED: &str = "issued";
const REVOCATIONS: &str = "revocations";

fn issued_key(node: &str, serial: &str) -> Vec<u8> {
    format!("{node}\0{serial}").into_bytes()
}

impl SledStore {
    fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        self.with(|t| t.db.open_tree(name).map_err(sled_err("opening a tree")))
    }

    fn put(&self, tree: &'static str, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        let t = self.tree(tree)?;
        t.insert(key, value).map_err(sled_err("writing a record"))?;
        self.with(|trees| trees.flush())
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.tree(tree)?
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(sled_err("reading records"))?;
                decode(tree, &k, &v)
            })
            .collect()
    }
}

impl EnrollStore for SledStore {
    fn put_token(&self, rec: &TokenRecord) -> Result<(), StoreError> {
        self.put(TOKENS, rec.id.as_bytes(), encode("token", rec)?)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let value = self
            .tree(TOKENS)?
            .get(id.as_bytes())
            .map_err(sled_err("reading a token"))?;
        value.map(|v| decode(TOKENS, id.as_bytes(), &v)).transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all(TOKENS)
    }

    fn put_enrollment(&self, rec: &EnrollmentRecord) -> Result<(), StoreError> {
        self.put(
            ENROLLMENTS,
            rec.node_name.as_bytes(),
            encode("enrollment", rec)?,
        )
    }

    fn enrollments(&self) -> Result<Vec<EnrollmentRecord>, StoreError> {
        self.all(ENROLLMENTS)
    }

    fn put_issued(&self, rec: &IssuedRecord, now_unix_ms: i64) -> Result<(), StoreError> {
        let tree = self.tree(ISSUED)?;
        for old in self.issued(&rec.node_name)? {
            if old.not_after_unix_ms < now_unix_ms {
                tree.remove(issued_key(&old.node_name, &old.serial))
                    .map_err(sled_err("forgetting an expired certificate"))?;
            }
        }
        self.put(
            ISSUED,
            &issued_key(&rec.node_name, &rec.serial),
            encode("issued certificate", rec)?,
        )
    }

    fn issued(&self, node_name: &str) -> Result<Vec<IssuedRecord>, StoreError> {
        let prefix = format!("{node_name}\0");
        let mut out: Vec<IssuedRecord> = self
            .tree(ISSUED)?
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(sled_err("reading issued certificates"))?;
                decode(ISSUED, &k, &v)
            })
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|r| r.not_before_unix_ms);
        Ok(out)
    }

    fn put_revocation(&self, rec: &RevocationRecord) -> Result<(), StoreError> {
        self.put(
            REVOCATIONS,
            rec.node_name.as_bytes(),
            encode("revocation", rec)?,
        )
    }

    fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError> {
        self.all(REVOCATIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_records_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = TokenRecord {
            id: "ab12cd".into(),
            hash: "00".repeat(32),
            description: "rack 4".into(),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            created_by: "admin/admin".into(),
            created_unix_ms: 1,
            expires_unix_ms: 2,
            uses: 1,
            used: 0,
            revoked: None,
            nodes: vec![],
        };
        let issued = |serial: &str, not_after: i64| IssuedRecord {
            node_name: "node-a".into(),
            serial: serial.into(),
            not_before_unix_ms: not_after - 10,
            not_after_unix_ms: not_after,
            via: "enroll".into(),
        };
        let revocation = RevocationRecord {
            node_name: "node-a".into(),
            revoked: Revoked {
                by: "admin/admin".into(),
                at_unix_ms: 50,
                reason: "stolen".into(),
            },
            serials: vec!["0A".into()],
        };
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.put_token(&token).expect("token");
            store.put_issued(&issued("0A", 100), 0).expect("issued");
            store.put_issued(&issued("0B", 200), 0).expect("issued");
            // A node called "node-a2" does not share node-a's prefix.
            let mut other = issued("0C", 300);
            other.node_name = "node-a2".into();
            store.put_issued(&other, 0).expect("other");
            store.put_revocation(&revocation).expect("revocation");
            crate::store::Store::close(&store).expect("close");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.token("ab12cd").expect("read"), Some(token));
        assert_eq!(store.token("000000").expect("read"), None);
        let serials: Vec<String> = store
            .issued("node-a")
            .expect("issued")
            .into_iter()
            .map(|r| r.serial)
            .collect();
        assert_eq!(serials, ["0A", "0B"]);
        // Writing at t=150 forgets 0A (expired at 100).
        store.put_issued(&issued("0D", 400), 150).expect("issued");
        let serials: Vec<String> = store
            .issued("node-a")
            .expect("issued")
            .into_iter()
            .map(|r| r.serial)
            .collect();
        assert_eq!(serials, ["0B", "0D"]);
        assert_eq!(store.revocations().expect("revocations"), vec![revocation]);
    }
}
