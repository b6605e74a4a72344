//! Materializing saved data: `checkout`, `open`, `cat`, `unprotect`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Context;
use crate::error::Result;
use crate::workspace::CheckoutReport;

/// Places read-only copies of what the markers under `paths` (all, if empty) name,
/// fetching what the cache lacks through the remotes.
pub fn checkout(ctx: &Context, paths: &[PathBuf]) -> Result<CheckoutReport> {
    let _task = ctx.task("checking out");
    ctx.workspace.checkout(paths)
}

/// Where `open` found a read-only copy.
#[derive(Debug, serde::Serialize)]
pub struct OpenReport {
    pub path: PathBuf,
}

/// A read-only copy in the cache of what `target` (a marker, a saved path, an oid)
/// names.
pub fn open(ctx: &Context, target: &str) -> Result<OpenReport> {
    let target = ctx.workspace.target(target)?;
    Ok(OpenReport {
        path: ctx.workspace.open_path(&target)?,
    })
}

/// Places a copy of what `target` names at `dest`.
pub fn open_to(ctx: &Context, target: &str, dest: &Path) -> Result<CheckoutReport> {
    let target = ctx.workspace.target(target)?;
    let _task = ctx.task("checking out");
    ctx.workspace.open_to(&target, dest)
}

/// Writes the bytes `target` names to `out`; returns how many.
pub fn cat(ctx: &Context, target: &str, out: &mut impl Write) -> Result<u64> {
    let target = ctx.workspace.target(target)?;
    ctx.workspace.cat(&target, out)
}

/// What `unprotect` did.
#[derive(Debug, serde::Serialize)]
pub struct UnprotectReport {
    pub unprotected: usize,
}

/// Replaces the read-only copies under `paths` with writable files of their own.
pub fn unprotect(ctx: &Context, paths: &[PathBuf]) -> Result<UnprotectReport> {
    Ok(UnprotectReport {
        unprotected: ctx.workspace.unprotect(paths)?,
    })
}
