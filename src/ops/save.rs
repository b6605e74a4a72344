//! `czc save`: hash files and folders into the cache and write their markers.

use std::path::PathBuf;

use super::Context;
use crate::error::Error;
use crate::workspace::Saved;

/// What `save` did: each path saved, and each that failed (the rest were saved).
#[derive(Debug, Default, serde::Serialize)]
pub struct SaveReport {
    pub saved: Vec<Saved>,
    #[serde(serialize_with = "crate::error::serialize_messages")]
    pub errors: Vec<Error>,
}

/// Saves each path (a file, a folder, or a marker of one); a failure of one path does
/// not stop the others.
pub fn save(ctx: &Context, paths: &[PathBuf]) -> SaveReport {
    let mut report = SaveReport::default();
    let _task = ctx.task("saving");
    for (_, result) in ctx.workspace.save(paths) {
        match result {
            Ok(saved) => report.saved.push(saved),
            Err(err) => report.errors.push(err),
        }
    }
    report
}
