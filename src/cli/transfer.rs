//! Commands that move data to and from remotes: push, fetch, pull, get, put, rm.

use std::path::{Path, PathBuf};

use czcache::caches::PutCondition;
use czcache::oid::Oid;
use czcache::ops;
use czcache::ops::keys::KeyTarget;
use czcache::Error;

use super::print;
use super::project::print_restored;
use super::{context, cwd, Cli, HistoryArgs};

pub fn cmd_push(
    cli: &Cli,
    paths: &[PathBuf],
    remote: Option<&str>,
    all: bool,
) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let report = ops::transfer::push(&ctx, paths, remote, all)?;
    Ok(print::transfer(
        cli.json, cli.quiet, "pushed", "to", &report,
    ))
}

pub fn cmd_fetch(
    cli: &Cli,
    paths: &[PathBuf],
    remote: Option<&str>,
    history: &HistoryArgs,
) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let selection = history.selection();
    let report = ops::transfer::fetch(&ctx, paths, remote, selection.as_ref())?;
    Ok(print::transfer(
        cli.json, cli.quiet, "fetched", "from", &report,
    ))
}

pub fn cmd_pull(
    cli: &Cli,
    paths: &[PathBuf],
    remote: Option<&str>,
    force: bool,
) -> Result<i32, Error> {
    let ctx = context(cli, force)?;
    let report = ops::transfer::pull(&ctx, paths, remote)?;
    if cli.json {
        for err in report
            .fetched
            .failures
            .iter()
            .chain(&report.checkout.failures)
        {
            print::report(err);
        }
        print::json(&report);
    } else {
        let fetch_code = print::transfer(false, cli.quiet, "fetched", "from", &report.fetched);
        print::failures(&report.checkout);
        if !cli.quiet {
            print_restored(&report.checkout, false);
        }
        return Ok(fetch_code.max(i32::from(!report.checkout.failures.is_empty())));
    }
    Ok(i32::from(!report.complete()))
}

/// `--cache` given without a name is `Some("")`: the default cache.
fn key_target(target: &str, cache: Option<&str>) -> Result<KeyTarget, Error> {
    KeyTarget::parse(target, cache.map(|name| (!name.is_empty()).then_some(name)))
}

pub fn cmd_get(cli: &Cli, target: &str, cache: Option<&str>) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let fetched = ops::keys::get(&ctx, &key_target(target, cache)?)?;
    if cli.json {
        print::json(&fetched);
    } else {
        outln!("{}", fetched.path.display());
    }
    Ok(0)
}

/// `czc put`'s condition flags.
pub struct PutFlags {
    pub if_absent: bool,
    pub if_match: Option<Oid>,
    pub if_newer: bool,
}

pub fn cmd_put(
    cli: &Cli,
    target: &str,
    cache: Option<&str>,
    file: &Path,
    flags: PutFlags,
) -> Result<i32, Error> {
    let key = key_target(target, cache)?;
    let ctx = context(cli, false)?;
    let condition = match flags {
        PutFlags {
            if_absent: true, ..
        } => PutCondition::IfAbsent,
        PutFlags {
            if_match: Some(oid),
            ..
        } => PutCondition::IfMatch(oid),
        PutFlags { if_newer: true, .. } => PutCondition::IfNewer,
        _ => PutCondition::Always,
    };
    let path = cwd(cli)?.join(file);
    let report = ops::keys::put(&ctx, &key, &path, condition)?;
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        if report.written {
            outln!("uploaded {} to {target}", file.display());
        } else {
            outln!(
                "{target} is at least as new as {}; nothing written",
                file.display()
            );
        }
    }
    Ok(0)
}

pub fn cmd_rm(
    cli: &Cli,
    target: &str,
    cache: Option<&str>,
    if_match: Option<Oid>,
) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let report = ops::keys::rm(&ctx, &key_target(target, cache)?, if_match)?;
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        outln!("deleted {}", report.removed);
    }
    Ok(0)
}
