//! `czc ls`: the tracked data files of a commit, cached and pushed or not.

use super::Context;
use crate::error::{Error, Result};
use crate::git::{FoundMarker, GitError, History};
use crate::marker::MarkerKind;
use crate::oid::Oid;

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
pub fn ls(ctx: &Context, rev: Option<&str>) -> Result<Vec<Listed>> {
    let ws = ctx.workspace();
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
        return Err(Error::Git(GitError::RevOutsideRepository {
            rev: rev.into(),
            dir: ws.root().into(),
        }));
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
    let pushed = match ctx.remotes().writer(None) {
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
