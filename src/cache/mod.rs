//! The local cache: a size-limited LRU store of objects on local disk, shared by every
//! project of the user.
//!
//! Objects enter through a private staging folder (`tmp/<id>/`) on the same filesystem,
//! are hashed from the bytes actually written there, made durable, and only then renamed
//! into `objects/<hex[0:2]>/<hex[2:]>`: an object file whose bytes do not hash to its name
//! never appears. Every read verifies the bytes it serves, so a corrupt object is
//! quarantined instead of served.
//!
//! Processes coordinate through `lock` in the root: every process holds it shared while
//! it uses the cache; eviction, verify and clear need it exclusive, so no object is
//! removed while another process may be materializing it.

mod chain;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tempfile::TempPath;

use crate::config::{CacheConfig, IndexKind, LinkKind};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, FileLock, LockMode};
use crate::index::{self, Entry, Index, IndexError};
use crate::oid::{self, Oid, MMAP_THRESHOLD};
use crate::report::{Progress, Reporter, Silent};
use crate::storage::ReadStorage;

pub use chain::{NamedRemote, RemoteChain};

/// A source of "now" in milliseconds, replaceable so tests can order LRU use exactly.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Where objects are linked under the names of the keys they hold.
const NAMED: &str = "named";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file marks the czc cache; backup tools may skip this folder.\n";

/// The short name a project's records in the cache go under (`state/<key>.tsv`,
/// `state/unpushed/<key>.txt`): a hash of its root path.
pub fn project_key(root: &Path) -> String {
    Oid::of_bytes(root.as_os_str().as_encoded_bytes()).hex()[..16].to_string()
}

/// Present while an eviction was put off because other processes used the cache.
const EVICT_PENDING: &str = "evict-pending";

/// Subfolders of the staging folder that parallel workers spread over.
const STAGING_SHARDS: usize = 16;

/// An object written to staging and hashed, not yet visible in the cache.
#[derive(Debug)]
pub struct Staged {
    temp: TempPath,
    pub oid: Oid,
    pub size: u64,
}

impl Staged {
    /// Bytes already written to a staging temp file and hashed by the caller.
    pub(crate) fn new(temp: TempPath, oid: Oid, size: u64) -> Staged {
        Staged { temp, oid, size }
    }
}

/// The result of admitting one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub oid: Oid,
    pub size: u64,
    /// False when the cache already held the object.
    pub added: bool,
}

/// What an eviction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictReport {
    pub removed: Vec<Oid>,
    pub freed: u64,
    pub size_after: u64,
    /// True when another process was using the cache, so eviction was left to it.
    pub deferred: bool,
    /// Objects no remote holds yet that kept the cache over its target (only when
    /// unpushed objects are protected).
    pub unpushed_kept: usize,
}

/// What `verify` found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Corrupt objects and where they were moved.
    pub corrupt: Vec<(Oid, PathBuf)>,
    /// Objects on disk the index did not know.
    pub index_added: usize,
    /// Index entries whose object file was gone.
    pub index_dropped: usize,
    /// The index could not be read and was rebuilt from the objects.
    pub index_rebuilt: bool,
}

/// Figures for `czc cache info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheInfo {
    pub root: PathBuf,
    pub index: String,
    pub index_path: PathBuf,
    pub objects: usize,
    pub size: u64,
    pub size_limit: u64,
    pub hits: u64,
    pub misses: u64,
    /// Objects no remote holds yet, and their bytes.
    pub awaiting_push: usize,
    pub awaiting_push_bytes: u64,
    /// The same, by the project that saved them.
    pub awaiting_push_by_project: Vec<ProjectAwaitingPush>,
}

/// One project's objects that no remote holds yet (`project` empty: saved by no known
/// project, such as `czc put` or an older czc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectAwaitingPush {
    pub project: PathBuf,
    pub objects: usize,
    pub bytes: u64,
}

/// The size-limited LRU object cache over a local folder plus an [`Index`].
pub struct LocalCache {
    root: PathBuf,
    index: Box<dyn Index>,
    size_limit: u64,
    links: Vec<LinkKind>,
    clock: Clock,
    eviction_deferred: std::sync::atomic::AtomicBool,
    usage: Mutex<Option<FileLock>>,
    /// Created on first write, so read-only commands (status) never touch `tmp/`.
    staging: Mutex<Option<fsutil::PrivateDir>>,
    /// Staging subfolders already created.
    staging_shards: Mutex<std::collections::HashSet<PathBuf>>,
    reflink_unsupported: AtomicBool,
    /// Unnamed files (`O_TMPFILE`) linked in through `/proc` did not work here.
    unnamed_unsupported: AtomicBool,
    /// Objects this process hashed on their way in and then admitted: placing them in
    /// the working tree needs no second hash of the same bytes.
    just_verified: Mutex<std::collections::HashSet<Oid>>,
    misses: AtomicU64,
    /// Hears of every byte copied in or out (the caller's current task).
    progress: Arc<dyn Progress>,
    /// Where warnings go.
    reporter: Arc<dyn Reporter>,
    protect_unpushed: bool,
    /// Eviction found another process in the cache: try again on the way out, so the
    /// last process to leave brings the cache under its limit.
    evict_on_exit: AtomicBool,
    /// The over-the-limit warning was given (once per process).
    warned_over_limit: AtomicBool,
    /// A failed index update on a read was reported (once per process).
    warned_index_write: AtomicBool,
    /// The project this process saves for, recorded beside the objects it saves so
    /// `cache info` can say which projects have objects awaiting push.
    project: Option<PathBuf>,
    /// Objects this process handed out by name: its own eviction keeps them, so a path
    /// it returned stays valid while it runs (others never evict under its lock).
    pinned: Mutex<std::collections::HashSet<Oid>>,
    /// Objects this process hashed and found sound, with the stamp they had then.
    verified: Mutex<HashMap<Oid, ObjectStamp>>,
    /// When this process last recorded each object's use (ms): one index write per object
    /// per [`TOUCH_INTERVAL_MS`], not per hit.
    touched: Mutex<HashMap<Oid, i64>>,
    /// Key gets this process answered, by record path: a repeat whose record and object
    /// both still have their stamps is answered from here (two `stat`s, no reads).
    recent_hits: Mutex<HashMap<PathBuf, RecentHit>>,
}

/// One answered key get, as [`LocalCache::recall_hit`] checks it.
#[derive(Debug, Clone)]
struct RecentHit {
    record: Option<ObjectStamp>,
    object: ObjectStamp,
    oid: Oid,
    path: PathBuf,
}

/// What identifies an object file unchanged since it was hashed: any write to it, a
/// `chmod`, a new link all change its ctime, which no user call can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStamp {
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl ObjectStamp {
    fn of(meta: &fs::Metadata) -> ObjectStamp {
        use std::os::unix::fs::MetadataExt;
        ObjectStamp {
            inode: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// A stamp is trusted only if the file had not changed for this long before it was
/// hashed: a write in the same coarse clock tick as the hash would leave it unchanged.
const RACY_MARGIN_NS: i64 = 100_000_000;

/// How often one process records a use of the same object in the index (LRU order at
/// that granularity is plenty; a write per hit is not).
const TOUCH_INTERVAL_MS: i64 = 10_000;

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("root", &self.root)
            .field("index", &self.index.kind())
            .field("size_limit", &self.size_limit)
            .finish()
    }
}

impl LocalCache {
    /// [`LocalCache::open`] for `cache verify`: an index that cannot be read at all (a
    /// garbage or truncated database, a folder in its place) is moved to `quarantine/`
    /// and started afresh, so verify can rebuild it from the objects.
    pub fn open_for_repair(config: &CacheConfig) -> Result<(LocalCache, bool)> {
        let opened = Self::open(config).and_then(|cache| match cache.index.entries() {
            // A database may open and fail only when read (a truncated file).
            Err(err @ IndexError::Corrupt { .. }) => Err(err.into()),
            _ => Ok(cache),
        });
        match opened {
            Ok(cache) => Ok((cache, false)),
            Err(Error::Index(IndexError::Corrupt { path, .. })) => {
                let dir = config.dir.join("quarantine");
                fs::create_dir_all(&dir).at(&dir)?;
                let stamp = fsutil::now_millis();
                for suffix in ["", "-wal", "-shm"] {
                    let mut from = path.clone().into_os_string();
                    from.push(suffix);
                    let from = PathBuf::from(from);
                    if fs::symlink_metadata(&from).is_ok() {
                        let name = from.file_name().unwrap_or_default().to_string_lossy();
                        let to = dir.join(format!("{name}.corrupt-{stamp}"));
                        fs::rename(&from, &to).at(&from)?;
                    }
                }
                Ok((Self::open(config)?, true))
            }
            Err(err) => Err(err),
        }
    }

    /// Opens (creating if needed) the cache a configuration names.
    pub fn open(config: &CacheConfig) -> Result<LocalCache> {
        let root = config.dir.clone();
        fs::create_dir_all(root.join("objects")).at(&root)?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fsutil::write_atomic(&tag, CACHEDIR_TAG.as_bytes()).at(&tag)?;
        }
        let usage_path = root.join("lock");
        let usage = match FileLock::acquire(&usage_path, LockMode::Shared, "the cache") {
            Ok(lock) => lock,
            // Another user's (or a shared) cache we may only read: a read-only handle
            // takes the shared lock just as well.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                FileLock::acquire_read_only(&usage_path, LockMode::Shared, "the cache")
                    .at(&usage_path)?
            }
            Err(err) => return Err(err).at(&usage_path),
        };
        let index = index::open_index(&root, config.index)?;
        Ok(LocalCache {
            root,
            index,
            size_limit: config.size_limit,
            links: config.link.clone(),
            clock: Arc::new(fsutil::now_millis),
            eviction_deferred: std::sync::atomic::AtomicBool::new(false),
            usage: Mutex::new(Some(usage)),
            staging: Mutex::new(None),
            staging_shards: Mutex::new(Default::default()),
            reflink_unsupported: AtomicBool::new(false),
            unnamed_unsupported: AtomicBool::new(false),
            just_verified: Mutex::new(Default::default()),
            misses: AtomicU64::new(0),
            progress: Arc::new(Silent),
            reporter: crate::report::process_reporter(),
            protect_unpushed: true,
            evict_on_exit: AtomicBool::new(false),
            warned_over_limit: AtomicBool::new(false),
            warned_index_write: AtomicBool::new(false),
            project: None,
            pinned: Mutex::new(Default::default()),
            verified: Mutex::new(Default::default()),
            touched: Mutex::new(Default::default()),
            recent_hits: Mutex::new(Default::default()),
        })
    }

    /// Replaces the clock (tests use it to order LRU use exactly).
    pub fn with_clock(mut self, clock: Clock) -> LocalCache {
        self.clock = clock;
        self
    }

    /// Whether eviction keeps objects no remote is known to hold (the default, whichever
    /// project's czc runs: such an object may exist nowhere else). Only an explicit
    /// `czc cache evict --include-unpushed` turns it off.
    pub fn set_protect_unpushed(&mut self, protect: bool) {
        self.protect_unpushed = protect;
    }

    /// Records objects this process saves as belonging to `project` (for `cache info`).
    pub fn set_project(&mut self, project: &Path) {
        self.project = Some(project.to_path_buf());
    }

    /// Records that a remote holds these objects, so eviction may drop them.
    pub fn mark_pushed(&self, oids: &[Oid]) -> Result<()> {
        if !oids.is_empty() {
            self.index.mark_pushed(oids)?;
        }
        Ok(())
    }

    /// Reports copied bytes (and finished files) to `progress` from now on.
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        self.progress = progress;
    }

    /// Sends warnings to `reporter` from now on.
    pub fn set_reporter(&mut self, reporter: Arc<dyn Reporter>) {
        self.reporter = reporter;
    }

    /// The progress hook, for code that moves bytes on the cache's behalf (uploads).
    pub fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// Tells the progress hook that `bytes` more were moved.
    pub fn report(&self, bytes: u64) {
        self.progress.bytes_done(bytes);
    }

    /// Tells the progress hook that `files` more files (or objects) are done.
    pub fn report_files(&self, files: u64) {
        self.progress.files_done(files);
    }

    /// Passes a warning to the front end.
    pub fn warn(&self, message: &str) {
        self.reporter.warn(message);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    pub fn index(&self) -> &dyn Index {
        self.index.as_ref()
    }

    /// This process's staging folder, created (and dead processes' swept) on first use.
    fn staging(&self) -> Result<PathBuf> {
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = staging.as_ref() {
            return Ok(dir.path().to_path_buf());
        }
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).at(&tmp)?;
        fsutil::sweep_dead_private_dirs(&tmp);
        let dir = fsutil::claim_private_dir(&tmp).at(&tmp)?;
        let path = dir.path().to_path_buf();
        *staging = Some(dir);
        Ok(path)
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Where an object's file lives (whether or not it is there).
    pub fn object_path(&self, oid: &Oid) -> PathBuf {
        self.root.join(oid.object_key())
    }

    /// Whether the object's file is on disk (the index is not asked).
    pub fn contains(&self, oid: &Oid) -> bool {
        self.object_path(oid).is_file()
    }

    /// Refuses a size the whole cache could never hold, before anything is written.
    pub fn check_fits(&self, path: &Path, size: u64) -> Result<()> {
        if size > self.size_limit {
            return Err(Error::TooLarge {
                path: path.into(),
                size,
                limit: self.size_limit,
            });
        }
        Ok(())
    }

    pub(crate) fn new_temp(&self) -> Result<tempfile::NamedTempFile> {
        // Parallel downloads each stage in their own subfolder: creating files in one
        // folder serializes on its lock, and on ext4 inode allocation can be slow
        // enough that the waiters spin for most of a 20,000-object fetch.
        let mut dir = self.staging()?;
        if let Some(worker) = rayon::current_thread_index() {
            dir.push(format!("w{}", worker % STAGING_SHARDS));
            let mut made = self
                .staging_shards
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !made.contains(&dir) {
                fs::create_dir_all(&dir).at(&dir)?;
                made.insert(dir.clone());
            }
        }
        // Created read-only, as objects stay: writes go through the open handle, and no
        // chmod per object is needed at commit.
        tempfile::Builder::new()
            .prefix("obj-")
            .permissions(fs::Permissions::from_mode(0o444))
            .tempfile_in(&dir)
            .at(&dir)
    }

    /// An unnamed temporary file in the cache's folder, removed when closed: room to
    /// spool a stream that must be read in full before it can be answered.
    pub fn spool_file(&self) -> Result<io::BufWriter<File>> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).at(&dir)?;
        Ok(io::BufWriter::new(tempfile::tempfile_in(&dir).at(&dir)?))
    }

    /// Copies a file into staging and hashes the copy.
    pub fn stage_file(&self, src: &Path) -> Result<Staged> {
        self.stage_file_with(src, true)
    }

    /// `flush`: push the copy to disk as it lands (for a commit that will fsync).
    fn stage_file_with(&self, src: &Path, flush: bool) -> Result<Staged> {
        let mut file = File::open(src).at(src)?;
        let meta = file.metadata().at(src)?;
        if !meta.is_file() {
            return Err(Error::Unsupported {
                path: src.into(),
                reason: "not a regular file".into(),
            });
        }
        self.check_fits(src, meta.len())?;
        if meta.len() < MMAP_THRESHOLD {
            // Exactly the size just read: one read call, no size probing. Bytes appended
            // meanwhile are not part of what was staged (and the oid names what was).
            let mut bytes = vec![0u8; meta.len() as usize];
            file.read_exact(&mut bytes).at(src)?;
            self.report(meta.len());
            return self.stage_bytes(&bytes);
        }
        let temp = self.new_temp()?;
        let (oid, size) = fsutil::copy_hash_flush(
            &mut file,
            temp.as_file(),
            temp.path(),
            meta.len(),
            flush,
            &|n| self.report(n),
        )
        .at(src)?;
        self.check_fits(src, size)?;
        Ok(Staged {
            temp: temp.into_temp_path(),
            oid,
            size,
        })
    }

    /// Downloads a storage key into staging and hashes what arrived; `None` if the
    /// storage does not have the key. The caller compares the oid with the one it wanted.
    /// The download stops past `expected` bytes (a marker's size) or, when no size is
    /// known, past the cache's limit: a remote sending for ever fills nothing.
    pub fn stage_from(
        &self,
        storage: &dyn ReadStorage,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Option<Staged>> {
        if let Some(path) = storage.local_file(key)? {
            // A file on this machine: the save pipeline (kernel copy, hashing the copy)
            // instead of a plain copy and a second read to hash. No writeback: fetched
            // objects are committed without fsync (see commit_fetched).
            return match self.stage_file_with(&path, false) {
                Ok(staged) => Ok(Some(staged)),
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Ok(None)
                }
                Err(err) => Err(err),
            };
        }
        let mut temp = self.new_temp()?;
        let max = expected.unwrap_or(self.size_limit).min(self.size_limit);
        let copied = match expected {
            Some(size) if size <= max => storage.copy_sized_into(key, temp.as_file_mut(), size)?,
            _ => storage.copy_into(key, temp.as_file_mut(), max)?,
        };
        let Some(size) = copied else {
            return Ok(None);
        };
        let temp = temp.into_temp_path();
        self.check_fits(Path::new(key), size)?;
        let (oid, size) = oid::hash_file(&temp).at(&*temp)?;
        self.report(size);
        Ok(Some(Staged { temp, oid, size }))
    }

    /// Stages bytes already in memory (manifests, small files). Not counted as
    /// progress: the caller counts what it read (a manifest is no file of the user's).
    pub fn stage_bytes(&self, bytes: &[u8]) -> Result<Staged> {
        let mut temp = self.new_temp()?;
        temp.write_all(bytes).at(temp.path())?;
        Ok(Staged {
            temp: temp.into_temp_path(),
            oid: Oid::of_bytes(bytes),
            size: bytes.len() as u64,
        })
    }

    /// Stages a stream (a pipe, git's filter input), hashing while writing.
    pub fn stage_reader(&self, reader: &mut impl Read, name: &Path) -> Result<Staged> {
        let mut temp = self.new_temp()?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err).at(name),
            };
            hasher.update(&buf[..n]);
            temp.write_all(&buf[..n]).at(temp.path())?;
            size += n as u64;
            self.check_fits(name, size)?;
        }
        Ok(Staged {
            temp: temp.into_temp_path(),
            oid: Oid::from_hash(hasher.finalize()),
            size,
        })
    }

    /// Makes staged objects durable and visible, records them in the index, then evicts
    /// least-recently-used objects if the cache is over its limit.
    pub fn commit(&self, staged: Vec<Staged>) -> Result<Vec<Admitted>> {
        self.commit_with(staged, true)
    }

    /// Commits objects that came from a remote: visible at once (atomic renames), but
    /// not fsynced. A remote holds them, and every read verifies, so a copy a crash
    /// damaged is quarantined and fetched again; waiting for the disk would buy nothing.
    pub fn commit_fetched(&self, staged: Vec<Staged>) -> Result<Vec<Admitted>> {
        self.commit_with(staged, false)
    }

    fn commit_with(&self, staged: Vec<Staged>, durable: bool) -> Result<Vec<Admitted>> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let total: u64 = staged.iter().map(|s| s.size).sum();
        self.check_fits(Path::new("the objects being saved"), total)?;
        // Data reaches the disk before any rename makes it visible.
        if durable {
            self.sync_staged(&staged)?;
        }
        let now = self.now();
        let mut admitted = Vec::with_capacity(staged.len());
        let mut entries = Vec::with_capacity(staged.len());
        let mut folders_made = std::collections::HashSet::new();
        let mut verified = Vec::new();
        for item in staged {
            let dest = self.object_path(&item.oid);
            let parent = fsutil::parent_dir(&dest);
            if !folders_made.contains(parent) {
                fs::create_dir_all(parent).at(parent)?;
                folders_made.insert(parent.to_path_buf());
            }
            // An object already there stays (same bytes); the temp file goes on drop.
            let added = fsutil::rename_no_replace(&item.temp, &dest).at(&dest)?;
            if added {
                let _ = item.temp.keep();
                verified.push(item.oid);
            }
            entries.push(Entry {
                oid: item.oid,
                size: item.size,
                added_at: now,
                last_used_at: now,
                hits: 0,
                pushed: false,
            });
            admitted.push(Admitted {
                oid: item.oid,
                size: item.size,
                added,
            });
        }
        self.just_verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(verified);
        if durable {
            self.sync_renames(&admitted)?;
            // Best effort: only `cache info` reads it.
            let _ = self.record_unpushed(&admitted);
        }
        self.index.insert(&entries)?;
        if !self
            .eviction_deferred
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.evict_to_limit()?;
        }
        Ok(admitted)
    }

    /// Holds eviction back until [`LocalCache::resume_eviction`]: a caller admitting
    /// objects one by one (git's filter, a file at a time) would otherwise pay a pass
    /// over the whole index per object.
    pub fn defer_eviction(&self) {
        self.eviction_deferred
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ends [`LocalCache::defer_eviction`] and evicts down to the limit.
    pub fn resume_eviction(&self) -> Result<()> {
        self.eviction_deferred
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.evict_to_limit()
    }

    /// Evicts down to the size limit, warning (once per process) when unpushed objects
    /// keep it over.
    fn evict_to_limit(&self) -> Result<()> {
        let eviction = self.evict_to(self.size_limit)?;
        if eviction.deferred {
            self.evict_on_exit.store(true, Ordering::Relaxed);
            // Any process leaving the cache (a reader too) finishes the job.
            let _ = fs::write(self.root.join(EVICT_PENDING), b"");
        }
        if eviction.unpushed_kept > 0 && !self.warned_over_limit.swap(true, Ordering::Relaxed) {
            self.warn(&format!(
                "the cache holds {}, over its limit of {}, because {} objects no remote holds yet cannot be evicted; run `czc push` (`czc cache info` says which projects)",
                crate::config::format_size(eviction.size_after),
                crate::config::format_size(self.size_limit),
                eviction.unpushed_kept
            ));
        }
        Ok(())
    }

    /// Appends newly saved objects to this process's project record
    /// (`state/unpushed/<project hash>.txt`: the project's path, then oids).
    fn record_unpushed(&self, admitted: &[Admitted]) -> io::Result<()> {
        let Some(project) = &self.project else {
            return Ok(());
        };
        let added: Vec<&Admitted> = admitted.iter().filter(|a| a.added).collect();
        if added.is_empty() {
            return Ok(());
        }
        let dir = self.root.join("state").join("unpushed");
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.txt", project_key(project)));
        let mut text = String::new();
        if !path.exists() {
            text.push_str(&project.to_string_lossy());
            text.push('\n');
        }
        for item in added {
            text.push_str(&item.oid.hex());
            text.push('\n');
        }
        // One O_APPEND write: concurrent savers never interleave.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(text.as_bytes())
    }

    /// Per project, the objects it saved that no remote holds yet and their bytes, for
    /// `cache info`. Records whose objects are all pushed or gone are removed.
    pub fn unpushed_by_project(&self) -> Result<Vec<ProjectAwaitingPush>> {
        let unpushed: std::collections::HashMap<Oid, u64> = self
            .live_entries()?
            .into_iter()
            .filter(|e| !e.pushed)
            .map(|e| (e.oid, e.size))
            .collect();
        let dir = self.root.join("state").join("unpushed");
        let mut found = Vec::new();
        let mut claimed = std::collections::HashSet::new();
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = text.lines();
            let Some(project) = lines.next() else {
                continue;
            };
            let mut item = ProjectAwaitingPush {
                project: PathBuf::from(project),
                objects: 0,
                bytes: 0,
            };
            for oid in lines.filter_map(|hex| Oid::from_hex(hex).ok()) {
                if let Some(size) = unpushed.get(&oid) {
                    if claimed.insert(oid) {
                        item.objects += 1;
                        item.bytes += size;
                    }
                }
            }
            if item.objects == 0 {
                let _ = fs::remove_file(entry.path());
            } else {
                found.push(item);
            }
        }
        let unknown: Vec<u64> = unpushed
            .iter()
            .filter(|(oid, _)| !claimed.contains(oid))
            .map(|(_, size)| *size)
            .collect();
        if !unknown.is_empty() {
            found.push(ProjectAwaitingPush {
                project: PathBuf::new(),
                objects: unknown.len(),
                bytes: unknown.iter().sum(),
            });
        }
        found.sort_by_key(|item| std::cmp::Reverse(item.bytes));
        Ok(found)
    }

    /// Makes the renames of new objects durable: their folders for a few, syncfs for many.
    fn sync_renames(&self, admitted: &[Admitted]) -> Result<()> {
        let mut dirs: Vec<PathBuf> = admitted
            .iter()
            .filter(|a| a.added)
            .filter_map(|a| self.object_path(&a.oid).parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        if dirs.len() > 16 {
            return sync_filesystem(&self.root);
        }
        for dir in dirs {
            File::open(&dir).and_then(|d| d.sync_all()).at(&dir)?;
        }
        Ok(())
    }

    fn sync_staged(&self, staged: &[Staged]) -> Result<()> {
        if let [one] = staged {
            File::open(&*one.temp)
                .and_then(|file| file.sync_all())
                .at(&*one.temp)
        } else {
            // One syncfs instead of thousands of fsyncs for a folder of small files.
            sync_filesystem(&self.root)
        }
    }

    /// Stages and commits one file.
    pub fn admit_file(&self, src: &Path) -> Result<Admitted> {
        let staged = self.stage_file(src)?;
        Ok(self.commit(vec![staged])?.remove(0))
    }

    /// Stages and commits bytes.
    pub fn admit_bytes(&self, bytes: &[u8]) -> Result<Admitted> {
        let staged = self.stage_bytes(bytes)?;
        Ok(self.commit(vec![staged])?.remove(0))
    }

    /// Records that objects were used now (LRU order and hit counts).
    /// Only LRU bookkeeping: a read whose object is there never fails because the
    /// index cannot be written (a full disk, a read-only cache); that is said once.
    /// The stamp of a file (a key record) as [`recall_hit`](Self::recall_hit) compares it.
    pub fn file_stamp(path: &Path) -> Option<ObjectStamp> {
        fs::symlink_metadata(path)
            .ok()
            .map(|meta| ObjectStamp::of(&meta))
    }

    /// A key get this process answered before under `what` (a record path), if the
    /// record still has the stamp `record` and the object the stamp it had: its oid and
    /// the path handed out then.
    pub fn recall_hit(
        &self,
        what: &Path,
        record: Option<ObjectStamp>,
    ) -> Option<(Oid, PathBuf, u64)> {
        let hit = self
            .recent_hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .cloned()?;
        if hit.record != record {
            return None;
        }
        if Self::file_stamp(&self.object_path(&hit.oid)) != Some(hit.object) {
            return None;
        }
        let _ = self.touch_hit(&hit.oid);
        Some((hit.oid, hit.path, hit.object.size))
    }

    /// Remembers a key get answered with the verified object `oid` at `path`.
    pub fn remember_hit(&self, what: &Path, record: Option<ObjectStamp>, oid: &Oid, path: &Path) {
        let Some(object) = Self::file_stamp(&self.object_path(oid)) else {
            return;
        };
        // Changed within the clock's resolution of now: not yet a stamp to trust.
        let now = fsutil::since_epoch(std::time::SystemTime::now()).as_nanos() as i64;
        if object.ctime_ns.max(object.mtime_ns) >= now - RACY_MARGIN_NS {
            return;
        }
        let mut hits = self.recent_hits.lock().unwrap_or_else(|p| p.into_inner());
        if hits.len() > 100_000 {
            hits.clear();
        }
        hits.insert(
            what.to_path_buf(),
            RecentHit {
                record,
                object,
                oid: *oid,
                path: path.to_path_buf(),
            },
        );
    }

    /// [`touch`](Self::touch) for a hit of a key get, which a program may repeat in a
    /// loop: recorded once per object per [`TOUCH_INTERVAL_MS`] in this process.
    pub fn touch_hit(&self, oid: &Oid) -> Result<()> {
        let now = self.now();
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = touched.get(oid) {
                if (0..TOUCH_INTERVAL_MS).contains(&(now - at)) {
                    return Ok(());
                }
            }
            touched.insert(*oid, now);
        }
        self.touch(&[*oid])
    }

    pub fn touch(&self, oids: &[Oid]) -> Result<()> {
        if oids.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.index.touch(oids, self.now()) {
            if !self.warned_index_write.swap(true, Ordering::Relaxed) {
                self.warn(&format!(
                    "could not record the use of cached objects ({err}); eviction order may be off"
                ));
            }
        }
        Ok(())
    }

    /// Counts requests for objects the cache did not have.
    pub fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// An object's file and size, unverified: for handing it to a storage that verifies
    /// what it receives (every backend refuses bytes that do not match an object key).
    pub fn object_file(&self, oid: &Oid, for_path: &Path) -> Result<(PathBuf, u64)> {
        let path = self.object_path(oid);
        match fs::metadata(&path) {
            Ok(meta) => Ok((path, meta.len())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(self.not_cached(oid, for_path))
            }
            Err(err) => Err(err).at(&path),
        }
    }

    fn not_cached(&self, oid: &Oid, path: &Path) -> Error {
        self.record_miss();
        Error::NotCached {
            path: path.into(),
            oid: *oid,
        }
    }

    /// Rehashes an object; a corrupt one is quarantined and reported, never returned.
    pub fn verified_path(&self, oid: &Oid, for_path: &Path) -> Result<PathBuf> {
        self.verified_object(oid, for_path).map(|(path, _)| path)
    }

    /// [`verified_object`](Self::verified_object) that skips the hash when the file
    /// still has the stamp it had when this process (or, given as `trusted`, an earlier
    /// one) hashed it. Returns a new stamp worth remembering when it had to hash.
    pub fn verified_object_stamped(
        &self,
        oid: &Oid,
        for_path: &Path,
        trusted: Option<ObjectStamp>,
    ) -> Result<(PathBuf, u64, Option<ObjectStamp>)> {
        let path = self.object_path(oid);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(self.quarantine(oid)?),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(self.not_cached(oid, for_path))
            }
            Err(err) => return Err(err).at(&path),
        };
        let stamp = ObjectStamp::of(&meta);
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if trusted == Some(stamp) || verified.get(oid) == Some(&stamp) {
            return Ok((path, stamp.size, None));
        }
        drop(verified);
        let hashing_began = fsutil::since_epoch(std::time::SystemTime::now()).as_nanos() as i64;
        let (path, size) = self.verified_object(oid, for_path)?;
        if stamp.ctime_ns.max(stamp.mtime_ns) >= hashing_began - RACY_MARGIN_NS {
            return Ok((path, size, None));
        }
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*oid, stamp);
        Ok((path, size, Some(stamp)))
    }

    /// [`verified_path`](Self::verified_path) and the object's size.
    pub fn verified_object(&self, oid: &Oid, for_path: &Path) -> Result<(PathBuf, u64)> {
        let path = self.object_path(oid);
        match oid::hash_file(&path) {
            Ok((actual, size)) if actual == *oid => Ok((path, size)),
            Ok(_) => Err(self.quarantine(oid)?),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(self.not_cached(oid, for_path))
            }
            Err(err) => Err(err).at(&path),
        }
    }

    /// Reads a small object (a manifest) into memory, verified.
    pub fn read_verified(&self, oid: &Oid, for_path: &Path) -> Result<Vec<u8>> {
        let path = self.object_path(oid);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(self.not_cached(oid, for_path))
            }
            Err(err) => return Err(err).at(&path),
        };
        if Oid::of_bytes(&bytes) != *oid {
            return Err(self.quarantine(oid)?);
        }
        Ok(bytes)
    }

    /// Streams a verified object into `out`.
    pub fn copy_to_writer(&self, oid: &Oid, for_path: &Path, out: &mut impl Write) -> Result<u64> {
        let path = self.verified_path(oid, for_path)?;
        let mut file = File::open(&path).at(&path)?;
        let copied = io::copy(&mut file, out).at(&path)?;
        self.touch(&[*oid])?;
        Ok(copied)
    }

    /// Moves a corrupt object aside and forgets it; returns the error to report.
    pub fn quarantine(&self, oid: &Oid) -> Result<Error> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).at(&dir)?;
        let dest = dir.join(oid.hex());
        let src = self.object_path(oid);
        match fs::rename(&src, &dest) {
            Ok(()) => {}
            // Someone else quarantined it first.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(&src),
        }
        self.index.remove(&[*oid])?;
        Ok(Error::Corrupt {
            oid: *oid,
            quarantine: dest,
        })
    }

    /// Puts a read-only copy of an object at `dest` (replacing what is there), trying the
    /// configured link kinds in order, and verifying the bytes placed. Returns the kind used.
    pub fn materialize(&self, oid: &Oid, dest: &Path, executable: bool) -> Result<LinkKind> {
        let dir = fsutil::parent_dir(dest);
        fs::create_dir_all(dir).at(dir)?;
        self.materialize_in_existing_dir(oid, dest, executable)
    }

    /// [`LocalCache::materialize`] when the caller has already created `dest`'s folder
    /// (a folder checkout creates each folder once, not once per file).
    pub fn materialize_in_existing_dir(
        &self,
        oid: &Oid,
        dest: &Path,
        executable: bool,
    ) -> Result<LinkKind> {
        self.materialize_via(oid, dest, executable, fsutil::parent_dir(dest))
    }

    /// A copy onto a `dest` that does not exist yet, written as an unnamed file in its
    /// own folder and linked in once whole: no temp name anywhere, no rename across
    /// folders (which the kernel serializes per filesystem) and no shared temp folder
    /// every thread creates in. `None` where that cannot be done (no `O_TMPFILE`, no
    /// `/proc`, `dest` there after all): the caller writes a temp file and renames it.
    fn copy_in_place(
        &self,
        src_file: &mut File,
        dest: &Path,
        size: u64,
        mode: u32,
        oid: &Oid,
        trusted: bool,
    ) -> Result<Option<LinkKind>> {
        if self.unnamed_unsupported.load(Ordering::Relaxed) || fs::symlink_metadata(dest).is_ok() {
            return Ok(None);
        }
        let unnamed = NewFile::Unnamed {
            dir: fsutil::parent_dir(dest),
            file: std::cell::RefCell::new(None),
        };
        let report = |n| self.report(n);
        let placed = if trusted {
            copy_plain(src_file, &unnamed, size, mode, &report)
        } else {
            copy_verified(src_file, &unnamed, size, mode, oid, &report)
        };
        let NewFile::Unnamed { file, .. } = unnamed else {
            unreachable!()
        };
        let file = file.into_inner();
        match (placed, file) {
            (Ok(true), Some(file)) => {
                use std::os::fd::AsRawFd;
                let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                match rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    rustix::fs::CWD,
                    dest,
                    rustix::fs::AtFlags::SYMLINK_FOLLOW,
                ) {
                    Ok(()) => Ok(Some(LinkKind::Copy)),
                    // Placed by someone meanwhile: the rename route decides, as before.
                    Err(rustix::io::Errno::EXIST) => Ok(None),
                    Err(_) => {
                        self.unnamed_unsupported.store(true, Ordering::Relaxed);
                        Ok(None)
                    }
                }
            }
            (Ok(false), _) => Err(self.quarantine(oid)?),
            (Ok(true), None) => Ok(None),
            (Err(err), None) => {
                // The unnamed file could not even be made here (EOPNOTSUPP, EISDIR on
                // kernels or filesystems without it): don't try again for every file.
                let _ = err;
                self.unnamed_unsupported.store(true, Ordering::Relaxed);
                Ok(None)
            }
            (Err(err), Some(_)) => Err(err).at(dest),
        }
    }

    /// [`LocalCache::materialize_in_existing_dir`] writing the copy in `temp_dir` first
    /// (a project's private folder, which git never sees and the next run sweeps if this
    /// process is killed), then renaming it onto `dest`; across filesystems, beside `dest`.
    pub fn materialize_via(
        &self,
        oid: &Oid,
        dest: &Path,
        executable: bool,
        temp_dir: &Path,
    ) -> Result<LinkKind> {
        let src = self.object_path(oid);
        let mut src_file = match File::open(&src) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(self.not_cached(oid, dest))
            }
            Err(err) => return Err(err).at(&src),
        };
        let src_size = src_file.metadata().at(&src)?.len();
        let dir = fsutil::parent_dir(dest);
        let mode = if executable { 0o555 } else { 0o444 };
        let trusted = self
            .just_verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(oid);
        let verify = |path: &Path| {
            if trusted {
                Ok(true)
            } else {
                verify_file(path, oid)
            }
        };
        let temp = temp_path_in(temp_dir);
        let mut used = None;
        for kind in &self.links {
            let placed = match kind {
                LinkKind::Reflink => {
                    if self.reflink_unsupported.load(Ordering::Relaxed) {
                        continue;
                    }
                    match reflink_copy::reflink(&src, &temp) {
                        Ok(()) => fs::set_permissions(&temp, fs::Permissions::from_mode(mode))
                            .and_then(|()| verify(&temp)),
                        Err(_) => {
                            // This filesystem cannot; don't ask again for every file.
                            let _ = fs::remove_file(&temp);
                            self.reflink_unsupported.store(true, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                LinkKind::Hardlink => {
                    // The link shares the object's inode and mode: no execute bit.
                    if executable {
                        continue;
                    }
                    match fs::hard_link(&src, &temp) {
                        Ok(()) => verify(&temp),
                        // EXDEV across filesystems, EMLINK, EPERM: try the next kind.
                        Err(_) => continue,
                    }
                }
                LinkKind::Copy => {
                    if let Some(placed) =
                        self.copy_in_place(&mut src_file, dest, src_size, mode, oid, trusted)?
                    {
                        return Ok(placed);
                    }
                    let temp = NewFile::Path(&temp);
                    if trusted {
                        copy_plain(&mut src_file, &temp, src_size, mode, &|n| self.report(n))
                    } else {
                        copy_verified(&mut src_file, &temp, src_size, mode, oid, &|n| {
                            self.report(n)
                        })
                    }
                }
            };
            match placed {
                Ok(true) => {
                    used = Some(*kind);
                    break;
                }
                Ok(false) => {
                    let _ = fs::remove_file(&temp);
                    return Err(self.quarantine(oid)?);
                }
                Err(err) => {
                    let _ = fs::remove_file(&temp);
                    return Err(err).at(dest);
                }
            }
        }
        let Some(kind) = used else {
            return Err(Error::Unsupported {
                path: dest.into(),
                reason: format!(
                    "none of the link kinds {:?} in cache.link worked here; add \"copy\"",
                    self.links
                ),
            });
        };
        if let Err(err) = fs::rename(&temp, dest) {
            let _ = fs::remove_file(&temp);
            if err.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) && temp_dir != dir
            {
                return self.materialize_via(oid, dest, executable, dir);
            }
            return Err(err).at(dest);
        }
        if kind != LinkKind::Copy {
            self.report(src_size);
        }
        Ok(kind)
    }

    /// Evicts least-recently-used objects until the cache holds at most `target` bytes.
    /// Needs the cache to itself: if another process is using it, nothing is removed and
    /// the report says it was deferred (that process evicts when it finishes).
    pub fn evict_to(&self, target: u64) -> Result<EvictReport> {
        // The index's sizes first, without a stat per object: under the limit (the usual
        // case after each commit) nothing else is read. Entries whose files are gone only
        // overstate the size, and the exact pass below sorts that out.
        let size: u64 = self.index.entries()?.iter().map(|e| e.size).sum();
        if size <= target {
            return Ok(EvictReport {
                size_after: size,
                ..EvictReport::default()
            });
        }
        let Some(_exclusive) = self.exclusive(false)? else {
            return Ok(EvictReport {
                size_after: size,
                deferred: true,
                ..EvictReport::default()
            });
        };
        self.evict_exclusively(target)
    }

    /// The eviction pass, once this process holds the cache exclusively.
    fn evict_exclusively(&self, target: u64) -> Result<EvictReport> {
        // Re-read under the exclusive lock: others may have evicted meanwhile.
        let mut entries = self.live_entries()?;
        let mut size: u64 = entries.iter().map(|e| e.size).sum();
        entries.sort_by(|a, b| {
            (a.last_used_at, a.added_at, a.oid).cmp(&(b.last_used_at, b.added_at, b.oid))
        });
        let mut report = EvictReport::default();
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for entry in entries {
            if size <= target {
                break;
            }
            if pinned.contains(&entry.oid) {
                continue;
            }
            if self.protect_unpushed && !entry.pushed {
                // Its only copy: keep it until `czc push` has archived it.
                report.unpushed_kept += 1;
                continue;
            }
            let path = self.object_path(&entry.oid);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).at(&path),
            }
            size -= entry.size;
            report.freed += entry.size;
            report.removed.push(entry.oid);
        }
        self.index.remove(&report.removed)?;
        self.forget_named(&report.removed);
        report.size_after = size;
        if size <= target {
            report.unpushed_kept = 0;
        }
        Ok(report)
    }

    /// Index entries whose object file exists: no command trusts one whose file is gone.
    fn live_entries(&self) -> Result<Vec<Entry>> {
        let entries = self.index.entries()?;
        let (live, gone): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| self.contains(&e.oid));
        if !gone.is_empty() {
            let oids: Vec<Oid> = gone.iter().map(|e| e.oid).collect();
            self.index.remove(&oids)?;
        }
        Ok(live)
    }

    /// Swaps this process's shared lock for an exclusive one; the guard swaps back.
    fn exclusive(&self, wait: bool) -> Result<Option<ExclusiveGuard<'_>>> {
        let path = self.root.join("lock");
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage = None;
        drop(usage);
        let lock = if wait {
            Some(FileLock::acquire(&path, LockMode::Exclusive, "the cache (exclusive)").at(&path)?)
        } else {
            FileLock::try_acquire(&path, LockMode::Exclusive).at(&path)?
        };
        match lock {
            Some(lock) => Ok(Some(ExclusiveGuard {
                cache: self,
                lock: Some(lock),
            })),
            None => {
                self.reacquire_shared()?;
                Ok(None)
            }
        }
    }

    fn reacquire_shared(&self) -> Result<()> {
        let path = self.root.join("lock");
        let lock = FileLock::acquire(&path, LockMode::Shared, "the cache").at(&path)?;
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
        Ok(())
    }

    /// Every object file on disk, by oid (files with other names are skipped).
    fn disk_objects(&self) -> Result<Vec<(Oid, PathBuf, fs::Metadata)>> {
        let objects = self.root.join("objects");
        let mut found = Vec::new();
        for shard in fs::read_dir(&objects).at(&objects)? {
            let shard = shard.at(&objects)?;
            let Some(prefix) = shard.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if prefix.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path()).at(shard.path())? {
                let file = file.at(shard.path())?;
                let name = file.file_name();
                let Some(rest) = name.to_str() else { continue };
                let Ok(oid) = Oid::from_hex(&format!("{prefix}{rest}")) else {
                    continue;
                };
                let meta = file.metadata().at(file.path())?;
                if meta.is_file() {
                    found.push((oid, file.path(), meta));
                }
            }
        }
        Ok(found)
    }

    /// Rehashes every object, quarantines corrupt ones, and rebuilds the index from the
    /// disk (adding objects it missed, dropping entries whose file is gone).
    pub fn verify(&self) -> Result<VerifyReport> {
        let _exclusive = self.exclusive(true)?;
        let mut report = VerifyReport::default();
        let known: std::collections::HashMap<Oid, Entry> = match self.index.entries() {
            Ok(entries) => entries.into_iter().map(|e| (e.oid, e)).collect(),
            Err(IndexError::Corrupt { .. }) => {
                report.index_rebuilt = true;
                Default::default()
            }
            Err(err) => return Err(err.into()),
        };
        let objects = self.disk_objects()?;
        report.checked = objects.len();
        let checked: Vec<(Oid, fs::Metadata, io::Result<bool>)> = objects
            .into_par_iter()
            .map(|(oid, path, meta)| {
                let ok = oid::hash_file(&path).map(|(actual, _)| actual == oid);
                (oid, meta, ok)
            })
            .collect();
        let mut entries = Vec::new();
        for (oid, meta, ok) in checked {
            if !ok.at(self.object_path(&oid))? {
                if let Error::Corrupt { quarantine, .. } = self.quarantine(&oid)? {
                    report.corrupt.push((oid, quarantine));
                }
                continue;
            }
            let entry = known.get(&oid).cloned().unwrap_or_else(|| {
                report.index_added += 1;
                let mtime = mtime_millis(&meta);
                Entry {
                    oid,
                    size: meta.len(),
                    added_at: mtime,
                    last_used_at: mtime,
                    hits: 0,
                    pushed: false,
                }
            });
            entries.push(Entry {
                size: meta.len(),
                ..entry
            });
        }
        let live: std::collections::HashSet<Oid> = entries.iter().map(|e| e.oid).collect();
        report.index_dropped = known.keys().filter(|oid| !live.contains(oid)).count();
        self.index.replace(&entries)?;
        Ok(report)
    }

    /// Makes everything written to the cache so far durable (one syncfs), for callers
    /// that committed many objects without an fsync each.
    pub fn sync(&self) -> Result<()> {
        sync_filesystem(&self.root)
    }

    /// Removes the given objects (for `czc gc --cache`). Needs the cache to itself, like
    /// eviction: while another process uses it, nothing is removed and this says so.
    /// The object `oid` under the file name `name` (`named/<oid>/<name>`: a hard link,
    /// else a symlink), for tools that go by a file's name or extension
    /// (`anndata.read_h5ad`). Removed with the object.
    pub fn named_path(&self, oid: &Oid, name: &str) -> Result<PathBuf> {
        let valid = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        let object = self.object_path(oid);
        if !valid {
            return Ok(object);
        }
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*oid);
        let dir = self.root.join(NAMED).join(oid.hex());
        let named = dir.join(name);
        // Still the object's own bytes (not a copy that was quarantined and fetched again).
        let same_file = |a: &fs::Metadata, b: &fs::Metadata| {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        };
        if let (Ok(link), Ok(own)) = (fs::metadata(&named), fs::metadata(&object)) {
            if same_file(&link, &own) {
                return Ok(named);
            }
        }
        fs::create_dir_all(&dir).at(&dir)?;
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&temp);
        fs::hard_link(&object, &temp)
            .or_else(|_| std::os::unix::fs::symlink(&object, &temp))
            .at(&temp)?;
        fs::rename(&temp, &named).at(&named)?;
        Ok(named)
    }

    /// Removes the named links of objects that are gone.
    fn forget_named(&self, oids: &[Oid]) {
        for oid in oids {
            let _ = fs::remove_dir_all(self.root.join(NAMED).join(oid.hex()));
        }
    }

    pub fn remove_objects(&self, oids: &[Oid]) -> Result<u64> {
        if oids.is_empty() {
            return Ok(0);
        }
        let Some(_exclusive) = self.exclusive(false)? else {
            return Err(Error::Busy {
                path: self.root.clone(),
            });
        };
        let mut freed = 0;
        for oid in oids {
            let path = self.object_path(oid);
            match fs::symlink_metadata(&path) {
                Ok(meta) => {
                    fs::remove_file(&path).at(&path)?;
                    freed += meta.len();
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).at(&path),
            }
        }
        self.index.remove(oids)?;
        self.forget_named(oids);
        Ok(freed)
    }

    /// Remembers a repository that uses this cache, so `czc gc --cache` can ask it which
    /// objects it still needs. One appended line; readers drop repeats.
    pub fn register_repo(&self, root: &Path) -> Result<()> {
        let path = self.root.join("state").join("repos.txt");
        if self.known_repos().iter().any(|known| known == root) {
            return Ok(());
        }
        fs::create_dir_all(fsutil::parent_dir(&path)).at(&path)?;
        let mut line = root.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        // One small O_APPEND write: concurrent registrations never interleave.
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        file.write_all(&line).at(&path)
    }

    /// The repositories registered with [`LocalCache::register_repo`], each once.
    pub fn known_repos(&self) -> Vec<PathBuf> {
        let path = self.root.join("state").join("repos.txt");
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        text.lines()
            .filter(|line| !line.is_empty() && seen.insert(*line))
            .map(PathBuf::from)
            .collect()
    }

    /// Removes every object.
    pub fn clear(&self) -> Result<usize> {
        let _exclusive = self.exclusive(true)?;
        let objects = self.disk_objects()?;
        for (_, path, _) in &objects {
            fs::remove_file(path).at(path)?;
        }
        let _ = fs::remove_dir_all(self.root.join(NAMED));
        self.index.replace(&[])?;
        Ok(objects.len())
    }

    /// Every object the cache holds (per the index, checked against the disk).
    pub fn oids(&self) -> Result<Vec<Oid>> {
        Ok(self.live_entries()?.into_iter().map(|e| e.oid).collect())
    }

    /// Location, size, limit, counts.
    pub fn info(&self) -> Result<CacheInfo> {
        let entries = self.live_entries()?;
        Ok(CacheInfo {
            root: self.root.clone(),
            index: match self.index.kind() {
                IndexKind::Csv => "csv",
                IndexKind::Json => "json",
                IndexKind::Sqlite => "sqlite",
            }
            .into(),
            index_path: self.index.path().into(),
            objects: entries.len(),
            size: entries.iter().map(|e| e.size).sum(),
            size_limit: self.size_limit,
            hits: entries.iter().map(|e| e.hits).sum(),
            misses: self.misses.load(Ordering::Relaxed) + self.persisted_misses(),
            awaiting_push: entries.iter().filter(|e| !e.pushed).count(),
            awaiting_push_bytes: entries.iter().filter(|e| !e.pushed).map(|e| e.size).sum(),
            awaiting_push_by_project: self.unpushed_by_project()?,
        })
    }

    fn misses_path(&self) -> PathBuf {
        self.root.join("misses")
    }

    fn persisted_misses(&self) -> u64 {
        fs::read_to_string(self.misses_path())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        if self.evict_on_exit.load(Ordering::Relaxed) || self.root.join(EVICT_PENDING).exists() {
            self.evict_on_the_way_out();
        }
        let misses = self.misses.load(Ordering::Relaxed);
        if misses > 0 {
            let lock_path = self.root.join("misses.lock");
            if let Ok(_lock) = FileLock::acquire(&lock_path, LockMode::Exclusive, "the counters") {
                let total = self.persisted_misses() + misses;
                let _ = fsutil::write_atomic(&self.misses_path(), format!("{total}\n").as_bytes());
            }
        }
        // This process's staging goes (dropping it removes it).
        drop(
            self.staging
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

impl LocalCache {
    /// The deferred eviction, tried once more as this process leaves: its shared lock is
    /// let go first, so of several processes leaving together the last one succeeds.
    fn evict_on_the_way_out(&self) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let path = self.root.join("lock");
        if let Ok(Some(lock)) = FileLock::try_acquire(&path, LockMode::Exclusive) {
            // evict_to would take the lock itself; hold it here and evict directly.
            if self.evict_exclusively(self.size_limit).is_ok() {
                let _ = fs::remove_file(self.root.join(EVICT_PENDING));
            }
            drop(lock);
        }
    }
}

struct ExclusiveGuard<'a> {
    cache: &'a LocalCache,
    lock: Option<FileLock>,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        // Release exclusive before retaking shared: flock would block on our own lock.
        drop(self.lock.take());
        let _ = self.cache.reacquire_shared();
    }
}

/// syncfs(2) on the filesystem holding `path`.
fn sync_filesystem(path: &Path) -> Result<()> {
    fsutil::sync_filesystem(path).at(path)
}

/// A name for a temp file in `dir` that nothing else will pick.
fn temp_path_in(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = fsutil::since_epoch(std::time::SystemTime::now()).subsec_nanos();
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = PID.get_or_init(std::process::id);
    dir.join(format!(".czc-tmp-{pid}-{n}-{nanos}"))
}

/// Whether a file's bytes hash to `oid`.
fn verify_file(path: &Path, oid: &Oid) -> io::Result<bool> {
    Ok(oid::hash_file(path)?.0 == *oid)
}

/// Where a copy is written: a new file at a temp path (renamed onto its place after),
/// or an unnamed file in the destination's folder (`O_TMPFILE`), linked in once whole.
enum NewFile<'a> {
    Path(&'a Path),
    Unnamed {
        dir: &'a Path,
        file: std::cell::RefCell<Option<File>>,
    },
}

impl NewFile<'_> {
    fn create(&self, mode: u32) -> io::Result<File> {
        match self {
            NewFile::Path(path) => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path),
            NewFile::Unnamed { dir, file } => {
                let fd = rustix::fs::open(
                    *dir,
                    rustix::fs::OFlags::TMPFILE
                        | rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(mode),
                )?;
                let created = File::from(fd);
                *file.borrow_mut() = Some(created.try_clone()?);
                Ok(created)
            }
        }
    }

    /// A path that opens `created` (this file) again, for reading it back.
    fn reopen_path(&self, created: &File) -> PathBuf {
        use std::os::fd::AsRawFd;
        match self {
            NewFile::Path(path) => path.to_path_buf(),
            NewFile::Unnamed { .. } => format!("/proc/self/fd/{}", created.as_raw_fd()).into(),
        }
    }
}

/// Copies `src` (bytes this process has just verified) to a new file `dest` with
/// `mode`, in the kernel (copy_file_range), without hashing them again.
fn copy_plain(
    src_file: &mut File,
    dest: &NewFile,
    size: u64,
    mode: u32,
    report: &(dyn Fn(u64) + Sync),
) -> io::Result<bool> {
    let mut out = dest.create(mode)?;
    let copied = io::copy(src_file, &mut out)?;
    if !umask_keeps_mode(&out, mode)? {
        out.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    report(copied);
    Ok(copied == size)
}

/// Copies `src` to a new file `dest` with `mode`, hashing the bytes placed.
fn copy_verified(
    src_file: &mut File,
    dest: &NewFile,
    size: u64,
    mode: u32,
    oid: &Oid,
    report: &(dyn Fn(u64) + Sync),
) -> io::Result<bool> {
    if size < MMAP_THRESHOLD {
        // One read of the object's known size; the hash decides whether it is whole.
        let mut bytes = vec![0u8; size as usize];
        src_file.read_exact(&mut bytes)?;
        if Oid::of_bytes(&bytes) != *oid {
            return Ok(false);
        }
        let mut out = dest.create(mode)?;
        out.write_all(&bytes)?;
        if !umask_keeps_mode(&out, mode)? {
            out.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        report(size);
        return Ok(true);
    }
    let out = dest.create(mode)?;
    // Workspace copies are not fsynced (like git's checkout): the cache holds the
    // durable bytes, and a copy lost in a crash is placed again.
    let (placed, _) =
        fsutil::copy_hash_flush(src_file, &out, &dest.reopen_path(&out), size, false, report)?;
    if !umask_keeps_mode(&out, mode)? {
        out.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(placed == *oid)
}

/// Whether files created with `mode` keep it under this process's umask (checked once,
/// on the first file, instead of a stat per file).
fn umask_keeps_mode(created: &File, mode: u32) -> io::Result<bool> {
    static KEEPS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(keeps) = KEEPS.get() {
        return Ok(*keeps);
    }
    let keeps = created.metadata()?.permissions().mode() & 0o777 == mode;
    Ok(*KEEPS.get_or_init(|| keeps))
}

fn mtime_millis(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .map(|t| fsutil::since_epoch(t).as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn open(dir: &Path, limit: u64) -> LocalCache {
        LocalCache::open(&CacheConfig {
            dir: dir.join("cache"),
            size_limit: limit,
            index: IndexKind::Csv,
            link: vec![LinkKind::Copy],
        })
        .unwrap()
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_copy_onto_a_new_path_leaves_no_temp_and_one_onto_an_old_file_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let big = crate::storage::conformance::noise((MMAP_THRESHOLD + 3) as usize, 5);
        let objects = [
            cache
                .admit_file(&file(dir.path(), "small", b"small bytes"))
                .unwrap(),
            cache.admit_file(&file(dir.path(), "big", &big)).unwrap(),
        ];
        let temps = dir.path().join("temps");
        fs::create_dir(&temps).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        for (n, object) in objects.iter().enumerate() {
            for executable in [false, true] {
                let dest = tree.join(format!("f{n}-{executable}"));
                cache
                    .materialize_via(&object.oid, &dest, executable, &temps)
                    .unwrap();
                let meta = fs::metadata(&dest).unwrap();
                let mode = if executable { 0o555 } else { 0o444 };
                assert_eq!(meta.permissions().mode() & 0o777, mode);
                assert_eq!(oid::hash_file(&dest).unwrap().0, object.oid);
            }
        }
        assert_eq!(fs::read_dir(&temps).unwrap().count(), 0, "no temp left");
        assert!(
            !cache.unnamed_unsupported.load(Ordering::Relaxed),
            "new files went in as unnamed files linked in place"
        );
        assert_eq!(fs::read_dir(&tree).unwrap().count(), 4);
        // An older file in the way is replaced whole (through a temp and a rename).
        let dest = tree.join("f0-false");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&dest, b"an older version").unwrap();
        cache
            .materialize_via(&objects[1].oid, &dest, false, &temps)
            .unwrap();
        assert!(fs::read(&dest).unwrap() == big);
        assert_eq!(fs::read_dir(&temps).unwrap().count(), 0);
        // A damaged object is refused on this route too (by a handle that has not just
        // hashed it itself): nothing placed, quarantined.
        let cache = open(dir.path(), 1 << 30);
        let damaged = cache.object_path(&objects[0].oid);
        fs::set_permissions(&damaged, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&damaged, b"SMALL BYTES").unwrap();
        let dest = tree.join("damaged");
        assert!(cache
            .materialize_via(&objects[0].oid, &dest, false, &temps)
            .is_err());
        assert!(!dest.exists());
        assert!(!cache.contains(&objects[0].oid));
        // A big object this handle has not hashed is hashed from the unnamed copy.
        let dest = tree.join("verified-big");
        cache
            .materialize_via(&objects[1].oid, &dest, false, &temps)
            .unwrap();
        assert!(fs::read(&dest).unwrap() == big);
        assert_eq!(fs::read_dir(&temps).unwrap().count(), 0);
    }

    #[test]
    fn a_path_handed_out_by_name_survives_this_processs_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let kept = cache.admit_file(&file(dir.path(), "a", b"alpha")).unwrap();
        let other = cache.admit_file(&file(dir.path(), "b", b"beta")).unwrap();
        cache.mark_pushed(&[kept.oid, other.oid]).unwrap();
        let named = cache.named_path(&kept.oid, "cells.h5ad").unwrap();
        let report = cache.evict_to(0).unwrap();
        assert_eq!(
            report.removed,
            vec![other.oid],
            "only the unnamed object goes"
        );
        assert_eq!(fs::read(&named).unwrap(), b"alpha");
        assert!(cache.contains(&kept.oid));
    }

    #[test]
    fn commit_makes_objects_visible_read_only_and_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let staged = cache.stage_file(&file(dir.path(), "a", b"alpha")).unwrap();
        let oid = staged.oid;
        assert!(!cache.contains(&oid), "staged is not visible");
        let admitted = cache.commit(vec![staged]).unwrap();
        assert_eq!(admitted.len(), 1);
        assert!(admitted[0].added && cache.contains(&oid));
        let meta = fs::metadata(cache.object_path(&oid)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o222,
            0,
            "objects are read-only"
        );
        // The same bytes again: already there, not added, one index entry.
        let again = cache.stage_file(&file(dir.path(), "b", b"alpha")).unwrap();
        let admitted = cache.commit(vec![again]).unwrap();
        assert!(!admitted[0].added);
        assert_eq!(cache.index().entries().unwrap().len(), 1);
        // Nothing is left in staging but this process's live lock.
        let staging = cache.root().join("tmp");
        let left: Vec<_> = walkdir::WalkDir::new(&staging)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn eviction_takes_the_least_recently_used_pushed_objects_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(1));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let cache = open(dir.path(), 1 << 20).with_clock(clock);
        let mut oids = Vec::new();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            now.store(10 * (i as i64 + 1), Ordering::SeqCst);
            let admitted = cache
                .admit_file(&file(dir.path(), name, &[i as u8; 100]))
                .unwrap();
            oids.push(admitted.oid);
        }
        let unpushed = cache
            .admit_file(&file(dir.path(), "unpushed", &[9u8; 100]))
            .unwrap()
            .oid;
        cache.mark_pushed(&oids).unwrap();
        let report = cache.evict_to(200).unwrap();
        assert_eq!(report.removed, vec![oids[0], oids[1]], "oldest first");
        assert_eq!(report.freed, 200);
        assert!(cache.contains(&oids[2]) && cache.contains(&unpushed));
        // Only the unpushed object is over a limit of 0: kept, and said.
        let report = cache.evict_to(0).unwrap();
        assert_eq!(report.removed, vec![oids[2]]);
        assert_eq!(report.unpushed_kept, 1);
        assert!(cache.contains(&unpushed));
    }

    #[test]
    fn a_corrupt_object_is_quarantined_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let oid = cache
            .admit_file(&file(dir.path(), "a", b"the real bytes"))
            .unwrap()
            .oid;
        let path = cache.object_path(&oid);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        perms.set_mode(0o644);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"the real bytez").unwrap();
        let err = cache.verified_path(&oid, Path::new("a")).unwrap_err();
        let Error::Corrupt { quarantine, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(fs::read(&quarantine).unwrap(), b"the real bytez");
        assert!(!cache.contains(&oid), "gone from objects/");
        assert!(
            cache.index().get(&oid).unwrap().is_none(),
            "gone from the index"
        );
        // Quarantining twice (two readers at once) is not an error.
        assert!(matches!(cache.quarantine(&oid), Ok(Error::Corrupt { .. })));
    }
}
