//! czc: a content-addressed cache and version-control sidecar for large data files.
//!
//! The library holds all the logic; the `czc` binary only parses arguments and prints.
//! Start from [`ops`] (one function per command over an [`ops::Context`], returning a
//! serializable report: what the CLI drives), [`caches`] (the four caches of keys and
//! named caches) or [`cache::LocalCache`] (to embed the object cache in another tool).

pub mod cache;
pub mod caches;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod git;
pub mod index;
pub mod marker;
pub mod oid;
pub mod ops;
pub mod packs;
pub mod remote;
pub mod report;
pub mod serve;
pub mod statcache;
pub mod storage;
pub mod workspace;

pub use cache::{LocalCache, RemoteChain};
pub use caches::{open_cache, Cache};
pub use config::Config;
pub use error::{Error, Result};
pub use index::{Entry, Index};
pub use marker::{Manifest, ManifestEntry, Marker, MarkerKind};
pub use oid::Oid;
pub use storage::{
    open_storage, FolderStorage, HttpStorage, LocalStorage, ReadOnly, ReadStorage,
    TemporaryStorage, WriteStorage,
};
