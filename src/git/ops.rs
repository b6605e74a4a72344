//! History-aware commands: fetch by revision, the hooks' work, `czc ls`, and `czc gc`
//! of a remote or of the local cache. They read markers from commits with
//! [`History`] and hand the objects to the workspace's push, fetch and checkout.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use gix::ObjectId;

use super::history::{FoundMarker, History, Selection};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::marker::{Marker, MarkerKind, SUFFIX};
use crate::oid::Oid;
use crate::remote::{self, TransferReport};
use crate::storage::{object_key_oid, StorageError};
use crate::workspace::{CheckoutReport, Workspace};

/// The marker path a found marker is reported under: `<data>.czc` for sidecars, the
/// data path for filtered files.
fn marker_path(ws: &Workspace, found: &FoundMarker) -> PathBuf {
    let data = ws.root().join(&found.data_path);
    if found.sidecar {
        let mut name = data.into_os_string();
        name.push(SUFFIX);
        PathBuf::from(name)
    } else {
        data
    }
}

/// Markers with the path they are reported under, as `expand_markers` takes them.
type MarkerList = Vec<(Marker, PathBuf)>;

/// Markers of the selected commits, each object once, ready for `expand_markers`.
fn markers_in(
    ws: &Workspace,
    history: &History,
    commits: &[ObjectId],
) -> Result<(MarkerList, Vec<Error>)> {
    let (found, errors) = history.markers(commits)?;
    let mut seen = HashSet::new();
    let markers = found
        .iter()
        .filter(|f| seen.insert(f.marker.oid))
        .map(|f| (f.marker, marker_path(ws, f)))
        .collect();
    Ok((markers, errors))
}

/// `czc fetch --rev/--branches/--all-commits`: downloads what those commits reference.
pub fn fetch_history(
    ws: &Workspace,
    selection: &Selection,
    remote: Option<&str>,
) -> Result<TransferReport> {
    let history = History::open(ws.root())?;
    let commits = history.select(selection)?;
    let (markers, errors) = markers_in(ws, &history, &commits)?;
    let chain = ws.remotes().chain_or_one(remote)?;
    let mut referenced = ws.expand_markers(markers, Some(&chain));
    referenced.errors.splice(0..0, errors);
    ws.fetch_referenced(&chain, referenced)
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// The pre-push hook: uploads to the default remote every object referenced by the
/// commits being pushed (git's `<local ref> <local sha> <remote ref> <remote sha>` lines)
/// that the git remote is not known to have already.
pub fn pre_push(ws: &Workspace, git_remote: &str, ref_lines: &str) -> Result<TransferReport> {
    let history = History::open(ws.root())?;
    let mut tips = Vec::new();
    let mut hidden = history.remote_tips(git_remote)?;
    for line in ref_lines.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local_sha, _, remote_sha] = fields[..] else {
            return Err(Error::Git(format!(
                "pre-push: git passed an unexpected line {line:?}"
            )));
        };
        if local_sha.chars().all(|c| c == '0') {
            continue; // a deletion pushes no content
        }
        tips.push(parse_sha(local_sha)?);
        if remote_sha != ZERO_SHA && !remote_sha.chars().all(|c| c == '0') {
            hidden.push(parse_sha(remote_sha)?);
        }
    }
    let commits = history.walk(&tips, &hidden)?;
    let (markers, errors) = markers_in(ws, &history, &commits)?;
    let referenced = ws.expand_markers(markers, None);
    if referenced.oids.is_empty() && errors.is_empty() && referenced.errors.is_empty() {
        return Ok(TransferReport::default());
    }
    let mut all_errors = errors;
    all_errors.extend(referenced.errors);
    ws.push_objects(referenced.oids, all_errors, None)
}

fn parse_sha(text: &str) -> Result<ObjectId> {
    ObjectId::from_hex(text.as_bytes())
        .map_err(|err| Error::Git(format!("'{text}' is not a commit id: {err}")))
}

/// The post-checkout and post-merge hooks: fetches and checks out the sidecar markers
/// that differ between two commits (every one when `old` is unknown, as after a clone).
pub fn checkout_changed(
    ws: &Workspace,
    old: Option<&str>,
    new: &str,
) -> Result<(TransferReport, CheckoutReport)> {
    let history = History::open(ws.root())?;
    let new = history.resolve(new)?;
    let old = match old {
        Some(rev) if !rev.chars().all(|c| c == '0') => history.resolve(rev).ok(),
        _ => None,
    };
    let (now, _) = history.changed_sidecars(old, new)?;
    let changed: Vec<PathBuf> = now
        .iter()
        .map(|f| marker_path(ws, f))
        .filter(|path| path.is_file())
        .collect();
    if changed.is_empty() {
        return Ok((TransferReport::default(), CheckoutReport::default()));
    }
    let fetched = if ws.has_remotes() {
        ws.fetch(&changed, None)?
    } else {
        TransferReport::default()
    };
    let checked_out = ws.checkout(&changed)?;
    Ok((fetched, checked_out))
}

/// One line of `czc ls`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The data path, relative to the repository root.
    pub path: String,
    pub oid: Oid,
    pub size: u64,
    /// `file` or `dir`.
    pub kind: &'static str,
    /// `sidecar` (a `.czc` file) or `filter` (stored by the git filter).
    pub tracked_by: &'static str,
    pub cached: bool,
    /// Whether the default remote has it; None without a default remote.
    pub pushed: Option<bool>,
}

/// `czc ls`: the markers of a commit (default: HEAD plus the sidecar markers in the
/// working tree), with their cached and pushed state.
pub fn ls(ws: &Workspace, rev: Option<&str>) -> Result<Vec<Listed>> {
    let mut found: Vec<FoundMarker> = Vec::new();
    let history = History::open(ws.root()).ok();
    if let Some(history) = &history {
        let commit = match rev {
            Some(rev) => Some(history.resolve(rev)?),
            None => history.head()?,
        };
        if let Some(commit) = commit {
            let (markers, errors) = history.markers(&[commit])?;
            if let Some(err) = errors.into_iter().next() {
                return Err(err);
            }
            found.extend(markers);
        }
    } else if let Some(rev) = rev {
        return Err(Error::Git(format!(
            "--rev {rev}: {} is not in a git repository",
            ws.root().display()
        )));
    }
    if rev.is_none() {
        // The working tree's sidecars win over HEAD's: they may be saved but not committed.
        for marker_path in ws.find_markers(&[])? {
            let marker = ws.read_marker(&marker_path)?;
            let data = marker_path.with_extension("");
            let rel = data.strip_prefix(ws.root()).unwrap_or(&data).to_path_buf();
            found.retain(|f| !(f.sidecar && f.data_path == rel));
            found.push(FoundMarker {
                data_path: rel,
                marker,
                sidecar: true,
            });
        }
    }
    found.sort_by(|a, b| a.data_path.cmp(&b.data_path));
    let pushed = match ws.remotes().writer(None) {
        Ok((_, storage)) => {
            let keys: Vec<String> = found.iter().map(|f| f.marker.oid.object_key()).collect();
            Some(storage.exists_many(&keys)?)
        }
        Err(_) => None,
    };
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, f)| Listed {
            path: f.data_path.to_string_lossy().into_owned(),
            oid: f.marker.oid,
            size: f.marker.size,
            kind: match f.marker.kind {
                MarkerKind::File => "file",
                MarkerKind::Dir { .. } => "dir",
            },
            tracked_by: if f.sidecar { "sidecar" } else { "filter" },
            cached: ws.cache().contains(&f.marker.oid),
            pushed: pushed.as_ref().map(|flags| flags[i]),
        })
        .collect())
}

/// What `czc gc` did (or, with `--dry-run`, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Where: a remote's name, or `cache`.
    pub target: String,
    pub dry_run: bool,
    /// Objects some kept marker references.
    pub referenced: usize,
    /// Unreferenced objects deleted (or that would be).
    pub deleted: Vec<Oid>,
    pub freed: u64,
    /// Unreferenced but inside the grace period.
    pub kept_young: usize,
    /// Changed by someone else between the listing and the delete: left alone.
    pub lost_races: usize,
    /// Objects no remote holds yet, kept whatever references them (`gc --cache`).
    pub unpushed_kept: usize,
    /// Registered repositories that were skipped, and why.
    pub skipped: Vec<String>,
    /// Leftovers of interrupted uploads removed (`gc --remote`).
    pub stale_uploads_swept: usize,
}

/// Every object the kept history and the working tree reference. Any marker or
/// manifest that cannot be read makes this an error: deleting with an incomplete
/// picture of what is needed would lose data.
fn keep_set(ws: &Workspace, selection: &Selection) -> Result<HashSet<Oid>> {
    let history = History::open(ws.root())?;
    let mut selection = gc_selection(selection);
    if history.head()?.is_none() {
        // No commit yet: only the working tree's markers count.
        selection.revs.retain(|rev| rev != "HEAD");
    }
    let commits = history.select(&selection)?;
    let (mut markers, errors) = markers_in(ws, &history, &commits)?;
    if let Some(err) = errors.into_iter().next() {
        return Err(refuse(err));
    }
    for marker_path in ws.find_markers(&[])? {
        markers.push((ws.read_marker(&marker_path).map_err(refuse)?, marker_path));
    }
    let chain = ws.remotes().chain();
    let referenced = ws.expand_markers(markers, Some(&chain));
    if let Some(err) = referenced.errors.into_iter().next() {
        return Err(refuse(err));
    }
    Ok(referenced.oids.into_iter().map(|(oid, _)| oid).collect())
}

/// Without `--all-commits` or revisions, gc keeps what every branch, tag and HEAD point at.
fn gc_selection(selection: &Selection) -> Selection {
    let mut selection = selection.clone();
    if !selection.all_commits && selection.revs.is_empty() {
        selection.branches = true;
        selection.remote_tips = true;
        selection.revs.push("HEAD".into());
    }
    selection
}

/// gc must not judge by a view of history older than the git remotes': a teammate may
/// have pushed commits that need objects this clone thinks unreferenced. Every branch
/// and tag of every git remote must be a commit this clone has, or gc refuses.
fn check_history_is_current(root: &std::path::Path, history: &History) -> Result<()> {
    let remotes = crate::git::install::git(root, &["remote"])?;
    for remote in remotes.lines().map(str::trim).filter(|r| !r.is_empty()) {
        let listed = crate::git::install::git(root, &["ls-remote", "--heads", "--tags", remote])
            .map_err(|err| {
                Error::Git(format!(
                    "gc stopped before deleting anything: cannot read the refs of git remote {remote} ({err}); gc needs an up-to-date view of history, so retry when it is reachable"
                ))
            })?;
        for line in listed.lines() {
            let Some((hex, name)) = line.split_once('\t') else {
                continue;
            };
            if name.ends_with("^{}") {
                continue;
            }
            if !history.has_object(hex) {
                return Err(Error::Git(format!(
                    "gc stopped before deleting anything: {remote}'s {name} is at {}, which this clone has not fetched; run `git fetch {remote}` first",
                    &hex[..hex.len().min(12)]
                )));
            }
        }
    }
    Ok(())
}

fn refuse(err: Error) -> Error {
    Error::Git(format!(
        "gc stopped before deleting anything: {err}; fix or fetch it first"
    ))
}

/// `czc gc --remote <name>`: deletes the remote's objects that no kept marker references
/// and that are older than `grace`. Lists first, then deletes each with
/// `delete_if_hash_matches`, so a key someone rewrote in between is left alone.
pub fn gc_remote(
    ws: &Workspace,
    name: &str,
    selection: &Selection,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let (name, storage) = ws.remotes().writer(Some(name))?;
    check_history_is_current(ws.root(), &History::open(ws.root())?)?;
    let keep = keep_set(ws, selection)?;
    let mut report = GcReport {
        target: name,
        dry_run,
        referenced: keep.len(),
        ..GcReport::default()
    };
    let now = SystemTime::now();
    if !dry_run {
        report.stale_uploads_swept = storage
            .sweep_stale_uploads(&["objects/".to_string()], crate::storage::STALE_UPLOAD_AGE)?;
    }
    for key in storage.list("objects/")? {
        let Some(oid) = object_key_oid(&key) else {
            continue;
        };
        if keep.contains(&oid) {
            continue;
        }
        let young = match storage.last_modified(&key)? {
            None => continue, // gone meanwhile
            Some(modified) => now.duration_since(modified).unwrap_or_default() < grace,
        };
        if young {
            report.kept_young += 1;
            continue;
        }
        let size = storage.size(&key)?.unwrap_or(0);
        if !dry_run {
            match storage.delete_if_hash_matches(&key, &oid) {
                Ok(()) => {}
                Err(StorageError::LostRace { .. }) => {
                    report.lost_races += 1;
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        }
        report.deleted.push(oid);
        report.freed += size;
    }
    Ok(report)
}

/// `czc gc --cache`: drops cached objects that no registered repository references
/// (branch and tag tips, HEAD and the working tree; every commit with `--all-commits`),
/// that no key-cache entry holds, and that were not used within `grace`.
pub fn gc_cache(
    ws: &Workspace,
    config: &Config,
    selection: &Selection,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let cache = ws.cache();
    let mut keep: HashSet<Oid> = crate::caches::keys::key_cache_oids(cache)
        .into_iter()
        .collect();
    let mut repos = cache.known_repos();
    if !repos.iter().any(|r| r == ws.root()) {
        repos.push(ws.root().to_path_buf());
    }
    let mut skipped = Vec::new();
    for root in &repos {
        if !root.join(".git").exists() {
            skipped.push(format!(
                "{} (gone, or no longer a git repository)",
                root.display()
            ));
            continue;
        }
        let other;
        let repo_ws = if root == ws.root() {
            ws
        } else {
            let env = crate::config::Env::from_process();
            let repo_config = Config::load(Some(root), &env)?;
            if repo_config.cache.dir != config.cache.dir {
                continue; // it uses another cache
            }
            other = Workspace::open(root, &repo_config, &env)?;
            &other
        };
        keep.extend(
            keep_set(repo_ws, selection)
                .map_err(|err| Error::Git(format!("in {}: {err}", root.display())))?,
        );
    }
    let now_ms = crate::fsutil::now_millis();
    let grace_ms = grace.as_millis().min(i64::MAX as u128) as i64;
    let mut report = GcReport {
        target: "cache".into(),
        dry_run,
        referenced: keep.len(),
        skipped,
        ..GcReport::default()
    };
    for entry in cache.index().entries()? {
        if keep.contains(&entry.oid) {
            continue;
        }
        if !entry.pushed {
            // Maybe its only copy, saved by a project czc does not know of.
            report.unpushed_kept += 1;
            continue;
        }
        if now_ms - entry.last_used_at < grace_ms {
            report.kept_young += 1;
            continue;
        }
        report.deleted.push(entry.oid);
        report.freed += entry.size;
    }
    if !dry_run {
        cache.remove_objects(&report.deleted)?;
    }
    Ok(report)
}

/// `czc pull` for filtered files: a file git checked out without running the filter
/// (`CZC_SKIP_SMUDGE=1`, or no `czc install` on a CI machine) still holds its marker
/// text. Fetches those objects in one batch and writes the content in place, as smudge
/// would have. Files with any other content are left alone. `paths` limit it as for
/// sidecar markers (folders, files or glob patterns, relative to the current folder).
pub fn pull_filtered(
    ws: &Workspace,
    paths: &[PathBuf],
) -> Result<(TransferReport, CheckoutReport)> {
    let mut report = CheckoutReport::default();
    let Ok(history) = History::open(ws.root()) else {
        return Ok((TransferReport::default(), report));
    };
    let Some(head) = history.head()? else {
        return Ok((TransferReport::default(), report));
    };
    let (found, errors) = history.markers(&[head])?;
    report.failures.extend(errors);
    // Each argument is a glob over paths as shown (relative to the current folder), or
    // a path whose files it selects; globs are compiled once.
    let globs: Vec<Option<globset::GlobMatcher>> = paths
        .iter()
        .map(|p| {
            globset::GlobBuilder::new(&p.to_string_lossy())
                .literal_separator(true)
                .build()
                .ok()
                .map(|glob| glob.compile_matcher())
        })
        .collect();
    let selected = |data: &std::path::Path| -> bool {
        paths.is_empty()
            || paths.iter().zip(&globs).any(|(p, glob)| {
                glob.as_ref().is_some_and(|g| g.is_match(ws.display(data)))
                    || data.starts_with(ws.resolve_path(p))
            })
    };
    let pending: Vec<(Marker, PathBuf)> = found
        .into_iter()
        .filter(|f| !f.sidecar)
        .map(|f| (f.marker, ws.root().join(&f.data_path)))
        .filter(|(marker, data)| {
            selected(data)
                && std::fs::read(data).is_ok_and(|bytes| bytes == marker.to_text().as_bytes())
        })
        .collect();
    if pending.is_empty() {
        return Ok((TransferReport::default(), report));
    }
    let wanted: Vec<(Oid, PathBuf)> = pending.iter().map(|(m, p)| (m.oid, p.clone())).collect();
    let sizes = pending.iter().map(|(m, _)| (m.oid, m.size)).collect();
    let fetched = if ws.has_remotes() {
        let chain = ws.remotes().chain();
        remote::fetch(
            ws.cache(),
            &chain,
            &wanted,
            &sizes,
            crate::remote::DEFAULT_TRANSFER_JOBS,
        )?
    } else {
        TransferReport::default()
    };
    for (marker, data) in &pending {
        match write_content(ws, &marker.oid, data) {
            Ok(()) => report.restored += 1,
            Err(err) => report.failures.push(err),
        }
    }
    Ok((fetched, report))
}

/// Replaces a pointer file with the object's content: a private, writable copy written
/// beside it and renamed over it, as git's own checkout would leave it.
fn write_content(ws: &Workspace, oid: &Oid, data: &std::path::Path) -> Result<()> {
    use crate::error::IoContext;
    let dir = ws.temp_dir_for(crate::fsutil::parent_dir(data));
    let mut temp = tempfile::Builder::new()
        .prefix(".czc-tmp-")
        .tempfile_in(&dir)
        .at(&dir)?;
    ws.cache().copy_to_writer(oid, data, temp.as_file_mut())?;
    let mode = std::fs::metadata(data).map(|m| m.permissions()).at(data)?;
    std::fs::set_permissions(temp.path(), mode).at(temp.path())?;
    temp.persist(data).map_err(|err| Error::Io {
        path: data.into(),
        source: err.error,
    })?;
    Ok(())
}
