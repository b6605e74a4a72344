//! Moving objects between the cache and remotes: `push`, `fetch`, `pull`.

use std::path::PathBuf;

use super::Context;
use crate::error::{Error, Result};
use crate::git::Selection;
use crate::remote::TransferReport;
use crate::workspace::CheckoutReport;

/// Uploads what the markers under `paths` reference (all markers and filtered files, if
/// empty; every cached object with `all`) that the remote (`remote`, else the default)
/// lacks.
pub fn push(
    ctx: &Context,
    paths: &[PathBuf],
    remote: Option<&str>,
    all: bool,
) -> Result<TransferReport> {
    ctx.workspace.push(paths, remote, all)
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
        Some(selection) => crate::git::ops::fetch_history(&ctx.workspace, selection, remote),
        None => ctx.workspace.fetch(paths, remote),
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
    let (filtered_fetch, filtered) = crate::git::ops::pull_filtered(ws, paths)?;
    let has_sidecars = !paths.is_empty() || !ws.find_markers(&[])?.is_empty();
    let (mut fetched, mut checkout) = if has_sidecars || filtered.restored == 0 {
        match (ws.fetch(paths, remote), filtered.restored) {
            // Patterns that matched only filtered files.
            (Err(Error::NotFound { .. }), restored) if restored > 0 => {
                (TransferReport::default(), CheckoutReport::default())
            }
            (fetched, _) => (fetched?, ws.checkout(paths)?),
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
    // Objects the fetch could not get were reported once already.
    checkout
        .failures
        .retain(|err| !matches!(err, Error::NotCached { .. }));
    ws.end_progress();
    Ok(PullReport {
        fetched,
        checkout,
        recovered: recovered.len(),
    })
}
