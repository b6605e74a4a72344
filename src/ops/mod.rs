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
//! - [`git`]: init, install, track, and git's clean/smudge filter
//! - [`ls`]: the tracked data files of a commit
//! - [`hooks`]: what czc's git hooks do (pre-push, post-checkout, post-merge)
//! - [`gc`]: delete what nothing references, from a remote or the cache
//! - [`cache`]: cache info, evict, verify, clear
//! - [`remotes`]: remote add, list, remove
//! - [`serve`]: which backend `czc serve` fronts

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::cache::{LocalCache, RemoteChain};
use crate::config::{Config, Env};
use crate::error::Result;
use crate::oid::Oid;
use crate::remote::{Remotes, TransferReport, DEFAULT_TRANSFER_JOBS};
use crate::report::{CurrentTask, Reporter};
use crate::workspace::{ObjectSource, Workspace};

pub mod cache;
pub mod checkout;
pub mod gc;
pub mod git;
mod history;
pub mod hooks;
pub mod keys;
pub mod ls;
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

/// The remotes' read chain as the project tree's source of missing objects: opened on
/// first use (opening an S3 remote starts a client).
struct ChainSource {
    remotes: Remotes,
    chain: OnceLock<RemoteChain>,
    jobs: usize,
}

impl ChainSource {
    fn chain(&self) -> &RemoteChain {
        self.chain.get_or_init(|| self.remotes.chain())
    }
}

impl ObjectSource for ChainSource {
    fn is_empty(&self) -> bool {
        self.chain().is_empty()
    }

    fn fetch_one(
        &self,
        cache: &LocalCache,
        oid: &Oid,
        size: Option<u64>,
        for_path: &Path,
    ) -> Result<()> {
        self.chain()
            .fetch_sized(cache, oid, size, for_path)
            .map(|_| ())
    }

    fn fetch_many(
        &self,
        cache: &LocalCache,
        wanted: &[(Oid, PathBuf)],
        sizes: &HashMap<Oid, u64>,
    ) -> Result<TransferReport> {
        crate::remote::fetch(cache, self.chain(), wanted, sizes, self.jobs)
    }
}

/// Everything a command works with: the configuration, the project tree and its cache,
/// the remotes, the reporter. Opened once per command; dropping it flushes what it keeps
/// (the stat cache, the cache index, a deferred eviction), so no caller has to.
pub struct Context {
    config: Config,
    env: Env,
    workspace: Workspace,
    source: Arc<ChainSource>,
    reporter: Arc<dyn Reporter>,
    current: Arc<CurrentTask>,
}

/// A task of the reporter's, current until dropped (its bar goes before results print).
pub(crate) struct Task<'a>(&'a CurrentTask);

impl Drop for Task<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
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
        let current = Arc::new(CurrentTask::default());
        let root = crate::workspace::find_root(dir);
        let source = Arc::new(ChainSource {
            remotes: Remotes::from_config(&config, &root, &env),
            chain: OnceLock::new(),
            jobs: options.jobs.unwrap_or(DEFAULT_TRANSFER_JOBS).max(1),
        });
        let workspace = Workspace::open(dir, &config)?
            .with_force(options.force)
            .with_reporter(reporter.clone(), current.clone())
            .with_source(source.clone());
        Ok(Context {
            config,
            env,
            workspace,
            source,
            reporter,
            current,
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

    /// The local cache.
    pub fn cache(&self) -> &LocalCache {
        self.workspace.cache()
    }

    /// The configured remotes.
    pub fn remotes(&self) -> &Remotes {
        &self.source.remotes
    }

    /// The read chain (`remote.read`, else the default remote, else every remote).
    pub fn chain(&self) -> &RemoteChain {
        self.source.chain()
    }

    /// Transfers at once.
    pub fn jobs(&self) -> usize {
        self.source.jobs
    }

    pub fn reporter(&self) -> &dyn Reporter {
        self.reporter.as_ref()
    }

    /// Starts the reporter's task `title`; it ends when the guard is dropped.
    pub(crate) fn task(&self, title: &'static str) -> Task<'_> {
        self.current.work(self.reporter.as_ref(), title, 0, 0);
        Task(&self.current)
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
    pub fn named_cache(&self, name: Option<&str>) -> Result<Box<dyn crate::caches::Cache>> {
        crate::caches::open_cache(&self.config, &self.env, self.root(), name)
    }

    /// A path the user gave, relative to the folder the command runs in.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.workspace.resolve_path(path)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.current.end();
        self.workspace.finish();
    }
}
