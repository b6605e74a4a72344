//! The workspace: a project folder holding markers next to (or instead of) the data they
//! stand for, and nothing else: finding markers, placing files, file state, `.gitignore`.
//! It knows no remotes: objects its cache lacks come from the [`ObjectSource`] its caller
//! (the ops layer) hands it, and its work is counted through the cache's progress hook.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::cache::{LocalCache, RemoteChain, Staged};
use crate::config::{self, Config, LinkKind};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::now_ns;
use crate::fsutil::{self, is_executable_mode};
use crate::marker::{self, Manifest, ManifestEntry, Marker, MarkerError, MarkerKind};
use crate::oid::{self, Oid};
use crate::remote::TransferReport;
use crate::report::{Progress, Reporter};
use crate::statcache::StatCache;

/// What `save` did for one path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Saved {
    pub path: PathBuf,
    pub marker: PathBuf,
    pub oid: Oid,
    pub size: u64,
    /// Files in a folder marker, `None` for a file.
    pub files: Option<u64>,
}

/// The state of one file (or folder) against its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Ok,
    /// Matches its marker, but the remote asked about lacks an object (`--remote`).
    NotPushed,
    NotCached,
    Missing,
    Modified,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::NotPushed => "not-pushed",
            State::NotCached => "not-cached",
            State::Missing => "missing",
            State::Modified => "modified",
        }
    }
}

/// Per-file counts inside a folder marker.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FolderCounts {
    pub ok: usize,
    pub modified: usize,
    pub missing: usize,
    pub not_cached: usize,
    /// Files in the folder that the marker does not list.
    pub added: usize,
    /// Files whose object the remote lacks (`status --remote`).
    pub not_pushed: usize,
}

/// `status` of one marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MarkerStatus {
    pub path: PathBuf,
    pub marker: PathBuf,
    pub state: State,
    pub oid: Oid,
    pub files: Option<FolderCounts>,
    /// For a folder: the files that are not `ok`, relative to it (`status -v` shows them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<ChangedFile>,
}

/// A file of a folder marker that differs from the marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub state: State,
}

/// What `checkout` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckoutReport {
    /// Files written from the cache.
    pub restored: usize,
    /// Files that already matched their marker.
    pub unchanged: usize,
    /// How the restored files were placed.
    pub links: BTreeMap<String, usize>,
    /// Markers or files that could not be restored; the rest were.
    #[serde(rename = "errors", serialize_with = "crate::error::serialize_messages")]
    pub failures: Vec<Error>,
}

/// The objects markers reference, from [`Workspace::referenced`].
#[derive(Debug, Default)]
pub struct Referenced {
    /// Each object once, with the marker that names it.
    pub oids: Vec<(Oid, PathBuf)>,
    /// Markers or manifests that could not be read.
    pub errors: Vec<Error>,
    /// Manifests fetched from remotes on the way.
    pub fetched: Vec<crate::cache::Admitted>,
    /// The size markers and manifests give each file object: no remote may send more.
    pub sizes: std::collections::HashMap<Oid, u64>,
}

/// What `open` or `cat` was pointed at.
#[derive(Debug, Clone)]
pub enum Target {
    Oid(Oid),
    Marker {
        marker_path: PathBuf,
        data_path: PathBuf,
        marker: Marker,
    },
}

/// Where the project tree gets the objects its cache lacks: the caller's remotes (the
/// ops layer's read chain), or nowhere.
pub trait ObjectSource: Send + Sync {
    /// Nowhere to fetch from.
    fn is_empty(&self) -> bool;
    /// Fetches one object into `cache`; `size`, when a marker gives it, bounds what may
    /// be sent.
    fn fetch_one(
        &self,
        cache: &LocalCache,
        oid: &Oid,
        size: Option<u64>,
        for_path: &Path,
    ) -> Result<()>;
    /// Fetches many at once, each bounded by its size in `sizes`.
    fn fetch_many(
        &self,
        cache: &LocalCache,
        wanted: &[(Oid, PathBuf)],
        sizes: &std::collections::HashMap<Oid, u64>,
    ) -> Result<TransferReport>;
}

/// No remotes: a miss stays a miss.
pub struct NoSource;

impl ObjectSource for NoSource {
    fn is_empty(&self) -> bool {
        true
    }
    fn fetch_one(&self, _: &LocalCache, _: &Oid, _: Option<u64>, _: &Path) -> Result<()> {
        Ok(())
    }
    fn fetch_many(
        &self,
        _: &LocalCache,
        _: &[(Oid, PathBuf)],
        _: &std::collections::HashMap<Oid, u64>,
    ) -> Result<TransferReport> {
        Ok(TransferReport::default())
    }
}

/// A project folder plus the local cache it uses.
pub struct Workspace {
    /// Where objects the cache lacks come from (the caller's remotes; none by default).
    source: Arc<dyn ObjectSource>,
    root: PathBuf,
    cwd: PathBuf,
    cache: LocalCache,
    stats_loader: std::sync::Mutex<Option<std::thread::JoinHandle<StatCache>>>,
    stats_cell: std::sync::OnceLock<StatCache>,
    stats_path: PathBuf,
    force: bool,
    /// `.git/czc-tmp` when the project is a git repository.
    scratch_parent: Option<PathBuf>,
    scratch: std::sync::Mutex<Option<fsutil::PrivateDir>>,
}

/// Where a workspace's temp files live inside the git folder.
const SCRATCH_FOLDER: &str = "czc-tmp";

/// The project root for `start`: the nearest folder holding `.czcache.toml` or `.git`,
/// else `start` itself.
pub fn find_root(start: &Path) -> PathBuf {
    for dir in start.ancestors() {
        if dir.join(config::PROJECT_FILE).is_file() || dir.join(".git").exists() {
            return dir.to_path_buf();
        }
    }
    start.to_path_buf()
}

/// Writes `.czcache.toml` at the project root; returns false if it was already there.
pub fn init(root: &Path) -> Result<bool> {
    let path = root.join(config::PROJECT_FILE);
    if path.exists() {
        return Ok(false);
    }
    let text = "# czc project settings (committed). Every key: see .czcache.toml.example.\n\
                # The cache's size limit is the user's (~/.config/czcache/config.toml).\n\
                [cache]\n\
                # index = \"sqlite\"        # csv | json | sqlite\n";
    fsutil::write_atomic(&path, text.as_bytes()).at(&path)?;
    Ok(true)
}

impl Workspace {
    /// Opens the workspace around `cwd` with the cache its configuration names.
    pub fn open(cwd: &Path, config: &Config) -> Result<Workspace> {
        let cwd = absolute(cwd)?;
        let root = find_root(&cwd);
        let mut cache = LocalCache::open(&config.cache)?;
        let state_name = format!("{}.tsv", crate::cache::project_key(&root));
        let stats_path = cache.root().join("state").join(state_name);
        // Parse the stat cache on another thread while the caller finds markers.
        let loader = {
            let path = stats_path.clone();
            std::thread::spawn(move || StatCache::load(path))
        };
        if root.join(".git").exists() {
            // Best effort: a read-only cache folder must not stop the command.
            let _ = cache.register_repo(&root);
        }
        cache.set_project(&root);
        let git_dir = root.join(".git");
        let scratch_parent = git_dir.is_dir().then(|| git_dir.join(SCRATCH_FOLDER));
        if let Some(parent) = &scratch_parent {
            // Temps of czc runs that were killed (kill -9 mid-checkout).
            fsutil::sweep_dead_private_dirs(parent);
        }
        Ok(Workspace {
            source: Arc::new(NoSource),
            root,
            cwd,
            cache,
            stats_loader: std::sync::Mutex::new(Some(loader)),
            stats_cell: std::sync::OnceLock::new(),
            stats_path,
            force: false,
            scratch_parent,
            scratch: std::sync::Mutex::new(None),
        })
    }

    /// This process's folder for files on their way into the working tree: inside
    /// `.git`, so git never shows them, and swept by the next run if this one is killed.
    /// Outside a git repository (or if it cannot be made) temps go beside their file.
    fn scratch_dir(&self) -> Option<PathBuf> {
        let parent = self.scratch_parent.as_ref()?;
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if scratch.is_none() {
            fs::create_dir_all(parent).ok()?;
            *scratch = fsutil::claim_private_dir(parent).ok();
        }
        scratch.as_ref().map(|dir| dir.path().to_path_buf())
    }

    /// Where to write a temp file that will be renamed to a file in `dir`: the scratch
    /// folder when it is on the same filesystem, else `dir` itself.
    pub(crate) fn temp_dir_for(&self, dir: &Path) -> PathBuf {
        if let Some(scratch) = self.scratch_dir() {
            let same_device = match (fs::metadata(&scratch), fs::metadata(dir)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev(),
                _ => false,
            };
            if same_device {
                return scratch;
            }
        }
        dir.to_path_buf()
    }

    /// Fetches what the cache lacks from `source` (the caller's remotes).
    pub fn with_source(mut self, source: Arc<dyn ObjectSource>) -> Workspace {
        self.source = source;
        self
    }

    /// Whether there is anywhere to fetch missing objects from.
    pub fn has_source(&self) -> bool {
        !self.source.is_empty()
    }

    /// Makes sure an object is in the cache, fetching it through the remote chain. With
    /// no remotes configured the caller reports the miss.
    /// `size`, when a marker or manifest gives it, bounds what a remote may send.
    pub(crate) fn ensure(&self, oid: &Oid, size: Option<u64>, for_path: &Path) -> Result<()> {
        if self.cache.contains(oid) || self.source.is_empty() {
            return Ok(());
        }
        self.source.fetch_one(&self.cache, oid, size, for_path)
    }

    /// Fetches every missing object of a list in one parallel batch; returns the oids
    /// that could not be had and the errors saying why.
    pub(crate) fn ensure_many(
        &self,
        wanted: &[(Oid, PathBuf)],
        sizes: &std::collections::HashMap<Oid, u64>,
    ) -> Result<(HashSet<Oid>, Vec<Error>)> {
        let missing: Vec<(Oid, PathBuf)> = wanted
            .iter()
            .filter(|(oid, _)| !self.cache.contains(oid))
            .cloned()
            .collect();
        if missing.is_empty() || self.source.is_empty() {
            return Ok((HashSet::new(), Vec::new()));
        }
        let report = self.source.fetch_many(&self.cache, &missing, sizes)?;
        let failed = report
            .failures
            .iter()
            .filter_map(|err| match err {
                Error::NotInRemotes { oid, .. } | Error::NotCached { oid, .. } => Some(*oid),
                _ => None,
            })
            .collect();
        Ok((failed, report.failures))
    }

    /// Lets `checkout` and `open --to` overwrite files with unsaved changes.
    pub fn with_force(mut self, force: bool) -> Workspace {
        self.force = force;
        self
    }

    /// Sends warnings to `reporter` and counts work and progress to `progress` (the
    /// caller's current task); by default the process's reporter and nothing.
    pub fn with_reporter(
        mut self,
        reporter: Arc<dyn Reporter>,
        progress: Arc<dyn Progress>,
    ) -> Workspace {
        self.cache.set_reporter(reporter);
        self.cache.set_progress(progress);
        self
    }

    /// Tells the caller's task that more work became known.
    fn add_work(&self, files: u64, bytes: u64) {
        self.cache.progress().add_work(files, bytes);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cache(&self) -> &LocalCache {
        &self.cache
    }

    /// A path as the user should see it: relative to the current folder when inside it.
    pub fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.cwd)
            .ok()
            .filter(|rel| !rel.as_os_str().is_empty())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        normalize(&self.cwd.join(path))
    }

    /// A command-line path made absolute against the current folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.resolve(path)
    }

    /// The stat cache, once its loader thread is done.
    fn stats(&self) -> &StatCache {
        self.stats_cell.get_or_init(|| {
            let loader = self
                .stats_loader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            loader
                .and_then(|handle| handle.join().ok())
                .unwrap_or_else(|| StatCache::load(self.stats_path.clone()))
        })
    }

    /// Writes the stat cache; call once at the end of a command.
    pub fn finish(&self) {
        self.stats().save();
    }

    /// The oid of a workspace file, from the stat cache when its stamp is unchanged.
    fn current_oid(&self, path: &Path, meta: &fs::Metadata) -> Result<Oid> {
        if let Some(oid) = self.stats().lookup(path, meta) {
            return Ok(oid);
        }
        let started = now_ns();
        let (oid, _) = oid::hash_file(path).at(path)?;
        self.stats().record(path, meta, oid, started);
        Ok(oid)
    }

    // ---- save ----

    /// Saves each path (file or folder) into the cache and writes its marker. Failures of
    /// one path do not stop the others.
    pub fn save(&self, paths: &[PathBuf]) -> Vec<(PathBuf, Result<Saved>)> {
        paths
            .iter()
            .map(|path| {
                let (data, marker_path) = split_marker(&self.resolve(path));
                (data.clone(), self.save_one(&data, &marker_path))
            })
            .collect()
    }

    fn save_one(&self, data: &Path, marker_path: &Path) -> Result<Saved> {
        let meta = match fs::symlink_metadata(data) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: data.into() })
            }
            Err(err) => return Err(err).at(data),
        };
        if self.git_component(data).is_some() {
            return Err(Error::Unsupported {
                path: data.into(),
                reason: "is inside .git".into(),
            });
        }
        let (marker, files) = if meta.is_dir() {
            let (marker, count) = self.save_folder(data)?;
            (marker, Some(count))
        } else if meta.is_file() {
            (self.save_file(data, &meta)?, None)
        } else {
            return Err(Error::Unsupported {
                path: data.into(),
                reason: "is not a regular file or folder (symlinks are not saved)".into(),
            });
        };
        write_marker(marker_path, &marker)?;
        add_to_gitignore(data)?;
        Ok(Saved {
            path: data.into(),
            marker: marker_path.into(),
            oid: marker.oid,
            size: marker.size,
            files,
        })
    }

    fn save_file(&self, data: &Path, meta: &fs::Metadata) -> Result<Marker> {
        if let Some(oid) = self.stats().lookup(data, meta) {
            if self.cache.contains(&oid) {
                self.cache.touch(&[oid])?;
                return Ok(Marker::file(oid, meta.len()));
            }
        }
        self.add_work(1, meta.len());
        let started = now_ns();
        let admitted = self.cache.admit_file(data)?;
        self.cache.report_files(1);
        self.stats().record(data, meta, admitted.oid, started);
        Ok(Marker::file(admitted.oid, admitted.size))
    }

    fn save_folder(&self, dir: &Path) -> Result<(Marker, u64)> {
        let files = list_folder(dir)?;
        let total: u64 = files.iter().map(|(_, _, meta)| meta.len()).sum();
        self.cache.check_fits(dir, total)?;
        self.add_work(files.len() as u64, total);
        let staged: Vec<(ManifestEntry, Option<Staged>)> = files
            .par_iter()
            .map(|(rel, path, meta)| {
                let executable = is_executable_mode(meta.mode());
                let known = self
                    .stats()
                    .lookup(path, meta)
                    .filter(|oid| self.cache.contains(oid));
                let (oid, size, staged) = match known {
                    Some(oid) => {
                        // Unchanged since it was hashed: done without reading it.
                        self.cache.report(meta.len());
                        (oid, meta.len(), None)
                    }
                    None => {
                        let started = now_ns();
                        let staged = self.cache.stage_file(path)?;
                        self.stats().record(path, meta, staged.oid, started);
                        (staged.oid, staged.size, Some(staged))
                    }
                };
                self.cache.report_files(1);
                let entry = ManifestEntry {
                    path: rel.clone(),
                    oid,
                    size,
                    executable,
                };
                Ok((entry, staged))
            })
            .collect::<Result<_>>()?;
        let mut entries = Vec::with_capacity(staged.len());
        let mut to_commit = Vec::new();
        let mut reused = Vec::new();
        for (entry, staged) in staged {
            match staged {
                Some(staged) => to_commit.push(staged),
                None => reused.push(entry.oid),
            }
            entries.push(entry);
        }
        let manifest = Manifest::new(entries).map_err(|source| Error::Folder {
            path: dir.into(),
            source,
        })?;
        // Touch reused objects first so the commit's eviction sees them as fresh.
        self.cache.touch(&reused)?;
        to_commit.push(self.cache.stage_bytes(&manifest.to_bytes())?);
        let admitted = self.cache.commit(to_commit)?;
        let manifest_oid = admitted.last().map(|a| a.oid).unwrap_or(Oid::of_bytes(b""));
        let count = manifest.files.len() as u64;
        Ok((
            Marker {
                oid: manifest_oid,
                size: manifest.total_size(),
                kind: MarkerKind::Dir { files: count },
            },
            count,
        ))
    }

    // ---- finding markers ----

    /// Every marker under `paths` (the whole project when empty), sorted.
    pub fn find_markers(&self, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let (patterns, paths): (Vec<&PathBuf>, Vec<&PathBuf>) = paths
            .iter()
            .partition(|p| is_pattern(p) && !self.resolve(p).exists());
        let mut found = Vec::new();
        if !patterns.is_empty() {
            found.extend(self.markers_matching(&patterns)?);
            if paths.is_empty() {
                return Ok(found);
            }
        }
        let roots: Vec<PathBuf> = if paths.is_empty() {
            vec![self.root.clone()]
        } else {
            paths.iter().map(|p| self.resolve(p)).collect()
        };
        for path in roots {
            let (data, marker_path) = split_marker(&path);
            if marker_path.is_file() {
                found.push(marker_path);
            } else if data.is_dir() {
                let walker = walkdir::WalkDir::new(&data)
                    .sort_by_file_name()
                    .into_iter()
                    .filter_entry(|entry| {
                        // Skip .git and the data folders of folder markers.
                        !(entry.file_type().is_dir()
                            && entry.depth() > 0
                            && (is_git_entry(entry.file_name())
                                || split_marker(entry.path()).1.is_file()))
                    });
                for entry in walker {
                    let entry = entry.map_err(|err| {
                        let path = err.path().unwrap_or(&data).to_path_buf();
                        Error::Io {
                            path,
                            source: err.into(),
                        }
                    })?;
                    if entry.file_type().is_file()
                        && entry
                            .file_name()
                            .to_string_lossy()
                            .ends_with(marker::SUFFIX)
                    {
                        found.push(entry.into_path());
                    }
                }
            } else {
                return Err(Error::NotFound { path });
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The markers whose data paths (relative to the current folder, as the shell would
    /// see them) match glob patterns such as `data/*.h5ad` or `**/*.bin`. A pattern that
    /// matches nothing is an error naming it.
    fn markers_matching(&self, patterns: &[&PathBuf]) -> Result<Vec<PathBuf>> {
        let all = self.find_markers(&[])?;
        let mut found = Vec::new();
        for pattern in patterns {
            let text = pattern.to_string_lossy();
            let matcher = globset::GlobBuilder::new(&text)
                .literal_separator(true)
                .build()
                .map_err(|err| Error::BadTarget(format!("{text} ({err})")))?
                .compile_matcher();
            let before = found.len();
            for marker_path in &all {
                let (data, _) = split_marker(marker_path);
                let rel = data.strip_prefix(&self.cwd).unwrap_or(&data);
                if matcher.is_match(rel) {
                    found.push(marker_path.clone());
                }
            }
            if found.len() == before {
                return Err(Error::NotFound {
                    path: PathBuf::from(text.into_owned()),
                });
            }
        }
        Ok(found)
    }

    /// Reads and parses a marker, naming it on error. A repository is untrusted: a
    /// marker that names a path inside `.git`, has no name, or is a symlink leading out
    /// of the project is refused here, before anything is read or written for it.
    pub fn read_marker(&self, marker_path: &Path) -> Result<Marker> {
        let refuse = |source| Error::Marker {
            path: marker_path.into(),
            source,
        };
        if marker_path
            .file_name()
            .is_some_and(|name| name == marker::SUFFIX)
        {
            return Err(refuse(MarkerError::NoName));
        }
        let (data, _) = split_marker(marker_path);
        if let Some(git) = self.git_component(&data) {
            return Err(refuse(MarkerError::GitPath(git)));
        }
        let bytes = self.read_marker_bytes(marker_path)?;
        Marker::parse(&bytes).map_err(refuse)
    }

    /// The part of `path` below the project root, when it has a `.git` component.
    fn git_component(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components()
            .any(|part| match part {
                Component::Normal(name) => name.to_str().is_some_and(marker::is_git_name),
                _ => false,
            })
            .then(|| rel.display().to_string())
    }

    /// A marker's bytes, never through a symlink that leads out of the project.
    fn read_marker_bytes(&self, marker_path: &Path) -> Result<Vec<u8>> {
        match read_limited(marker_path) {
            Err(Error::Io { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
            {
                let target = fs::canonicalize(marker_path).at(marker_path)?;
                let root = fs::canonicalize(&self.root).at(&self.root)?;
                if !target.starts_with(&root) {
                    return Err(Error::Marker {
                        path: marker_path.into(),
                        source: MarkerError::SymlinkOutside(target.display().to_string()),
                    });
                }
                read_limited(&target)
            }
            other => other,
        }
    }

    /// Loads the manifest a folder marker names from the cache, verified.
    fn load_manifest(&self, marker_path: &Path, oid: &Oid) -> Result<Manifest> {
        self.ensure(oid, None, marker_path)?;
        let bytes = self.refetching_corrupt(oid, marker_path, || {
            self.cache.read_verified(oid, marker_path)
        })?;
        Manifest::parse(&bytes).map_err(|source| Error::Manifest {
            path: marker_path.into(),
            oid: *oid,
            source,
        })
    }

    /// A folder marker's manifest when the cache lost it (evicted) and no remote gives it
    /// back: rebuilt from the folder on disk, which is only possible (and then admitted
    /// again) when the folder is exactly what the marker names. `None` otherwise.
    fn rebuild_manifest(&self, marker: &Marker, data: &Path) -> Result<Option<Manifest>> {
        if !data.is_dir() {
            return Ok(None);
        }
        let files = list_folder(data)?;
        let entries = files
            .par_iter()
            .map(|(rel, path, meta)| {
                Ok(ManifestEntry {
                    path: rel.clone(),
                    oid: self.current_oid(path, meta)?,
                    size: meta.len(),
                    executable: is_executable_mode(meta.mode()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let Ok(manifest) = Manifest::new(entries) else {
            return Ok(None);
        };
        let bytes = manifest.to_bytes();
        if Oid::of_bytes(&bytes) != marker.oid {
            return Ok(None);
        }
        self.cache.admit_bytes(&bytes)?;
        Ok(Some(manifest))
    }

    /// [`Workspace::load_manifest`], refusing a manifest whose file count or total size
    /// disagrees with the marker.
    fn load_checked_manifest(&self, marker_path: &Path, marker: &Marker) -> Result<Manifest> {
        let manifest = self.load_manifest(marker_path, &marker.oid)?;
        manifest
            .check_marker(marker)
            .map_err(|source| Error::Marker {
                path: marker_path.into(),
                source,
            })?;
        Ok(manifest)
    }

    /// Refuses a file marker whose `size` disagrees with its cached object.
    fn check_object_size(&self, marker_path: &Path, marker: &Marker) -> Result<()> {
        let object = self.cache.object_path(&marker.oid);
        match fs::metadata(&object) {
            Ok(meta) if meta.len() != marker.size => {
                Err(size_disagrees(marker_path, marker, meta.len()))
            }
            _ => Ok(()),
        }
    }

    /// Creates `dir` and any missing folders above it, refusing to pass through a
    /// symlink anywhere below the project root (a cloned repository may plant one that
    /// leads out of the project). Folders already checked are remembered in `checked`.
    fn create_dirs_safely(&self, dir: &Path, checked: &mut HashSet<PathBuf>) -> Result<()> {
        if checked.contains(dir) {
            return Ok(());
        }
        let Ok(rel) = dir.strip_prefix(&self.root) else {
            // Outside the project (`open --to` elsewhere): the user's own choice of place.
            fs::create_dir_all(dir).at(dir)?;
            checked.insert(dir.to_path_buf());
            return Ok(());
        };
        let mut current = self.root.clone();
        for part in rel.components() {
            current.push(part);
            if checked.contains(&current) {
                continue;
            }
            let meta = match fs::symlink_metadata(&current) {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    match fs::create_dir(&current) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err).at(&current),
                    }
                    fs::symlink_metadata(&current).at(&current)?
                }
                Err(err) => return Err(err).at(&current),
            };
            if meta.file_type().is_symlink() {
                return Err(Error::Symlink {
                    link: current,
                    dest: dir.into(),
                });
            }
            if !meta.is_dir() {
                return Err(Error::Unsupported {
                    path: current,
                    reason: "is in the way (a file where a folder should be); move it and retry"
                        .into(),
                });
            }
            checked.insert(current.clone());
        }
        Ok(())
    }

    // ---- checkout ----

    /// Restores every marker under `paths` as read-only files. One bad marker does not
    /// stop the others; its error is in the report.
    pub fn checkout(&self, paths: &[PathBuf]) -> Result<CheckoutReport> {
        let markers = self.find_markers(paths)?;
        let mut report = CheckoutReport::default();
        let mut used = Vec::new();
        for marker_path in markers {
            if let Err(err) = self.checkout_marker(&marker_path, &mut report, &mut used) {
                report.failures.push(err);
            }
        }
        self.cache.touch(&used)?;
        Ok(report)
    }

    fn checkout_marker(
        &self,
        marker_path: &Path,
        report: &mut CheckoutReport,
        used: &mut Vec<Oid>,
    ) -> Result<()> {
        let marker = self.read_marker(marker_path)?;
        let (data, _) = split_marker(marker_path);
        match marker.kind {
            MarkerKind::File => {
                if !self.already_placed(&marker.oid, &data) {
                    self.ensure(&marker.oid, Some(marker.size), marker_path)?;
                }
                self.check_object_size(marker_path, &marker)?;
                self.add_work(1, marker.size);
                let outcome = self.place(&marker.oid, &data, false)?;
                self.cache.report_files(1);
                used.push(marker.oid);
                tally(report, outcome);
            }
            MarkerKind::Dir { .. } => {
                let manifest = self.load_checked_manifest(marker_path, &marker)?;
                used.push(marker.oid);
                self.place_folder(&manifest, &data, report, used)?;
            }
        }
        // A marker copied or committed without its .gitignore line: add it, as save
        // does, so `git add -A` never commits the data.
        add_to_gitignore(&data)?;
        Ok(())
    }

    /// Places every file of a manifest under `base` in parallel, after fetching the
    /// missing objects in one batch; failures go to the report, the rest are placed.
    fn place_folder(
        &self,
        manifest: &Manifest,
        base: &Path,
        report: &mut CheckoutReport,
        used: &mut Vec<Oid>,
    ) -> Result<()> {
        let wanted: Vec<(Oid, PathBuf)> = manifest
            .files
            .iter()
            .map(|entry| (entry.oid, join_rel(base, &entry.path)))
            .collect();
        let sizes = manifest.files.iter().map(|e| (e.oid, e.size)).collect();
        let (unavailable, errors) = self.ensure_many(&wanted, &sizes)?;
        report.failures.extend(errors);
        self.add_work(manifest.files.len() as u64, manifest.total_size());
        self.create_folders(base, manifest)?;
        let outcomes: Vec<Option<Result<Option<LinkKind>>>> = manifest
            .files
            .par_iter()
            .zip(wanted.par_iter())
            .map(|(entry, (_, dest))| {
                // Already reported by the fetch.
                if unavailable.contains(&entry.oid) {
                    return None;
                }
                let placed = self.place_in_existing_dir(&entry.oid, dest, entry.executable);
                self.cache.report_files(1);
                Some(placed)
            })
            .collect();
        for (entry, outcome) in manifest.files.iter().zip(outcomes) {
            match outcome {
                None => {}
                Some(Ok(outcome)) => {
                    used.push(entry.oid);
                    tally(report, outcome);
                }
                Some(Err(err)) => report.failures.push(err),
            }
        }
        Ok(())
    }

    /// Whether `dest` already holds `oid` (so nothing needs fetching for it).
    fn already_placed(&self, oid: &Oid, dest: &Path) -> bool {
        fs::symlink_metadata(dest)
            .ok()
            .filter(fs::Metadata::is_file)
            .and_then(|meta| self.current_oid(dest, &meta).ok())
            == Some(*oid)
    }

    /// Puts object `oid` at `dest` unless it is already there. Returns the link kind used,
    /// or `None` when the file already matched.
    fn place(&self, oid: &Oid, dest: &Path, executable: bool) -> Result<Option<LinkKind>> {
        self.create_dirs_safely(fsutil::parent_dir(dest), &mut HashSet::new())?;
        self.place_in_existing_dir(oid, dest, executable)
    }

    /// Creates every folder a manifest's files live in under `base`, once each, through
    /// no symlink.
    fn create_folders(&self, base: &Path, manifest: &Manifest) -> Result<()> {
        let mut checked = HashSet::new();
        self.create_dirs_safely(base, &mut checked)?;
        let mut last: Option<&str> = None;
        for entry in &manifest.files {
            let dir = entry.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            if last != Some(dir) {
                self.create_dirs_safely(&join_rel(base, dir), &mut checked)?;
                last = Some(dir);
            }
        }
        Ok(())
    }

    /// [`Workspace::place`] once `dest`'s folder exists.
    fn place_in_existing_dir(
        &self,
        oid: &Oid,
        dest: &Path,
        executable: bool,
    ) -> Result<Option<LinkKind>> {
        match fs::symlink_metadata(dest) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(dest),
            Ok(meta) if meta.is_file() => {
                let current = self.current_oid(dest, &meta)?;
                if current == *oid {
                    return Ok(None);
                }
                // Overwriting is safe only when the old content can be restored from the
                // cache; otherwise it is the user's unsaved work.
                if !self.force && !self.cache.contains(&current) {
                    return Err(Error::Modified { path: dest.into() });
                }
            }
            Ok(_) => {
                return Err(Error::Unsupported {
                    path: dest.into(),
                    reason: "is in the way (not a regular file); move it and retry".into(),
                })
            }
        }
        let scratch = self.scratch_dir();
        let temp_dir = scratch
            .as_deref()
            .unwrap_or_else(|| fsutil::parent_dir(dest));
        self.refetching_corrupt(oid, dest, || {
            self.cache.materialize_via(oid, dest, executable, temp_dir)
        })
        .map(Some)
    }

    /// Runs a read of a cached object; if the cached copy turns out corrupt (it is then
    /// quarantined) and a remote is configured, fetches it again and retries once. A
    /// fetched copy is not fsynced, so a crash may damage it: this is how it heals.
    fn refetching_corrupt<T>(
        &self,
        oid: &Oid,
        for_path: &Path,
        read: impl Fn() -> Result<T>,
    ) -> Result<T> {
        match read() {
            Err(Error::Corrupt { quarantine, .. }) if !self.source.is_empty() => {
                self.cache.warn(&format!(
                    "the cached copy of {oid} was corrupt (moved to {}); fetching it again",
                    quarantine.display()
                ));
                self.source.fetch_one(&self.cache, oid, None, for_path)?;
                read()
            }
            other => other,
        }
    }

    // ---- status ----

    /// The state of every marker under `paths`; markers that cannot be read are returned
    /// as errors beside the others.
    /// With no paths, the files git filters through czc (`czc track`) at HEAD are
    /// included too.
    /// `filtered`: the markers git stores for files it filters through czc (with their
    /// data paths, staged ones first), shown too when `paths` is empty.
    pub fn status(
        &self,
        paths: &[PathBuf],
        filtered: Vec<(Marker, PathBuf)>,
    ) -> Result<(Vec<MarkerStatus>, Vec<Error>)> {
        let markers = self.find_markers(paths)?;
        let mut statuses = Vec::new();
        let mut errors = Vec::new();
        for marker_path in markers {
            match self.status_of(&marker_path) {
                Ok(status) => statuses.push(status),
                Err(err) => errors.push(err),
            }
        }
        if paths.is_empty() {
            let mut shown = HashSet::new();
            for (marker, data) in filtered {
                // One line per file: its staged marker when the index has one.
                if !shown.insert(data.clone()) {
                    continue;
                }
                match self.filtered_status(&marker, &data) {
                    Ok(status) => statuses.push(status),
                    Err(err) => errors.push(err),
                }
            }
            statuses.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok((statuses, errors))
    }

    /// A filtered file's state: its content against the marker git stores for it (a
    /// file still holding the marker text was never smudged: `missing` when the cache
    /// has the object, else `not-cached`).
    fn filtered_status(&self, marker: &Marker, data: &Path) -> Result<MarkerStatus> {
        let state = match fs::symlink_metadata(data) {
            Ok(meta) if meta.is_file() && meta.len() as usize <= marker::MAX_MARKER_BYTES => {
                let bytes = fs::read(data).at(data)?;
                if bytes == marker.to_text().as_bytes() {
                    if self.cache.contains(&marker.oid) {
                        State::Missing
                    } else {
                        State::NotCached
                    }
                } else if Oid::of_bytes(&bytes) == marker.oid {
                    State::Ok
                } else {
                    State::Modified
                }
            }
            Ok(meta) if meta.is_file() => {
                if self.current_oid(data, &meta)? == marker.oid {
                    State::Ok
                } else {
                    State::Modified
                }
            }
            Ok(_) => State::Modified,
            Err(_) if self.cache.contains(&marker.oid) => State::Missing,
            Err(_) => State::NotCached,
        };
        Ok(MarkerStatus {
            path: data.into(),
            marker: data.into(),
            state,
            oid: marker.oid,
            files: None,
            changed: Vec::new(),
        })
    }

    fn file_state(&self, marker_path: &Path, marker: &Marker, path: &Path) -> Result<State> {
        let oid = &marker.oid;
        match fs::symlink_metadata(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(if self.cache.contains(oid) {
                State::Missing
            } else {
                State::NotCached
            }),
            Err(err) => Err(err).at(path),
            Ok(meta) if !meta.is_file() => Ok(State::Modified),
            // A matching file is ok whether or not the cache still holds it: status
            // compares the workspace with the markers, and `not-cached` means a missing
            // file that checkout could not restore. (Skipping that stat halves the cost
            // of a no-op status.)
            Ok(meta) if self.current_oid(path, &meta)? == *oid => {
                if meta.len() != marker.size {
                    return Err(size_disagrees(marker_path, marker, meta.len()));
                }
                Ok(State::Ok)
            }
            Ok(_) => Ok(State::Modified),
        }
    }

    /// [`Workspace::file_state`] for a file inside a folder, stat'ed relative to an open
    /// handle on its folder: one path component to look up instead of the whole path.
    fn file_state_in(
        &self,
        oid: &Oid,
        base: &Path,
        rel: &str,
        dirs: &mut DirCursor,
    ) -> Result<State> {
        let (dir_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let path = join_rel(base, rel);
        let missing = || {
            if self.cache.contains(oid) {
                State::Missing
            } else {
                State::NotCached
            }
        };
        let Some(fd) = dirs.open(base, dir_rel) else {
            return Ok(missing());
        };
        let stat = match rustix::fs::statat(fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(missing()),
            Err(err) => return Err(io::Error::from(err)).at(&path),
        };
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Ok(State::Modified);
        }
        let stamp = crate::statcache::FileStamp::of_stat(&stat);
        let current = match self.stats().lookup_stamp(&path, stamp) {
            Some(oid) => oid,
            None => {
                let started = now_ns();
                let (oid, _) = oid::hash_file(&path).at(&path)?;
                self.stats().record_stamp(&path, stamp, oid, started);
                oid
            }
        };
        Ok(if current == *oid {
            State::Ok
        } else {
            State::Modified
        })
    }

    fn status_of(&self, marker_path: &Path) -> Result<MarkerStatus> {
        let marker = self.read_marker(marker_path)?;
        let (data, _) = split_marker(marker_path);
        let (state, files, changed) = match marker.kind {
            MarkerKind::File => (
                self.file_state(marker_path, &marker, &data)?,
                None,
                Vec::new(),
            ),
            MarkerKind::Dir { files } if !self.cache.contains(&marker.oid) => {
                // The manifest was evicted: a remote may give it back, or the folder on
                // disk may be exactly what the marker names.
                let fetched = self.has_source()
                    && self.ensure(&marker.oid, None, marker_path).is_ok()
                    && self.cache.contains(&marker.oid);
                if !fetched {
                    let state = match self.rebuild_manifest(&marker, &data)? {
                        Some(_) => State::Ok,
                        None if data.exists() => State::Modified,
                        None => State::NotCached,
                    };
                    let counts = (state == State::Ok).then(|| FolderCounts {
                        ok: files as usize,
                        ..FolderCounts::default()
                    });
                    return Ok(MarkerStatus {
                        path: data,
                        marker: marker_path.into(),
                        state,
                        oid: marker.oid,
                        files: counts,
                        changed: Vec::new(),
                    });
                }
                self.folder_status(marker_path, &marker, &data)?
            }
            MarkerKind::Dir { .. } => self.folder_status(marker_path, &marker, &data)?,
        };
        Ok(MarkerStatus {
            path: data,
            marker: marker_path.into(),
            state,
            oid: marker.oid,
            files,
            changed,
        })
    }

    /// A folder marker's state and per-file counts, its manifest in the cache.
    fn folder_status(
        &self,
        marker_path: &Path,
        marker: &Marker,
        data: &Path,
    ) -> Result<(State, Option<FolderCounts>, Vec<ChangedFile>)> {
        let manifest = self.load_checked_manifest(marker_path, marker)?;
        let (states, on_disk) = rayon::join(
            || self.folder_states(&manifest, data),
            // Every listed file still on disk is found by this walk too, so any
            // surplus is files the marker does not list.
            || data.is_dir().then(|| count_files(data)).transpose(),
        );
        let states = states?;
        let mut counts = FolderCounts::default();
        for state in &states {
            match state {
                State::Ok => counts.ok += 1,
                State::Modified => counts.modified += 1,
                State::Missing => counts.missing += 1,
                State::NotCached => counts.not_cached += 1,
                State::NotPushed => counts.ok += 1,
            }
        }
        if let Some(on_disk) = on_disk? {
            counts.added = on_disk.saturating_sub(counts.ok + counts.modified);
        }
        let mut state = states.iter().copied().max().unwrap_or(State::Ok);
        if counts.added > 0 {
            state = State::Modified;
        }
        let changed = manifest
            .files
            .iter()
            .zip(&states)
            .filter(|(_, state)| **state != State::Ok)
            .map(|(entry, state)| ChangedFile {
                path: entry.path.clone(),
                state: *state,
            })
            .collect();
        Ok((state, Some(counts), changed))
    }

    /// The state of every file of a folder marker, in manifest order.
    fn folder_states(&self, manifest: &Manifest, data: &Path) -> Result<Vec<State>> {
        Ok(manifest
            .files
            .par_chunks(512)
            .map(|chunk| {
                let mut dirs = DirCursor::default();
                chunk
                    .iter()
                    .map(|entry| self.file_state_in(&entry.oid, data, &entry.path, &mut dirs))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Marks each `ok` status `not-pushed` when the remote (`remote`, else the default)
    /// lacks its object (for a folder: its manifest or any file's object), in one batch.
    pub fn mark_not_pushed(
        &self,
        statuses: &mut [MarkerStatus],
        storage: &dyn crate::storage::ReadStorage,
    ) -> Result<()> {
        let mut wanted: Vec<Vec<Oid>> = Vec::with_capacity(statuses.len());
        for status in statuses.iter() {
            let mut oids = vec![status.oid];
            if status.files.is_some() && self.cache.contains(&status.oid) {
                oids.extend(
                    self.load_manifest(&status.marker, &status.oid)?
                        .files
                        .iter()
                        .map(|e| e.oid),
                );
            }
            wanted.push(oids);
        }
        let keys: Vec<String> = wanted.iter().flatten().map(Oid::object_key).collect();
        let present = crate::storage::with_retries(|| storage.exists_many(&keys))?;
        let mut present = present.into_iter();
        for (status, oids) in statuses.iter_mut().zip(wanted) {
            // The first oid is the marker's own (a folder's manifest), the rest its files.
            let flags: Vec<bool> = oids
                .iter()
                .map(|_| !present.next().unwrap_or(true))
                .collect();
            let lacking = flags.iter().filter(|lacks| **lacks).count();
            if let Some(counts) = status.files.as_mut() {
                counts.not_pushed = flags.iter().skip(1).filter(|lacks| **lacks).count();
            }
            if lacking > 0 && status.state == State::Ok {
                status.state = State::NotPushed;
            }
        }
        Ok(())
    }

    // ---- push, fetch, pull ----

    /// Every object the markers under `paths` reference (file objects, manifests and the
    /// files manifests list), each with the marker it came from. Manifests missing from
    /// the cache are fetched through `chain` when given.
    /// `filtered`: the markers of files git filters through czc, counted when `paths` is
    /// empty.
    pub fn referenced(
        &self,
        paths: &[PathBuf],
        filtered: Vec<(Marker, PathBuf)>,
        chain: Option<&RemoteChain>,
    ) -> Result<Referenced> {
        let mut markers = Vec::new();
        let mut errors = Vec::new();
        for marker_path in self.find_markers(paths)? {
            match self.read_marker(&marker_path) {
                Ok(marker) => markers.push((marker, marker_path)),
                Err(err) => errors.push(err),
            }
        }
        if paths.is_empty() {
            markers.extend(filtered);
        }
        let mut referenced = self.expand_markers(markers, chain);
        referenced.errors.splice(0..0, errors);
        Ok(referenced)
    }

    /// The objects markers reference: each marker's object, and for folder markers the
    /// files their manifests list (manifests missing from the cache are fetched through
    /// `chain` when given). `for_path` of each marker names it in errors.
    pub fn expand_markers(
        &self,
        markers: Vec<(Marker, PathBuf)>,
        chain: Option<&RemoteChain>,
    ) -> Referenced {
        let mut oids = Vec::new();
        let mut errors = Vec::new();
        let mut fetched = Vec::new();
        let mut sizes = std::collections::HashMap::new();
        for (marker, marker_path) in markers {
            oids.push((marker.oid, marker_path.clone()));
            if marker.kind == MarkerKind::File {
                sizes.insert(marker.oid, marker.size);
            }
            if let MarkerKind::Dir { .. } = marker.kind {
                if let Some(chain) = chain {
                    if !self.cache.contains(&marker.oid) {
                        let got = if chain.is_empty() {
                            Err(Error::NotCached {
                                path: marker_path.clone(),
                                oid: marker.oid,
                            })
                        } else {
                            chain.fetch(&self.cache, &marker.oid, &marker_path)
                        };
                        match got {
                            Ok(admitted) => fetched.push(admitted),
                            Err(err) => {
                                let (data, _) = split_marker(&marker_path);
                                match self.rebuild_manifest(&marker, &data) {
                                    Ok(Some(_)) => {}
                                    _ => {
                                        errors.push(Error::ManifestLost {
                                            marker: marker_path.clone(),
                                            data,
                                            source: Box::new(err),
                                        });
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                }
                let bytes = match self.cache.read_verified(&marker.oid, &marker_path) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        errors.push(err);
                        continue;
                    }
                };
                match Manifest::parse(&bytes).and_then(|manifest| {
                    manifest.check_marker(&marker)?;
                    Ok(manifest)
                }) {
                    Ok(manifest) => {
                        for entry in manifest.files {
                            sizes.insert(entry.oid, entry.size);
                            oids.push((entry.oid, marker_path.clone()));
                        }
                    }
                    Err(source) => errors.push(Error::Manifest {
                        path: marker_path.clone(),
                        oid: marker.oid,
                        source,
                    }),
                }
            }
        }
        let mut seen = HashSet::new();
        oids.retain(|(oid, _)| seen.insert(*oid));
        Referenced {
            oids,
            errors,
            fetched,
            sizes,
        }
    }

    // ---- open, cat, unprotect ----

    /// Resolves what the user named: an oid, a marker, or a saved data path.
    pub fn target(&self, text: &str) -> Result<Target> {
        if text.starts_with("blake3:") {
            return text
                .parse()
                .map(Target::Oid)
                .map_err(|_| Error::BadTarget(text.into()));
        }
        let (data_path, marker_path) = split_marker(&self.resolve(Path::new(text)));
        if !marker_path.is_file() {
            return Err(Error::NotFound {
                path: self.resolve(Path::new(text)),
            });
        }
        let marker = self.read_marker(&marker_path)?;
        Ok(Target::Marker {
            marker_path,
            data_path,
            marker,
        })
    }

    /// The file object a target names, its size when a marker gives it, and the path
    /// to name in errors.
    fn file_oid(&self, target: &Target) -> Result<(Oid, Option<u64>, PathBuf)> {
        match target {
            Target::Oid(oid) => Ok((*oid, None, PathBuf::from(oid.to_string()))),
            Target::Marker {
                marker_path,
                marker,
                ..
            } => match marker.kind {
                MarkerKind::File => Ok((marker.oid, Some(marker.size), marker_path.clone())),
                MarkerKind::Dir { .. } => Err(Error::Unsupported {
                    path: marker_path.clone(),
                    reason: "is a folder marker: use `czc open --to <dir>` or `czc checkout`"
                        .into(),
                }),
            },
        }
    }

    /// The verified, read-only cache path of a file object.
    pub fn open_path(&self, target: &Target) -> Result<PathBuf> {
        let (oid, size, named) = self.file_oid(target)?;
        self.ensure(&oid, size, &named)?;
        let path =
            self.refetching_corrupt(&oid, &named, || self.cache.verified_path(&oid, &named))?;
        self.cache.touch(&[oid])?;
        Ok(path)
    }

    /// Places a read-only copy of the target at `dest` (a folder marker: the whole folder).
    pub fn open_to(&self, target: &Target, dest: &Path) -> Result<CheckoutReport> {
        let dest = self.resolve(dest);
        let mut report = CheckoutReport::default();
        let mut used = Vec::new();
        match target {
            Target::Marker {
                marker_path,
                marker:
                    marker @ Marker {
                        oid,
                        kind: MarkerKind::Dir { .. },
                        ..
                    },
                ..
            } => {
                let manifest = self.load_checked_manifest(marker_path, marker)?;
                used.push(*oid);
                self.place_folder(&manifest, &dest, &mut report, &mut used)?;
            }
            _ => {
                let (oid, size, named) = self.file_oid(target)?;
                self.ensure(&oid, size, &named)?;
                let outcome = self.place(&oid, &dest, false)?;
                used.push(oid);
                tally(&mut report, outcome);
            }
        }
        self.cache.touch(&used)?;
        Ok(report)
    }

    /// Streams a file object to `out`, verified before the first byte is sent.
    pub fn cat(&self, target: &Target, out: &mut impl Write) -> Result<u64> {
        let (oid, size, named) = self.file_oid(target)?;
        self.ensure(&oid, size, &named)?;
        self.cache.copy_to_writer(&oid, &named, out)
    }

    /// Replaces each materialized file (or every file of a folder) with a private writable
    /// copy, so editing it cannot touch the cache. Returns how many files were unprotected.
    pub fn unprotect(&self, paths: &[PathBuf]) -> Result<usize> {
        let mut count = 0;
        for path in paths {
            let (data, _) = split_marker(&self.resolve(path));
            let meta = fs::symlink_metadata(&data).map_err(|err| match err.kind() {
                io::ErrorKind::NotFound => Error::NotFound { path: data.clone() },
                _ => Error::Io {
                    path: data.clone(),
                    source: err,
                },
            })?;
            let files = if meta.is_dir() {
                list_folder(&data)?.into_iter().map(|(_, p, _)| p).collect()
            } else {
                vec![data.clone()]
            };
            for file in files {
                unprotect_file(&file, &self.temp_dir_for(fsutil::parent_dir(&file)))?;
                count += 1;
            }
        }
        Ok(count)
    }
}

/// The folder handle last opened while walking a sorted manifest, reused while
/// consecutive files share a folder.
#[derive(Default)]
struct DirCursor {
    rel: Option<String>,
    fd: Option<rustix::fd::OwnedFd>,
}

impl DirCursor {
    /// The open folder `base/rel`, or `None` if it does not exist.
    fn open(&mut self, base: &Path, rel: &str) -> Option<&rustix::fd::OwnedFd> {
        if self.rel.as_deref() != Some(rel) {
            let dir = if rel.is_empty() {
                base.to_path_buf()
            } else {
                join_rel(base, rel)
            };
            self.fd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok();
            self.rel = Some(rel.to_string());
        }
        self.fd.as_ref()
    }
}

/// Whether a folder entry is git's (`.git` in any case).
fn is_git_entry(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(marker::is_git_name)
}

fn size_disagrees(marker_path: &Path, marker: &Marker, actual: u64) -> Error {
    Error::Marker {
        path: marker_path.into(),
        source: MarkerError::Disagrees {
            key: "size",
            marker: marker.size,
            what: "its object's size is",
            actual,
        },
    }
}

fn tally(report: &mut CheckoutReport, outcome: Option<LinkKind>) {
    match outcome {
        None => report.unchanged += 1,
        Some(kind) => {
            report.restored += 1;
            let name = match kind {
                LinkKind::Reflink => "reflink",
                LinkKind::Hardlink => "hardlink",
                LinkKind::Copy => "copy",
            };
            *report.links.entry(name.into()).or_default() += 1;
        }
    }
}

/// `(data path, marker path)` for a path naming either.
/// Whether a command-line path is a glob pattern rather than a path.
fn is_pattern(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?', '['])
}

pub fn split_marker(path: &Path) -> (PathBuf, PathBuf) {
    let text = path.as_os_str().to_string_lossy();
    match text.strip_suffix(marker::SUFFIX) {
        Some(data) if !data.is_empty() && !data.ends_with('/') => {
            (PathBuf::from(data), path.to_path_buf())
        }
        _ => {
            let mut marker = path.as_os_str().to_os_string();
            marker.push(marker::SUFFIX);
            (path.to_path_buf(), PathBuf::from(marker))
        }
    }
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut path = base.to_path_buf();
    path.extend(rel.split('/'));
    path
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).at(path)?;
    Ok(normalize(&abs))
}

/// Removes `.` and resolves `..` lexically (no symlinks are followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Reads a file that should be a marker, refusing to read far past the marker limit.
/// A symlink is not followed: the open fails with ELOOP and the caller decides.
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound { path: path.into() },
            _ => Error::Io {
                path: path.into(),
                source: err,
            },
        })?;
    let mut bytes = Vec::new();
    (&file)
        .take(marker::MAX_MARKER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .at(path)?;
    if bytes.len() > marker::MAX_MARKER_BYTES {
        // Name the real size, not just the bytes read to find it too big.
        let size = file.metadata().at(path)?.len();
        return Err(Error::Marker {
            path: path.into(),
            source: MarkerError::TooLarge(size as usize),
        });
    }
    Ok(bytes)
}

/// Writes a marker atomically, leaving the file untouched when it already says the same.
pub fn write_marker(path: &Path, marker: &Marker) -> Result<()> {
    let text = marker.to_text();
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    fsutil::write_atomic(path, text.as_bytes()).at(path)
}

/// Adds `/<name>` to the `.gitignore` beside `data`, once.
pub fn add_to_gitignore(data: &Path) -> Result<()> {
    let Some(name) = data.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let ignore = fsutil::parent_dir(data).join(".gitignore");
    let line = format!("/{}", escape_gitignore(name));
    let existing = match fs::read_to_string(&ignore) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).at(&ignore),
    };
    if existing.lines().any(|l| l.trim_end() == line) {
        return Ok(());
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    fsutil::write_atomic(&ignore, text.as_bytes()).at(&ignore)
}

fn escape_gitignore(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') || (i == 0 && matches!(c, '#' | '!')) {
            out.push('\\');
        }
        out.push(c);
    }
    if out.ends_with(' ') {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

/// Every regular file under `dir` as (relative `/` path, full path, metadata), sorted.
/// `.git` is skipped; symlinks and special files are refused, naming them.
fn list_folder(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        // Git's own (`.git` folders, a submodule's `.git` file) in any case, never data.
        .filter_entry(|e| !(e.depth() > 0 && is_git_entry(e.file_name())));
    for entry in walker {
        let entry = entry.map_err(|err| Error::Io {
            path: err.path().unwrap_or(dir).to_path_buf(),
            source: err.into(),
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        if !entry.file_type().is_file() {
            return Err(Error::Unsupported {
                path: path.into(),
                reason: "is a symlink or special file; czc saves regular files only".into(),
            });
        }
        let rel = relative_slash(dir, path)?;
        let meta = entry.metadata().map_err(|err| Error::Io {
            path: path.into(),
            source: err.into(),
        })?;
        files.push((rel, path.to_path_buf(), meta));
    }
    Ok(files)
}

/// How many non-folder entries are under `dir` (`.git` skipped), without a stat each.
fn count_files(dir: &Path) -> Result<usize> {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).at(&current)? {
            let entry = entry.at(&current)?;
            let kind = entry.file_type().at(entry.path())?;
            if is_git_entry(&entry.file_name()) {
                continue;
            }
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// `path` relative to `base`, `/`-separated (Unix paths already are).
fn relative_slash(base: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(base).map_err(|_| Error::Unsupported {
        path: path.into(),
        reason: "is outside the folder being saved".into(),
    })?;
    rel.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Unsupported {
            path: path.into(),
            reason: "name is not UTF-8".into(),
        })
}

fn unprotect_file(path: &Path, temp_dir: &Path) -> Result<()> {
    let meta = fs::metadata(path).at(path)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".czc-tmp-")
        .tempfile_in(temp_dir)
        .at(temp_dir)?;
    let mut src = fs::File::open(path).at(path)?;
    io::copy(&mut src, temp.as_file_mut()).at(path)?;
    let mode = if is_executable_mode(meta.mode()) {
        0o755
    } else {
        0o644
    };
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .at(temp.path())?;
    temp.persist(path).map_err(|err| Error::Io {
        path: path.into(),
        source: err.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_marker_names_both_sides() {
        assert_eq!(
            split_marker(Path::new("/p/data.h5ad")),
            (
                PathBuf::from("/p/data.h5ad"),
                PathBuf::from("/p/data.h5ad.czc")
            )
        );
        assert_eq!(
            split_marker(Path::new("/p/data.h5ad.czc")),
            (
                PathBuf::from("/p/data.h5ad"),
                PathBuf::from("/p/data.h5ad.czc")
            )
        );
    }

    #[test]
    fn gitignore_entries_are_escaped_and_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a*b.bin");
        add_to_gitignore(&data).unwrap();
        add_to_gitignore(&data).unwrap();
        add_to_gitignore(&dir.path().join("#x")).unwrap();
        let text = fs::read_to_string(dir.path().join(".gitignore")).unwrap();
        assert_eq!(text, "/a\\*b.bin\n/\\#x\n");
    }

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
