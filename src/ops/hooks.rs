//! What czc's git hooks do: the pre-push upload and the post-checkout/post-merge
//! restore of changed sidecar markers.

use std::path::PathBuf;

use gix::ObjectId;

use super::history::{marker_path, markers_in};
use super::Context;
use crate::error::{Error, Result};
use crate::git::{GitError, History};
use crate::remote::TransferReport;
use crate::workspace::CheckoutReport;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// The pre-push hook: uploads to the default remote every object referenced by the
/// commits being pushed (git's `<local ref> <local sha> <remote ref> <remote sha>` lines)
/// that the git remote is not known to have already.
pub fn pre_push(ctx: &Context, git_remote: &str, ref_lines: &str) -> Result<TransferReport> {
    let ws = ctx.workspace();
    let history = History::open(ws.root())?;
    let mut tips = Vec::new();
    let mut hidden = history.remote_tips(git_remote)?;
    for line in ref_lines.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local_sha, _, remote_sha] = fields[..] else {
            return Err(Error::Git(GitError::PrePushLine(line.into())));
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
    super::transfer::push_objects(ctx, referenced.oids, all_errors, None)
}

fn parse_sha(text: &str) -> Result<ObjectId> {
    ObjectId::from_hex(text.as_bytes()).map_err(|_| Error::Git(GitError::BadCommitId(text.into())))
}

/// The post-checkout and post-merge hooks: fetches and checks out the sidecar markers
/// that differ between two commits (every one when `old` is unknown, as after a clone).
pub fn checkout_changed(
    ctx: &Context,
    old: Option<&str>,
    new: &str,
) -> Result<(TransferReport, CheckoutReport)> {
    let ws = ctx.workspace();
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
    let fetched = if ws.has_source() {
        super::transfer::fetch(ctx, &changed, None, None)?
    } else {
        TransferReport::default()
    };
    let checked_out = super::checkout::checkout(ctx, &changed)?;
    Ok((fetched, checked_out))
}
