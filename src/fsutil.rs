//! File-system helpers shared by every module: the one atomic write, locks with a
//! waiting message and timeout, read-only modes, and the big-file copy pipeline.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};

use crate::oid::Oid;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for a lock before giving up, unless `CZC_LOCK_TIMEOUT` (seconds) says.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
/// A crash leaves either the old file or the new one, never a mix.
/// A new file gets 0666 less the umask (0644 as a rule), like any file a user's tools
/// write; a file replaced keeps its mode.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = parent_dir(path);
    let existing = fs::metadata(path).ok().map(|meta| meta.permissions());
    let mut temp = tempfile::Builder::new()
        .prefix(".czc-tmp-")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(parent)?;
    if let Some(mode) = existing {
        temp.as_file().set_permissions(mode)?;
    }
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Removes every write bit from a file's mode.
pub fn make_read_only(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    file.set_permissions(Permissions::from_mode(mode & !0o222))
}

/// Whether a mode has any write bit.
pub fn is_writable_mode(mode: u32) -> bool {
    mode & 0o222 != 0
}

/// Whether a mode has the owner's execute bit.
pub fn is_executable_mode(mode: u32) -> bool {
    mode & 0o100 != 0
}

/// Which kind of lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// An advisory lock on a file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock: tries at once, then polls, saying on stderr that it is waiting if
    /// that takes over a second, until `CZC_LOCK_TIMEOUT` seconds (default 300) have passed.
    pub fn acquire(path: &Path, mode: LockMode, what: &str) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        Self::wait_for(file, path, mode, what)
    }

    fn wait_for(file: File, path: &Path, mode: LockMode, what: &str) -> io::Result<FileLock> {
        if try_lock(&file, mode)? {
            return Ok(FileLock {
                file,
                path: path.into(),
            });
        }
        let timeout = lock_timeout();
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut said = false;
        loop {
            std::thread::sleep(pause);
            if try_lock(&file, mode)? {
                return Ok(FileLock {
                    file,
                    path: path.into(),
                });
            }
            // Short waits (another thread renaming a file) are not worth a message.
            if !said && start.elapsed() >= Duration::from_secs(1) {
                crate::report::process_reporter().notice(&format!(
                    "waiting for the lock on {what} ({})",
                    path.display()
                ));
                said = true;
            }
            if start.elapsed() >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "timed out after {}s waiting for the lock on {what}; another czc is using it (raise CZC_LOCK_TIMEOUT to wait longer)",
                        timeout.as_secs()
                    ),
                ));
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// [`FileLock::acquire`] through a read-only handle on an existing lock file (a cache
    /// this user may not write to).
    pub fn acquire_read_only(path: &Path, mode: LockMode, what: &str) -> io::Result<FileLock> {
        let file = File::open(path)?;
        Self::wait_for(file, path, mode, what)
    }

    /// Takes the lock only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(try_lock(&file, mode)?.then(|| FileLock {
            file,
            path: path.into(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same lock, after its file was renamed to `path`.
    pub fn renamed(mut self, path: PathBuf) -> FileLock {
        self.path = path;
        self
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

// std's File locks (flock on Unix) are what fs4 wraps; since Rust 1.89 they are in std.
fn try_lock(file: &File, mode: LockMode) -> io::Result<bool> {
    let result = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(err)) => Err(err),
    }
}

fn lock_timeout() -> Duration {
    std::env::var("CZC_LOCK_TIMEOUT")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LOCK_TIMEOUT)
}

/// A claim file this old and unlocked belongs to a dead process.
const STALE_CLAIM_AGE: Duration = Duration::from_secs(60);

/// Makes a private folder `<parent>/<pid>-<random>` owned by this process (the cache's
/// staging, a project's temp folder), removed by [`sweep_dead_private_dirs`] once the
/// process is gone. Its lock file is
/// locked under a private name and only then renamed to `<folder>.lock`, so a sweeper
/// never sees a lock that is free because its owner has not taken it yet (it would
/// remove a live process's folder).
pub fn claim_private_dir(tmp: &Path) -> io::Result<PrivateDir> {
    let pending = tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .suffix(".claim")
        .tempfile_in(tmp)?;
    let lock = FileLock::try_acquire(pending.path(), LockMode::Exclusive)?
        .ok_or_else(|| io::Error::other("a fresh staging lock was already locked"))?;
    let claim = pending.path().to_path_buf();
    let folder = claim.with_extension("");
    let lock_path = claim.with_extension("lock");
    pending.persist(&lock_path).map_err(|err| err.error)?;
    fs::create_dir(&folder)?;
    Ok(PrivateDir {
        path: folder,
        lock: Some(lock.renamed(lock_path)),
    })
}

/// A folder from [`claim_private_dir`]: this process's while it holds the lock, removed
/// (with its lock file) when dropped.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    lock: Option<FileLock>,
}

impl PrivateDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets go of the folder as a killed process would: lock released, files left for
    /// the next sweep.
    pub fn abandon(mut self) {
        self.lock = None;
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = fs::remove_dir_all(&self.path);
            // Still ours (the lock is held), so removing it cannot race a sweeper.
            let _ = fs::remove_file(lock.path());
        }
    }
}

/// Removes the private folders of processes that died (their lock is free).
pub fn sweep_dead_private_dirs(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "lock") {
            if let Ok(Some(_lock)) = FileLock::try_acquire(&path, LockMode::Exclusive) {
                let _ = fs::remove_dir_all(path.with_extension(""));
                let _ = fs::remove_file(&path);
            }
        } else if path.extension().is_some_and(|ext| ext == "claim") {
            // A claim is locked right after it is made: one that is old and free was
            // left by a process killed in between.
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|time| time.elapsed().unwrap_or_default() > STALE_CLAIM_AGE);
            if old {
                if let Ok(Some(_lock)) = FileLock::try_acquire(&path, LockMode::Exclusive) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

/// Time since the Unix epoch (zero for times before it).
pub fn since_epoch(time: std::time::SystemTime) -> Duration {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    since_epoch(std::time::SystemTime::now()).as_millis() as i64
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i128 {
    since_epoch(std::time::SystemTime::now()).as_nanos() as i128
}

/// Asks for a bigger buffer on a pipe (up to the system's `pipe-max-size`): a 64 KiB
/// pipe makes writer and reader hand its lock back and forth for every packet of a
/// gigabyte-sized stream. Not a pipe, or not allowed: nothing changes.
pub fn grow_pipe(fd: impl std::os::fd::AsFd, size: usize) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, size);
}

/// syncfs(2) on the filesystem holding `path`: one flush for a batch of new files,
/// instead of an fsync each.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

/// Copies a big file into `temp` in one pass of overlapping workers: this thread copies
/// chunks in the kernel (copy_file_range), a hasher hashes each chunk from the copy as
/// it lands (so the oid names the bytes placed, even if the source changes meanwhile),
/// and, with `flush`, a flusher pushes written chunks to disk so the final fsync has
/// little left to do. Returns the oid and the bytes copied.
pub fn copy_hash_flush(
    src: &mut File,
    temp: &File,
    temp_path: &Path,
    size_hint: u64,
    flush: bool,
    report: &(dyn Fn(u64) + Sync),
) -> io::Result<(Oid, u64)> {
    use std::sync::mpsc;
    const CHUNK: u64 = 32 << 20;
    let mut reader = File::open(temp_path)?;
    let (to_hasher, hasher_rx) = mpsc::channel::<u64>();
    let (to_flusher, flusher_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || -> io::Result<(blake3::Hash, u64)> {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut hashed = 0u64;
            for copied in hasher_rx {
                while hashed < copied {
                    let want = ((copied - hashed) as usize).min(buf.len());
                    let n = reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "staged copy shrank while hashing",
                        ));
                    }
                    hasher.update(&buf[..n]);
                    hashed += n as u64;
                }
            }
            Ok((hasher.finalize(), hashed))
        });
        let flusher = scope.spawn(move || -> io::Result<()> {
            while flusher_rx.recv().is_ok() {
                // Coalesce: one fdatasync covers every chunk written so far.
                while flusher_rx.try_recv().is_ok() {}
                if flush {
                    temp.sync_data()?;
                }
            }
            Ok(())
        });
        let mut copied = 0u64;
        let mut dest = temp;
        let copy_result = loop {
            let want = CHUNK.max(size_hint / 64);
            match io::copy(&mut Read::by_ref(src).take(want), &mut dest) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    copied += n;
                    report(n);
                    let _ = to_hasher.send(copied);
                    let _ = to_flusher.send(());
                }
                Err(err) => break Err(err),
            }
        };
        drop(to_hasher);
        drop(to_flusher);
        let hashed = hasher
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))?;
        let flushed = flusher
            .join()
            .map_err(|_| io::Error::other("flushing thread panicked"))?;
        copy_result?;
        flushed?;
        let (hash, hashed) = hashed?;
        debug_assert_eq!(hashed, copied);
        Ok((Oid::from_hash(hash), copied))
    })
}

/// Renames `from` to `to` unless `to` exists: `Ok(false)` then, and `from` stays. Atomic
/// where the filesystem has RENAME_NOREPLACE; elsewhere a check, then a rename.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(Errno::INVAL | Errno::NOSYS) => {
            if to.exists() {
                return Ok(false);
            }
            fs::rename(from, to).map(|()| true)
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweeper_never_removes_a_live_private_folder() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (parent, stop) = (parent.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep_dead_private_dirs(&parent);
                }
            })
        };
        let mut claimed = Vec::new();
        for _ in 0..300 {
            let dir = claim_private_dir(&parent).unwrap();
            fs::write(dir.path().join("work"), b"in progress").unwrap();
            claimed.push(dir);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sweeper.join().unwrap();
        for dir in &claimed {
            assert!(
                dir.path().join("work").is_file(),
                "{} was swept while live",
                dir.path().display()
            );
            assert!(dir.path().with_extension("lock").is_file());
        }
        // Once their owner is gone, the next sweep removes them all.
        claimed.into_iter().for_each(PrivateDir::abandon);
        assert!(fs::read_dir(&parent).unwrap().count() > 0);
        sweep_dead_private_dirs(&parent);
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two!").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two!");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn exclusive_lock_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::acquire(&path, LockMode::Exclusive, "test").unwrap();
        assert!(FileLock::try_acquire(&path, LockMode::Shared)
            .unwrap()
            .is_none());
        drop(held);
        let shared = FileLock::try_acquire(&path, LockMode::Shared).unwrap();
        assert!(shared.is_some());
        assert!(FileLock::try_acquire(&path, LockMode::Shared)
            .unwrap()
            .is_some());
        assert!(FileLock::try_acquire(&path, LockMode::Exclusive)
            .unwrap()
            .is_none());
    }
}
