//! Named records of the continuous-chaos modules (schedules, workflow runs), each kind in its
//! own sled tree, JSON-encoded; the typed helpers on [`StoreHandle`] that reach them.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sled_store::{decode, encode, sled_err};
use super::{SledStore, StoreError, StoreHandle};

/// A tree of named records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemTree {
    Schedules,
    Workflows,
}

impl ItemTree {
    pub fn name(self) -> &'static str {
        match self {
            ItemTree::Schedules => "schedules",
            ItemTree::Workflows => "workflows",
        }
    }
}

impl SledStore {
    fn item_tree(&self, tree: ItemTree) -> Result<sled::Tree, StoreError> {
        self.with(|t| {
            t.db.open_tree(tree.name())
                .map_err(sled_err("opening a tree"))
        })
    }

    pub(super) fn put_item_raw(
        &self,
        tree: ItemTree,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.item_tree(tree)?
            .insert(key.as_bytes(), value)
            .map(|_| ())
            .map_err(sled_err("writing a record"))
    }

    pub(super) fn item_raw(
        &self,
        tree: ItemTree,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .item_tree(tree)?
            .get(key.as_bytes())
            .map_err(sled_err("reading a record"))?
            .map(|v| v.to_vec()))
    }

    pub(super) fn items_raw(&self, tree: ItemTree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.item_tree(tree)?
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(sled_err("reading records"))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    pub(super) fn remove_item_raw(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError> {
        self.item_tree(tree)?
            .remove(key.as_bytes())
            .map(|old| old.is_some())
            .map_err(sled_err("removing a record"))
    }
}

impl StoreHandle {
    /// Writes record `key` of `tree`; durable when it returns.
    pub async fn put_item<T: Serialize>(
        &self,
        tree: ItemTree,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(tree.name(), value)?;
        let key = key.to_string();
        self.write(tree.name(), move |s| s.put_item(tree, &key, &bytes))
            .await
    }

    pub async fn item<T: DeserializeOwned + Send + 'static>(
        &self,
        tree: ItemTree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = key.to_string();
        self.read(move |s| {
            s.item(tree, &key)?
                .map(|v| decode(tree.name(), key.as_bytes(), &v))
                .transpose()
        })
        .await
    }

    /// Every record of `tree`, sorted by key.
    pub async fn items<T: DeserializeOwned + Send + 'static>(
        &self,
        tree: ItemTree,
    ) -> Result<Vec<T>, StoreError> {
        self.read(move |s| {
            s.items(tree)?
                .into_iter()
                .map(|(k, v)| decode(tree.name(), k.as_bytes(), &v))
                .collect()
        })
        .await
    }

    /// Removes record `key` of `tree` (durable); true when there was one.
    pub async fn remove_item(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.write(tree.name(), move |s| s.remove_item(tree, &key))
            .await
    }

    /// Removes the record of experiment `name` (durable); true when there was one.
    pub async fn remove_experiment(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.write("experiment", move |s| s.remove_experiment(&name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        name: String,
        n: u32,
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_trees_stay_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = StoreHandle::open(dir.path()).await.expect("open");
            for (tree, n) in [(ItemTree::Schedules, 1), (ItemTree::Workflows, 2)] {
                let rec = Rec {
                    name: "nightly".into(),
                    n,
                };
                store.put_item(tree, "nightly", &rec).await.expect("put");
            }
            let b = Rec {
                name: "b".into(),
                n: 3,
            };
            store
                .put_item(ItemTree::Schedules, "b", &b)
                .await
                .expect("put");
            store.close().await.expect("close");
        }
        let store = StoreHandle::open(dir.path()).await.expect("reopen");
        let all: Vec<Rec> = store.items(ItemTree::Schedules).await.expect("items");
        assert_eq!(
            all.iter()
                .map(|r| (r.name.as_str(), r.n))
                .collect::<Vec<_>>(),
            [("b", 3), ("nightly", 1)]
        );
        let w: Option<Rec> = store
            .item(ItemTree::Workflows, "nightly")
            .await
            .expect("item");
        assert_eq!(w.map(|r| r.n), Some(2));
        assert!(store
            .remove_item(ItemTree::Workflows, "nightly")
            .await
            .expect("remove"));
        assert!(!store
            .remove_item(ItemTree::Workflows, "nightly")
            .await
            .expect("remove again"));
        let gone: Option<Rec> = store
            .item(ItemTree::Workflows, "nightly")
            .await
            .expect("item");
        assert!(gone.is_none());
    }
}
