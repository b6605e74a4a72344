//! The stat cache: (size, mtime, inode) → oid for files in a project, so a no-op
//! `czc status` stats files instead of re-hashing them, like git's index.
//!
//! An entry is only kept when the file's mtime is clearly older than the moment it was
//! hashed: a write in the same clock tick as the hash could otherwise go unseen ("racy
//! git"). Such files are hashed again next time, and recorded then.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::fsutil;
use crate::oid::Oid;

const HEADER: &str = "czc-stat/1";
/// File timestamps come from a coarse clock; stay this far clear of it.
const RACY_MARGIN_NS: i128 = 100_000_000;

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            inode: meta.ino(),
        }
    }

    /// The stamp of a raw `stat` (from `statat`, which skips the path walk).
    #[allow(clippy::unnecessary_cast)] // field types differ between architectures
    pub fn of_stat(stat: &rustix::fs::Stat) -> FileStamp {
        FileStamp {
            size: stat.st_size as u64,
            mtime_ns: stat.st_mtime as i128 * 1_000_000_000 + stat.st_mtime_nsec as i128,
            inode: stat.st_ino as u64,
        }
    }
}

/// Keys are the raw bytes of absolute paths: hashing bytes is several times cheaper than
/// hashing a `Path` component by component, and a no-op status does 20,000 lookups.
type Key = Box<[u8]>;

fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// A per-project map from absolute path to the stamp and oid last seen.
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    entries: RwLock<HashMap<Key, (FileStamp, Oid), foldhash::fast::RandomState>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl StatCache {
    /// Loads the state file; a missing or unreadable one is an empty cache (it is only a
    /// speed-up).
    pub fn load(path: PathBuf) -> StatCache {
        let mut entries = HashMap::with_hasher(foldhash::fast::RandomState::default());
        if let Ok(text) = fs::read_to_string(&path) {
            entries.reserve(text.len() / 100);
            let mut lines = text.lines();
            if lines.next() == Some(HEADER) {
                for line in lines {
                    if let Some((key, value)) = parse_line(line) {
                        entries.insert(key, value);
                    }
                }
            }
        }
        StatCache {
            path,
            entries: RwLock::new(entries),
            dirty: Default::default(),
        }
    }

    /// The oid recorded for `path` if the file still has the same stamp.
    pub fn lookup(&self, path: &Path, meta: &fs::Metadata) -> Option<Oid> {
        self.lookup_stamp(path, FileStamp::of(meta))
    }

    /// [`StatCache::lookup`] for a stamp already taken.
    pub fn lookup_stamp(&self, path: &Path, stamp: FileStamp) -> Option<Oid> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        match entries.get(key(path)) {
            Some((seen, oid)) if *seen == stamp => Some(*oid),
            _ => None,
        }
    }

    /// Records what `path` hashed to; `hashed_at_ns` is when hashing began.
    pub fn record(&self, path: &Path, meta: &fs::Metadata, oid: Oid, hashed_at_ns: i128) {
        self.record_stamp(path, FileStamp::of(meta), oid, hashed_at_ns)
    }

    /// [`StatCache::record`] for a stamp already taken.
    pub fn record_stamp(&self, path: &Path, stamp: FileStamp, oid: Oid, hashed_at_ns: i128) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if stamp.mtime_ns >= hashed_at_ns - RACY_MARGIN_NS {
            // Racily clean: do not trust it next time.
            if entries.remove(key(path)).is_some() {
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        if entries.get(key(path)) != Some(&(stamp, oid)) {
            entries.insert(key(path).into(), (stamp, oid));
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Writes the state file if anything changed (atomically; failure only costs speed).
    pub fn save(&self) {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut text = String::with_capacity(entries.len() * 120);
        text.push_str(HEADER);
        text.push('\n');
        for (path, (stamp, oid)) in entries.iter() {
            let Ok(path) = std::str::from_utf8(path) else {
                continue;
            };
            if path.contains('\n') || path.contains('\t') {
                continue;
            }
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                stamp.size,
                stamp.mtime_ns,
                stamp.inode,
                oid.hex(),
                path
            ));
        }
        if let Some(parent) = self.path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = fsutil::write_atomic(&self.path, text.as_bytes());
    }
}

fn parse_line(line: &str) -> Option<(Key, (FileStamp, Oid))> {
    let mut parts = line.splitn(5, '\t');
    let size = parts.next()?.parse().ok()?;
    let mtime_ns = parts.next()?.parse().ok()?;
    let inode = parts.next()?.parse().ok()?;
    let oid = Oid::from_hex(parts.next()?).ok()?;
    let path: Key = parts.next()?.as_bytes().into();
    Some((
        path,
        (
            FileStamp {
                size,
                mtime_ns,
                inode,
            },
            oid,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_old_files_and_not_racy_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let oid = Oid::of_bytes(b"x");

        let cache = StatCache::load(state.clone());
        // Hashed right after the write: racy, not remembered.
        cache.record(&file, &meta, oid, FileStamp::of(&meta).mtime_ns + 1);
        assert_eq!(cache.lookup(&file, &meta), None);
        // Hashed a second later: remembered, and survives a reload.
        cache.record(
            &file,
            &meta,
            oid,
            FileStamp::of(&meta).mtime_ns + 1_000_000_000,
        );
        assert_eq!(cache.lookup(&file, &meta), Some(oid));
        cache.save();
        let reloaded = StatCache::load(state);
        assert_eq!(reloaded.lookup(&file, &meta), Some(oid));

        // A rewrite with new size is a miss.
        fs::write(&file, b"xy").unwrap();
        assert_eq!(reloaded.lookup(&file, &fs::metadata(&file).unwrap()), None);
    }
}
