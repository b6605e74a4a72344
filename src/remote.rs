//! Remotes: the named storages of a project's configuration, and moving objects between
//! them and the local cache (push, fetch) in parallel, with retries and one report.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rayon::prelude::*;

use crate::cache::{LocalCache, NamedRemote, RemoteChain, Staged};
use crate::config::{Config, Env, ReadPolicy, RemoteEntry};
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::storage::{
    open_storage, with_retries, KeyInfo, OpenedStorage, ReadStorage, StorageError, StorageOptions,
    Timeouts, WriteStorage,
};

/// Concurrent transfers when `-j` is not given: transfers wait on I/O, not the CPU.
pub const DEFAULT_TRANSFER_JOBS: usize = 8;

/// The remotes a configuration names, opened on demand (a remote that cannot be opened
/// only fails the operations that use it).
#[derive(Debug, Clone)]
pub struct Remotes {
    entries: BTreeMap<String, RemoteEntry>,
    read: Vec<String>,
    default: Option<String>,
    policy: ReadPolicy,
    base_dir: PathBuf,
    tokens: BTreeMap<String, String>,
    /// `CZC_*_TIMEOUT` variables.
    timeout_env: BTreeMap<String, String>,
    aws_env: BTreeMap<String, String>,
}

/// A remote's name as it appears in environment variables: `lab-share` → `LAB_SHARE`.
pub fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

impl Remotes {
    /// The remotes of `config`; relative folder urls are relative to `base_dir`.
    pub fn from_config(config: &Config, base_dir: &Path, env: &Env) -> Remotes {
        let tokens = config
            .remotes
            .keys()
            .filter_map(|name| {
                let var = format!("CZC_REMOTE_{}_TOKEN", env_name(name));
                env.get(&var).map(|token| (name.clone(), token.to_string()))
            })
            .collect();
        let timeout_env = env
            .vars
            .iter()
            .filter(|(var, value)| {
                !value.is_empty()
                    && (var.ends_with("_TIMEOUT") && var.starts_with("CZC_"))
                    && var.as_str() != "CZC_LOCK_TIMEOUT"
            })
            .map(|(var, value)| (var.clone(), value.clone()))
            .collect();
        Remotes {
            entries: config.remotes.clone(),
            read: config.remote.read.clone(),
            default: config.remote.default.clone(),
            policy: config.remote.policy,
            base_dir: base_dir.into(),
            tokens,
            timeout_env,
            aws_env: env
                .vars
                .iter()
                .filter(|(name, _)| name.starts_with("AWS_"))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of `remote.default`, if set.
    pub fn default_name(&self) -> Option<String> {
        self.default.clone()
    }

    /// Whether push has somewhere to go: a default remote that can be written.
    pub fn has_writable_default(&self) -> bool {
        self.default
            .as_ref()
            .and_then(|name| self.entries.get(name))
            .is_some_and(|entry| !entry.read_only)
    }

    fn known(&self) -> String {
        if self.entries.is_empty() {
            "none".into()
        } else {
            self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// Opens one remote by name.
    pub fn open(&self, name: &str) -> Result<OpenedStorage> {
        let entry = self.entries.get(name).ok_or_else(|| Error::UnknownRemote {
            name: name.into(),
            known: self.known(),
        })?;
        let options = StorageOptions {
            read_only: entry.read_only,
            anonymous: entry.anonymous,
            endpoint: entry.endpoint.clone(),
            region: entry.region.clone(),
            token: self.tokens.get(name).cloned(),
            token_var: Some(format!("CZC_REMOTE_{}_TOKEN", env_name(name))),
            base_dir: Some(self.base_dir.clone()),
            aws_env: Some(self.aws_env.clone()),
            timeouts: self.timeouts(name, entry)?,
        };
        Ok(open_storage(&entry.url, &options)?)
    }

    /// A remote's timeouts: the environment (`CZC_REMOTE_<NAME>_TIMEOUT`, `CZC_TIMEOUT`,
    /// `CZC_CONNECT_TIMEOUT`) over its entry over the defaults.
    fn timeouts(&self, name: &str, entry: &RemoteEntry) -> Result<Timeouts> {
        let from_env = |var: &str| -> Result<Option<std::time::Duration>> {
            match self.timeout_env.get(var) {
                None => Ok(None),
                Some(value) => crate::config::parse_duration(value)
                    .map(Some)
                    .map_err(|reason| {
                        Error::Config(crate::config::ConfigError::Value {
                            origin: "environment".into(),
                            key: var.into(),
                            value: value.clone(),
                            reason,
                        })
                    }),
            }
        };
        let defaults = Timeouts::default();
        let own = format!("CZC_REMOTE_{}_TIMEOUT", env_name(name));
        Ok(Timeouts {
            connect: from_env("CZC_CONNECT_TIMEOUT")?
                .or(entry.connect_timeout)
                .unwrap_or(defaults.connect),
            read: from_env(&own)?
                .or(from_env("CZC_TIMEOUT")?)
                .or(entry.timeout)
                .unwrap_or(defaults.read),
        })
    }

    /// The chain reads go through: `remote.read` in order, else the default remote, else
    /// every remote by name.
    pub fn chain(&self) -> RemoteChain {
        let names: Vec<String> = if !self.read.is_empty() {
            self.read.clone()
        } else if let Some(default) = &self.default {
            vec![default.clone()]
        } else {
            self.entries.keys().cloned().collect()
        };
        let remotes = names
            .into_iter()
            .map(|name| {
                let storage: Arc<dyn ReadStorage> = match self.open(&name) {
                    Ok(opened) => opened.reader(),
                    Err(err) => Arc::new(Unopenable {
                        reason: err.to_string(),
                    }),
                };
                NamedRemote { name, storage }
            })
            .collect();
        RemoteChain::new(remotes, self.policy)
    }

    /// The remote to push to: `name`, else `remote.default`.
    pub fn writer(&self, name: Option<&str>) -> Result<(String, Arc<dyn WriteStorage>)> {
        let name = name
            .map(str::to_owned)
            .or_else(|| self.default.clone())
            .ok_or(Error::NoDefaultRemote)?;
        match self.open(&name)?.writer() {
            Some(writer) => Ok((name, writer)),
            None => Err(Error::ReadOnlyRemote { name }),
        }
    }

    /// The remote to read from when one is named (`fetch --remote`), else the chain.
    pub fn chain_or_one(&self, name: Option<&str>) -> Result<RemoteChain> {
        match name {
            None => Ok(self.chain()),
            Some(name) => Ok(RemoteChain::new(
                vec![NamedRemote {
                    name: name.into(),
                    storage: self.open(name)?.reader(),
                }],
                ReadPolicy::First,
            )),
        }
    }
}

/// A remote whose configuration could not be opened: every use reports why.
struct Unopenable {
    reason: String,
}

impl Unopenable {
    fn err(&self) -> StorageError {
        StorageError::Io {
            storage: "remote".into(),
            key: String::new(),
            source: std::io::Error::other(self.reason.clone()),
        }
    }
}

impl ReadStorage for Unopenable {
    fn describe(&self) -> String {
        "unopenable remote".into()
    }
    fn copy_into(
        &self,
        _: &str,
        _: &mut std::fs::File,
        _: u64,
    ) -> Result<Option<u64>, StorageError> {
        Err(self.err())
    }
    fn hash(&self, _: &str) -> Result<Option<Oid>, StorageError> {
        Err(self.err())
    }
    fn last_modified(&self, _: &str) -> Result<Option<SystemTime>, StorageError> {
        Err(self.err())
    }
    fn exists(&self, _: &str) -> Result<bool, StorageError> {
        Err(self.err())
    }
    fn size(&self, _: &str) -> Result<Option<u64>, StorageError> {
        Err(self.err())
    }
    fn list(&self, _: &str) -> Result<Vec<String>, StorageError> {
        Err(self.err())
    }
}

/// What a push or fetch did.
#[derive(Debug, Default, serde::Serialize)]
pub struct TransferReport {
    /// The remote (or chain) used.
    pub remote: String,
    /// Objects copied.
    pub transferred: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Objects the other side already had.
    pub already: usize,
    /// Objects that failed.
    pub failed: usize,
    #[serde(rename = "errors", serialize_with = "crate::error::serialize_messages")]
    pub failures: Vec<Error>,
}

fn pool(jobs: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|err| Error::Io {
            path: PathBuf::from("<threads>"),
            source: std::io::Error::other(err.to_string()),
        })
}

/// Uploads the objects the remote lacks, verified first so corrupt bytes never leave.
/// Existence is checked in one batch; uploads run `jobs` at a time.
pub fn push(
    cache: &LocalCache,
    name: &str,
    storage: &dyn WriteStorage,
    oids: &[(Oid, PathBuf)],
    jobs: usize,
) -> Result<TransferReport> {
    let keys: Vec<String> = oids.iter().map(|(oid, _)| oid.object_key()).collect();
    let present = with_retries(|| storage.exists_many(&keys))?;
    let mut report = TransferReport {
        remote: name.into(),
        ..TransferReport::default()
    };
    let todo: Vec<&(Oid, PathBuf)> = oids
        .iter()
        .zip(&present)
        .filter_map(|(item, there)| (!there).then_some(item))
        .collect();
    report.already = oids.len() - todo.len();
    if report.already > 0 {
        let there: Vec<String> = keys
            .iter()
            .zip(&present)
            .filter(|(_, there)| **there)
            .map(|(key, _)| key.clone())
            .collect();
        let _ = storage.refresh(&there);
    }
    let results: Vec<Result<Option<u64>>> = pool(jobs)?.install(|| {
        // Never spread a corrupt copy: every backend hashes what it receives and refuses
        // bytes that do not match the object key (a folder while copying, S3 for the
        // metadata it stores, czc serve on arrival), so no separate pass reads it here.
        let verified: Vec<Result<(String, PathBuf, u64)>> = todo
            .par_iter()
            .map(|(oid, for_path)| {
                let (path, size) = cache.object_file(oid, for_path)?;
                Ok((oid.object_key(), path, size))
            })
            .collect();
        let uploads: Vec<(String, PathBuf)> = verified
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .map(|(key, path, _)| (key.clone(), path.clone()))
            .collect();
        let bytes = verified
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .map(|(_, _, size)| size)
            .sum();
        cache.progress().add_work(uploads.len() as u64, bytes);
        let mut uploaded = storage
            .put_many_if_absent(&uploads, cache.progress())
            .into_iter();
        verified
            .into_iter()
            .zip(&todo)
            .map(|(item, (oid, for_path))| {
                let (_, _, size) = item?;
                match uploaded.next().expect("one result per upload") {
                    Ok(()) => Ok(Some(size)),
                    // Someone else pushed it meanwhile: the remote has it.
                    Err(StorageError::LostRace { .. }) => Ok(None),
                    // Refused: if our copy is corrupt, say so (and quarantine it).
                    Err(err) => match cache.verified_object(oid, for_path) {
                        Err(corrupt @ Error::Corrupt { .. }) => Err(corrupt),
                        _ => Err(err.into()),
                    },
                }
            })
            .collect()
    });
    if !todo.is_empty() {
        // What killed pushes left in the folders this push wrote to (best effort).
        let mut shards: Vec<String> = todo
            .iter()
            .map(|(oid, _)| format!("objects/{}/", &oid.hex()[..2]))
            .collect();
        shards.sort();
        shards.dedup();
        let _ = storage.sweep_stale_uploads(&shards, crate::storage::STALE_UPLOAD_AGE);
    }
    let mut archived: Vec<Oid> = oids
        .iter()
        .zip(&present)
        .filter_map(|((oid, _), there)| there.then_some(*oid))
        .collect();
    for ((oid, _), result) in todo.iter().zip(results) {
        match result {
            Ok(Some(size)) => {
                report.transferred += 1;
                report.bytes += size;
                archived.push(*oid);
            }
            Ok(None) => {
                report.already += 1;
                archived.push(*oid);
            }
            Err(err) => {
                report.failed += 1;
                report.failures.push(err);
            }
        }
    }
    // Now safe to evict: a remote holds them.
    cache.mark_pushed(&archived)?;
    Ok(report)
}

/// Downloads the objects the cache lacks through `chain`, `jobs` at a time, verifying
/// each, and admits them in one commit.
/// `sizes` holds the known size of objects (from markers and manifests): no remote may
/// send more for them.
pub fn fetch(
    cache: &LocalCache,
    chain: &RemoteChain,
    oids: &[(Oid, PathBuf)],
    sizes: &HashMap<Oid, u64>,
    jobs: usize,
) -> Result<TransferReport> {
    let mut report = TransferReport {
        remote: chain.names().join(" → "),
        ..TransferReport::default()
    };
    let mut seen = std::collections::HashSet::new();
    let todo: Vec<&(Oid, PathBuf)> = oids
        .iter()
        .filter(|(oid, _)| seen.insert(*oid) && !cache.contains(oid))
        .collect();
    report.already = seen.len() - todo.len();
    let known_bytes = todo.iter().filter_map(|(oid, _)| sizes.get(oid)).sum();
    cache.progress().add_work(todo.len() as u64, known_bytes);
    let results: Vec<Result<Staged>> = pool(jobs)?.install(|| {
        todo.par_iter()
            .map(|(oid, for_path)| {
                let staged = chain.stage(cache, oid, sizes.get(oid).copied(), for_path);
                cache.report_files(1);
                staged
            })
            .collect()
    });
    let mut staged = Vec::new();
    for result in results {
        match result {
            Ok(item) => staged.push(item),
            Err(err) => {
                report.failed += 1;
                report.failures.push(err);
            }
        }
    }
    let admitted = cache.commit_fetched(staged)?;
    for item in &admitted {
        report.transferred += 1;
        report.bytes += item.size;
    }
    // They came from a remote, so a remote holds them.
    cache.mark_pushed(&admitted.iter().map(|a| a.oid).collect::<Vec<_>>())?;
    Ok(report)
}

/// The key cache: arbitrary keys of a remote (not content-addressed), copied through the
/// local cache. The bytes are ordinary objects (same LRU, same limit); a small record
/// under `keys/<remote>/<key>.json` remembers which object holds the key's latest copy
/// and what the remote said about it, so an unchanged key is a local hit.
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
}

impl KeyRecord {
    fn of(admitted: &crate::cache::Admitted, info: &KeyInfo) -> KeyRecord {
        KeyRecord {
            oid: admitted.oid,
            size: admitted.size,
            remote_modified_ns: info.last_modified.map(nanos).unwrap_or(0),
            remote_version: info.version.clone(),
            remote_hash: info.hash,
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
    pub oid: Oid,
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
    let mut path = cache.root().join("keys").join(remote);
    path.extend(key.split('/'));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    path.set_file_name(name);
    path
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
    crate::storage::check_key(storage, key)?;
    let not_found = || Error::NotFound {
        path: PathBuf::from(format!("{remote}:{key}")),
    };
    let record_path = key_record_path(cache, remote, key);
    // The key may be rewritten between the HEAD and the GET: one more try then.
    let mut attempt = 0;
    let (admitted, info) = loop {
        attempt += 1;
        let info = with_retries(|| storage.describe_key(key))?.ok_or_else(not_found)?;
        if let Some(record) = read_key_record(&record_path) {
            if record.is_current(&info) && cache.contains(&record.oid) {
                let path = cache.verified_path(&record.oid, &record_path)?;
                cache.touch(&[record.oid])?;
                return Ok(KeyFetch {
                    path,
                    oid: record.oid,
                    size: record.size,
                    downloaded: false,
                });
            }
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
    Ok(KeyFetch {
        path: cache.object_path(&admitted.oid),
        oid: admitted.oid,
        size: admitted.size,
        downloaded: true,
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
