//! Moving objects between the cache and remotes: `push`, `fetch`, `pull`.

use std::path::PathBuf;

use super::history::markers_in;
use super::Context;
use crate::cache::RemoteChain;
use crate::error::{Error, Result};
use crate::git::{History, Selection};
use crate::marker::Marker;
use crate::oid::Oid;
use crate::remote::TransferReport;
use crate::workspace::{CheckoutReport, Referenced};

/// Uploads what the markers under `paths` reference (all markers and filtered files, if
/// empty; every cached object with `all`) that the remote (`remote`, else the default)
/// lacks.
pub fn push(
    ctx: &Context,
    paths: &[PathBuf],
    remote: Option<&str>,
    all: bool,
) -> Result<TransferReport> {
    let (oids, errors) = if all {
        let oids = ctx
            .cache()
            .oids()?
            .into_iter()
            .map(|oid| (oid, ctx.cache().root().to_path_buf()))
            .collect();
        (oids, Vec::new())
    } else {
        // A folder whose manifest was evicted: fetched back (or rebuilt from the
        // folder), so its files are checked against the remote too.
        let referenced =
            ctx.workspace
                .referenced(paths, filtered(ctx, paths), Some(ctx.chain()))?;
        (referenced.oids, referenced.errors)
    };
    push_objects(ctx, oids, errors, remote)
}

/// Uploads the listed objects the remote lacks; `errors` (markers that could not be
/// read) count as failures of the push.
pub(crate) fn push_objects(
    ctx: &Context,
    oids: Vec<(Oid, PathBuf)>,
    errors: Vec<Error>,
    remote: Option<&str>,
) -> Result<TransferReport> {
    let (name, storage) = ctx.remotes().writer(remote)?;
    // The push adds its work once it knows what the remote lacks.
    let task = ctx.task("pushing");
    let mut report = crate::remote::push(ctx.cache(), &name, storage.as_ref(), &oids, ctx.jobs())?;
    drop(task);
    report.failed += errors.len();
    report.failures.splice(0..0, errors);
    Ok(report)
}

/// Downloads what [`Workspace::referenced`](crate::workspace::Workspace::referenced) or
/// `expand_markers` listed, through `chain`.
fn fetch_referenced(
    ctx: &Context,
    chain: &RemoteChain,
    referenced: Referenced,
) -> Result<TransferReport> {
    // The fetch adds its work once it knows what the cache lacks.
    let task = ctx.task("fetching");
    let mut report = crate::remote::fetch(
        ctx.cache(),
        chain,
        &referenced.oids,
        &referenced.sizes,
        ctx.jobs(),
    )?;
    drop(task);
    // Manifests fetched while reading the markers count as fetched, not as there.
    report.transferred += referenced.fetched.len();
    report.already -= referenced.fetched.len().min(report.already);
    report.bytes += referenced.fetched.iter().map(|a| a.size).sum::<u64>();
    report.failed += referenced.errors.len();
    report.failures.splice(0..0, referenced.errors);
    Ok(report)
}

/// With no paths, push and fetch include the files git filters through czc (what HEAD
/// and the index reference).
fn filtered(ctx: &Context, paths: &[PathBuf]) -> Vec<(Marker, PathBuf)> {
    if paths.is_empty() {
        super::history::filtered_markers(ctx.root())
    } else {
        Vec::new()
    }
}

/// Downloads into the cache what the markers under `paths` reference.
fn fetch_paths(ctx: &Context, paths: &[PathBuf], remote: Option<&str>) -> Result<TransferReport> {
    let chain = ctx.remotes().chain_or_one(remote)?;
    let referenced = ctx
        .workspace
        .referenced(paths, filtered(ctx, paths), Some(&chain))?;
    fetch_referenced(ctx, &chain, referenced)
}

/// Downloads into the cache what the markers under `paths` reference, or with
/// `history` what the commits it selects reference.
pub fn fetch(
    ctx: &Context,
    paths: &[PathBuf],
    remote: Option<&str>,
    history: Option<&Selection>,
) -> Result<TransferReport> {
    match history {
        Some(_) if !paths.is_empty() => Err(Error::Usage(
            "give paths or --rev/--branches/--all-commits, not both".into(),
        )),
        Some(selection) => fetch_history(ctx, selection, remote),
        None => fetch_paths(ctx, paths, remote),
    }
}

/// What `pull` did: its fetch, then its checkout.
#[derive(Debug, Default, serde::Serialize)]
pub struct PullReport {
    pub fetched: TransferReport,
    pub checkout: CheckoutReport,
    /// Objects the named remote could not give that the rest of the chain did.
    pub recovered: usize,
}

impl PullReport {
    /// Everything asked for was fetched and placed.
    pub fn complete(&self) -> bool {
        self.fetched.failed == 0 && self.checkout.failures.is_empty()
    }
}

/// Fetches what the markers under `paths` reference and checks it out; filtered files
/// whose smudge git skipped (they hold marker text) are filled in too.
pub fn pull(ctx: &Context, paths: &[PathBuf], remote: Option<&str>) -> Result<PullReport> {
    let ws = &ctx.workspace;
    let (filtered_fetch, filtered) = pull_filtered(ctx, paths)?;
    let has_sidecars = !paths.is_empty() || !ws.find_markers(&[])?.is_empty();
    let (mut fetched, mut checkout) = if has_sidecars || filtered.restored == 0 {
        match (fetch_paths(ctx, paths, remote), filtered.restored) {
            // Patterns that matched only filtered files.
            (Err(Error::NotFound { .. }), restored) if restored > 0 => {
                (TransferReport::default(), CheckoutReport::default())
            }
            (fetched, _) => (fetched?, super::checkout::checkout(ctx, paths)?),
        }
    } else {
        (TransferReport::default(), CheckoutReport::default())
    };
    fetched.transferred += filtered_fetch.transferred;
    fetched.bytes += filtered_fetch.bytes;
    fetched.failed += filtered_fetch.failed;
    fetched.failures.extend(filtered_fetch.failures);
    if fetched.remote.is_empty() {
        fetched.remote = filtered_fetch.remote;
    }
    checkout.restored += filtered.restored;
    checkout.failures.extend(filtered.failures);
    // What the named remote could not give, checkout may have had from the rest of the
    // chain: then it is a warning, and the report says success.
    let (recovered, still_failed): (Vec<Error>, Vec<Error>) = std::mem::take(&mut fetched.failures)
        .into_iter()
        .partition(|err| match err {
            Error::NotInRemotes { oid, .. } | Error::NotCached { oid, .. } => {
                ws.cache().contains(oid)
            }
            _ => false,
        });
    if let Some(first) = recovered.first() {
        ctx.reporter().warn(&format!(
            "{} could not give {} object{} ({}); {} came from the other remotes instead",
            fetched.remote,
            recovered.len(),
            if recovered.len() == 1 { "" } else { "s" },
            first.to_string().replace('\n', " "),
            if recovered.len() == 1 { "it" } else { "they" }
        ));
    }
    fetched.failed = fetched.failed.saturating_sub(recovered.len());
    fetched.failures = still_failed;
    // Objects the fetch could not get were reported once already (checkout, trying
    // the chain again on its miss, fails them the same way).
    // A folder's manifest the fetch could not get fails twice (reading the marker, then
    // fetching the objects): the first, which names the folder, is kept.
    let mut reported = std::collections::HashSet::new();
    fetched
        .failures
        .retain(|err| missing_object(err).is_none_or(|oid| reported.insert(oid)));
    checkout.failures.retain(|err| match err {
        Error::NotCached { .. } => false,
        _ => missing_object(err).is_none_or(|oid| !reported.contains(&oid)),
    });
    Ok(PullReport {
        fetched,
        checkout,
        recovered: recovered.len(),
    })
}

/// The object a failure is about when it is one no remote could give.
fn missing_object(err: &Error) -> Option<Oid> {
    match err {
        Error::NotInRemotes { oid, .. } | Error::NotCached { oid, .. } => Some(*oid),
        Error::ManifestLost { source, .. } => missing_object(source),
        _ => None,
    }
}

/// `czc fetch --rev/--branches/--all-commits`: downloads what those commits reference.
fn fetch_history(
    ctx: &Context,
    selection: &Selection,
    remote: Option<&str>,
) -> Result<TransferReport> {
    let ws = ctx.workspace();
    let history = History::open(ws.root())?;
    let commits = history.select(selection)?;
    let (markers, errors) = markers_in(ws, &history, &commits)?;
    let chain = ctx.remotes().chain_or_one(remote)?;
    let mut referenced = ws.expand_markers(markers, Some(&chain));
    referenced.errors.splice(0..0, errors);
    fetch_referenced(ctx, &chain, referenced)
}

/// `czc pull` for filtered files: a file git checked out without running the filter
/// (`CZC_SKIP_SMUDGE=1`, or no `czc install` on a CI machine) still holds its marker
/// text. Fetches those objects in one batch and writes the content in place, as smudge
/// would have. Files with any other content are left alone. `paths` limit it as for
/// sidecar markers (folders, files or glob patterns, relative to the current folder).
fn pull_filtered(ctx: &Context, paths: &[PathBuf]) -> Result<(TransferReport, CheckoutReport)> {
    let ws = ctx.workspace();
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
    let fetched = if ws.has_source() {
        crate::remote::fetch(ws.cache(), ctx.chain(), &wanted, &sizes, ctx.jobs())?
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
fn write_content(
    ws: &crate::workspace::Workspace,
    oid: &Oid,
    data: &std::path::Path,
) -> Result<()> {
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
