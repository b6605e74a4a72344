//! git integration as commands: `init`, `install`/`uninstall`, `track`/`untrack`, and the
//! filter (`filter-process`, `clean`, `smudge`). The protocol and the files they edit
//! live in `git/`; these are the front ends' one way in.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::Context;
use crate::error::{Error, Result};
use crate::git::install::{self, InstallReport, Scope};

/// What `init` did.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub root: PathBuf,
    /// False when `.czcache.toml` was already there.
    pub created: bool,
}

/// Writes `.czcache.toml` at the project root around `dir` if it is not there.
pub fn init(dir: &Path) -> Result<InitReport> {
    let root = crate::workspace::find_root(dir);
    let created = crate::workspace::init(&root)?;
    Ok(InitReport { root, created })
}

/// Sets git up to run files through czc (the filter in `scope`'s config, and czc's
/// hooks inside a repository); with `installing` false, undoes it.
pub fn install(dir: &Path, scope: Scope, installing: bool) -> Result<InstallReport> {
    if installing {
        install::install(dir, scope)
    } else {
        install::uninstall(dir, scope)
    }
}

/// The `.gitattributes` patterns sent through czc at the project root around `dir`.
pub fn tracked(dir: &Path) -> Result<Vec<String>> {
    install::tracked_patterns(&crate::workspace::find_root(dir))
}

/// Tracks (or, with `tracking` false, untracks) `patterns`; returns the ones changed.
pub fn track(dir: &Path, patterns: &[String], tracking: bool) -> Result<Vec<String>> {
    let root = crate::workspace::find_root(dir);
    if tracking {
        install::track(&root, patterns)
    } else {
        install::untrack(&root, patterns)
    }
}

/// git's long-running filter over `input`/`output`; installs czc's hooks first, as Git
/// LFS does, so a plain clone gets its pre-push (a failure to is a warning).
pub fn filter_process(ctx: &Context, input: impl Read, output: impl Write) -> Result<()> {
    if let Err(err) = install::install_hooks(ctx.root()) {
        ctx.reporter()
            .warn(&format!("could not install czc's git hooks: {err}"));
    }
    crate::git::filter::filter_process(ctx.workspace(), input, output)
        .map_err(|err| Error::Git(err.into()))
}

/// git's one-shot clean filter: content in, marker text out.
pub fn clean(ctx: &Context, path: &Path, input: &mut impl Read) -> Result<String> {
    crate::git::filter::clean(ctx.workspace(), path, input)
}

/// git's one-shot smudge filter: marker in, content out.
pub fn smudge(
    ctx: &Context,
    path: &Path,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<()> {
    crate::git::filter::smudge(ctx.workspace(), path, input, output)
}
