//! Caches of keys, one [`Cache`] trait over four kinds (the storage-and-caching design):
//!
//! - [`LocalReadOnlyCache`]: a local read-only storage (a cluster share) served in
//!   place, no copy;
//! - [`LocalCache`]: keys kept in the local LRU cache only;
//! - [`CopyToLocalCache`]: read storages in order (`first` or `newest`), hits copied
//!   into the local cache and revalidated on later gets;
//! - [`SynchronizedRemoteAndLocalCache`]: one remote, written through, read through.
//!
//! Every byte copied from a storage is hashed on the way in and checked against what
//! the storage reports. [`open_cache`] builds the cache a configuration names
//! (`[caches.<name>]`, or the built-in `local` and `public`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, Env, ReadPolicy};
use crate::error::{Error, IoContext, Result};
use crate::oid::Oid;
use crate::remote::Remotes;
use crate::storage::{ReadStorage, WriteStorage};

pub use crate::cache::LocalCache;

pub mod conformance;
pub mod keys;
mod read_only;
mod remote;

pub use keys::{KeyFetch, PutCondition};
pub use read_only::LocalReadOnlyCache;
pub use remote::{CopyToLocalCache, SynchronizedRemoteAndLocalCache};

/// What callers use, whichever cache they were handed: keys in, local paths out.
pub trait Cache: Send + Sync {
    /// What the cache is, for messages.
    fn describe(&self) -> String;
    /// The key's current bytes in a local read-only file (fetched if needed), named as
    /// the key is. With `expected`, only a copy of those bytes will do: a storage whose
    /// copy hashes otherwise is skipped (with a warning) for the next, and when none has
    /// it the error is [`Error::NoMatchingCopy`] (or [`Error::HashMismatch`] with one
    /// storage). A key that exists nowhere is [`Error::NotFound`].
    fn fetch(&self, key: &str, expected: Option<&Oid>) -> Result<KeyFetch>;
    /// A local read-only path holding the key's current bytes (fetched if needed); its
    /// file name is the key's. A key that exists nowhere is [`Error::NotFound`].
    fn get(&self, key: &str) -> Result<PathBuf> {
        Ok(self.fetch(key, None)?.path)
    }
    /// Every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// The local cache the copies live in, if the cache keeps copies.
    fn local(&self) -> Option<&LocalCache> {
        None
    }
    /// The key's current bytes, opened for reading.
    fn open(&self, key: &str) -> Result<File> {
        let path = self.get(key)?;
        File::open(&path).at(path)
    }
    /// The BLAKE3 oid of the key's bytes, `None` if it does not exist.
    fn hash(&self, key: &str) -> Result<Option<Oid>>;
    /// When the key was last written, `None` if it does not exist.
    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>>;
    /// Stores `src` under `key` if `condition` holds (a lost race is an error); false
    /// when `IfNewer` found the stored copy at least as new. Read-only caches refuse.
    fn put(&self, key: &str, src: &Path, condition: PutCondition) -> Result<bool>;
    /// Deletes the key, only if it holds `expected` when given; false if it was not
    /// there. Read-only caches refuse.
    fn delete(&self, key: &str, expected: Option<Oid>) -> Result<bool>;
}

impl Cache for LocalCache {
    fn describe(&self) -> String {
        format!("the local cache {}", self.root().display())
    }

    fn fetch(&self, key: &str, expected: Option<&Oid>) -> Result<KeyFetch> {
        keys::get_local(self, key, expected)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        keys::list_local(self, prefix)
    }

    fn local(&self) -> Option<&LocalCache> {
        Some(self)
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>> {
        Ok(keys::local_key(self, key)?.map(|found| found.oid))
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        Ok(keys::local_key(self, key)?.map(|found| found.modified))
    }

    fn put(&self, key: &str, src: &Path, condition: PutCondition) -> Result<bool> {
        keys::put_local(self, key, src, condition)
    }

    fn delete(&self, key: &str, expected: Option<Oid>) -> Result<bool> {
        keys::remove_local(self, key, expected)
    }
}

/// A cache that may only be read was asked to write.
fn read_only(cache: &dyn Cache) -> Error {
    Error::ReadOnlyCache {
        cache: cache.describe(),
    }
}

/// A cache as `czc cache list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamedCache {
    pub name: String,
    /// `local-read-only`, `local`, `copy-to-local` or `synchronized`.
    pub kind: &'static str,
    pub read: Vec<String>,
    pub write: Option<String>,
    pub default: bool,
    pub builtin: bool,
}

/// Every cache the configuration names (built-in ones first), and which is the default.
pub fn list(config: &Config) -> Vec<NamedCache> {
    config
        .cache_names()
        .into_iter()
        .map(|name| {
            let (kind, read, write) = match plan(config, &name) {
                Ok(Plan::Local) => ("local", Vec::new(), None),
                Ok(Plan::InPlace(remote)) => ("local-read-only", vec![remote], None),
                Ok(Plan::Copy { read, write, .. }) => {
                    let kind = if write.is_some() {
                        "synchronized"
                    } else {
                        "copy-to-local"
                    };
                    (kind, read, write)
                }
                Err(_) => ("unconfigured", Vec::new(), None),
            };
            NamedCache {
                default: config.default_cache.as_deref().unwrap_or("local") == name,
                builtin: crate::config::BUILTIN_CACHES.contains(&name.as_str())
                    && !config.caches.contains_key(&name),
                name,
                kind,
                read,
                write,
            }
        })
        .collect()
}

/// What a named cache is made of.
enum Plan {
    Local,
    InPlace(String),
    Copy {
        read: Vec<String>,
        write: Option<String>,
        policy: ReadPolicy,
    },
}

fn plan(config: &Config, name: &str) -> Result<Plan> {
    if let Some(entry) = config.caches.get(name) {
        if !entry.copy {
            return match (entry.read.as_slice(), &entry.write) {
                ([one], None) => Ok(Plan::InPlace(one.clone())),
                _ => Err(Error::Config(crate::config::ConfigError::Value {
                    origin: "configuration".into(),
                    key: format!("caches.{name}.copy"),
                    value: "false".into(),
                    reason: "a cache served in place reads exactly one remote and writes none"
                        .into(),
                })),
            };
        }
        let read = if entry.read.is_empty() {
            entry.write.iter().cloned().collect()
        } else {
            entry.read.clone()
        };
        return Ok(Plan::Copy {
            read,
            write: entry.write.clone(),
            policy: entry.policy,
        });
    }
    match name {
        "local" => Ok(Plan::Local),
        "public" if config.remotes.contains_key("public") => Ok(Plan::Copy {
            read: vec!["public".into()],
            write: None,
            policy: ReadPolicy::First,
        }),
        "public" => Err(Error::UnknownCache {
            name: name.into(),
            known: "the built-in `public` cache reads the remote `public`: add it with `czc remote add public s3://<bucket>/<prefix> --anonymous --read-only`".into(),
        }),
        _ => Err(Error::UnknownCache {
            name: name.into(),
            known: config.cache_names().join(", "),
        }),
    }
}

/// Builds the cache `name` (else `cache.default`, else `local`) of a configuration;
/// remotes are resolved against `project_root`.
pub fn open_cache(
    config: &Config,
    env: &Env,
    project_root: &Path,
    name: Option<&str>,
) -> Result<Box<dyn Cache>> {
    let name = name.or(config.default_cache.as_deref()).unwrap_or("local");
    let local = || LocalCache::open(&config.cache);
    let remotes = Remotes::from_config(config, project_root, env);
    Ok(match plan(config, name)? {
        Plan::Local => Box::new(local()?),
        Plan::InPlace(remote) => {
            let storage = remotes.open_folder(&remote)?;
            Box::new(LocalReadOnlyCache::new(&remote, storage))
        }
        Plan::Copy {
            read,
            write,
            policy,
        } => {
            let mut storages: Vec<(String, Arc<dyn ReadStorage>)> = Vec::new();
            for remote in &read {
                let mut opened = remotes.open(remote)?.reader();
                if name == "public" && !config.caches.contains_key("public") {
                    // The built-in public cache never signs: anyone's bucket, no keys.
                    opened = remotes.open_anonymous(remote)?;
                }
                storages.push((remote.clone(), opened));
            }
            let cache = CopyToLocalCache::new(local()?, storages, policy);
            match write {
                Some(remote) => {
                    let (remote, writer): (String, Arc<dyn WriteStorage>) =
                        remotes.writer(Some(&remote))?;
                    Box::new(SynchronizedRemoteAndLocalCache::with_reads(
                        cache, &remote, writer,
                    ))
                }
                None => Box::new(cache),
            }
        }
    })
}
