//! The key cache: arbitrary keys of a storage (not content-addressed), copied through
//! the local cache. The bytes are ordinary objects (same LRU, same limit); a small record
//! under `keys/<storage name>/<key>.json` remembers which object holds the key's latest
//! copy and what the storage said about it, so an unchanged key is a local hit.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cache::LocalCache;
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::storage::{with_retries, KeyInfo, ReadStorage, StorageError, WriteStorage};

/// What the key cache remembers of one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KeyRecord {
    oid: Oid,
    size: u64,
    /// The remote's last_modified, in nanoseconds since the epoch.
    remote_modified_ns: i128,
    /// The remote's version tag (ETag) when it reports one: an overwrite within the
    /// same second changes it, where last_modified (to the second on S3) does not.
    #[serde(default)]
    remote_version: Option<String>,
    /// The hash the remote reports, if any.
    #[serde(default)]
    remote_hash: Option<Oid>,
    /// The object file's stamp when it was last hashed and found sound: a hit whose
    /// object still has it is not hashed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verified: Option<crate::cache::ObjectStamp>,
}

impl KeyRecord {
    fn of(admitted: &crate::cache::Admitted, info: &KeyInfo) -> KeyRecord {
        KeyRecord {
            oid: admitted.oid,
            size: admitted.size,
            remote_modified_ns: info.last_modified.map(nanos).unwrap_or(0),
            remote_version: info.version.clone(),
            remote_hash: info.hash,
            verified: None,
        }
    }

    /// Whether the remote's key is still the copy this record describes.
    fn is_current(&self, info: &KeyInfo) -> bool {
        self.remote_modified_ns == info.last_modified.map(nanos).unwrap_or(0)
            && self.remote_version == info.version
            && info.hash.is_none_or(|hash| hash == self.oid)
            && info.size.is_none_or(|size| size == self.size)
    }
}

/// What `get` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyFetch {
    /// The read-only copy in the cache.
    pub path: PathBuf,
    /// `None` when the cache serves a file in place and was not asked to hash it.
    pub oid: Option<Oid>,
    pub size: u64,
    /// False when the cached copy was still current.
    pub downloaded: bool,
}

/// The objects the key cache's records point at (kept by `czc gc --cache`).
pub fn key_cache_oids(cache: &LocalCache) -> Vec<Oid> {
    let root = cache.root().join("keys");
    walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<KeyRecord>(&bytes).ok())
        .map(|record| record.oid)
        .collect()
}

fn key_record_path(cache: &LocalCache, remote: &str, key: &str) -> PathBuf {
    // A storage named by its url (the Python API's) gets a folder named by its hash.
    let safe = !remote.is_empty()
        && remote
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let folder = if safe {
        remote.to_string()
    } else {
        format!("url-{}", &Oid::of_bytes(remote.as_bytes()).hex()[..24])
    };
    let mut path = cache.root().join("keys").join(folder);
    path.extend(key.split('/'));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    path.set_file_name(name);
    path
}

/// A key's file name: its last component.
fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.into(),
        source,
    }
}

fn read_key_record(path: &Path) -> Option<KeyRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_key_record(path: &Path, record: &KeyRecord) -> Result<()> {
    let dir = crate::fsutil::parent_dir(path);
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    crate::fsutil::write_atomic(path, &bytes).map_err(io_at(path))
}

fn nanos(time: SystemTime) -> i128 {
    crate::fsutil::since_epoch(time).as_nanos() as i128
}

/// Copies `key` of a remote into the local cache (downloading again only if the remote
/// copy changed) and returns the local read-only path.
pub fn get_key(
    cache: &LocalCache,
    remote: &str,
    storage: &dyn ReadStorage,
    key: &str,
) -> Result<KeyFetch> {
    get_key_expecting(cache, remote, storage, key, None)
}

/// [`get_key`] of bytes the caller knows by hash (pooch's `known_hash`): if the local
/// cache holds that object it is the answer, with no request; a storage whose copy
/// hashes otherwise is [`Error::HashMismatch`] (not downloaded when it reports a hash).
pub fn get_key_expecting(
    cache: &LocalCache,
    remote: &str,
    storage: &dyn ReadStorage,
    key: &str,
    expected: Option<&Oid>,
) -> Result<KeyFetch> {
    crate::storage::check_key(storage, key)?;
    let not_found = || Error::NotFound {
        path: PathBuf::from(format!("{remote}:{key}")),
    };
    let mismatch = |found: Oid| match expected {
        Some(expected) if *expected != found => Err(Error::HashMismatch {
            storage: remote.into(),
            key: key.into(),
            expected: *expected,
            found,
        }),
        _ => Ok(()),
    };
    if let Some(found) = expected.map(|expected| cached_by_hash(cache, key, expected)) {
        if let Some(fetched) = found? {
            return Ok(fetched);
        }
    }
    let record_path = key_record_path(cache, remote, key);
    // The key may be rewritten between the HEAD and the GET: one more try then.
    let mut attempt = 0;
    let current_copy = |info: &KeyInfo| {
        read_key_record(&record_path)
            .filter(|record| record.is_current(info) && cache.contains(&record.oid))
    };
    // One download per key at a time across processes: the others wait, then hit.
    let mut download_lock = None;
    let (admitted, info) = loop {
        attempt += 1;
        let info = with_retries(|| storage.describe_key(key))?.ok_or_else(not_found)?;
        if let Some(hash) = info.hash {
            mismatch(hash)?;
        }
        if download_lock.is_none() {
            if let Some(record) = current_copy(&info) {
                let oid = record.oid;
                mismatch(oid)?;
                return cached_key(cache, &oid, key, Some((&record_path, record)));
            }
            // Only an optimisation (every commit is atomic): if the lock cannot be had,
            // say a very long download holds it past the lock timeout, fetch anyway.
            download_lock = Some(lock_key(&record_path, &format!("{remote}:{key}")).ok());
        }
        // Fetched by another process while this one waited for the lock?
        if let Some(record) = current_copy(&info) {
            let oid = record.oid;
            mismatch(oid)?;
            return cached_key(cache, &oid, key, Some((&record_path, record)));
        }
        // Never more than the size the remote reports; then the bytes must agree with
        // every size and hash it reports, or nothing is kept.
        let staged = cache
            .stage_from(storage, key, info.size)?
            .ok_or_else(not_found)?;
        let disagrees = match (info.size, info.hash) {
            (Some(size), _) if size != staged.size => {
                Some(format!("{} bytes arrived, it reports {size}", staged.size))
            }
            (_, Some(hash)) if hash != staged.oid => Some(format!(
                "the bytes hash to {}, it reports {hash}",
                staged.oid
            )),
            _ => None,
        };
        match disagrees {
            None => break (cache.commit_fetched(vec![staged])?.remove(0), info),
            Some(_) if attempt < 2 => continue,
            Some(what) => {
                return Err(Error::RemoteDisagrees {
                    remote: remote.into(),
                    key: key.into(),
                    what,
                })
            }
        }
    };
    // A key's bytes came from the remote: evicting them loses nothing.
    cache.mark_pushed(&[admitted.oid])?;
    write_key_record(&record_path, &KeyRecord::of(&admitted, &info))?;
    mismatch(admitted.oid)?;
    Ok(KeyFetch {
        path: cache.named_path(&admitted.oid, key_name(key))?,
        oid: Some(admitted.oid),
        size: admitted.size,
        downloaded: true,
    })
}

/// The lock beside a key's record that one download (or local put) of it holds.
fn lock_key(record_path: &Path, what: &str) -> Result<crate::fsutil::FileLock> {
    let dir = crate::fsutil::parent_dir(record_path);
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let lock_path = record_path.with_extension("lock");
    crate::fsutil::FileLock::acquire(
        &lock_path,
        crate::fsutil::LockMode::Exclusive,
        &format!("key {what}"),
    )
    .map_err(io_at(&lock_path))
}

/// The local cache's copy of the bytes `expected`, served as `key` (named after it), if
/// it holds them: what a get with a known hash answers without asking any storage.
pub fn cached_by_hash(cache: &LocalCache, key: &str, expected: &Oid) -> Result<Option<KeyFetch>> {
    crate::storage::check_key_of(LOCAL_CACHE_NAME, key)?;
    // Remembered under a name no record path can have.
    let what = PathBuf::from(format!("#{}/{}", expected.hex(), key_name(key)));
    if let Some((oid, path, size)) = cache.recall_hit(&what, None) {
        return Ok(Some(KeyFetch {
            path,
            oid: Some(oid),
            size,
            downloaded: false,
        }));
    }
    if !cache.contains(expected) {
        return Ok(None);
    }
    let fetched = cached_key(cache, expected, key, None)?;
    cache.remember_hit(&what, None, expected, &fetched.path);
    Ok(Some(fetched))
}

/// The cached object `oid` as `key`'s copy: verified (by its stamp when the record has
/// one, else by hashing it, and then the stamp is recorded), named after the key, used.
fn cached_key(
    cache: &LocalCache,
    oid: &Oid,
    key: &str,
    record: Option<(&Path, KeyRecord)>,
) -> Result<KeyFetch> {
    // Naming it first: a new link changes the object's ctime, and so its stamp.
    let path = cache.named_path(oid, key_name(key))?;
    let trusted = record.as_ref().and_then(|(_, record)| record.verified);
    let (_, size, stamp) = cache.verified_object_stamped(oid, Path::new(key), trusted)?;
    if let (Some(stamp), Some((record_path, mut record))) = (stamp, record) {
        record.verified = Some(stamp);
        // Only a speed-up: a record that cannot be written costs a hash next time.
        let _ = write_key_record(record_path, &record);
    }
    cache.touch_hit(oid)?;
    Ok(KeyFetch {
        path,
        oid: Some(*oid),
        size,
        downloaded: false,
    })
}

/// Admits a file just uploaded to `key` into the local cache and records it as the
/// key's current copy, so the next `get_key` is a local hit.
pub fn remember_key(
    cache: &LocalCache,
    remote: &str,
    storage: &dyn ReadStorage,
    key: &str,
    src: &Path,
) -> Result<()> {
    let Some(info) = with_retries(|| storage.describe_key(key))? else {
        return Ok(());
    };
    let admitted = cache.admit_file(src)?;
    cache.mark_pushed(&[admitted.oid])?;
    write_key_record(
        &key_record_path(cache, remote, key),
        &KeyRecord::of(&admitted, &info),
    )
}

fn file_oid(file: &Path) -> Result<Oid> {
    crate::oid::hash_file(file)
        .map(|(oid, _)| oid)
        .map_err(|source| Error::Io {
            path: file.into(),
            source,
        })
}

/// How `put_key` may overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    Always,
    IfAbsent,
    IfMatch(Oid),
    IfNewer,
}

/// Uploads `file` to `key` under a condition. Returns false when `IfNewer` found the
/// remote copy at least as new (nothing written). A lost race is
/// [`StorageError::LostRace`].
pub fn put_key(
    storage: &dyn WriteStorage,
    key: &str,
    file: &Path,
    condition: PutCondition,
) -> Result<bool> {
    crate::storage::check_key(storage, key)?;
    if !file.is_file() {
        return Err(Error::NotFound { path: file.into() });
    }
    let counted =
        |attempt: &dyn Fn() -> std::result::Result<bool, StorageError>| with_retries(attempt);
    // Whether the key was there before this put, for telling our own write (seen by a
    // retry) from someone else's below.
    let absent_before = condition == PutCondition::IfAbsent
        && with_retries(|| storage.describe_key(key))?.is_none();
    let written = match condition {
        PutCondition::Always => counted(&|| storage.put(key, file).map(|()| true)),
        PutCondition::IfAbsent => counted(&|| storage.put_if_absent(key, file).map(|()| true)),
        PutCondition::IfMatch(expected) => counted(&|| {
            storage
                .put_if_hash_matches(key, file, &expected)
                .map(|()| true)
        }),
        PutCondition::IfNewer => counted(&|| storage.put_if_newer(key, file)),
    };
    match written {
        // A write that went through behind an error (a 5xx, a reset) is retried — here or
        // inside the storage's client, where it cannot be counted — and the retry sees
        // its own write as a lost race. It was ours if the key now holds our bytes and
        // did not before: absent for `IfAbsent`, `expected` (other bytes) for `IfMatch`.
        Err(StorageError::LostRace { .. })
            if match condition {
                PutCondition::IfAbsent => absent_before,
                PutCondition::IfMatch(expected) => expected != file_oid(file)?,
                PutCondition::Always | PutCondition::IfNewer => false,
            } && with_retries(|| storage.hash(key)).ok().flatten() == Some(file_oid(file)?) =>
        {
            Ok(true)
        }
        other => Ok(other?),
    }
}

/// Deletes `key`, only if it still holds `expected` when given. Returns false if there
/// was nothing to delete (unconditional form only).
pub fn remove_key(
    cache: &LocalCache,
    remote: &str,
    storage: &dyn WriteStorage,
    key: &str,
    expected: Option<Oid>,
) -> Result<bool> {
    crate::storage::check_key(storage, key)?;
    let removed = match expected {
        Some(expected) => {
            with_retries(|| storage.delete_if_hash_matches(key, &expected))?;
            true
        }
        None => with_retries(|| storage.delete(key))?,
    };
    let _ = std::fs::remove_file(key_record_path(cache, remote, key));
    Ok(removed)
}

/// The record folder of keys kept in the local cache only: a name no remote can have
/// (remote names are letters, digits, `-` and `_`).
const LOCAL_KEYS: &str = ".local";

/// What the local cache is called in messages about its keys.
pub const LOCAL_CACHE_NAME: &str = "the local cache";

/// A key kept in the local cache only: the object holding it and when it was put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalKey {
    pub oid: Oid,
    pub size: u64,
    pub modified: SystemTime,
}

/// The local cache's copy of `key`, if it has one (its object may be evicted: then none).
pub fn local_key(cache: &LocalCache, key: &str) -> Result<Option<LocalKey>> {
    crate::storage::check_key_of(LOCAL_CACHE_NAME, key)?;
    let record = read_key_record(&key_record_path(cache, LOCAL_KEYS, key));
    Ok(record
        .filter(|record| cache.contains(&record.oid))
        .map(|record| LocalKey {
            oid: record.oid,
            size: record.size,
            modified: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_nanos(record.remote_modified_ns.max(0) as u64),
        }))
}

/// A verified read-only path of `key` kept in the local cache only.
pub fn get_local(cache: &LocalCache, key: &str, expected: Option<&Oid>) -> Result<KeyFetch> {
    crate::storage::check_key_of(LOCAL_CACHE_NAME, key)?;
    let record_path = key_record_path(cache, LOCAL_KEYS, key);
    // Stamped before it is read: a rewrite after this is seen next time.
    let record_stamp = LocalCache::file_stamp(&record_path);
    if let Some((oid, path, size)) = cache.recall_hit(&record_path, record_stamp) {
        if expected.is_none_or(|expected| *expected == oid) {
            return Ok(KeyFetch {
                size,
                path,
                oid: Some(oid),
                downloaded: false,
            });
        }
    }
    let fetched = get_local_slowly(cache, key, &record_path, expected)?;
    if let Some(oid) = fetched.oid {
        cache.remember_hit(&record_path, record_stamp, &oid, &fetched.path);
    }
    Ok(fetched)
}

fn get_local_slowly(
    cache: &LocalCache,
    key: &str,
    record_path: &Path,
    expected: Option<&Oid>,
) -> Result<KeyFetch> {
    // The record read once: what local_key reads, kept for cached_key to update.
    let Some(record) = read_key_record(record_path).filter(|record| cache.contains(&record.oid))
    else {
        return Err(Error::NotFound {
            path: PathBuf::from(format!("local:{key}")),
        });
    };
    if let Some(expected) = expected.filter(|expected| **expected != record.oid) {
        return Err(Error::HashMismatch {
            storage: LOCAL_CACHE_NAME.into(),
            key: key.into(),
            expected: *expected,
            found: record.oid,
        });
    }
    let oid = record.oid;
    cached_key(cache, &oid, key, Some((record_path, record)))
}

/// The keys kept in the local cache only that start with `prefix`, sorted (those whose
/// object was evicted are gone).
pub fn list_local(cache: &LocalCache, prefix: &str) -> Result<Vec<String>> {
    let root = cache.root().join("keys").join(LOCAL_KEYS);
    let mut keys: Vec<String> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| {
            let relative = entry.path().strip_prefix(&root).ok()?.to_str()?;
            relative.strip_suffix(".json").map(str::to_owned)
        })
        .filter(|key| key.starts_with(prefix))
        .filter(|key| matches!(local_key(cache, key), Ok(Some(_))))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Keeps `file` as `key` in the local cache only, under `condition` (checked and written
/// under a lock, so two processes cannot both win). Returns false when `IfNewer` found
/// the kept copy at least as new. Such keys are evicted like any cached object: the
/// local cache is a cache.
pub fn put_local(
    cache: &LocalCache,
    key: &str,
    file: &Path,
    condition: PutCondition,
) -> Result<bool> {
    crate::storage::check_key_of(LOCAL_CACHE_NAME, key)?;
    let meta = std::fs::metadata(file).map_err(io_at(file))?;
    let record_path = key_record_path(cache, LOCAL_KEYS, key);
    let _lock = lock_key(&record_path, &format!("local:{key}"))?;
    let current = local_key(cache, key)?;
    let lost = |found: &str| {
        Err(Error::Storage(StorageError::LostRace {
            storage: LOCAL_CACHE_NAME.into(),
            key: key.into(),
            found: found.into(),
        }))
    };
    let modified = meta.modified().map_err(io_at(file))?;
    match (&condition, &current) {
        (PutCondition::IfAbsent, Some(_)) => return lost("it exists"),
        (PutCondition::IfMatch(_), None) => return lost("it is gone"),
        (PutCondition::IfMatch(expected), Some(found)) if found.oid != *expected => {
            return lost(&format!("it holds {}", found.oid));
        }
        (PutCondition::IfNewer, Some(found)) if found.modified >= modified => return Ok(false),
        _ => {}
    }
    let admitted = cache.admit_file(file)?;
    // Evictable: the caller chose a cache, not an archive.
    cache.mark_pushed(&[admitted.oid])?;
    let record = KeyRecord {
        oid: admitted.oid,
        size: admitted.size,
        remote_modified_ns: nanos(modified),
        remote_version: None,
        remote_hash: Some(admitted.oid),
        verified: None,
    };
    write_key_record(&record_path, &record)?;
    Ok(true)
}

/// Forgets `key` kept in the local cache only (only if it holds `expected` when given);
/// false if there was nothing to forget.
pub fn remove_local(cache: &LocalCache, key: &str, expected: Option<Oid>) -> Result<bool> {
    let current = local_key(cache, key)?;
    match (expected, &current) {
        (Some(expected), Some(found)) if found.oid != expected => {
            return Err(Error::Storage(StorageError::LostRace {
                storage: LOCAL_CACHE_NAME.into(),
                key: key.into(),
                found: format!("it holds {}", found.oid),
            }))
        }
        (_, None) => return Ok(false),
        _ => {}
    }
    let record_path = key_record_path(cache, LOCAL_KEYS, key);
    std::fs::remove_file(&record_path).map_err(io_at(&record_path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FolderStorage;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A folder whose first conditional put stores the file and then answers with a
    /// timeout, as a server that wrote and then failed to answer (a 5xx) would.
    struct WritesThenFails {
        inner: FolderStorage,
        failed: AtomicBool,
    }

    impl ReadStorage for WritesThenFails {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn copy_into(
            &self,
            key: &str,
            out: &mut std::fs::File,
            max: u64,
        ) -> Result<Option<u64>, StorageError> {
            self.inner.copy_into(key, out, max)
        }
        fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
            self.inner.hash(key)
        }
        fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
            self.inner.last_modified(key)
        }
        fn exists(&self, key: &str) -> Result<bool, StorageError> {
            self.inner.exists(key)
        }
        fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
            self.inner.size(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.inner.list(prefix)
        }
    }

    impl WriteStorage for WritesThenFails {
        fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
            self.inner.put(key, src)
        }
        fn delete(&self, key: &str) -> Result<bool, StorageError> {
            self.inner.delete(key)
        }
        fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
            self.inner.put_if_absent(key, src)?;
            if !self.failed.swap(true, Ordering::SeqCst) {
                return Err(StorageError::Io {
                    storage: self.describe(),
                    key: key.into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "503 after the write",
                    ),
                });
            }
            Ok(())
        }
        fn put_if_hash_matches(
            &self,
            key: &str,
            src: &Path,
            expected: &Oid,
        ) -> Result<(), StorageError> {
            self.inner.put_if_hash_matches(key, src, expected)
        }
        fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
            self.inner.put_if_newer(key, src)
        }
        fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
            self.inner.delete_if_hash_matches(key, expected)
        }
    }

    #[test]
    fn a_conditional_put_that_wrote_behind_an_error_reports_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let storage = WritesThenFails {
            inner: FolderStorage::new(dir.path().join("store")),
            failed: AtomicBool::new(false),
        };
        let file = dir.path().join("mine.csv");
        std::fs::write(&file, b"a,b\n1,2\n").unwrap();
        assert!(put_key(&storage, "results/run.csv", &file, PutCondition::IfAbsent).unwrap());
        // Someone else's bytes there: a real lost race, nothing written.
        let other = dir.path().join("other.csv");
        std::fs::write(&other, b"different").unwrap();
        let err = put_key(&storage, "results/run.csv", &other, PutCondition::IfAbsent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing was written"), "{err}");
    }
}
