//! The Python extension `czcache._czcache`: the Rust caches behind a few functions and
//! one class; `czcache/__init__.py` gives them their Python face.

use std::path::Path;

use czcache::caches::{Cache, PutCondition};
use czcache::config::{Config, Env};
use czcache::oid::Oid;
use czcache::storage::StorageError;
use czcache::Error;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A czcache error as the matching exception of `czcache.errors`.
fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    let class = match &err {
        Error::NotFound { .. } => "NotFound",
        Error::Storage(StorageError::LostRace { .. }) => "LostRace",
        Error::ReadOnlyCache { .. } | Error::ReadOnlyRemote { .. } => "ReadOnly",
        _ => "Error",
    };
    let message = err.to_string().replace('\n', " ");
    let raised = py
        .import("czcache.errors")
        .and_then(|errors| errors.getattr(class))
        .and_then(|class| class.call1((message,)));
    match raised {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}

fn parse_oid(text: &str) -> PyResult<Oid> {
    text.parse()
        .map_err(|err: czcache::oid::OidError| PyValueError::new_err(err.to_string()))
}

/// One cache of any kind.
#[pyclass(name = "Cache", frozen)]
struct PyCache {
    inner: Box<dyn Cache>,
}

#[pymethods]
impl PyCache {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get(&self, py: Python<'_>, key: &str) -> PyResult<String> {
        py.detach(|| self.inner.get(key))
            .map(|path| path.display().to_string())
            .map_err(|err| to_py_err(py, err))
    }

    fn hash(&self, py: Python<'_>, key: &str) -> PyResult<Option<String>> {
        py.detach(|| self.inner.hash(key))
            .map(|oid| oid.map(|oid| oid.to_string()))
            .map_err(|err| to_py_err(py, err))
    }

    /// An aware datetime (UTC), or None.
    fn last_modified<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(time) = py
            .detach(|| self.inner.last_modified(key))
            .map_err(|err| to_py_err(py, err))?
        else {
            return Ok(None);
        };
        let seconds = match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => since.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        let datetime = py.import("datetime")?;
        let utc = datetime.getattr("timezone")?.getattr("utc")?;
        datetime
            .getattr("datetime")?
            .call_method1("fromtimestamp", (seconds, utc))
            .map(Some)
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
        py.detach(|| self.inner.put(key, Path::new(file), condition))
            .map_err(|err| to_py_err(py, err))
    }

    #[pyo3(signature = (key, if_match=None))]
    fn delete(&self, py: Python<'_>, key: &str, if_match: Option<&str>) -> PyResult<bool> {
        let expected = if_match.map(parse_oid).transpose()?;
        py.detach(|| self.inner.delete(key, expected))
            .map_err(|err| to_py_err(py, err))
    }
}

/// The configuration of the project around the current folder, and its root.
fn configuration(py: Python<'_>) -> PyResult<(Config, Env, std::path::PathBuf)> {
    let env = Env::from_process();
    let here = std::env::current_dir().map_err(|source| {
        to_py_err(
            py,
            Error::Io {
                path: ".".into(),
                source,
            },
        )
    })?;
    let root = czcache::workspace::find_root(&here);
    let config = Config::load(Some(&root), &env).map_err(|err| to_py_err(py, err.into()))?;
    Ok((config, env, root))
}

/// Keys in the local cache only: the configured cache folder, or `dir`.
#[pyfunction]
#[pyo3(signature = (dir=None, size_limit=None))]
fn local_cache(py: Python<'_>, dir: Option<&str>, size_limit: Option<u64>) -> PyResult<PyCache> {
    let (mut config, _, _) = configuration(py)?;
    if let Some(dir) = dir {
        config.cache.dir = dir.into();
    }
    if let Some(limit) = size_limit {
        config.cache.size_limit = limit;
    }
    let cache = czcache::LocalCache::open(&config.cache).map_err(|err| to_py_err(py, err))?;
    Ok(PyCache {
        inner: Box::new(cache),
    })
}

/// The named cache `name` of the configuration (None: `cache.default`, else `local`).
#[pyfunction]
#[pyo3(signature = (name=None))]
fn open_cache(py: Python<'_>, name: Option<&str>) -> PyResult<PyCache> {
    let (config, env, root) = configuration(py)?;
    let inner =
        czcache::open_cache(&config, &env, &root, name).map_err(|err| to_py_err(py, err))?;
    Ok(PyCache { inner })
}

/// Every named cache, as the dicts `czc --json cache list` prints.
#[pyfunction]
fn caches<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let (config, _, _) = configuration(py)?;
    let listed = czcache::caches::list(&config);
    let text =
        serde_json::to_string(&listed).map_err(|err| PyValueError::new_err(err.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

#[pymodule]
fn _czcache(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyCache>()?;
    module.add_function(wrap_pyfunction!(local_cache, module)?)?;
    module.add_function(wrap_pyfunction!(open_cache, module)?)?;
    module.add_function(wrap_pyfunction!(caches, module)?)?;
    Ok(())
}
