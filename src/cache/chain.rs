//! Remote chains: an ordered list of read storages that fill the local cache on a miss.
//! Every byte that comes from a remote is hashed on its way in; a corrupt copy is
//! rejected with a warning and the next remote is tried. Only a real "not found" is a
//! miss: an unreachable remote is reported with its cause, never silently skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Admitted, LocalCache, Staged};
use crate::config::ReadPolicy;
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::storage::ReadStorage;

/// A configured remote: its name and the storage behind it.
#[derive(Clone)]
pub struct NamedRemote {
    pub name: String,
    pub storage: Arc<dyn ReadStorage>,
}

impl std::fmt::Debug for NamedRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.storage.describe())
    }
}

/// An ordered list of read storages with a policy for picking the copy to use.
///
/// ```
/// use std::sync::Arc;
/// use czcache::cache::{NamedRemote, RemoteChain};
/// use czcache::config::ReadPolicy;
/// use czcache::storage::{FolderStorage, ReadOnly};
///
/// let chain = RemoteChain::new(
///     vec![
///         NamedRemote { name: "share".into(), storage: Arc::new(ReadOnly::new(FolderStorage::new("/mnt/share/czc"))) },
///         NamedRemote { name: "team".into(), storage: Arc::new(FolderStorage::new("/srv/czc")) },
///     ],
///     ReadPolicy::First,
/// );
/// assert_eq!(chain.names(), ["share", "team"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RemoteChain {
    remotes: Vec<NamedRemote>,
    policy: ReadPolicy,
}

impl RemoteChain {
    pub fn new(remotes: Vec<NamedRemote>, policy: ReadPolicy) -> RemoteChain {
        RemoteChain { remotes, policy }
    }

    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// The remotes, in the order they are read.
    pub fn remotes(&self) -> &[NamedRemote] {
        &self.remotes
    }

    pub fn policy(&self) -> ReadPolicy {
        self.policy
    }

    pub fn names(&self) -> Vec<&str> {
        self.remotes.iter().map(|r| r.name.as_str()).collect()
    }

    /// Fetches one object into `cache`, trying the remotes in policy order. The error
    /// names every remote tried and what each said.
    pub fn fetch(&self, cache: &LocalCache, oid: &Oid, for_path: &Path) -> Result<Admitted> {
        self.fetch_sized(cache, oid, None, for_path)
    }

    /// [`RemoteChain::fetch`] of an object whose size is known (from its marker or
    /// manifest): no remote may send more.
    pub fn fetch_sized(
        &self,
        cache: &LocalCache,
        oid: &Oid,
        size: Option<u64>,
        for_path: &Path,
    ) -> Result<Admitted> {
        let staged = self.stage(cache, oid, size, for_path)?;
        Ok(cache.commit_fetched(vec![staged])?.remove(0))
    }

    /// Downloads and verifies one object into the cache's staging, not yet committed
    /// (so many fetches can be committed at once).
    pub fn stage(
        &self,
        cache: &LocalCache,
        oid: &Oid,
        size: Option<u64>,
        for_path: &Path,
    ) -> Result<Staged> {
        let key = oid.object_key();
        let mut tried = Vec::new();
        for index in self.order(&key) {
            let remote = &self.remotes[index];
            match cache.stage_from(remote.storage.as_ref(), &key, size) {
                Ok(Some(staged)) if staged.oid == *oid => return Ok(staged),
                Ok(Some(staged)) => {
                    cache.warn(&format!(
                        "remote {} holds corrupt bytes for {oid} (they hash to {}); trying the next remote",
                        remote.name, staged.oid
                    ));
                    tried.push(format!("{}: corrupt copy", remote.name));
                }
                Ok(None) => tried.push(format!("{}: not found", remote.name)),
                Err(err) => {
                    // Unreachable is not a miss: say so even if a later remote serves.
                    cache.warn(&format!(
                        "remote {} failed for {oid}: {err}; trying the next remote",
                        remote.name
                    ));
                    tried.push(format!("{}: {err}", remote.name));
                }
            }
        }
        cache.record_miss();
        Err(Error::NotInRemotes {
            path: for_path.into(),
            oid: *oid,
            tried: if tried.is_empty() {
                "no remote is configured (czc remote add)".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// Remote indexes in the order to try them for `key`.
    fn order(&self, key: &str) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.remotes.len()).collect();
        if self.policy == ReadPolicy::Newest {
            // Newest copy first; remotes that lack it or fail to answer keep their
            // place at the end, so their answer is still reported.
            let times: Vec<Option<SystemTime>> = self
                .remotes
                .iter()
                .map(|r| r.storage.last_modified(key).ok().flatten())
                .collect();
            order.sort_by(|a, b| times[*b].cmp(&times[*a]));
        }
        order
    }
}
