//! `czc gc`: delete what no kept commit references, from a remote or the local cache.

use std::time::Duration;

use super::Context;
use crate::error::Result;
use crate::git::ops::GcReport;
use crate::git::Selection;

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
        GcTarget::Remote(name) => {
            crate::git::ops::gc_remote(ctx.workspace(), name, &selection, grace, dry_run)
        }
        GcTarget::Cache => {
            crate::git::ops::gc_cache(ctx.workspace(), ctx.config(), &selection, grace, dry_run)
        }
    }
}
