//! The library's error type: every variant names the file, oid or value at fault.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::index::IndexError;
use crate::marker::MarkerError;
use crate::oid::Oid;

/// Everything a czc operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("marker {path}: {source}")]
    Marker {
        path: PathBuf,
        #[source]
        source: MarkerError,
    },
    #[error("manifest {oid} of {path}: {source}")]
    Manifest {
        path: PathBuf,
        oid: Oid,
        #[source]
        source: MarkerError,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{path} is {size} bytes, larger than the whole cache limit of {limit} bytes; raise cache.size_limit")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("object {oid} for {path} is not in the local cache and no remote has it")]
    NotCached { path: PathBuf, oid: Oid },
    #[error("object {oid} in the cache is corrupt and was moved to {quarantine}; save or fetch it again")]
    Corrupt { oid: Oid, quarantine: PathBuf },
    #[error("{path} has changes that are not saved; use --force to overwrite it, or `czc save` it first")]
    Modified { path: PathBuf },
    #[error("{path}: no such file, folder or marker")]
    NotFound { path: PathBuf },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("'{0}' is neither an oid, a marker nor a saved path")]
    BadTarget(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("object {oid} for {path} is not in the local cache, and no remote has it ({tried})")]
    NotInRemotes {
        path: PathBuf,
        oid: Oid,
        tried: String,
    },
    #[error("remote {remote} sent bytes for '{key}' that disagree with what it reports ({what}); nothing was kept")]
    RemoteDisagrees {
        remote: String,
        key: String,
        what: String,
    },
    #[error("no remote named '{name}' (configured: {known}); add one with `czc remote add {name} <url>`")]
    UnknownRemote { name: String, known: String },
    #[error(
        "remote '{name}' is read-only; push to a writable remote (remote.default or --remote)"
    )]
    ReadOnlyRemote { name: String },
    #[error("no remote to push to: set remote.default in .czcache.toml or pass --remote")]
    NoDefaultRemote,
    #[error("another czc is using the cache at {path}; try again when it is done")]
    Busy { path: PathBuf },
    /// git said no, or the repository could not be read.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("the manifest of folder marker {marker} is not cached and could not be had ({source}); if {data} is unchanged, `czc save {data}` rebuilds it, else `czc fetch` it from a remote that has it")]
    ManifestLost {
        marker: PathBuf,
        data: PathBuf,
        #[source]
        source: Box<Error>,
    },
    #[error("{link} is a symlink; czc never writes through one (to place {dest}); remove it or check out elsewhere")]
    Symlink { link: PathBuf, dest: PathBuf },
    /// A folder whose files cannot make a manifest (two paths that collide).
    #[error("{path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: MarkerError,
    },
    #[error("{cache} is read-only: nothing can be written through it")]
    ReadOnlyCache { cache: String },
    #[error("no cache named '{name}' ({known})")]
    UnknownCache { name: String, known: String },
    /// A copy of a key whose bytes are not the ones the caller knows it must have.
    #[error("{storage}: {key} hashes to {found}, not the expected {expected}")]
    HashMismatch {
        storage: String,
        key: String,
        expected: Oid,
        found: Oid,
    },
    /// Every storage was tried and none had the key with the expected hash.
    #[error("no copy of {key} hashes to the expected {expected} ({tried})")]
    NoMatchingCopy {
        key: String,
        expected: Oid,
        tried: String,
    },
    /// Arguments that do not go together (the CLI exits 2 for these).
    #[error("{0}")]
    Usage(String),
}

/// Short for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

/// Serializes errors a report carries as their one-line messages (`--json` documents).
pub fn serialize_messages<S: serde::Serializer>(
    errors: &[Error],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_seq(errors.iter().map(|err| err.to_string().replace('\n', " ")))
}
