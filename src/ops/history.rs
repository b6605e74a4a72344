//! Markers read from git history (with gix, in `git::history`), as the commands need
//! them: each object once, under the path it is reported by.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::error::{Error, Result};
use crate::git::{FoundMarker, History};
use crate::marker::{Marker, SUFFIX};
use crate::workspace::Workspace;

/// The marker path a found marker is reported under: `<data>.czc` for sidecars, the
/// data path for filtered files.
pub(crate) fn marker_path(ws: &Workspace, found: &FoundMarker) -> PathBuf {
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
pub(crate) type MarkerList = Vec<(Marker, PathBuf)>;

/// Markers of the selected commits, each object once, ready for `expand_markers`.
pub(crate) fn markers_in(
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

/// The markers git stores at HEAD for files it filters through czc, with the data
/// path each stands for. Empty outside git or before the first commit.
pub(crate) fn filtered_markers(root: &Path) -> Vec<(Marker, PathBuf)> {
    // A project that tracks nothing through the filter pays no history walk.
    let tracked = crate::git::install::tracked_patterns(root).unwrap_or_default();
    if tracked.is_empty() {
        return Vec::new();
    }
    let Ok(history) = History::open(root) else {
        return Vec::new();
    };
    // The index first: a staged file's marker is the one its next commit holds.
    let staged = history
        .staged_markers(&tracked)
        .map(|(found, _)| found)
        .unwrap_or_default();
    let committed = match history.head() {
        Ok(Some(head)) => history
            .markers(&[head])
            .map(|(found, _)| found)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut seen = HashSet::new();
    staged
        .into_iter()
        .chain(committed)
        .filter(|f| !f.sidecar && seen.insert((f.data_path.clone(), f.marker.oid)))
        .map(|f| (f.marker, root.join(f.data_path)))
        .collect()
}
