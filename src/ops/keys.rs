//! A remote's keys (not content-addressed): `get`, `put`, `rm`, through the key cache.

use std::path::{Path, PathBuf};

use super::Context;
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::remote::{KeyFetch, PutCondition};

/// A read-only local copy of `remote:key`, downloaded again only if the remote's copy
/// changed.
pub fn get(ctx: &Context, remote: &str, key: &str) -> Result<KeyFetch> {
    let storage = ctx.workspace.remotes().open(remote)?.reader();
    crate::remote::get_key(ctx.workspace.cache(), remote, storage.as_ref(), key)
}

/// What `put` did.
#[derive(Debug, serde::Serialize)]
pub struct PutReport {
    /// False when `IfNewer` found the remote's copy at least as new.
    pub written: bool,
}

/// Uploads `file` to `remote:key` under `condition`; a lost race is an error.
pub fn put(
    ctx: &Context,
    remote: &str,
    key: &str,
    file: &Path,
    condition: PutCondition,
) -> Result<PutReport> {
    let (_, storage) = ctx.workspace.remotes().writer(Some(remote))?;
    let written = crate::remote::put_key(storage.as_ref(), key, file, condition)?;
    if written {
        // The next `get` of this key is a local hit on what was just written, not a
        // stale copy from before.
        crate::remote::remember_key(ctx.workspace.cache(), remote, storage.as_ref(), key, file)?;
    }
    Ok(PutReport { written })
}

/// What `rm` did.
#[derive(Debug, serde::Serialize)]
pub struct RemoveReport {
    /// `remote:key`.
    pub removed: String,
}

/// Deletes `remote:key`, only if it still holds `if_match` when given; a key that is
/// not there is [`Error::NotFound`].
pub fn rm(ctx: &Context, remote: &str, key: &str, if_match: Option<Oid>) -> Result<RemoveReport> {
    let (_, storage) = ctx.workspace.remotes().writer(Some(remote))?;
    let removed = crate::remote::remove_key(
        ctx.workspace.cache(),
        remote,
        storage.as_ref(),
        key,
        if_match,
    )?;
    let name = format!("{remote}:{key}");
    if !removed {
        return Err(Error::NotFound {
            path: PathBuf::from(name),
        });
    }
    Ok(RemoveReport { removed: name })
}
