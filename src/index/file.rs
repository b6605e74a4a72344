//! What the CSV and JSON indexes share: the whole table is read, changed in memory and
//! written back atomically, under an exclusive lock so concurrent writers lose nothing.
//! Readers need no lock: the rename makes every version they can see complete.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{merge_entry, Entry, IndexError};
use crate::fsutil::{write_atomic, FileLock, LockMode};
use crate::oid::Oid;

/// How one text format encodes the table.
pub(crate) trait TableFormat: Send + Sync {
    fn decode(&self, bytes: &[u8]) -> Result<Vec<Entry>, String>;
    fn encode(&self, entries: &[Entry]) -> Vec<u8>;
}

/// A whole-table index file in some [`TableFormat`].
pub(crate) struct TableFile<F> {
    path: PathBuf,
    lock_path: PathBuf,
    format: F,
}

impl<F: TableFormat> TableFile<F> {
    pub fn new(path: PathBuf, format: F) -> Self {
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        TableFile {
            lock_path: path.with_file_name(lock_name),
            path,
            format,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> IndexError {
        IndexError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub fn read(&self) -> Result<Vec<Entry>, IndexError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => self
                .format
                .decode(&bytes)
                .map_err(|reason| IndexError::Corrupt {
                    path: self.path.clone(),
                    reason,
                }),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(_) if self.path.is_dir() => Err(IndexError::Corrupt {
                path: self.path.clone(),
                reason: "it is a folder, not a file".into(),
            }),
            Err(err) => Err(self.io(err)),
        }
    }

    /// Reads, applies `change`, writes back, all under the exclusive lock.
    pub fn update(&self, change: impl FnOnce(&mut HashMap<Oid, Entry>)) -> Result<(), IndexError> {
        let _lock = self.lock()?;
        let mut map: HashMap<Oid, Entry> = HashMap::new();
        for entry in self.read()? {
            merge_entry(&mut map, &entry);
        }
        change(&mut map);
        self.write(map)
    }

    pub fn insert(&self, entries: &[Entry]) -> Result<(), IndexError> {
        self.update(|map| entries.iter().for_each(|entry| merge_entry(map, entry)))
    }

    pub fn touch(&self, oids: &[Oid], now: i64) -> Result<(), IndexError> {
        self.update(|map| {
            for oid in oids {
                if let Some(entry) = map.get_mut(oid) {
                    entry.last_used_at = now;
                    entry.hits += 1;
                }
            }
        })
    }

    pub fn mark_pushed(&self, oids: &[Oid]) -> Result<(), IndexError> {
        self.update(|map| {
            for oid in oids {
                if let Some(entry) = map.get_mut(oid) {
                    entry.pushed = true;
                }
            }
        })
    }

    pub fn remove(&self, oids: &[Oid]) -> Result<(), IndexError> {
        self.update(|map| {
            for oid in oids {
                map.remove(oid);
            }
        })
    }

    pub fn get(&self, oid: &Oid) -> Result<Option<Entry>, IndexError> {
        Ok(self.read()?.into_iter().find(|entry| entry.oid == *oid))
    }

    /// Writes a whole new table without reading the old one, which may be corrupt.
    pub fn replace(&self, entries: &[Entry]) -> Result<(), IndexError> {
        let _lock = self.lock()?;
        let mut map = HashMap::new();
        entries
            .iter()
            .for_each(|entry| merge_entry(&mut map, entry));
        self.write(map)
    }

    fn lock(&self) -> Result<FileLock, IndexError> {
        FileLock::acquire(&self.lock_path, LockMode::Exclusive, "the cache index")
            .map_err(|err| self.io(err))
    }

    fn write(&self, map: HashMap<Oid, Entry>) -> Result<(), IndexError> {
        let mut entries: Vec<Entry> = map.into_values().collect();
        // Sorted output keeps the file stable and diffable.
        entries.sort_by_key(|entry| entry.oid);
        write_atomic(&self.path, &self.format.encode(&entries)).map_err(|err| self.io(err))
    }
}

/// Implements [`super::Index`] for a newtype over `TableFile`.
macro_rules! table_index {
    ($name:ident, $kind:expr) => {
        impl super::Index for $name {
            fn kind(&self) -> crate::config::IndexKind {
                $kind
            }
            fn path(&self) -> &std::path::Path {
                self.0.path()
            }
            fn insert(&self, entries: &[super::Entry]) -> Result<(), super::IndexError> {
                self.0.insert(entries)
            }
            fn touch(&self, oids: &[crate::oid::Oid], now: i64) -> Result<(), super::IndexError> {
                self.0.touch(oids, now)
            }
            fn remove(&self, oids: &[crate::oid::Oid]) -> Result<(), super::IndexError> {
                self.0.remove(oids)
            }
            fn mark_pushed(&self, oids: &[crate::oid::Oid]) -> Result<(), super::IndexError> {
                self.0.mark_pushed(oids)
            }
            fn get(
                &self,
                oid: &crate::oid::Oid,
            ) -> Result<Option<super::Entry>, super::IndexError> {
                self.0.get(oid)
            }
            fn entries(&self) -> Result<Vec<super::Entry>, super::IndexError> {
                self.0.read()
            }
            fn replace(&self, entries: &[super::Entry]) -> Result<(), super::IndexError> {
                self.0.replace(entries)
            }
        }
    };
}
pub(crate) use table_index;
