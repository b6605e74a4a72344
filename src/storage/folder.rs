//! A local folder as storage: keys are relative paths under a root. Writes go through a
//! temp file in the destination folder, fsync, rename; conditional writes hold a lock
//! file in the root while they check and rename, so exactly one racer wins.

use crate::report::Progress;
use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{
    check_key, check_object_bytes, object_key_oid, LocalStorage, ReadStorage, StorageError,
    WriteStorage,
};
use crate::fsutil::{FileLock, LockMode};
use crate::oid::{self, Oid};

const LOCK_FILE: &str = ".czc-storage.lock";
const TEMP_PREFIX: &str = ".czc-tmp-";
/// Files from this size are copied by the chunked copy-hash-flush pipeline.
const PIPELINE_THRESHOLD: u64 = 8 << 20;
/// Files up to this size are copied with one read and one write.
const SMALL_FILE: u64 = 64 << 10;
/// Batches up to this size are made durable file by file; larger ones with syncfs.
const BATCH_MIN: usize = 16;

/// Keys are relative paths under a root folder (read-write).
///
/// ```
/// use czcache::storage::{FolderStorage, ReadStorage, WriteStorage};
/// let root = tempfile::tempdir()?;
/// let storage = FolderStorage::new(root.path());
/// let file = root.path().join("input");
/// std::fs::write(&file, b"bytes")?;
/// storage.put_if_absent("objects/ab/cd", &file)?;
/// assert!(storage.exists("objects/ab/cd")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FolderStorage {
    root: PathBuf,
}

impl FolderStorage {
    pub fn new(root: impl Into<PathBuf>) -> FolderStorage {
        FolderStorage { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(self, key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, key: &str, source: io::Error) -> StorageError {
        StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source,
        }
    }

    fn lost(&self, key: &str, found: impl Into<String>) -> StorageError {
        StorageError::LostRace {
            storage: self.describe(),
            key: key.into(),
            found: found.into(),
        }
    }

    /// Copies `src` into a temp file beside the key's file, durable but not yet visible.
    fn stage(
        &self,
        key: &str,
        src: &Path,
    ) -> Result<(tempfile::NamedTempFile, PathBuf), StorageError> {
        let (temp, dest) = self.stage_unsynced(key, src)?;
        temp.as_file().sync_all().map_err(|e| self.io(key, e))?;
        Ok((temp, dest))
    }

    /// [`stage`](Self::stage) without the fsync, for batches made durable at once.
    fn stage_unsynced(
        &self,
        key: &str,
        src: &Path,
    ) -> Result<(tempfile::NamedTempFile, PathBuf), StorageError> {
        self.stage_into_folder(key, src, false)
            .map(|(temp, dest, _)| (temp, dest))
    }

    /// Stages `src` for `key`; `folder_ready` skips creating the key's folder (a batch
    /// creates each once). Returns the temp file, its destination and the size.
    fn stage_into_folder(
        &self,
        key: &str,
        src: &Path,
        folder_ready: bool,
    ) -> Result<(tempfile::NamedTempFile, PathBuf, u64), StorageError> {
        let dest = self.file(key)?;
        let dir = dest.parent().unwrap_or(&self.root);
        if !folder_ready {
            fs::create_dir_all(dir).map_err(|e| self.io(key, e))?;
        }
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| self.io(key, e))?;
        let mut input = File::open(src).map_err(|e| self.io(key, e))?;
        let meta = input.metadata().map_err(|e| self.io(key, e))?;
        let size = meta.len();
        if size >= PIPELINE_THRESHOLD {
            // One big copy_file_range gets throttled on dirty pages and then waits on
            // the disk all at once; chunks written back as they land keep the copy
            // and the disk busy together, and the copy is hashed on the way.
            let (oid, _) = crate::fsutil::copy_hash_flush(
                &mut input,
                temp.as_file(),
                temp.path(),
                size,
                true,
                &|_| {},
            )
            .map_err(|e| self.io(key, e))?;
            check_object_bytes(key, &oid, src).map_err(|e| self.io(key, e))?;
        } else {
            // Smaller files: one read, checked against an object key, and one write.
            let mut bytes = vec![0u8; size as usize];
            io::Read::read_exact(&mut input, &mut bytes).map_err(|e| self.io(key, e))?;
            if object_key_oid(key).is_some() {
                check_object_bytes(key, &Oid::of_bytes(&bytes), src)
                    .map_err(|e| self.io(key, e))?;
            }
            io::Write::write_all(temp.as_file_mut(), &bytes).map_err(|e| self.io(key, e))?;
        }
        // A keyed file keeps the source's mtime, so put_if_newer compares content ages. An
        // object keeps its upload time: gc's grace period counts from when it arrived.
        if object_key_oid(key).is_none() {
            if let Ok(modified) = meta.modified() {
                let _ = temp.as_file().set_modified(modified);
            }
        }
        Ok((temp, dest, size))
    }

    fn lock(&self, key: &str) -> Result<FileLock, StorageError> {
        fs::create_dir_all(&self.root).map_err(|e| self.io(key, e))?;
        FileLock::acquire(
            &self.root.join(LOCK_FILE),
            LockMode::Exclusive,
            "the storage folder",
        )
        .map_err(|e| self.io(key, e))
    }

    fn publish(
        &self,
        key: &str,
        temp: tempfile::NamedTempFile,
        dest: &Path,
    ) -> Result<(), StorageError> {
        temp.persist(dest).map_err(|e| self.io(key, e.error))?;
        self.sync_dir(key, dest)
    }

    /// Makes a rename into `dest`'s folder durable.
    fn sync_dir(&self, key: &str, dest: &Path) -> Result<(), StorageError> {
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io(key, e))?;
        }
        Ok(())
    }

    /// Renames a staged temp file onto `dest` unless something is there already. A
    /// rename that refuses to replace is atomic by itself: no lock, so parallel pushes
    /// publish in parallel.
    fn publish_if_absent(
        &self,
        key: &str,
        temp: tempfile::TempPath,
        dest: &Path,
    ) -> Result<(), StorageError> {
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &*temp,
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                // The name moved; the temp guard must not delete the published file.
                let _ = temp.keep();
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => Err(self.lost(key, "it already exists")),
            // Filesystems without RENAME_NOREPLACE: check and rename under the lock.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                let _lock = self.lock(key)?;
                if dest.exists() {
                    return Err(self.lost(key, "it already exists"));
                }
                temp.persist(dest).map_err(|e| self.io(key, e.error))
            }
            Err(errno) => Err(self.io(key, errno.into())),
        }
    }

    fn current_hash(&self, key: &str, path: &Path) -> Result<Option<Oid>, StorageError> {
        match oid::hash_file(path) {
            Ok((oid, _)) => Ok(Some(oid)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.io(key, err)),
        }
    }
}

fn describe_found(found: Option<Oid>) -> String {
    match found {
        Some(oid) => format!("it now holds {oid}"),
        None => "it no longer exists".into(),
    }
}

impl ReadStorage for FolderStorage {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn io::Write,
    ) -> Result<Option<u64>, StorageError> {
        let path = self.file(key)?;
        let mut input = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.io(key, err)),
        };
        let want = range.end.saturating_sub(range.start);
        io::Seek::seek(&mut input, io::SeekFrom::Start(range.start))
            .map_err(|e| self.io(key, e))?;
        let copied =
            io::copy(&mut io::Read::take(&mut input, want), out).map_err(|e| self.io(key, e))?;
        if copied != want {
            return Err(super::short_range(self, key, want, copied));
        }
        Ok(Some(copied))
    }

    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        let path = self.file(key)?;
        let mut input = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.io(key, err)),
        };
        let size = input.metadata().map_err(|e| self.io(key, e))?.len();
        if size > max {
            return Err(super::too_long(self, key, max));
        }
        let copied = if size <= SMALL_FILE {
            // One read and one write, not copy_file_range's probing.
            let mut bytes = Vec::with_capacity(size as usize + 1);
            io::Read::read_to_end(&mut io::Read::take(&mut input, size + 1), &mut bytes)
                .map_err(|e| self.io(key, e))?;
            io::Write::write_all(out, &bytes).map_err(|e| self.io(key, e))?;
            bytes.len() as u64
        } else {
            // A file still growing stops at `max` too.
            let copied = io::copy(&mut io::Read::take(&mut input, max.saturating_add(1)), out)
                .map_err(|e| self.io(key, e))?;
            if copied > max {
                return Err(super::too_long(self, key, max));
            }
            copied
        };
        Ok(Some(copied))
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        let path = self.file(key)?;
        self.current_hash(key, &path)
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        match fs::metadata(self.file(key)?) {
            Ok(meta) => meta.modified().map(Some).map_err(|e| self.io(key, e)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.io(key, err)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.size(key)?.is_some())
    }

    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.file(key).map(Some)
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match fs::metadata(self.file(key)?) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.io(key, err)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        // Walk only the folder the prefix names, not the whole root.
        let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            check_key(self, dir_part)?;
            self.root.join(dir_part)
        };
        if !start.is_dir() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        for entry in walkdir::WalkDir::new(&start) {
            let entry = entry.map_err(|e| self.io(prefix, e.into()))?;
            let name = entry.file_name().to_string_lossy();
            if !entry.file_type().is_file() || name.starts_with(TEMP_PREFIX) || name == LOCK_FILE {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            if let Some(key) = rel.to_str() {
                if key.starts_with(prefix) {
                    keys.push(key.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

impl WriteStorage for FolderStorage {
    fn refresh(&self, keys: &[String]) -> Result<(), StorageError> {
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        for key in keys {
            let path = self.file(key)?;
            // Best effort: a share written by others may not let us; gc's refusal to
            // work from a stale history still protects those objects.
            let _ =
                rustix::fs::utimensat(rustix::fs::CWD, &path, &now, rustix::fs::AtFlags::empty());
        }
        Ok(())
    }

    fn sweep_stale_uploads(
        &self,
        prefixes: &[String],
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let mut swept = 0;
        for prefix in prefixes {
            let dir = prefix.trim_end_matches('/');
            if !dir.is_empty() {
                check_key(self, dir)?;
            }
            let start = self.root.join(dir);
            for entry in walkdir::WalkDir::new(&start).into_iter().flatten() {
                if !entry.file_type().is_file()
                    || !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                {
                    continue;
                }
                let stale = entry
                    .metadata()
                    .ok()
                    .and_then(|meta| meta.modified().ok())
                    .and_then(|time| time.elapsed().ok())
                    .is_some_and(|age| age >= older_than);
                if stale && fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
        }
        Ok(swept)
    }

    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        let (temp, dest) = self.stage(key, src)?;
        let _lock = self.lock(key)?;
        self.publish(key, temp, &dest)
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.file(key)?;
        let _lock = self.lock(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(self.io(key, err)),
        }
    }

    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        let (temp, dest) = self.stage(key, src)?;
        self.publish_if_absent(key, temp.into_temp_path(), &dest)?;
        self.sync_dir(key, &dest)
    }

    fn put_many_if_absent(
        &self,
        items: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        use rayon::prelude::*;
        if items.len() <= BATCH_MIN {
            return items
                .par_iter()
                .map(|(key, src)| {
                    let result = self.put_if_absent(key, src);
                    progress.bytes_done(fs::metadata(src).map(|m| m.len()).unwrap_or(0));
                    progress.files_done(1);
                    result
                })
                .collect();
        }
        // Copy everything, one syncfs for all the data, publish, one syncfs for all the
        // names: thousands of small objects cost two flushes, not two fsyncs each.
        let mut folders: Vec<PathBuf> = items
            .iter()
            .filter_map(|(key, _)| self.file(key).ok()?.parent().map(Path::to_path_buf))
            .collect();
        folders.sort_unstable();
        folders.dedup();
        let made: Vec<PathBuf> = folders
            .into_iter()
            .filter(|folder| fs::create_dir_all(folder).is_ok())
            .collect();
        let staged: Vec<Result<(tempfile::TempPath, PathBuf), StorageError>> = items
            .par_iter()
            .map(|(key, src)| {
                let ready = self
                    .file(key)
                    .ok()
                    .and_then(|dest| {
                        dest.parent()
                            .map(|dir| made.binary_search(&dir.to_path_buf()).is_ok())
                    })
                    .unwrap_or(false);
                match self.stage_into_folder(key, src, ready) {
                    Ok((temp, dest, size)) => {
                        progress.bytes_done(size);
                        progress.files_done(1);
                        Ok((temp.into_temp_path(), dest))
                    }
                    Err(err) => {
                        // A failed item is done too, as far as progress goes.
                        progress.bytes_done(fs::metadata(src).map(|m| m.len()).unwrap_or(0));
                        progress.files_done(1);
                        Err(err)
                    }
                }
            })
            .collect();
        if let Err(err) = crate::fsutil::sync_filesystem(&self.root) {
            let message = format!("syncing the new objects: {err}");
            return items
                .iter()
                .map(|(key, _)| Err(self.io(key, io::Error::new(err.kind(), message.clone()))))
                .collect();
        }
        let published: Vec<Result<(), StorageError>> = items
            .par_iter()
            .zip(staged)
            .map(|((key, _), staged)| {
                let (temp, dest) = staged?;
                self.publish_if_absent(key, temp, &dest)
            })
            .collect();
        if let Err(err) = crate::fsutil::sync_filesystem(&self.root) {
            let message = format!("syncing the new objects' names: {err}");
            return items
                .iter()
                .map(|(key, _)| Err(self.io(key, io::Error::new(err.kind(), message.clone()))))
                .collect();
        }
        published
    }

    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError> {
        let (temp, dest) = self.stage(key, src)?;
        let _lock = self.lock(key)?;
        let found = self.current_hash(key, &dest)?;
        if found != Some(*expected) {
            return Err(self.lost(key, describe_found(found)));
        }
        self.publish(key, temp, &dest)
    }

    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
        let src_time = fs::metadata(src)
            .and_then(|m| m.modified())
            .map_err(|e| self.io(key, e))?;
        let (temp, dest) = self.stage(key, src)?;
        let _lock = self.lock(key)?;
        if let Some(stored) = self.last_modified(key)? {
            if stored >= src_time {
                return Ok(false);
            }
        }
        self.publish(key, temp, &dest)?;
        Ok(true)
    }

    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
        let path = self.file(key)?;
        let _lock = self.lock(key)?;
        let found = self.current_hash(key, &path)?;
        if found != Some(*expected) {
            return Err(self.lost(key, describe_found(found)));
        }
        fs::remove_file(&path).map_err(|e| self.io(key, e))
    }
}

impl LocalStorage for FolderStorage {
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.file(key)
    }

    fn open(&self, key: &str) -> Result<Option<File>, StorageError> {
        match File::open(self.file(key)?) {
            Ok(file) => Ok(Some(file)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.io(key, err)),
        }
    }
}

/// A local folder storage removed when dropped (tests use it; so may callers that want
/// a scratch area with the storage interface).
#[derive(Debug)]
pub struct TemporaryStorage {
    folder: FolderStorage,
    _dir: tempfile::TempDir,
}

impl TemporaryStorage {
    pub fn new() -> io::Result<TemporaryStorage> {
        let dir = tempfile::Builder::new().prefix("czc-storage-").tempdir()?;
        Ok(TemporaryStorage {
            folder: FolderStorage::new(dir.path()),
            _dir: dir,
        })
    }

    /// The folder storage inside.
    pub fn folder(&self) -> &FolderStorage {
        &self.folder
    }
}

impl ReadStorage for TemporaryStorage {
    fn describe(&self) -> String {
        format!("temporary {}", self.folder.root().display())
    }
    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        self.folder.copy_into(key, out, max)
    }
    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn io::Write,
    ) -> Result<Option<u64>, StorageError> {
        self.folder.copy_range_into(key, range, out)
    }
    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        self.folder.hash(key)
    }
    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        self.folder.last_modified(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.folder.exists(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.folder.size(key)
    }
    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.folder.local_file(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.folder.list(prefix)
    }
}

impl WriteStorage for TemporaryStorage {
    fn refresh(&self, keys: &[String]) -> Result<(), StorageError> {
        self.folder.refresh(keys)
    }

    fn sweep_stale_uploads(
        &self,
        prefixes: &[String],
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        self.folder.sweep_stale_uploads(prefixes, older_than)
    }

    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.folder.put(key, src)
    }
    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.folder.delete(key)
    }
    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.folder.put_if_absent(key, src)
    }
    fn put_many_if_absent(
        &self,
        items: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        self.folder.put_many_if_absent(items, progress)
    }
    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError> {
        self.folder.put_if_hash_matches(key, src, expected)
    }
    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
        self.folder.put_if_newer(key, src)
    }
    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
        self.folder.delete_if_hash_matches(key, expected)
    }
}

impl LocalStorage for TemporaryStorage {
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.folder.path(key)
    }
    fn open(&self, key: &str) -> Result<Option<File>, StorageError> {
        self.folder.open(key)
    }
}
