//! The index: the local cache's record of its objects (size, when added, when last used,
//! how often). It only speeds things up: the object files on disk are the truth, and
//! `LocalCache::verify` rebuilds the index from them. Three backends share one contract.

mod csv;
mod file;
mod json;
mod sqlite;

use std::path::{Path, PathBuf};

pub use self::csv::CsvIndex;
pub use self::json::JsonIndex;
pub use self::sqlite::SqliteIndex;
use crate::config::IndexKind;
use crate::oid::Oid;

/// One object the cache holds. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub oid: Oid,
    pub size: u64,
    pub added_at: i64,
    pub last_used_at: i64,
    pub hits: u64,
    /// A remote holds a copy (pushed there, or fetched from there): safe to evict.
    #[serde(default)]
    pub pushed: bool,
}

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {path} is corrupt ({reason}); `czc cache verify` rebuilds it from the objects")]
    Corrupt { path: PathBuf, reason: String },
    #[error("index {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// The contract every index backend keeps. Every write is atomic and safe against other
/// processes using the same index; batches exist so a 20,000-file checkout is one write.
pub trait Index: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> IndexKind;
    /// The file that holds it.
    fn path(&self) -> &Path;
    /// Records objects. An oid already present keeps its `added_at` and `hits` and takes
    /// the newer `last_used_at`.
    fn insert(&self, entries: &[Entry]) -> Result<(), IndexError>;
    /// Marks objects used at `now`: `last_used_at = now`, `hits += 1`. Unknown oids are
    /// ignored (the disk, not the index, says what exists).
    fn touch(&self, oids: &[Oid], now: i64) -> Result<(), IndexError>;
    /// Records that a remote holds these objects; unknown oids are ignored.
    fn mark_pushed(&self, oids: &[Oid]) -> Result<(), IndexError>;
    /// Forgets objects; unknown oids are ignored.
    fn remove(&self, oids: &[Oid]) -> Result<(), IndexError>;
    /// One entry, or `None` if the index does not know the oid.
    fn get(&self, oid: &Oid) -> Result<Option<Entry>, IndexError>;
    /// Every entry, in no particular order.
    fn entries(&self) -> Result<Vec<Entry>, IndexError>;
    /// Replaces the whole index (repair from the disk).
    fn replace(&self, entries: &[Entry]) -> Result<(), IndexError>;
}

/// The index file name of each backend, in the cache root.
pub fn file_name(kind: IndexKind) -> &'static str {
    match kind {
        IndexKind::Csv => "index.csv",
        IndexKind::Json => "index.json",
        IndexKind::Sqlite => "index.sqlite",
    }
}

/// Opens (creating if needed) the index of `kind` in the cache root.
pub fn open_index(root: &Path, kind: IndexKind) -> Result<Box<dyn Index>, IndexError> {
    let path = root.join(file_name(kind));
    Ok(match kind {
        IndexKind::Csv => Box::new(CsvIndex::open(path)),
        IndexKind::Json => Box::new(JsonIndex::open(path)),
        IndexKind::Sqlite => Box::new(SqliteIndex::open(path)?),
    })
}

/// Applies `insert` semantics to one entry of an in-memory map.
pub(crate) fn merge_entry(map: &mut std::collections::HashMap<Oid, Entry>, entry: &Entry) {
    map.entry(entry.oid)
        .and_modify(|old| {
            old.size = entry.size;
            old.last_used_at = old.last_used_at.max(entry.last_used_at);
            old.pushed |= entry.pushed;
        })
        .or_insert_with(|| entry.clone());
}

#[cfg(test)]
mod conformance {
    //! One behaviour suite, run against every backend.
    use super::*;

    fn entry(byte: u8, added: i64) -> Entry {
        Entry {
            oid: Oid::of_bytes(&[byte]),
            size: byte as u64 * 10,
            added_at: added,
            last_used_at: added,
            hits: 0,
            pushed: false,
        }
    }

    fn each_backend(test: impl Fn(&dyn Index)) {
        for kind in [IndexKind::Csv, IndexKind::Json, IndexKind::Sqlite] {
            let dir = tempfile::tempdir().unwrap();
            let index = open_index(dir.path(), kind).unwrap();
            assert_eq!(index.kind(), kind);
            test(index.as_ref());
            // Reopening sees the same state: nothing lives only in memory.
            let reopened = open_index(dir.path(), kind).unwrap();
            let mut a = index.entries().unwrap();
            let mut b = reopened.entries().unwrap();
            a.sort_by_key(|e| e.oid);
            b.sort_by_key(|e| e.oid);
            assert_eq!(a, b, "{kind:?} reopened");
        }
    }

    #[test]
    fn empty_index_has_no_entries() {
        each_backend(|index| {
            assert!(index.entries().unwrap().is_empty());
            assert!(index.get(&Oid::of_bytes(b"x")).unwrap().is_none());
        });
    }

    #[test]
    fn insert_get_and_reinsert_keeps_added_at() {
        each_backend(|index| {
            index.insert(&[entry(1, 100), entry(2, 200)]).unwrap();
            assert_eq!(index.get(&entry(1, 0).oid).unwrap(), Some(entry(1, 100)));
            let mut again = entry(1, 500);
            again.hits = 9;
            index.insert(&[again]).unwrap();
            let got = index.get(&entry(1, 0).oid).unwrap().unwrap();
            assert_eq!(got.added_at, 100);
            assert_eq!(got.last_used_at, 500);
            assert_eq!(got.hits, 0);
            assert_eq!(index.entries().unwrap().len(), 2);
        });
    }

    #[test]
    fn touch_counts_hits_and_ignores_unknown() {
        each_backend(|index| {
            index.insert(&[entry(1, 100)]).unwrap();
            let oid = entry(1, 0).oid;
            index.touch(&[oid, Oid::of_bytes(b"unknown")], 700).unwrap();
            index.touch(&[oid], 800).unwrap();
            let got = index.get(&oid).unwrap().unwrap();
            assert_eq!((got.last_used_at, got.hits), (800, 2));
            assert_eq!(index.entries().unwrap().len(), 1);
        });
    }

    #[test]
    fn pushed_flags_stick_across_reinsert() {
        each_backend(|index| {
            index.insert(&[entry(1, 1), entry(2, 2)]).unwrap();
            let oid = entry(1, 0).oid;
            index
                .mark_pushed(&[oid, Oid::of_bytes(b"unknown")])
                .unwrap();
            index.insert(&[entry(1, 50)]).unwrap();
            assert!(index.get(&oid).unwrap().unwrap().pushed);
            assert!(!index.get(&entry(2, 0).oid).unwrap().unwrap().pushed);
            assert_eq!(index.entries().unwrap().len(), 2);
        });
    }

    #[test]
    fn indexes_from_before_the_pushed_flag_still_load() {
        let oid = Oid::of_bytes(b"old");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.csv"),
            format!("oid,size,added_at,last_used_at,hits\n{oid},3,1,2,4\n"),
        )
        .unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("index.sqlite")).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE objects (oid TEXT PRIMARY KEY, size INTEGER NOT NULL, added_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL, hits INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO objects VALUES ('{oid}', 3, 1, 2, 4);"
        ))
        .unwrap();
        drop(conn);
        for kind in [IndexKind::Csv, IndexKind::Sqlite] {
            let index = open_index(dir.path(), kind).unwrap();
            let entry = index.get(&oid).unwrap().unwrap();
            assert_eq!(
                (entry.size, entry.hits, entry.pushed),
                (3, 4, false),
                "{kind:?}"
            );
            index.mark_pushed(&[oid]).unwrap();
            assert!(index.get(&oid).unwrap().unwrap().pushed, "{kind:?}");
        }
    }

    #[test]
    fn remove_and_replace() {
        each_backend(|index| {
            index
                .insert(&[entry(1, 1), entry(2, 2), entry(3, 3)])
                .unwrap();
            index
                .remove(&[entry(2, 0).oid, Oid::of_bytes(b"none")])
                .unwrap();
            let mut oids: Vec<_> = index.entries().unwrap().iter().map(|e| e.oid).collect();
            oids.sort();
            let mut want = vec![entry(1, 0).oid, entry(3, 0).oid];
            want.sort();
            assert_eq!(oids, want);
            index.replace(&[entry(9, 9)]).unwrap();
            assert_eq!(index.entries().unwrap(), vec![entry(9, 9)]);
        });
    }

    #[test]
    fn large_batches_are_one_write() {
        each_backend(|index| {
            let many: Vec<Entry> = (0..2000u32)
                .map(|i| Entry {
                    oid: Oid::of_bytes(&i.to_le_bytes()),
                    size: i as u64,
                    added_at: i as i64,
                    last_used_at: i as i64,
                    hits: 0,
                    pushed: false,
                })
                .collect();
            index.insert(&many).unwrap();
            let oids: Vec<Oid> = many.iter().map(|e| e.oid).collect();
            index.touch(&oids, 5000).unwrap();
            let all = index.entries().unwrap();
            assert_eq!(all.len(), 2000);
            assert!(all.iter().all(|e| e.hits == 1 && e.last_used_at == 5000));
        });
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        each_backend(|index| {
            let path = index.path().to_path_buf();
            let kind = index.kind();
            let root = path.parent().unwrap().to_path_buf();
            std::thread::scope(|scope| {
                for t in 0..4u8 {
                    let root = root.clone();
                    scope.spawn(move || {
                        // A separate handle per thread, as separate processes would have.
                        let own = open_index(&root, kind).unwrap();
                        for i in 0..25u8 {
                            own.insert(&[entry(t * 50 + i, i as i64)]).unwrap();
                        }
                    });
                }
            });
            assert_eq!(index.entries().unwrap().len(), 100);
        });
    }
}
