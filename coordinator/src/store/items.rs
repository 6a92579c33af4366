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
