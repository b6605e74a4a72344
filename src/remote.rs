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
    open_storage, with_retries, FolderStorage, OpenedStorage, ReadStorage, StorageError,
    StorageOptions, Timeouts, WriteStorage,
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
    /// Where the pack indexes of each remote are kept (in the local cache).
    pack_indexes: PathBuf,
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
            pack_indexes: config.cache.dir.join("packs"),
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

    fn entry(&self, name: &str) -> Result<&RemoteEntry> {
        self.entries.get(name).ok_or_else(|| Error::UnknownRemote {
            name: name.into(),
            known: self.known(),
        })
    }

    /// Opens one remote by name.
    pub fn open(&self, name: &str) -> Result<OpenedStorage> {
        self.open_entry(name, self.entry(name)?)
    }

    /// Opens a remote for unsigned reads only, whatever its entry says (a public bucket
    /// read by anyone).
    pub fn open_anonymous(&self, name: &str) -> Result<Arc<dyn ReadStorage>> {
        let entry = RemoteEntry {
            anonymous: true,
            read_only: true,
            ..self.entry(name)?.clone()
        };
        Ok(self.open_entry(name, &entry)?.reader())
    }

    /// A remote that is a folder on this machine, read-only (served in place).
    pub fn open_folder(&self, name: &str) -> Result<crate::storage::ReadOnly<FolderStorage>> {
        let entry = self.entry(name)?;
        match crate::storage::folder_of(&entry.url, Some(&self.base_dir))? {
            Some(folder) => Ok(crate::storage::ReadOnly::new(FolderStorage::new(folder))),
            None => Err(Error::Storage(StorageError::BadUrl {
                url: entry.url.clone(),
                reason: format!(
                    "remote {name} is not a folder on this machine, so it cannot be served in place (copy = false)"
                ),
            })),
        }
    }

    fn open_entry(&self, name: &str, entry: &RemoteEntry) -> Result<OpenedStorage> {
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
            pack_index_dir: Some(self.pack_indexes.join(remote_dir_name(entry))),
            packs: entry.packs,
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
                    Err(err) => Arc::new(Unopenable { why: Arc::new(err) }),
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

/// The folder a remote's pack indexes are kept in: named by where the remote is, not by
/// its name, so two projects naming one bucket differently share the copies.
fn remote_dir_name(entry: &RemoteEntry) -> String {
    let place = format!(
        "{}\n{}",
        entry.url,
        entry.endpoint.as_deref().unwrap_or_default()
    );
    blake3::hash(place.as_bytes()).to_hex()[..16].to_string()
}

/// A remote whose configuration could not be opened: every use reports why.
struct Unopenable {
    why: Arc<Error>,
}

/// The error that kept a remote from opening, shared by every use that reports it.
#[derive(Debug)]
struct Unopened(Arc<Error>);

impl std::fmt::Display for Unopened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Unopened {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Unopenable {
    fn err(&self) -> StorageError {
        StorageError::Io {
            storage: "remote".into(),
            key: String::new(),
            source: std::io::Error::other(Unopened(self.why.clone())),
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
    drop(keys);
    let results: Vec<Result<Option<u64>>> = pool(jobs)?.install(|| {
        // Never spread a corrupt copy: every backend hashes what it receives and refuses
        // bytes that do not match the object key (a folder while copying, S3 for the
        // metadata it stores, czc serve on arrival), so no separate pass reads it here.
        let located: Vec<Result<(PathBuf, u64)>> = todo
            .par_iter()
            .map(|(oid, for_path)| cache.object_file(oid, for_path))
            .collect();
        // The uploads own the paths; per object only its size (or why not) stays here,
        // small while the uploads hold their buffers.
        let mut uploads: Vec<(String, PathBuf)> = Vec::with_capacity(located.len());
        let mut sizes: Vec<u64> = Vec::with_capacity(located.len());
        let mut not_found: HashMap<usize, Error> = HashMap::new();
        for (index, (item, (oid, _))) in located.into_iter().zip(&todo).enumerate() {
            match item {
                Ok((path, size)) => {
                    uploads.push((oid.object_key(), path));
                    sizes.push(size);
                }
                Err(err) => {
                    not_found.insert(index, err);
                    sizes.push(0);
                }
            }
        }
        cache
            .progress()
            .add_work(uploads.len() as u64, sizes.iter().sum());
        let uploaded = storage.put_many_if_absent(&uploads, cache.progress());
        drop(uploads);
        let mut uploaded = uploaded.into_iter();
        sizes
            .into_iter()
            .zip(&todo)
            .enumerate()
            .map(|(index, (size, (oid, for_path)))| {
                if let Some(err) = not_found.remove(&index) {
                    return Err(err);
                }
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

/// The pack phase of a fetch: for each remote in order, the objects it holds in packs,
/// many per request, out of those no earlier remote holds loose (which the per-object
/// phase reads from there, keeping the chain's order). What is fetched leaves `todo`;
/// what a pack read could not deliver stays for the per-object phase.
fn fetch_packed_first(
    cache: &LocalCache,
    chain: &RemoteChain,
    sizes: &HashMap<Oid, u64>,
    pool: &rayon::ThreadPool,
    todo: &mut Vec<&(Oid, PathBuf)>,
    staged: &mut Vec<Staged>,
) {
    use crate::storage::PackedAt;
    // Objects still to be looked for in later remotes' packs.
    let mut eligible: Vec<Oid> = todo.iter().map(|(oid, _)| *oid).collect();
    let last = chain.remotes().len().saturating_sub(1);
    for (position, remote) in chain.remotes().iter().enumerate() {
        if eligible.is_empty() {
            break;
        }
        let locations = match remote.storage.pack_locations(&eligible) {
            Ok(locations) => locations,
            Err(err) => {
                cache.warn(&format!(
                    "remote {} failed listing its packs: {err}; trying the next remote",
                    remote.name
                ));
                continue;
            }
        };
        // An index whose length disagrees with the marker's is not believed.
        let (wanted, unpacked): (Vec<_>, Vec<_>) =
            eligible.iter().zip(locations).partition(|(oid, at)| {
                at.as_ref()
                    .is_some_and(|at| sizes.get(*oid).is_none_or(|size| *size == at.len))
            });
        let wanted: Vec<(Oid, PackedAt)> = wanted
            .into_iter()
            .filter_map(|(oid, at)| Some((*oid, at?)))
            .collect();
        let mut unpacked: Vec<Oid> = unpacked.into_iter().map(|(oid, _)| *oid).collect();
        if !wanted.is_empty() {
            let got = pool.install(|| {
                crate::packs::fetch::fetch_packed(cache, remote.storage.as_ref(), &wanted)
            });
            let mut fetched = std::collections::HashSet::new();
            for ((oid, _), item) in wanted.iter().zip(got) {
                if let Some(item) = item {
                    fetched.insert(*oid);
                    staged.push(item);
                    cache.report_files(1);
                }
            }
            todo.retain(|(oid, _)| !fetched.contains(oid));
        }
        // Big objects held as chunks and a recipe, one at a time (each reads its
        // chunks in parallel).
        let mut assembled = std::collections::HashSet::new();
        for oid in &unpacked {
            let recipe = match remote.storage.recipe(oid) {
                Ok(Some(recipe)) if sizes.get(oid).is_none_or(|size| *size == recipe.size) => {
                    recipe
                }
                Ok(_) => continue,
                Err(err) => {
                    cache.warn(&format!("remote {} failed for {oid}: {err}", remote.name));
                    continue;
                }
            };
            match pool.install(|| {
                crate::packs::fetch::fetch_chunked(cache, remote.storage.as_ref(), &recipe)
            }) {
                Ok(item) => {
                    assembled.insert(*oid);
                    staged.push(item);
                    cache.report_files(1);
                }
                Err(err) => cache.warn(&format!(
                    "remote {} could not assemble {oid} from its chunks: {err}",
                    remote.name
                )),
            }
        }
        if !assembled.is_empty() {
            todo.retain(|(oid, _)| !assembled.contains(oid));
            unpacked.retain(|oid| !assembled.contains(oid));
        }
        if position == last || unpacked.is_empty() {
            break;
        }
        // What this remote holds loose is read from it, in order, by the per-object
        // phase; only the rest is looked for in later remotes' packs.
        let keys: Vec<String> = unpacked.iter().map(Oid::object_key).collect();
        match remote.storage.exists_many(&keys) {
            Ok(found) => {
                let mut found = found.into_iter();
                unpacked.retain(|_| !found.next().unwrap_or(false));
            }
            Err(err) => cache.warn(&format!(
                "remote {} failed: {err}; trying the next remote",
                remote.name
            )),
        }
        eligible = unpacked;
    }
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
    let pool = pool(jobs)?;
    let mut staged = Vec::new();
    let mut todo = todo;
    if chain.policy() == ReadPolicy::First {
        fetch_packed_first(cache, chain, sizes, &pool, &mut todo, &mut staged);
    }
    let results: Vec<Result<Staged>> = pool.install(|| {
        todo.par_iter()
            .map(|(oid, for_path)| {
                let staged = chain.stage(cache, oid, sizes.get(oid).copied(), for_path);
                cache.report_files(1);
                staged
            })
            .collect()
    });
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
