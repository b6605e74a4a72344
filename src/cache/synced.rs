//! The cache callers embed: a local cache plus one writable remote. `put` writes
//! through to the remote, `get` reads through the local cache (downloading again only
//! when the remote copy changed).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::LocalCache;
use crate::config::{Config, Env};
use crate::error::{IoContext, Result};
use crate::oid::Oid;
use crate::remote::{self, PutCondition, Remotes};
use crate::storage::WriteStorage;

/// What callers use, whichever cache they were handed: keys in, local paths out.
pub trait Cache {
    /// A local read-only path holding the key's current bytes, fetched if needed.
    fn get(&self, key: &str) -> Result<PathBuf>;
    /// The key's current bytes, opened for reading.
    fn open(&self, key: &str) -> Result<File> {
        let path = self.get(key)?;
        File::open(&path).at(path)
    }
    /// The BLAKE3 oid of the key's bytes, `None` if it does not exist.
    fn hash(&self, key: &str) -> Result<Option<Oid>>;
    /// When the key was last written, `None` if it does not exist.
    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>>;
    /// Stores `src` under `key`.
    fn put(&self, key: &str, src: &Path) -> Result<()>;
    /// Deletes the key; false if it was not there.
    fn delete(&self, key: &str) -> Result<bool>;
}

/// A local cache plus one writable remote.
///
/// ```
/// use std::sync::Arc;
/// use czcache::cache::{Cache, LocalCache, SyncedCache};
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
/// let cache = SyncedCache::new(local, "scratch", Arc::new(TemporaryStorage::new()?));
/// let input = dir.path().join("weights.bin");
/// std::fs::write(&input, b"weights")?;
/// cache.put("models/weights.bin", &input)?;
/// assert_eq!(std::fs::read(cache.get("models/weights.bin")?)?, b"weights");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SyncedCache {
    local: LocalCache,
    name: String,
    remote: Arc<dyn WriteStorage>,
}

impl SyncedCache {
    pub fn new(local: LocalCache, name: &str, remote: Arc<dyn WriteStorage>) -> SyncedCache {
        SyncedCache {
            local,
            name: name.into(),
            remote,
        }
    }

    /// The local cache inside.
    pub fn local(&self) -> &LocalCache {
        &self.local
    }
}

impl Cache for SyncedCache {
    fn get(&self, key: &str) -> Result<PathBuf> {
        Ok(remote::get_key(&self.local, &self.name, self.remote.as_ref(), key)?.path)
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>> {
        Ok(self.remote.hash(key)?)
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        Ok(self.remote.last_modified(key)?)
    }

    fn put(&self, key: &str, src: &Path) -> Result<()> {
        remote::put_key(self.remote.as_ref(), key, src, PutCondition::Always)?;
        // Write-through: keep a local copy, so the next get is a hit.
        remote::remember_key(&self.local, &self.name, self.remote.as_ref(), key, src)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        remote::remove_key(&self.local, &self.name, self.remote.as_ref(), key, None)
    }
}

/// Builds the cache a configuration names: its local cache plus the remote `remote`
/// (else `remote.default`), which must be writable.
pub fn open_cache(
    config: &Config,
    remote: Option<&str>,
    project_root: &Path,
    env: &Env,
) -> Result<SyncedCache> {
    let local = LocalCache::open(&config.cache)?;
    let remotes = Remotes::from_config(config, project_root, env);
    let (name, writer) = remotes.writer(remote)?;
    Ok(SyncedCache::new(local, &name, writer))
}

impl From<SyncedCache> for LocalCache {
    fn from(cache: SyncedCache) -> LocalCache {
        cache.local
    }
}
