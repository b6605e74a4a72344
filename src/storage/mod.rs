//! Storage: places that hold bytes under string keys (a local folder, a read-only share,
//! and with the remote issue an S3 bucket and czc's HTTP server).
//!
//! The traits are split by capability, so a read-only storage cannot even be asked to
//! write: [`ReadStorage`] for everyone, [`WriteStorage`] for those that can be written,
//! [`LocalStorage`] for those whose keys are files on this machine. A miss is a value
//! (`Ok(None)` / `Ok(false)`); only real failures are errors. Every write is atomic: a
//! reader sees the old bytes or the new ones, never a mix, and a crash leaves no
//! partial object.

#[doc(hidden)]
pub mod conformance;
mod folder;
mod http;
mod s3;

use crate::report::Progress;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use folder::{FolderStorage, TemporaryStorage};
pub use http::HttpStorage;
pub use s3::{S3Storage, MULTIPART_THRESHOLD};

use crate::oid::Oid;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{storage}: {key}: {source}")]
    Io {
        storage: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{storage}: bad key '{key}': {reason}")]
    BadKey {
        storage: String,
        key: String,
        reason: &'static str,
    },
    #[error("bad remote url '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot start an HTTP client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A conditional write or delete found the key changed by someone else; nothing was
    /// written.
    #[error("{storage}: '{key}' was changed by someone else ({found}); nothing was written")]
    LostRace {
        storage: String,
        key: String,
        found: String,
    },
    /// A ranged read got fewer bytes than it asked for (the key is shorter than an
    /// index said).
    #[error("{storage}: {key}: asked for {wanted} bytes, got {got}: the key is shorter than its index says")]
    ShortRange {
        storage: String,
        key: String,
        wanted: u64,
        got: u64,
    },
    /// A remote sent more bytes than the key can have (an endless or lying body).
    #[error("{storage}: {key}: the remote sent more than the {max} bytes expected; refused, nothing kept")]
    TooLong {
        storage: String,
        key: String,
        max: u64,
    },
}

/// The error for a ranged read that ended before the range did (a truncated key).
pub fn short_range(storage: &dyn ReadStorage, key: &str, wanted: u64, got: u64) -> StorageError {
    StorageError::ShortRange {
        storage: storage.describe(),
        key: key.into(),
        wanted,
        got,
    }
}

/// Where a packed object's bytes are: `len` bytes at `offset` of the key `pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedAt {
    pub pack: String,
    pub offset: u64,
    pub len: u64,
}

/// What a storage reports of one key: the facts downloaded bytes must agree with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyInfo {
    pub size: Option<u64>,
    /// The BLAKE3 oid of its bytes, when the storage keeps one (S3 metadata, czc serve).
    pub hash: Option<Oid>,
    pub last_modified: Option<SystemTime>,
    /// A version tag that changes with every write (an ETag).
    pub version: Option<String>,
}

/// Interrupted uploads older than this are swept by push and `gc --remote`.
pub const STALE_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The error for a download that went past `max` bytes.
pub fn too_long(storage: &dyn ReadStorage, key: &str, max: u64) -> StorageError {
    StorageError::TooLong {
        storage: storage.describe(),
        key: key.into(),
        max,
    }
}

/// Reading: every storage can do this.
pub trait ReadStorage: Send + Sync {
    /// A short description for messages, such as `folder /srv/czc`.
    fn describe(&self) -> String;
    /// Writes the key's bytes to `out` (at its current position). Returns the bytes
    /// copied, or `None`, having written nothing, if the key does not exist. A remote is
    /// untrusted: past `max` bytes the copy stops with [`StorageError::TooLong`].
    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError>;
    /// Writes an object the caller knows to be `size` bytes into `out` (an empty file),
    /// refusing more. Storages that read ranges read a big one in parts, several at
    /// once, so one object fills the link; the default is [`copy_into`](Self::copy_into).
    fn copy_sized_into(
        &self,
        key: &str,
        out: &mut File,
        size: u64,
    ) -> Result<Option<u64>, StorageError> {
        self.copy_into(key, out, size)
    }
    /// Copies the key's bytes to `dest` (replacing it atomically). Returns the bytes
    /// copied, or `None` if the key does not exist. Making `dest` durable is the
    /// caller's choice: the local cache syncs a whole batch of downloads at once.
    fn copy_to(&self, key: &str, dest: &Path) -> Result<Option<u64>, StorageError> {
        let local = |source: std::io::Error| StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source: std::io::Error::new(source.kind(), format!("{}: {source}", dest.display())),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".czc-tmp-")
            .tempfile_in(crate::fsutil::parent_dir(dest))
            .map_err(local)?;
        let Some(copied) = self.copy_into(key, temp.as_file_mut(), u64::MAX)? else {
            return Ok(None);
        };
        temp.persist(dest).map_err(|err| local(err.error))?;
        Ok(Some(copied))
    }
    /// Writes bytes `range` of the key to `out`: exactly that many (a storage that
    /// sends fewer or more fails with [`StorageError::ShortRange`] or
    /// [`StorageError::TooLong`]). `None` if the key does not exist. Packs are read this way.
    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StorageError> {
        let _ = (range, out);
        Err(StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "this storage cannot read part of a key",
            ),
        })
    }
    /// The BLAKE3 oid of the key's bytes, or `None` if the key does not exist.
    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError>;
    /// When the key was last written, or `None` if it does not exist.
    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError>;
    /// Whether the key exists.
    fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// The key's length in bytes, or `None` if it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// The file a key lives in when it is a file on this machine (folders), so a copy
    /// can go through the local big-file pipeline; `None` for network storages.
    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        let _ = key;
        Ok(None)
    }
    /// What the storage reports of a key, in one request where it can; `None` if the key
    /// does not exist. Each field is `None` when the storage does not report it (no
    /// hash is computed here: that would mean reading the whole key).
    fn describe_key(&self, key: &str) -> Result<Option<KeyInfo>, StorageError> {
        let Some(size) = self.size(key)? else {
            return Ok(None);
        };
        Ok(Some(KeyInfo {
            size: Some(size),
            last_modified: self.last_modified(key)?,
            ..KeyInfo::default()
        }))
    }
    /// Where each object lives when it is in a pack of this storage (`None`: loose or
    /// absent). Lets a fetch read many packed objects in a few ranged requests.
    fn pack_locations(&self, oids: &[Oid]) -> Result<Vec<Option<PackedAt>>, StorageError> {
        Ok(vec![None; oids.len()])
    }
    /// When `key` was written, as the last listing that saw it said (`None`: no listing
    /// of this handle saw it, or the backend keeps no such times). Saves a HEAD per key
    /// where a listing just answered; never used where only a fresh answer will do.
    fn listed_time(&self, _key: &str) -> Option<std::time::SystemTime> {
        None
    }
    /// The recipe of an object this storage holds as chunks (`None`: not chunked here).
    fn recipe(&self, _oid: &Oid) -> Result<Option<crate::packs::recipe::Recipe>, StorageError> {
        Ok(None)
    }
    /// Every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Whether each key exists, in one batch where the backend can: by default one
    /// listing of `objects/` for many object keys, one `exists` each for a few.
    fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, StorageError> {
        if keys.len() > 32 && keys.iter().all(|k| k.starts_with("objects/")) {
            let listed: HashSet<String> = self.list("objects/")?.into_iter().collect();
            return Ok(keys.iter().map(|k| listed.contains(k)).collect());
        }
        keys.iter().map(|k| self.exists(k)).collect()
    }
}

/// Writing, plain and conditional. Conditional forms fail with
/// [`StorageError::LostRace`] and write nothing when their condition does not hold at
/// the moment of writing (not merely when checked).
pub trait WriteStorage: ReadStorage {
    /// Uploads `src` under `key`, replacing what is there.
    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError>;
    /// Uploads `bytes` under `key`, replacing what is there, in one request where the
    /// backend can (packs are built in memory). Default: through a temp file and
    /// [`put`](WriteStorage::put).
    fn put_bytes(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        use std::io::Write;
        let local = |source| StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source,
        };
        let mut temp = tempfile::NamedTempFile::new().map_err(local)?;
        temp.write_all(&bytes).map_err(local)?;
        self.put(key, temp.path())
    }
    /// Deletes the key; `false` if it was not there.
    fn delete(&self, key: &str) -> Result<bool, StorageError>;
    /// Uploads only if the key does not exist yet.
    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError>;
    /// Uploads only if the key still holds the bytes hashing to `expected`
    /// (compare-and-swap against the version we last saw).
    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError>;
    /// Uploads only if `src` is newer than the stored copy (or there is none); returns
    /// whether it wrote.
    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError>;
    /// Deletes only if the key still holds the bytes hashing to `expected`.
    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError>;
    /// Tells the storage these keys were just wanted again (a push found them already
    /// there), so a `gc --remote` grace period counts from now: another clone's gc must
    /// not delete what this clone has just come to need. Default: nothing to refresh.
    fn refresh(&self, keys: &[String]) -> Result<(), StorageError> {
        let _ = keys;
        Ok(())
    }
    /// Removes what interrupted uploads left under each prefix (temp files, unfinished
    /// multipart uploads) that has not changed for `older_than`; returns how many. A
    /// live upload keeps writing, so it is never that old.
    fn sweep_stale_uploads(
        &self,
        prefixes: &[String],
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let _ = (prefixes, older_than);
        Ok(0)
    }
    /// `gc --remote` of what packs and recipes hold: recipes of objects `live` rejects
    /// and packs whose every entry is dead are deleted, packs mostly dead are rewritten
    /// with their live entries, all only past `grace`. Default: nothing packed.
    fn gc_packs(
        &self,
        live: &(dyn Fn(&Oid) -> bool + Sync),
        grace: std::time::Duration,
        dry_run: bool,
    ) -> Result<crate::packs::PackGcReport, StorageError> {
        let _ = (live, grace, dry_run);
        Ok(crate::packs::PackGcReport::default())
    }
    /// [`put_if_absent`](WriteStorage::put_if_absent) for many `(key, file)` pairs, in
    /// parallel on the current rayon pool, retrying transient failures; one result per
    /// pair, `progress` called with each file's size as it is done. Backends override it
    /// to batch what they can (a folder makes the whole batch durable at once).
    fn put_many_if_absent(
        &self,
        items: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        use rayon::prelude::*;
        items
            .par_iter()
            .map(|(key, src)| {
                let result = with_retries(|| self.put_if_absent(key, src));
                progress.bytes_done(std::fs::metadata(src).map(|m| m.len()).unwrap_or(0));
                progress.files_done(1);
                result
            })
            .collect()
    }
}

/// Storages whose keys are files on this machine.
pub trait LocalStorage: ReadStorage {
    /// The file a key lives in (whether or not it exists).
    fn path(&self, key: &str) -> Result<PathBuf, StorageError>;
    /// Opens the key's file, or `None` if it does not exist.
    fn open(&self, key: &str) -> Result<Option<File>, StorageError>;
}

/// Wraps any storage so that writing to it does not compile: a cluster share, a public
/// bucket, a colleague's cache folder.
///
/// ```
/// use czcache::storage::{FolderStorage, ReadOnly, ReadStorage};
/// let share = ReadOnly::new(FolderStorage::new("/mnt/cluster/czc"));
/// assert!(!share.exists("objects/ab/cdef").unwrap());
/// // share.put(...) is a compile error: ReadOnly implements no WriteStorage.
/// ```
#[derive(Debug, Clone)]
pub struct ReadOnly<S>(S);

impl<S: ReadStorage> ReadOnly<S> {
    pub fn new(storage: S) -> ReadOnly<S> {
        ReadOnly(storage)
    }

    /// The wrapped storage, still read-only.
    pub fn inner(&self) -> &S {
        &self.0
    }
}

impl<S: ReadStorage> ReadStorage for ReadOnly<S> {
    fn describe(&self) -> String {
        format!("{} (read-only)", self.0.describe())
    }
    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        self.0.copy_into(key, out, max)
    }
    fn copy_sized_into(
        &self,
        key: &str,
        out: &mut File,
        size: u64,
    ) -> Result<Option<u64>, StorageError> {
        self.0.copy_sized_into(key, out, size)
    }
    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StorageError> {
        self.0.copy_range_into(key, range, out)
    }
    fn describe_key(&self, key: &str) -> Result<Option<KeyInfo>, StorageError> {
        self.0.describe_key(key)
    }
    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        self.0.hash(key)
    }
    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        self.0.last_modified(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.0.exists(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.0.size(key)
    }
    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.0.local_file(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.0.list(prefix)
    }
    fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, StorageError> {
        self.0.exists_many(keys)
    }
    fn pack_locations(&self, oids: &[Oid]) -> Result<Vec<Option<PackedAt>>, StorageError> {
        self.0.pack_locations(oids)
    }
    fn recipe(&self, oid: &Oid) -> Result<Option<crate::packs::recipe::Recipe>, StorageError> {
        self.0.recipe(oid)
    }
}

impl<S: LocalStorage> LocalStorage for ReadOnly<S> {
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.0.path(key)
    }
    fn open(&self, key: &str) -> Result<Option<File>, StorageError> {
        self.0.open(key)
    }
}

/// The settings of one remote that configure its backend.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// Open it read-only: the result has no writer.
    pub read_only: bool,
    /// Unsigned requests (public buckets).
    pub anonymous: bool,
    /// An S3-compatible endpoint.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// A bearer token (HTTP remotes).
    pub token: Option<String>,
    /// The environment variable the token comes from, named in errors.
    pub token_var: Option<String>,
    /// The folder relative paths are relative to (the project root).
    pub base_dir: Option<PathBuf>,
    /// The `AWS_*` variables an S3 remote reads (credentials, region, session token);
    /// `None` reads the process environment.
    pub aws_env: Option<std::collections::BTreeMap<String, String>>,
    /// How long network remotes wait to connect and for each read.
    pub timeouts: Timeouts,
    /// Where pack indexes read from the remote are kept between runs (`None`: only in
    /// memory).
    pub pack_index_dir: Option<PathBuf>,
    /// Whether pushes write packs (`None`: the backend's default, packs on S3 and HTTP).
    pub packs: Option<bool>,
}

/// Network timeouts: a remote is untrusted, and a server that accepts and never answers
/// (or stalls mid-body) must not hang czc for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting (TCP and TLS).
    pub connect: std::time::Duration,
    /// Waiting for an answer, and then between any two reads of a body (idle time).
    pub read: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: std::time::Duration::from_secs(10),
            read: std::time::Duration::from_secs(60),
        }
    }
}

/// Refuses a remote url czc cannot open, before anything uses it: an unknown scheme
/// (`gopher://x`), or one without `//` (`s3:bucket`, which would otherwise be taken for
/// a folder of that name inside the project).
pub fn check_url(url: &str) -> Result<(), StorageError> {
    let bad = |reason: String| StorageError::BadUrl {
        url: url.into(),
        reason,
    };
    if url.is_empty() {
        return Err(bad("empty".into()));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Ok(());
    };
    let looks_like_scheme = !scheme.is_empty()
        && !scheme.contains('/')
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    if !looks_like_scheme {
        return Ok(());
    }
    match (scheme, rest.starts_with("//")) {
        ("file" | "s3" | "http" | "https", true) => Ok(()),
        _ => Err(bad(format!(
            "unknown scheme '{scheme}:' (czc reads folders, file://, s3://, http:// and https://); write ./{url} for a folder of that name"
        ))),
    }
}

/// Checks an S3 endpoint: an absolute http(s) url with a host.
pub fn check_endpoint(endpoint: &str) -> Result<(), StorageError> {
    let host = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() && !host.starts_with(':') => Ok(()),
        _ => Err(StorageError::BadUrl {
            url: endpoint.into(),
            reason: "an endpoint is an absolute url such as http://127.0.0.1:9000".into(),
        }),
    }
}

/// A storage opened from configuration. A read-only one has no writer, by type.
#[derive(Clone)]
pub enum OpenedStorage {
    ReadOnly(Arc<dyn ReadStorage>),
    ReadWrite(Arc<dyn WriteStorage>),
}

impl OpenedStorage {
    /// The storage for reading (every storage can).
    pub fn reader(&self) -> Arc<dyn ReadStorage> {
        match self {
            OpenedStorage::ReadOnly(storage) => storage.clone(),
            OpenedStorage::ReadWrite(storage) => storage.clone(),
        }
    }

    /// The storage for writing, `None` if it is read-only.
    pub fn writer(&self) -> Option<Arc<dyn WriteStorage>> {
        match self {
            OpenedStorage::ReadOnly(_) => None,
            OpenedStorage::ReadWrite(storage) => Some(storage.clone()),
        }
    }
}

/// Opens the storage a remote's `url` names: the one place that maps URLs to backends.
/// `/path`, `file:///path` and relative paths (to `options.base_dir`) are folders.
/// The folder a url names (a path, relative to `base_dir`, or `file:///path`); `None`
/// for a network url (`s3://`, `http(s)://`).
pub fn folder_of(url: &str, base_dir: Option<&Path>) -> Result<Option<PathBuf>, StorageError> {
    let bad = |reason: String| StorageError::BadUrl {
        url: url.into(),
        reason,
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match scheme {
        "file" if !rest.starts_with('/') => Err(bad(
            "a file:// url needs an absolute path (file:///path)".into(),
        )),
        "file" => Ok(Some(PathBuf::from(rest))),
        "" if url.is_empty() => Err(bad("empty".into())),
        "" => {
            check_url(url)?;
            let path = PathBuf::from(url);
            Ok(Some(match (base_dir, path.is_relative()) {
                (Some(base), true) => base.join(path),
                _ => path,
            }))
        }
        "http" | "https" | "s3" => Ok(None),
        other => Err(bad(format!(
            "unknown scheme '{other}' (use a path, file://, s3:// or http(s)://)"
        ))),
    }
}

pub fn open_storage(url: &str, options: &StorageOptions) -> Result<OpenedStorage, StorageError> {
    use crate::packs::{PackWrites, Packed};
    let index_dir = options.pack_index_dir.clone();
    let writes = |default: bool| match options.packs.unwrap_or(default) {
        true => PackWrites::Packs,
        false => PackWrites::Loose,
    };
    if let Some(folder) = folder_of(url, options.base_dir.as_deref())? {
        // A folder reads packs another backend's pushes left, and writes loose objects.
        let storage = Packed::new(FolderStorage::new(folder), writes(false), index_dir);
        return Ok(opened(storage, options.read_only));
    }
    if url.starts_with("s3://") {
        let storage = Packed::new(S3Storage::new(url, options)?, writes(true), index_dir);
        return Ok(opened(storage, options.read_only));
    }
    let mut storage = HttpStorage::with_timeouts(url, options.token.clone(), options.timeouts)?;
    if let Some(var) = &options.token_var {
        storage.set_token_var(var);
    }
    Ok(opened(
        Packed::new(storage, writes(true), index_dir),
        options.read_only,
    ))
}

/// A storage as opened: behind [`ReadOnly`] when it must not be written.
fn opened<S: WriteStorage + 'static>(storage: S, read_only: bool) -> OpenedStorage {
    if read_only {
        OpenedStorage::ReadOnly(Arc::new(ReadOnly::new(storage)))
    } else {
        OpenedStorage::ReadWrite(Arc::new(storage))
    }
}

/// Runs `operation`, retrying transient failures (timeouts, resets) with backoff. An
/// unreachable remote (refused) or a lost race is not retried.
pub fn with_retries<T>(
    mut operation: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match operation() {
            Err(StorageError::Io { source, .. }) if attempt < 3 && is_transient(source.kind()) => {
                std::thread::sleep(pause);
                pause *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub(crate) fn is_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        TimedOut | ConnectionReset | ConnectionAborted | Interrupted | BrokenPipe | UnexpectedEof
    )
}

/// The oid an `objects/<2 hex>/<62 hex>` key names.
pub fn object_key_oid(key: &str) -> Option<Oid> {
    let rest = key.strip_prefix("objects/")?;
    let (shard, tail) = rest.split_once('/')?;
    if shard.len() != 2 {
        return None;
    }
    Oid::from_hex(&format!("{shard}{tail}")).ok()
}

/// Refuses bytes hashing to `found` under an object key that names another oid: no
/// backend stores an object under a name its bytes do not have.
pub(crate) fn check_object_bytes(key: &str, found: &Oid, src: &Path) -> std::io::Result<()> {
    match object_key_oid(key) {
        Some(expected) if expected != *found => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds {found}, not the object its key names",
                src.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks that a key is a relative `/`-separated path that stays inside the storage.
pub fn check_key(storage: &dyn ReadStorage, key: &str) -> Result<(), StorageError> {
    check_key_of(&storage.describe(), key)
}

/// [`check_key`] for a key of whatever `described` names (a cache, a storage).
pub fn check_key_of(described: &str, key: &str) -> Result<(), StorageError> {
    let bad = |reason| StorageError::BadKey {
        storage: described.into(),
        key: key.into(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.starts_with('/') || key.contains('\\') || key.contains('\0') {
        return Err(bad("not a relative '/'-separated path"));
    }
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("has an empty, '.' or '..' component"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! One behaviour suite, run against every storage backend.
    use super::*;

    use super::conformance::{keyed_race_suite, keyed_read_suite, keyed_write_suite};

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn object_suites_over_folder_and_temporary_storage() {
        let dir = tempfile::tempdir().unwrap();
        let folder = FolderStorage::new(dir.path());
        super::conformance::object_write_suite(&folder);
        super::conformance::object_race_suite(&folder);
        super::conformance::object_batch_suite(&folder);
        let temporary = TemporaryStorage::new().unwrap();
        super::conformance::object_write_suite(&temporary);
        super::conformance::object_race_suite(&temporary);
        super::conformance::object_batch_suite(&temporary);
        // A read-only share over a folder holding one object reads the same.
        let scratch = tempfile::tempdir().unwrap();
        let seeded = b"seeded";
        folder
            .put(
                &Oid::of_bytes(seeded).object_key(),
                &file(scratch.path(), "s", seeded),
            )
            .unwrap();
        super::conformance::object_read_suite(&ReadOnly::new(folder), seeded);
    }

    #[test]
    fn pack_suite_over_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        super::conformance::pack_suite(&|| FolderStorage::new(dir.path()));
    }

    #[test]
    fn a_chunked_push_whose_uploads_all_fail_returns_the_error_and_does_not_hang() {
        use crate::packs::{PackWrites, Packed};
        let dir = tempfile::tempdir().unwrap();
        // A remote root under a regular file: every write fails (even for root).
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let storage = Packed::new(
            FolderStorage::new(blocker.join("remote")),
            PackWrites::Packs,
            Some(dir.path().join("indexes")),
        );
        let size = crate::packs::recipe::CHUNKED_MIN as usize + (8 << 20);
        let bytes = super::conformance::noise(size, 1);
        let src = dir.path().join("big");
        std::fs::write(&src, &bytes).unwrap();
        let key = Oid::of_bytes(&bytes).object_key();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results =
                storage.put_many_if_absent(&[(key, src)], &crate::report::Counter::default());
            let _ = done.send(results.into_iter().map(|r| r.is_err()).collect::<Vec<_>>());
        });
        let failed = finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the push returned");
        assert_eq!(failed, vec![true]);
    }

    #[test]
    fn chunk_suite_over_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        super::conformance::chunk_suite(&|| FolderStorage::new(dir.path()));
    }

    #[test]
    fn folder_storage() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FolderStorage::new(dir.path());
        keyed_write_suite(&storage);
        keyed_race_suite(&storage);
        // Keys are files under the root, in the shared partitioned layout.
        assert_eq!(
            storage.path("runs/ra/ce").unwrap(),
            dir.path().join("runs/ra/ce")
        );
        assert!(storage.open("runs/ra/ce").unwrap().is_some());
        assert!(storage.open("runs/ra/zz").unwrap().is_none());
    }

    #[test]
    fn a_big_upload_under_the_wrong_object_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FolderStorage::new(dir.path());
        let scratch = tempfile::tempdir().unwrap();
        let big = vec![7u8; 9 << 20];
        let src = file(scratch.path(), "big", &big);
        let wrong = Oid::of_bytes(b"something else").object_key();
        let err = storage.put_if_absent(&wrong, &src).unwrap_err();
        assert!(
            err.to_string().contains("not the object its key names"),
            "{err}"
        );
        assert!(!storage.exists(&wrong).unwrap(), "nothing was published");
        let files = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .filter(|entry| entry.as_ref().unwrap().file_type().is_file())
            .count();
        assert_eq!(files, 0, "no temp file left");
        // Under its own key it goes in, through the same pipeline.
        let right = Oid::of_bytes(&big).object_key();
        storage.put_if_absent(&right, &src).unwrap();
        assert_eq!(storage.hash(&right).unwrap(), Some(Oid::of_bytes(&big)));
    }

    #[test]
    fn temporary_storage_is_removed_on_drop() {
        let storage = TemporaryStorage::new().unwrap();
        keyed_write_suite(&storage);
        keyed_race_suite(&storage);
        let root = storage.path("x").unwrap().parent().unwrap().to_path_buf();
        assert!(root.exists());
        drop(storage);
        assert!(!root.exists());
    }

    #[test]
    fn read_only_share_reads_like_its_inner_storage() {
        let dir = tempfile::tempdir().unwrap();
        let inner = FolderStorage::new(dir.path());
        let scratch = tempfile::tempdir().unwrap();
        inner
            .put("objects/aa/bb", &file(scratch.path(), "f", b"shared"))
            .unwrap();
        let share = ReadOnly::new(FolderStorage::new(dir.path()));
        keyed_read_suite(&share, "objects/aa/bb", b"shared");
        assert!(share.describe().ends_with("(read-only)"));
    }
}
