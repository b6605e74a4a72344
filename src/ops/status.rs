//! `czc status`: each marker's file (or folder) against what it names.

use std::path::PathBuf;

use super::Context;
use crate::error::{Error, Result};
use crate::workspace::{MarkerStatus, State};

/// The state of every file asked about, and the markers that could not be read.
#[derive(Debug, Default, serde::Serialize)]
pub struct StatusReport {
    pub files: Vec<MarkerStatus>,
    #[serde(serialize_with = "crate::error::serialize_messages")]
    pub errors: Vec<Error>,
}

impl StatusReport {
    /// Everything matches its marker and every marker was read.
    pub fn all_ok(&self) -> bool {
        self.errors.is_empty() && self.files.iter().all(|s| s.state == State::Ok)
    }
}

/// Which remote `status` checks for the objects (`--remote`).
#[derive(Debug, Clone, Default)]
pub enum RemoteCheck {
    /// Only the local state.
    #[default]
    None,
    /// The default remote.
    Default,
    /// The remote of that name.
    Named(String),
}

/// The state of the markers under `paths` (all, if empty; filtered files too).
pub fn status(ctx: &Context, paths: &[PathBuf], remote: &RemoteCheck) -> Result<StatusReport> {
    let filtered = if paths.is_empty() {
        super::history::filtered_markers(ctx.root())
    } else {
        Vec::new()
    };
    let (mut files, errors) = ctx.workspace.status(paths, filtered)?;
    let name = match remote {
        RemoteCheck::None => None,
        RemoteCheck::Default => Some(
            ctx.remotes()
                .default_name()
                .ok_or(crate::error::Error::NoDefaultRemote)?,
        ),
        RemoteCheck::Named(name) => Some(name.clone()),
    };
    if let Some(name) = name {
        let storage = ctx.remotes().open(&name)?.reader();
        ctx.workspace
            .mark_not_pushed(&mut files, storage.as_ref())?;
    }
    Ok(StatusReport { files, errors })
}
