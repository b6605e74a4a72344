//! [`LocalReadOnlyCache`]: keys served straight from a local read-only storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{read_only, Cache, KeyFetch, PutCondition};
use crate::error::{Error, IoContext, Result};
use crate::oid::Oid;
use crate::storage::LocalStorage;

/// A cluster share (or any folder) served in place: `get` is the storage's own file, no
/// copy and no local cache. Nothing can be written through it.
///
/// ```
/// use czcache::caches::{Cache, LocalReadOnlyCache};
/// use czcache::storage::{FolderStorage, ReadOnly};
/// let share = tempfile::tempdir()?;
/// std::fs::create_dir_all(share.path().join("refs"))?;
/// std::fs::write(share.path().join("refs/genome.fa"), b">chr1\nACGT\n")?;
/// let cache = LocalReadOnlyCache::new("share", ReadOnly::new(FolderStorage::new(share.path())));
/// assert_eq!(cache.get("refs/genome.fa")?, share.path().join("refs/genome.fa"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LocalReadOnlyCache {
    name: String,
    storage: Arc<dyn LocalStorage + Send + Sync>,
}

impl LocalReadOnlyCache {
    pub fn new(
        name: &str,
        storage: impl LocalStorage + Send + Sync + 'static,
    ) -> LocalReadOnlyCache {
        LocalReadOnlyCache {
            name: name.into(),
            storage: Arc::new(storage),
        }
    }
}

impl Cache for LocalReadOnlyCache {
    fn describe(&self) -> String {
        format!(
            "cache {} ({}, served in place)",
            self.name,
            self.storage.describe()
        )
    }

    fn fetch(&self, key: &str, expected: Option<&Oid>) -> Result<KeyFetch> {
        crate::storage::check_key(self.storage.as_ref(), key)?;
        let path = self.storage.path(key)?;
        // A file, not a folder or a symlink out of the share.
        let size = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => {
                return Err(Error::NotFound {
                    path: PathBuf::from(format!("{}:{key}", self.name)),
                })
            }
        };
        // Served in place: the share's bytes are hashed only when the caller knows them.
        let oid = match expected {
            Some(expected) => {
                let (found, _) = crate::oid::hash_file(&path).at(&path)?;
                if found != *expected {
                    return Err(Error::HashMismatch {
                        storage: self.name.clone(),
                        key: key.into(),
                        expected: *expected,
                        found,
                    });
                }
                Some(found)
            }
            None => None,
        };
        Ok(KeyFetch {
            path,
            oid,
            size,
            downloaded: false,
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.storage.list(prefix)?)
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>> {
        Ok(self.storage.hash(key)?)
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        Ok(self.storage.last_modified(key)?)
    }

    fn put(&self, _key: &str, _src: &Path, _condition: PutCondition) -> Result<bool> {
        Err(read_only(self))
    }

    fn delete(&self, _key: &str, _expected: Option<Oid>) -> Result<bool> {
        Err(read_only(self))
    }
}
