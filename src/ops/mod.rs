//! What czc does, one module per command family, each a plain function over a
//! [`Context`] returning a typed, serializable report. The CLI and the Python package
//! are front ends over these: the CLI's `--json` output is the report serialized
//! (docs/FORMATS.md), so both return one schema.
//!
//! - [`save`]: save files and folders into the cache, write their markers
//! - [`checkout`]: checkout, open, cat, unprotect
//! - [`status`]: the state of files against their markers
//! - [`transfer`]: push, fetch, pull
//! - [`keys`]: get, put and rm of a remote's keys
//! - [`gc`]: delete what nothing references, from a remote or the cache
//! - [`cache`]: cache info, evict, verify, clear
//! - [`remotes`]: remote add, list, remove
//! - [`serve`]: which backend `czc serve` fronts

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, Env};
use crate::error::Result;
use crate::remote::DEFAULT_TRANSFER_JOBS;
use crate::report::Reporter;
use crate::workspace::Workspace;

pub mod cache;
pub mod checkout;
pub mod gc;
pub mod keys;
pub mod remotes;
pub mod save;
pub mod serve;
pub mod status;
pub mod transfer;

/// How a [`Context`] is opened.
#[derive(Clone, Default)]
pub struct Options {
    /// Let checkout and `open --to` overwrite files with unsaved changes.
    pub force: bool,
    /// Transfers at once (default [`DEFAULT_TRANSFER_JOBS`]).
    pub jobs: Option<usize>,
    /// Where progress and warnings go (default: the process's reporter).
    pub reporter: Option<Arc<dyn Reporter>>,
}

/// Everything a command works with: the configuration, the project (its cache and
/// remotes), the reporter. Opened once per command; dropping it flushes what it keeps
/// (the stat cache, the cache index, a deferred eviction), so no caller has to.
pub struct Context {
    config: Config,
    env: Env,
    workspace: Workspace,
    reporter: Arc<dyn Reporter>,
}

impl Context {
    /// Opens the project around `dir` with the configuration of the process's
    /// environment (user file, project file, `CZC_*` variables).
    pub fn open(dir: &Path, options: Options) -> Result<Context> {
        let env = Env::from_process();
        let root = crate::workspace::find_root(dir);
        let config = Config::load(Some(&root), &env)?;
        Context::open_with(dir, config, env, options)
    }

    /// Opens the project around `dir` with a configuration the caller built.
    pub fn open_with(dir: &Path, config: Config, env: Env, options: Options) -> Result<Context> {
        let reporter = options
            .reporter
            .unwrap_or_else(crate::report::process_reporter);
        let workspace = Workspace::open(dir, &config, &env)?
            .with_force(options.force)
            .with_jobs(options.jobs.unwrap_or(DEFAULT_TRANSFER_JOBS))
            .with_reporter(reporter.clone());
        Ok(Context {
            config,
            env,
            workspace,
            reporter,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn reporter(&self) -> &dyn Reporter {
        self.reporter.as_ref()
    }

    /// The project root.
    pub fn root(&self) -> &Path {
        self.workspace.root()
    }

    /// A path as the user should see it: relative to the folder the command runs in.
    pub fn display(&self, path: &Path) -> String {
        self.workspace.display(path)
    }

    /// The named cache `name` (else `cache.default`, else `local`) of the configuration.
    pub fn cache(&self, name: Option<&str>) -> Result<Box<dyn crate::caches::Cache>> {
        crate::caches::open_cache(&self.config, &self.env, self.root(), name)
    }

    /// A path the user gave, relative to the folder the command runs in.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.workspace.resolve_path(path)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.workspace.finish();
    }
}
