//! [`LocalReadOnlyCache`]: keys served straight from a local read-only storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{read_only, Cache, PutCondition};
use crate::error::{Error, Result};
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

    fn get(&self, key: &str) -> Result<PathBuf> {
        crate::storage::check_key(self.storage.as_ref(), key)?;
        let path = self.storage.path(key)?;
        // A file, not a folder or a symlink out of the share.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(path),
            _ => Err(Error::NotFound {
                path: PathBuf::from(format!("{}:{key}", self.name)),
            }),
        }
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
