//! `czc gc`: delete what no kept commit references, from a remote or the local cache.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::history::markers_in;
use super::Context;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::git::{GitError, History, Selection};
use crate::oid::Oid;
use crate::storage::{object_key_oid, StorageError};

/// What to collect.
#[derive(Debug, Clone)]
pub enum GcTarget {
    /// A remote's objects no kept commit of this clone references.
    Remote(String),
    /// The local cache's objects no known repository references.
    Cache,
}

/// Deletes unreferenced objects older than `grace` from `target` (only says which with
/// `dry_run`). Kept: what branch and tag tips, HEAD and the working tree reference (any
/// commit with `all_commits`), remote-tracking tips too.
pub fn gc(
    ctx: &Context,
    target: &GcTarget,
    all_commits: bool,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let selection = Selection {
        all_commits,
        ..Selection::default()
    };
    match target {
        GcTarget::Remote(name) => gc_remote(ctx, name, &selection, grace, dry_run),
        GcTarget::Cache => gc_cache(ctx, &selection, grace, dry_run),
    }
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
    /// Packs deleted whole, and packs rewritten with only their live objects.
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
}

/// Every object the kept history and the working tree reference. Any marker or
/// manifest that cannot be read makes this an error: deleting with an incomplete
/// picture of what is needed would lose data.
fn keep_set(ctx: &Context, selection: &Selection) -> Result<HashSet<Oid>> {
    let ws = ctx.workspace();
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
    let referenced = ws.expand_markers(markers, Some(ctx.chain()));
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
                Error::Git(GitError::RemoteRefsUnreadable {
                    remote: remote.into(),
                    source: Box::new(err),
                })
            })?;
        for line in listed.lines() {
            let Some((hex, name)) = line.split_once('\t') else {
                continue;
            };
            if name.ends_with("^{}") {
                continue;
            }
            if !history.has_object(hex) {
                return Err(Error::Git(GitError::NotFetched {
                    remote: remote.into(),
                    reference: name.into(),
                    commit: hex[..hex.len().min(12)].into(),
                }));
            }
        }
    }
    Ok(())
}

fn refuse(err: Error) -> Error {
    Error::Git(GitError::GcRefused {
        source: Box::new(err),
    })
}

/// `czc gc --remote <name>`: deletes the remote's objects that no kept marker references
/// and that are older than `grace`. Lists first, then deletes each with
/// `delete_if_hash_matches`, so a key someone rewrote in between is left alone.
fn gc_remote(
    ctx: &Context,
    name: &str,
    selection: &Selection,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let (name, storage) = ctx.remotes().writer(Some(name))?;
    check_history_is_current(ctx.root(), &History::open(ctx.root())?)?;
    let keep = keep_set(ctx, selection)?;
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
    let listed = storage.list("objects/")?;
    let listed_oids: Vec<_> = listed
        .iter()
        .filter_map(|key| object_key_oid(key))
        .collect();
    // Packed objects are collected pack by pack below, not one by one.
    let packed: std::collections::HashSet<_> = listed_oids
        .iter()
        .zip(storage.pack_locations(&listed_oids)?)
        .filter_map(|(oid, at)| at.map(|_| *oid))
        .collect();
    for key in listed {
        let Some(oid) = object_key_oid(&key) else {
            continue;
        };
        if keep.contains(&oid) || packed.contains(&oid) {
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
    // Packed and chunked objects: whole packs go, mostly dead ones are rewritten.
    let packs = storage.gc_packs(&|oid| keep.contains(oid), grace, dry_run)?;
    report.deleted.extend(packs.deleted);
    report.freed += packs.freed;
    report.kept_young += packs.kept_young;
    report.packs_deleted = packs.packs_deleted;
    report.packs_rewritten = packs.packs_rewritten;
    Ok(report)
}

/// `czc gc --cache`: drops cached objects that no registered repository references
/// (branch and tag tips, HEAD and the working tree; every commit with `--all-commits`),
/// that no key-cache entry holds, and that were not used within `grace`.
fn gc_cache(
    ctx: &Context,
    selection: &Selection,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let ws = ctx.workspace();
    let config = ctx.config();
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
        let repo = if root == ws.root() {
            ctx
        } else {
            let env = ctx.env().clone();
            let repo_config = Config::load(Some(root), &env)?;
            if repo_config.cache.dir != config.cache.dir {
                continue; // it uses another cache
            }
            // Its own remotes: its manifests may be fetched through them.
            other = Context::open_with(root, repo_config, env, super::Options::default())?;
            &other
        };
        keep.extend(keep_set(repo, selection).map_err(|err| {
            Error::Git(GitError::InRepository {
                repo: root.clone(),
                source: Box::new(err),
            })
        })?);
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
