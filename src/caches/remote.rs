//! Caches over remote storages: [`CopyToLocalCache`] (read storages copied into the
//! local cache) and [`SynchronizedRemoteAndLocalCache`] (one remote, written through).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::keys::{self, PutCondition};
use super::{read_only, Cache, LocalCache};
use crate::config::ReadPolicy;
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::storage::{with_retries, ReadStorage, WriteStorage};

/// Read storages in order; a key's bytes are copied into the local cache (hashed on the
/// way in, checked against what the storage reports) and revalidated on later gets, so
/// a changed key is fetched again and an unchanged one is a local hit. `First` serves
/// the first storage that has the key; `Newest` the one whose copy is newest.
///
/// ```
/// use std::sync::Arc;
/// use czcache::caches::{Cache, CopyToLocalCache, LocalCache};
/// use czcache::config::{CacheConfig, IndexKind, LinkKind, ReadPolicy};
/// use czcache::storage::{FolderStorage, ReadStorage};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir_all(dir.path().join("share/models"))?;
/// std::fs::write(dir.path().join("share/models/bert.bin"), b"weights")?;
/// let local = LocalCache::open(&CacheConfig {
///     dir: dir.path().join("cache"),
///     size_limit: 1 << 30,
///     index: IndexKind::Sqlite,
///     link: vec![LinkKind::Copy],
/// })?;
/// let share: Arc<dyn ReadStorage> = Arc::new(FolderStorage::new(dir.path().join("share")));
/// let cache = CopyToLocalCache::new(local, vec![("share".into(), share)], ReadPolicy::First);
/// assert_eq!(std::fs::read(cache.get("models/bert.bin")?)?, b"weights");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CopyToLocalCache {
    local: LocalCache,
    read: Vec<(String, Arc<dyn ReadStorage>)>,
    policy: ReadPolicy,
}

impl CopyToLocalCache {
    pub fn new(
        local: LocalCache,
        read: Vec<(String, Arc<dyn ReadStorage>)>,
        policy: ReadPolicy,
    ) -> CopyToLocalCache {
        CopyToLocalCache {
            local,
            read,
            policy,
        }
    }

    /// The local cache the copies go into.
    pub fn local(&self) -> &LocalCache {
        &self.local
    }

    fn names(&self) -> String {
        self.read
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            path: PathBuf::from(format!("{key} (in {})", self.names())),
        }
    }

    /// The storages to try for `key`, in the order the policy gives.
    fn order(&self, key: &str) -> Result<Vec<&(String, Arc<dyn ReadStorage>)>> {
        match self.policy {
            ReadPolicy::First => Ok(self.read.iter().collect()),
            ReadPolicy::Newest => {
                let mut dated = Vec::new();
                for item in &self.read {
                    if let Some(time) = with_retries(|| item.1.last_modified(key))? {
                        dated.push((time, item));
                    }
                }
                // Newest first; ties keep the configured order.
                dated.sort_by_key(|item| std::cmp::Reverse(item.0));
                Ok(dated.into_iter().map(|(_, item)| item).collect())
            }
        }
    }

    /// The key's bytes fetched (or revalidated) through the local cache; with
    /// `expected`, the first copy that hashes to it (others skipped with a warning).
    fn fetch_through(&self, key: &str, expected: Option<&Oid>) -> Result<keys::KeyFetch> {
        // A bad key is bad everywhere: refused once, not tried against each storage.
        crate::storage::check_key_of(&self.describe(), key)?;
        // Known bytes already here: no storage is asked, whatever the policy.
        if let Some(found) =
            expected.map(|expected| keys::cached_by_hash(&self.local, key, expected))
        {
            if let Some(fetched) = found? {
                return Ok(fetched);
            }
        }
        let mut last_error = None;
        let mut mismatches = Vec::new();
        for (name, storage) in self.order(key)? {
            match keys::get_key_expecting(&self.local, name, storage.as_ref(), key, expected) {
                Ok(fetched) => return Ok(fetched),
                Err(Error::NotFound { .. }) => {}
                Err(err @ Error::HashMismatch { found, .. }) => {
                    self.local.warn(&format!("{err}; skipped"));
                    mismatches.push(format!("{name} holds {found}"));
                }
                // Unreachable is not a miss: try the next, and say why if none has it.
                Err(err) => {
                    self.local
                        .warn(&format!("{name} failed for {key}: {err}; trying the next"));
                    last_error = Some(err);
                }
            }
        }
        match expected {
            Some(expected) if !mismatches.is_empty() => {
                if let Some(err) = last_error {
                    mismatches.push(format!("and {err}"));
                }
                Err(Error::NoMatchingCopy {
                    key: key.into(),
                    expected: *expected,
                    tried: mismatches.join(", "),
                })
            }
            _ => Err(last_error.unwrap_or_else(|| self.not_found(key))),
        }
    }

    /// The first storage (in policy order) that has `key`, with what `what` asks of it.
    fn first_answer<T>(
        &self,
        key: &str,
        what: impl Fn(&dyn ReadStorage) -> std::result::Result<Option<T>, crate::storage::StorageError>,
    ) -> Result<Option<T>> {
        for (_, storage) in self.order(key)? {
            if let Some(answer) = with_retries(|| what(storage.as_ref()))? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }
}

impl Cache for CopyToLocalCache {
    fn describe(&self) -> String {
        format!("the cache of {} copied to the local cache", self.names())
    }

    fn fetch(&self, key: &str, expected: Option<&Oid>) -> Result<keys::KeyFetch> {
        self.fetch_through(key, expected)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut listed = Vec::new();
        for (_, storage) in &self.read {
            listed.extend(with_retries(|| storage.list(prefix))?);
        }
        listed.sort();
        listed.dedup();
        Ok(listed)
    }

    fn local(&self) -> Option<&LocalCache> {
        Some(&self.local)
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>> {
        self.first_answer(key, |storage| storage.hash(key))
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        self.first_answer(key, |storage| storage.last_modified(key))
    }

    fn put(&self, _key: &str, _src: &Path, _condition: PutCondition) -> Result<bool> {
        Err(read_only(self))
    }

    fn delete(&self, _key: &str, _expected: Option<Oid>) -> Result<bool> {
        Err(read_only(self))
    }
}

/// One remote, read through and written through the local cache: `put` uploads (under
/// its condition) and keeps the local copy, so the next `get` is a local hit; `get`
/// downloads again only when the remote copy changed. With extra read storages, `get`
/// tries them in order before the remote (a cluster copy before the bucket).
///
/// ```
/// use std::sync::Arc;
/// use czcache::caches::{Cache, LocalCache, PutCondition, SynchronizedRemoteAndLocalCache};
/// use czcache::config::{CacheConfig, IndexKind, LinkKind};
/// use czcache::storage::TemporaryStorage;
///
/// let dir = tempfile::tempdir()?;
/// let local = LocalCache::open(&CacheConfig {
///     dir: dir.path().join("cache"),
///     size_limit: 1 << 30,
///     index: IndexKind::Sqlite,
///     link: vec![LinkKind::Copy],
/// })?;
/// let cache = SynchronizedRemoteAndLocalCache::new(local, "scratch", Arc::new(TemporaryStorage::new()?));
/// let input = dir.path().join("weights.bin");
/// std::fs::write(&input, b"weights")?;
/// cache.put("models/weights.bin", &input, PutCondition::IfAbsent)?;
/// assert_eq!(std::fs::read(cache.get("models/weights.bin")?)?, b"weights");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SynchronizedRemoteAndLocalCache {
    reads: CopyToLocalCache,
    name: String,
    remote: Arc<dyn WriteStorage>,
}

impl SynchronizedRemoteAndLocalCache {
    pub fn new(
        local: LocalCache,
        name: &str,
        remote: Arc<dyn WriteStorage>,
    ) -> SynchronizedRemoteAndLocalCache {
        let reader: Arc<dyn ReadStorage> = remote.clone();
        let reads = CopyToLocalCache::new(local, vec![(name.into(), reader)], ReadPolicy::First);
        SynchronizedRemoteAndLocalCache::with_reads(reads, name, remote)
    }

    /// Reads through `reads` (which should end with the remote), writes to `remote`.
    pub fn with_reads(
        reads: CopyToLocalCache,
        name: &str,
        remote: Arc<dyn WriteStorage>,
    ) -> SynchronizedRemoteAndLocalCache {
        SynchronizedRemoteAndLocalCache {
            reads,
            name: name.into(),
            remote,
        }
    }

    /// The local cache inside.
    pub fn local(&self) -> &LocalCache {
        self.reads.local()
    }
}

impl Cache for SynchronizedRemoteAndLocalCache {
    fn describe(&self) -> String {
        format!(
            "the cache of remote {} synchronized with the local cache",
            self.name
        )
    }

    fn fetch(&self, key: &str, expected: Option<&Oid>) -> Result<keys::KeyFetch> {
        self.reads.fetch_through(key, expected)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(with_retries(|| self.remote.list(prefix))?)
    }

    fn local(&self) -> Option<&LocalCache> {
        Some(self.reads.local())
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>> {
        Ok(with_retries(|| self.remote.hash(key))?)
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        Ok(with_retries(|| self.remote.last_modified(key))?)
    }

    fn put(&self, key: &str, src: &Path, condition: PutCondition) -> Result<bool> {
        let written = keys::put_key(self.remote.as_ref(), key, src, condition)?;
        if written {
            // Write-through: keep a local copy, so the next get is a hit.
            keys::remember_key(self.local(), &self.name, self.remote.as_ref(), key, src)?;
        }
        Ok(written)
    }

    fn delete(&self, key: &str, expected: Option<Oid>) -> Result<bool> {
        keys::remove_key(
            self.local(),
            &self.name,
            self.remote.as_ref(),
            key,
            expected,
        )
    }
}
