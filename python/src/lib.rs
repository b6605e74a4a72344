//! The Python extension `czcache._czcache`: the Rust storages, caches and marker
//! operations behind a few classes and functions; `czcache/__init__.py` gives them their
//! Python face (names, docstrings, pathlib, dataclasses).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use czcache::caches::{
    Cache, CopyToLocalCache, LocalReadOnlyCache, PutCondition, SynchronizedRemoteAndLocalCache,
};
use czcache::config::{Config, Env, ReadPolicy};
use czcache::oid::Oid;
use czcache::ops::{self, Context, Options};
use czcache::report::{Progress, Reporter};
use czcache::storage::{
    with_retries, FolderStorage, HttpStorage, ReadOnly, ReadStorage, StorageError, StorageOptions,
    Timeouts, WriteStorage,
};
use czcache::{Error, LocalCache};
use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;

/// A czcache error as the matching exception of `czcache.errors`.
fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    let class = match &err {
        Error::NotFound { .. } => "NotFound",
        Error::Storage(StorageError::LostRace { .. }) => "LostRace",
        Error::ReadOnlyCache { .. } | Error::ReadOnlyRemote { .. } => "ReadOnly",
        Error::HashMismatch { .. }
        | Error::NoMatchingCopy { .. }
        | Error::Corrupt { .. }
        | Error::RemoteDisagrees { .. }
        | Error::Storage(StorageError::TooLong { .. }) => "CorruptObject",
        Error::Storage(StorageError::BadKey { .. })
        | Error::Storage(StorageError::BadUrl { .. }) => "BadValue",
        _ => "Error",
    };
    raise(py, class, &err.to_string().replace('\n', " "))
}

fn raise(py: Python<'_>, class: &str, message: &str) -> PyErr {
    let raised = py
        .import("czcache.errors")
        .and_then(|errors| errors.getattr(class))
        .and_then(|class| class.call1((message,)));
    match raised {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}

fn storage_err(py: Python<'_>, err: StorageError) -> PyErr {
    to_py_err(py, err.into())
}

fn parse_oid(text: &str) -> PyResult<Oid> {
    text.parse()
        .map_err(|err: czcache::oid::OidError| PyValueError::new_err(err.to_string()))
}

/// Runs `work` without the GIL on a thread of its own, checking for Ctrl-C every 50 ms:
/// an interrupt returns at once (the transfer is abandoned: every write czc makes is to
/// a temp file renamed into place, so nothing half-written is ever seen).
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("czcache-io".into())
        .spawn(move || {
            let _ = done.send(work());
        })
        .map_err(|err| PyValueError::new_err(format!("starting an I/O thread: {err}")))?;
    // A Receiver is Send but not Sync: the detached closure must own it.
    let result = Mutex::new(result);
    let wait = || {
        let result = result.lock().unwrap_or_else(|p| p.into_inner());
        result.recv_timeout(std::time::Duration::from_millis(50))
    };
    loop {
        match py.detach(wait) {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyKeyboardInterrupt::new_err("the I/O thread ended"))
            }
        }
    }
}

fn to_datetime(py: Python<'_>, time: SystemTime) -> PyResult<Bound<'_, PyAny>> {
    let seconds = match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    let datetime = py.import("datetime")?;
    let utc = datetime.getattr("timezone")?.getattr("utc")?;
    datetime
        .getattr("datetime")?
        .call_method1("fromtimestamp", (seconds, utc))
}

fn json_to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text =
        serde_json::to_string(value).map_err(|err| PyValueError::new_err(err.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Warnings and progress of the library, handed to `czcache._report` (Python's
/// `warnings` and the progress callback the user set).
struct PyReporter;

impl Reporter for PyReporter {
    fn task(&self, title: &'static str) -> Arc<dyn Progress> {
        Arc::new(PyProgress {
            title,
            counts: Mutex::new([0; 4]),
        })
    }

    fn warn(&self, message: &str) {
        call_report("warn", (message.to_string(),));
    }

    fn notice(&self, message: &str) {
        call_report("notice", (message.to_string(),));
    }
}

fn call_report<A: for<'py> pyo3::call::PyCallArgs<'py>>(name: &str, args: A) {
    Python::attach(|py| {
        let called = py
            .import("czcache._report")
            .and_then(|report| report.getattr(name))
            .and_then(|function| function.call1(args));
        if let Err(err) = called {
            err.write_unraisable(py, None);
        }
    });
}

/// One task's counts: files done, files in all, bytes done, bytes in all.
struct PyProgress {
    title: &'static str,
    counts: Mutex<[u64; 4]>,
}

impl PyProgress {
    fn update(&self, change: impl FnOnce(&mut [u64; 4]), finished: bool) {
        let counts = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut counts);
            *counts
        };
        call_report(
            "progress",
            (
                self.title, counts[0], counts[1], counts[2], counts[3], finished,
            ),
        );
    }
}

impl Progress for PyProgress {
    fn add_work(&self, files: u64, bytes: u64) {
        self.update(
            |c| {
                c[1] += files;
                c[3] += bytes;
            },
            false,
        );
    }
    fn bytes_done(&self, bytes: u64) {
        self.update(|c| c[2] += bytes, false);
    }
    fn files_done(&self, files: u64) {
        self.update(|c| c[0] += files, false);
    }
    fn finish(&self) {
        self.update(|_| {}, true);
    }
}

/// One storage: a folder, an S3 prefix, a `czc serve` server. Read-only ones have no
/// writer; local ones have a folder.
#[pyclass(name = "Storage", frozen)]
struct PyStorage {
    /// What it is called in messages and in the local cache's records of its keys.
    name: String,
    reader: Arc<dyn ReadStorage>,
    writer: Option<Arc<dyn WriteStorage>>,
    folder: Option<FolderStorage>,
    temporary: Mutex<Option<tempfile::TempDir>>,
}

impl PyStorage {
    fn writer(&self, py: Python<'_>) -> PyResult<Arc<dyn WriteStorage>> {
        self.writer.clone().ok_or_else(|| {
            raise(
                py,
                "ReadOnly",
                &format!("{} is read-only: nothing can be written to it", self.name),
            )
        })
    }

    fn condition(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        condition: PutCondition,
    ) -> PyResult<bool> {
        let writer = self.writer(py)?;
        let (key, source) = (key.to_string(), PathBuf::from(source));
        interruptible(py, move || {
            czcache::caches::keys::put_key(writer.as_ref(), &key, &source, condition)
        })?
        .map_err(|err| to_py_err(py, err))
    }
}

#[pymethods]
impl PyStorage {
    fn describe(&self) -> String {
        self.reader.describe()
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn writable(&self) -> bool {
        self.writer.is_some()
    }

    /// Copies the key to `destination` (replaced atomically), checking its bytes against
    /// the size and hash the storage reports; returns the oid of what was copied.
    fn copy(&self, py: Python<'_>, key: &str, destination: &str) -> PyResult<String> {
        let reader = self.reader.clone();
        let name = self.name.clone();
        let (key, destination) = (key.to_string(), PathBuf::from(destination));
        interruptible(py, move || {
            verified_copy(&name, reader.as_ref(), &key, &destination)
        })?
        .map(|oid| oid.to_string())
        .map_err(|err| to_py_err(py, err))
    }

    fn get_hash(&self, py: Python<'_>, key: &str) -> PyResult<Option<String>> {
        let reader = self.reader.clone();
        let key = key.to_string();
        interruptible(py, move || with_retries(|| reader.hash(&key)))?
            .map(|oid| oid.map(|oid| oid.to_string()))
            .map_err(|err| storage_err(py, err))
    }

    fn get_last_modified<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let reader = self.reader.clone();
        let key = key.to_string();
        let time = interruptible(py, move || with_retries(|| reader.last_modified(&key)))?
            .map_err(|err| storage_err(py, err))?;
        time.map(|time| to_datetime(py, time)).transpose()
    }

    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let reader = self.reader.clone();
        let key = key.to_string();
        interruptible(py, move || with_retries(|| reader.exists(&key)))?
            .map_err(|err| storage_err(py, err))
    }

    #[pyo3(signature = (prefix=""))]
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<String>> {
        let reader = self.reader.clone();
        let prefix = prefix.to_string();
        interruptible(py, move || with_retries(|| reader.list(&prefix)))?
            .map_err(|err| storage_err(py, err))
    }

    fn copy_from(&self, py: Python<'_>, key: &str, source: &str) -> PyResult<bool> {
        self.condition(py, key, source, PutCondition::Always)
    }

    fn copy_from_if_absent(&self, py: Python<'_>, key: &str, source: &str) -> PyResult<bool> {
        self.condition(py, key, source, PutCondition::IfAbsent)
    }

    fn copy_from_if_local_is_newer(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
    ) -> PyResult<bool> {
        self.condition(py, key, source, PutCondition::IfNewer)
    }

    fn copy_from_if_overwriting_hash(
        &self,
        py: Python<'_>,
        key: &str,
        hash: &str,
        source: &str,
    ) -> PyResult<bool> {
        let expected = parse_oid(hash)?;
        self.condition(py, key, source, PutCondition::IfMatch(expected))
    }

    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let writer = self.writer(py)?;
        let key = key.to_string();
        interruptible(py, move || {
            czcache::storage::check_key(writer.as_ref(), &key)?;
            with_retries(|| writer.delete(&key))
        })?
        .map_err(|err| storage_err(py, err))
    }

    fn delete_if_hash_matches(&self, py: Python<'_>, key: &str, hash: &str) -> PyResult<()> {
        let writer = self.writer(py)?;
        let expected = parse_oid(hash)?;
        let key = key.to_string();
        interruptible(py, move || {
            czcache::storage::check_key(writer.as_ref(), &key)?;
            with_retries(|| writer.delete_if_hash_matches(&key, &expected))
        })?
        .map_err(|err| storage_err(py, err))
    }

    /// The file a key lives in, for local storages (whether or not it exists).
    fn path(&self, py: Python<'_>, key: &str) -> PyResult<String> {
        let Some(folder) = &self.folder else {
            return Err(PyValueError::new_err(format!(
                "{} is not a folder on this machine",
                self.name
            )));
        };
        czcache::storage::check_key(folder, key).map_err(|err| storage_err(py, err))?;
        czcache::storage::LocalStorage::path(folder, key)
            .map(|path| path.display().to_string())
            .map_err(|err| storage_err(py, err))
    }

    /// Removes a temporary storage's folder now (else when collected).
    fn close(&self) {
        self.temporary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// A copy from an untrusted storage: never more than the size it reports, the bytes
/// checked against its size and hash, then renamed into place.
fn verified_copy(
    name: &str,
    reader: &dyn ReadStorage,
    key: &str,
    destination: &Path,
) -> Result<Oid, Error> {
    czcache::storage::check_key(reader, key)?;
    let info = with_retries(|| reader.describe_key(key))?.ok_or_else(|| Error::NotFound {
        path: PathBuf::from(format!("{name}:{key}")),
    })?;
    let dir = czcache::fsutil::parent_dir(destination);
    let at = |source: std::io::Error| Error::Io {
        path: destination.into(),
        source,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".czc-tmp-")
        .tempfile_in(dir)
        .map_err(at)?;
    let copied = with_retries(|| {
        use std::io::Seek;
        let file = temp.as_file_mut();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .map_err(|source| StorageError::Io {
                storage: name.into(),
                key: key.into(),
                source,
            })?;
        reader.copy_into(key, file, info.size.unwrap_or(u64::MAX))
    })?
    .ok_or_else(|| Error::NotFound {
        path: PathBuf::from(format!("{name}:{key}")),
    })?;
    let (oid, _) = czcache::oid::hash_file(temp.path()).map_err(at)?;
    let disagrees = match (info.size, info.hash) {
        (Some(size), _) if size != copied => {
            Some(format!("{copied} bytes arrived, it reports {size}"))
        }
        (_, Some(hash)) if hash != oid => {
            Some(format!("the bytes hash to {oid}, it reports {hash}"))
        }
        _ => None,
    };
    if let Some(what) = disagrees {
        return Err(Error::RemoteDisagrees {
            remote: name.into(),
            key: key.into(),
            what,
        });
    }
    temp.as_file().sync_all().map_err(at)?;
    temp.persist(destination).map_err(|err| at(err.error))?;
    Ok(oid)
}

fn timeouts(timeout: Option<f64>) -> Timeouts {
    let mut timeouts = Timeouts::default();
    if let Some(seconds) = timeout.filter(|s| *s > 0.0) {
        timeouts.read = std::time::Duration::from_secs_f64(seconds);
        timeouts.connect = timeouts.connect.min(timeouts.read);
    }
    timeouts
}

/// A folder on this machine (`read_only`: no writer at all).
#[pyfunction]
fn folder_storage(py: Python<'_>, root: &str, read_only: bool) -> PyResult<PyStorage> {
    let root = std::path::absolute(root).map_err(|source| {
        to_py_err(
            py,
            Error::Io {
                path: root.into(),
                source,
            },
        )
    })?;
    let folder = FolderStorage::new(&root);
    let (reader, writer): (Arc<dyn ReadStorage>, Option<Arc<dyn WriteStorage>>) = if read_only {
        (Arc::new(ReadOnly::new(folder.clone())), None)
    } else {
        let writer: Arc<dyn WriteStorage> = Arc::new(folder.clone());
        (writer.clone(), Some(writer))
    };
    Ok(PyStorage {
        name: root.display().to_string(),
        reader,
        writer,
        folder: Some(folder),
        temporary: Mutex::new(None),
    })
}

/// A folder removed when closed or collected.
#[pyfunction]
fn temporary_storage(py: Python<'_>) -> PyResult<PyStorage> {
    let dir = tempfile::Builder::new()
        .prefix("czc-storage-")
        .tempdir()
        .map_err(|source| {
            to_py_err(
                py,
                Error::Io {
                    path: std::env::temp_dir(),
                    source,
                },
            )
        })?;
    let mut storage = folder_storage(py, &dir.path().display().to_string(), false)?;
    storage.temporary = Mutex::new(Some(dir));
    Ok(storage)
}

#[pyfunction]
#[pyo3(signature = (url, endpoint=None, region=None, anonymous=false, timeout=None))]
fn s3_storage(
    py: Python<'_>,
    url: &str,
    endpoint: Option<String>,
    region: Option<String>,
    anonymous: bool,
    timeout: Option<f64>,
) -> PyResult<PyStorage> {
    if !url.starts_with("s3://") {
        return Err(storage_err(
            py,
            StorageError::BadUrl {
                url: url.into(),
                reason: "an S3 storage's url is s3://<bucket>/<prefix>".into(),
            },
        ));
    }
    if let Some(endpoint) = &endpoint {
        czcache::storage::check_endpoint(endpoint).map_err(|err| storage_err(py, err))?;
    }
    let name = match &endpoint {
        Some(endpoint) => format!("{url} at {endpoint}"),
        None => url.to_string(),
    };
    let options = StorageOptions {
        anonymous,
        endpoint,
        region,
        timeouts: timeouts(timeout),
        ..StorageOptions::default()
    };
    let storage =
        czcache::storage::S3Storage::new(url, &options).map_err(|err| storage_err(py, err))?;
    let writer: Arc<dyn WriteStorage> = Arc::new(storage);
    Ok(PyStorage {
        name,
        reader: writer.clone(),
        writer: Some(writer),
        folder: None,
        temporary: Mutex::new(None),
    })
}

#[pyfunction]
#[pyo3(signature = (url, token=None, timeout=None))]
fn http_storage(
    py: Python<'_>,
    url: &str,
    token: Option<String>,
    timeout: Option<f64>,
) -> PyResult<PyStorage> {
    czcache::storage::check_url(url).map_err(|err| storage_err(py, err))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(storage_err(
            py,
            StorageError::BadUrl {
                url: url.into(),
                reason: "an HTTP storage's url is http(s)://host:port".into(),
            },
        ));
    }
    let storage = HttpStorage::with_timeouts(url, token, timeouts(timeout))
        .map_err(|err| storage_err(py, err))?;
    let writer: Arc<dyn WriteStorage> = Arc::new(storage);
    Ok(PyStorage {
        name: url.trim_end_matches('/').to_string(),
        reader: writer.clone(),
        writer: Some(writer),
        folder: None,
        temporary: Mutex::new(None),
    })
}

/// One cache of any kind, with its hit and miss counts in this process.
#[pyclass(name = "Cache", frozen)]
struct PyCache {
    inner: Arc<dyn Cache>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Caches of local folders only are read on the calling thread: no network, nothing
    /// to interrupt, and a hit stays a few microseconds.
    local_only: bool,
}

impl PyCache {
    fn new(inner: Arc<dyn Cache>, local_only: bool) -> PyCache {
        PyCache {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            local_only,
        }
    }

    /// A get, counted as a hit or a miss.
    fn fetch_counted(
        &self,
        py: Python<'_>,
        key: &str,
        hash: Option<&str>,
    ) -> PyResult<czcache::caches::KeyFetch> {
        let expected = hash.map(parse_oid).transpose()?;
        // Known bytes already in the local cache: answered here, no I/O thread.
        let known_here = match (&expected, self.inner.local()) {
            (Some(oid), Some(local)) => local.contains(oid),
            _ => false,
        };
        let fetched = if known_here || self.local_only {
            py.detach(|| self.inner.fetch(key, expected.as_ref()))
                .map_err(|err| to_py_err(py, err))
        } else {
            let key = key.to_string();
            self.run(py, move |cache| cache.fetch(&key, expected.as_ref()))
        };
        match &fetched {
            Ok(found) if !found.downloaded => self.hits.fetch_add(1, Ordering::Relaxed),
            _ => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        fetched
    }

    fn run<T: Send + 'static>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&dyn Cache) -> Result<T, Error> + Send + 'static,
    ) -> PyResult<T> {
        let cache = self.inner.clone();
        let result = if self.local_only {
            py.detach(|| work(cache.as_ref()))
        } else {
            interruptible(py, move || work(cache.as_ref()))?
        };
        result.map_err(|err| to_py_err(py, err))
    }
}

#[pymethods]
impl PyCache {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// `(path, oid or None, downloaded)`.
    #[pyo3(signature = (key, hash=None))]
    fn fetch(
        &self,
        py: Python<'_>,
        key: &str,
        hash: Option<&str>,
    ) -> PyResult<(String, Option<String>, bool)> {
        let fetched = self.fetch_counted(py, key, hash)?;
        Ok((
            fetched.path.display().to_string(),
            fetched.oid.map(|oid| oid.to_string()),
            fetched.downloaded,
        ))
    }

    /// [`fetch`](Self::fetch)'s path alone (what memoize needs of a hit).
    #[pyo3(signature = (key, hash=None))]
    fn path(&self, py: Python<'_>, key: &str, hash: Option<&str>) -> PyResult<String> {
        let fetched = self.fetch_counted(py, key, hash)?;
        Ok(fetched.path.to_string_lossy().into_owned())
    }

    fn hash(&self, py: Python<'_>, key: &str) -> PyResult<Option<String>> {
        let key = key.to_string();
        self.run(py, move |cache| cache.hash(&key))
            .map(|oid| oid.map(|oid| oid.to_string()))
    }

    /// An aware datetime (UTC), or None.
    fn last_modified<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let key = key.to_string();
        let time = self.run(py, move |cache| cache.last_modified(&key))?;
        time.map(|time| to_datetime(py, time)).transpose()
    }

    #[pyo3(signature = (prefix=""))]
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(py, move |cache| cache.list(&prefix))
    }

    #[pyo3(signature = (key, file, if_absent=false, if_match=None, if_newer=false))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        file: &str,
        if_absent: bool,
        if_match: Option<&str>,
        if_newer: bool,
    ) -> PyResult<bool> {
        let condition = match (if_absent, if_match, if_newer) {
            (false, None, false) => PutCondition::Always,
            (true, None, false) => PutCondition::IfAbsent,
            (false, Some(oid), false) => PutCondition::IfMatch(parse_oid(oid)?),
            (false, None, true) => PutCondition::IfNewer,
            _ => {
                return Err(PyValueError::new_err(
                    "give one of if_absent, if_match and if_newer",
                ))
            }
        };
        let (key, file) = (key.to_string(), PathBuf::from(file));
        self.run(py, move |cache| cache.put(&key, &file, condition))
    }

    #[pyo3(signature = (key, if_match=None))]
    fn delete(&self, py: Python<'_>, key: &str, if_match: Option<&str>) -> PyResult<bool> {
        let expected = if_match.map(parse_oid).transpose()?;
        let key = key.to_string();
        self.run(py, move |cache| cache.delete(&key, expected))
    }

    /// `(hits, misses, size, limit)`: hits and misses of this object's gets; the size and
    /// limit of the local cache the copies live in (None when it keeps none).
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64, Option<u64>, Option<u64>)> {
        let (size, limit) = match self.inner.local() {
            Some(local) => {
                let info = py
                    .detach(|| local.info())
                    .map_err(|err| to_py_err(py, err))?;
                (Some(info.size), Some(info.size_limit))
            }
            None => (None, None),
        };
        Ok((
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            size,
            limit,
        ))
    }
}

/// The configuration of the project around the current folder, and its root.
fn configuration(py: Python<'_>) -> PyResult<(Config, Env, PathBuf)> {
    let env = Env::from_process();
    let here = current_dir(py)?;
    let root = czcache::workspace::find_root(&here);
    let config = Config::load(Some(&root), &env).map_err(|err| to_py_err(py, err.into()))?;
    Ok((config, env, root))
}

fn current_dir(py: Python<'_>) -> PyResult<PathBuf> {
    std::env::current_dir().map_err(|source| {
        to_py_err(
            py,
            Error::Io {
                path: ".".into(),
                source,
            },
        )
    })
}

/// The local cache: the configured folder and limit, or the given ones.
fn open_local(py: Python<'_>, dir: Option<&str>, size_limit: Option<u64>) -> PyResult<LocalCache> {
    let (mut config, _, _) = configuration(py)?;
    if let Some(dir) = dir {
        config.cache.dir = dir.into();
    }
    if let Some(limit) = size_limit {
        config.cache.size_limit = limit;
    }
    py.detach(|| LocalCache::open(&config.cache))
        .map_err(|err| to_py_err(py, err))
}

/// Keys in the local cache only: the configured cache folder, or `dir`.
#[pyfunction]
#[pyo3(signature = (dir=None, size_limit=None))]
fn local_cache(py: Python<'_>, dir: Option<&str>, size_limit: Option<u64>) -> PyResult<PyCache> {
    let cache = open_local(py, dir, size_limit)?;
    Ok(PyCache::new(Arc::new(cache), true))
}

/// A local storage served in place.
#[pyfunction]
fn read_only_cache(storage: PyRef<'_, PyStorage>) -> PyResult<PyCache> {
    let Some(folder) = &storage.folder else {
        return Err(PyValueError::new_err(format!(
            "{} is not a folder on this machine: a LocalReadOnlyCache serves a local folder in place (use CopyToLocalCache for a remote)",
            storage.name
        )));
    };
    let cache = LocalReadOnlyCache::new(&storage.name, ReadOnly::new(folder.clone()));
    Ok(PyCache::new(Arc::new(cache), true))
}

fn parse_policy(policy: &str) -> PyResult<ReadPolicy> {
    match policy {
        "first" => Ok(ReadPolicy::First),
        "newest" => Ok(ReadPolicy::Newest),
        other => Err(PyValueError::new_err(format!(
            "policy {other:?}: use \"first\" or \"newest\""
        ))),
    }
}

fn readers(storages: &[PyRef<'_, PyStorage>]) -> Vec<(String, Arc<dyn ReadStorage>)> {
    storages
        .iter()
        .map(|storage| (storage.name.clone(), storage.reader.clone()))
        .collect()
}

#[pyfunction]
#[pyo3(signature = (storages, local_dir=None, local_limit=None, policy="first"))]
fn copy_to_local_cache(
    py: Python<'_>,
    storages: Vec<PyRef<'_, PyStorage>>,
    local_dir: Option<&str>,
    local_limit: Option<u64>,
    policy: &str,
) -> PyResult<PyCache> {
    if storages.is_empty() {
        return Err(PyValueError::new_err(
            "a CopyToLocalCache needs at least one storage to read",
        ));
    }
    let policy = parse_policy(policy)?;
    let local = open_local(py, local_dir, local_limit)?;
    let all_local = storages.iter().all(|storage| storage.folder.is_some());
    let cache = CopyToLocalCache::new(local, readers(&storages), policy);
    Ok(PyCache::new(Arc::new(cache), all_local))
}

/// `remote` written through; `reads` (else the remote) read first to last.
#[pyfunction]
#[pyo3(signature = (remote, local_dir=None, local_limit=None, reads=Vec::new()))]
fn synchronized_cache(
    py: Python<'_>,
    remote: PyRef<'_, PyStorage>,
    local_dir: Option<&str>,
    local_limit: Option<u64>,
    reads: Vec<PyRef<'_, PyStorage>>,
) -> PyResult<PyCache> {
    let writer = remote.writer(py)?;
    let local = open_local(py, local_dir, local_limit)?;
    let mut read = readers(&reads);
    if !read.iter().any(|(name, _)| *name == remote.name) {
        read.push((remote.name.clone(), remote.reader.clone()));
    }
    let all_local = remote.folder.is_some() && reads.iter().all(|s| s.folder.is_some());
    let reads = CopyToLocalCache::new(local, read, ReadPolicy::First);
    let cache = SynchronizedRemoteAndLocalCache::with_reads(reads, &remote.name, writer);
    Ok(PyCache::new(Arc::new(cache), all_local))
}

/// The named cache `name` of the configuration (None: `cache.default`, else `local`).
#[pyfunction]
#[pyo3(signature = (name=None))]
fn open_cache(py: Python<'_>, name: Option<&str>) -> PyResult<PyCache> {
    let (config, env, root) = configuration(py)?;
    let inner =
        czcache::open_cache(&config, &env, &root, name).map_err(|err| to_py_err(py, err))?;
    let local_only = matches!(
        name.or(config.default_cache.as_deref()),
        None | Some("local")
    );
    Ok(PyCache::new(Arc::from(inner), local_only))
}

/// Every named cache, as the dicts `czc --json cache list` prints.
#[pyfunction]
fn caches<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let (config, _, _) = configuration(py)?;
    json_to_py(py, &czcache::caches::list(&config))
}

/// BLAKE3 of bytes, as an oid string (memoize keys its arguments with it).
#[pyfunction]
fn hash_bytes(py: Python<'_>, data: &[u8]) -> String {
    if data.len() < 1 << 16 {
        return Oid::of_bytes(data).to_string();
    }
    py.detach(|| Oid::of_bytes(data).to_string())
}

/// An incremental BLAKE3, for data too big to copy at once (a numpy array is fed in
/// chunks): `update(bytes)`, then `oid()`.
#[pyclass(name = "Hasher")]
struct PyHasher {
    inner: blake3::Hasher,
}

#[pymethods]
impl PyHasher {
    #[new]
    fn new() -> PyHasher {
        PyHasher {
            inner: blake3::Hasher::new(),
        }
    }

    fn update(&mut self, py: Python<'_>, data: &[u8]) {
        let inner = &mut self.inner;
        if data.len() >= 1 << 20 {
            py.detach(|| inner.update_rayon(data));
        } else {
            inner.update(data);
        }
    }

    fn oid(&self) -> String {
        Oid::from_hash(self.inner.finalize()).to_string()
    }
}

/// The stat caches of `hash_file`, one per cache folder (`state/python-stat.tsv`).
type StatCaches = std::collections::HashMap<PathBuf, Arc<czcache::statcache::StatCache>>;
static STAT_CACHES: std::sync::LazyLock<Mutex<StatCaches>> =
    std::sync::LazyLock::new(Default::default);

/// BLAKE3 of a file's bytes, as an oid string. The stat cache in the configured cache
/// folder answers for a file seen unchanged (same size, mtime, inode) by any process, so
/// a memoized call on a big input file does not read it again.
#[pyfunction]
fn hash_file(py: Python<'_>, path: &str) -> PyResult<String> {
    let (config, _, _) = configuration(py)?;
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let absolute = std::path::absolute(path)
        .map_err(io_at(Path::new(path)))
        .map_err(|err| to_py_err(py, err))?;
    let state = config.cache.dir.join("state");
    let stats = STAT_CACHES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(state.clone())
        .or_insert_with(|| {
            Arc::new(czcache::statcache::StatCache::load(
                state.join("python-stat.tsv"),
            ))
        })
        .clone();
    let hashed = interruptible(py, move || -> Result<Oid, Error> {
        let meta = std::fs::metadata(&absolute).map_err(io_at(&absolute))?;
        if let Some(oid) = stats.lookup(&absolute, &meta) {
            return Ok(oid);
        }
        let began = czcache::fsutil::since_epoch(SystemTime::now()).as_nanos() as i128;
        let (oid, _) = czcache::oid::hash_file(&absolute).map_err(io_at(&absolute))?;
        stats.record(&absolute, &meta, oid, began);
        // Only a speed-up: a state file that cannot be written costs a hash next time.
        let _ = std::fs::create_dir_all(&state);
        stats.save();
        Ok(oid)
    })?;
    hashed
        .map(|oid| oid.to_string())
        .map_err(|err| to_py_err(py, err))
}

/// A Context for a marker operation on the project around the current folder.
fn context(py: Python<'_>, force: bool) -> PyResult<Context> {
    let dir = current_dir(py)?;
    py.detach(|| {
        Context::open(
            &dir,
            Options {
                force,
                jobs: None,
                reporter: None,
            },
        )
    })
    .map_err(|err| to_py_err(py, err))
}

/// Runs a marker operation on its own thread (Ctrl-C returns at once) and hands back its
/// report as JSON-able Python values.
fn marker_op<R: serde::Serialize + Send + 'static>(
    py: Python<'_>,
    force: bool,
    op: impl FnOnce(&Context) -> Result<R, Error> + Send + 'static,
) -> PyResult<Bound<'_, PyAny>> {
    let ctx = context(py, force)?;
    let report = interruptible(py, move || {
        let report = op(&ctx);
        drop(ctx);
        report
    })?
    .map_err(|err| to_py_err(py, err))?;
    json_to_py(py, &report)
}

fn paths(paths: Vec<String>) -> Vec<PathBuf> {
    paths.into_iter().map(PathBuf::from).collect()
}

#[pyfunction]
fn save(py: Python<'_>, targets: Vec<String>) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, false, move |ctx| Ok(ops::save::save(ctx, &targets)))
}

#[pyfunction]
#[pyo3(signature = (target, force=false))]
fn open_marker(py: Python<'_>, target: String, force: bool) -> PyResult<Bound<'_, PyAny>> {
    marker_op(py, force, move |ctx| ops::checkout::open(ctx, &target))
}

#[pyfunction]
#[pyo3(signature = (targets, force=false))]
fn checkout(py: Python<'_>, targets: Vec<String>, force: bool) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, force, move |ctx| ops::checkout::checkout(ctx, &targets))
}

#[pyfunction]
#[pyo3(signature = (targets, remote=None))]
fn status(
    py: Python<'_>,
    targets: Vec<String>,
    remote: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, false, move |ctx| {
        let check = match &remote {
            None => ops::status::RemoteCheck::None,
            Some(name) if name.is_empty() => ops::status::RemoteCheck::Default,
            Some(name) => ops::status::RemoteCheck::Named(name.clone()),
        };
        ops::status::status(ctx, &targets, &check)
    })
}

#[pyfunction]
#[pyo3(signature = (targets, remote=None, all=false))]
fn push(
    py: Python<'_>,
    targets: Vec<String>,
    remote: Option<String>,
    all: bool,
) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, false, move |ctx| {
        ops::transfer::push(ctx, &targets, remote.as_deref(), all)
    })
}

#[pyfunction]
#[pyo3(signature = (targets, remote=None))]
fn fetch(
    py: Python<'_>,
    targets: Vec<String>,
    remote: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, false, move |ctx| {
        ops::transfer::fetch(ctx, &targets, remote.as_deref(), None)
    })
}

#[pyfunction]
#[pyo3(signature = (targets, remote=None, force=false))]
fn pull(
    py: Python<'_>,
    targets: Vec<String>,
    remote: Option<String>,
    force: bool,
) -> PyResult<Bound<'_, PyAny>> {
    let targets = paths(targets);
    marker_op(py, force, move |ctx| {
        ops::transfer::pull(ctx, &targets, remote.as_deref())
    })
}

#[pymodule]
fn _czcache(module: &Bound<'_, PyModule>) -> PyResult<()> {
    czcache::report::set_process_reporter(Arc::new(PyReporter));
    module.add_class::<PyCache>()?;
    module.add_class::<PyStorage>()?;
    module.add_class::<PyHasher>()?;
    for function in [
        wrap_pyfunction!(local_cache, module)?,
        wrap_pyfunction!(read_only_cache, module)?,
        wrap_pyfunction!(copy_to_local_cache, module)?,
        wrap_pyfunction!(synchronized_cache, module)?,
        wrap_pyfunction!(open_cache, module)?,
        wrap_pyfunction!(caches, module)?,
        wrap_pyfunction!(folder_storage, module)?,
        wrap_pyfunction!(temporary_storage, module)?,
        wrap_pyfunction!(s3_storage, module)?,
        wrap_pyfunction!(http_storage, module)?,
        wrap_pyfunction!(hash_bytes, module)?,
        wrap_pyfunction!(hash_file, module)?,
        wrap_pyfunction!(save, module)?,
        wrap_pyfunction!(open_marker, module)?,
        wrap_pyfunction!(checkout, module)?,
        wrap_pyfunction!(status, module)?,
        wrap_pyfunction!(push, module)?,
        wrap_pyfunction!(fetch, module)?,
        wrap_pyfunction!(pull, module)?,
    ] {
        module.add_function(function)?;
    }
    Ok(())
}
