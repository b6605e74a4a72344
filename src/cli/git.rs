//! git integration: install, track, ls, gc, the filter and the hooks.

use std::io::{self, Write};
use std::path::Path;

use czcache::config::format_size;
use czcache::git::install::Scope;
use czcache::ops::{self, gc::GcTarget};
use czcache::remote::TransferReport;
use czcache::workspace::CheckoutReport;
use czcache::Error;

use super::print::{self, errln, plural};
use super::{context, cwd, Cli, HookCommand};

/// Pipe and buffer size for git's filter process.
const FILTER_PIPE_BYTES: usize = 1 << 20;

pub fn cmd_install(cli: &Cli, local: bool, installing: bool) -> Result<i32, Error> {
    let scope = if local { Scope::Repo } else { Scope::User };
    let report = ops::git::install(&cwd(cli)?, scope, installing)?;
    if cli.json {
        print::json(&report);
        return Ok(0);
    }
    if cli.quiet {
        return Ok(0);
    }
    let verb = if installing { "installed" } else { "removed" };
    outln!(
        "{verb} the czc filter in the {} git config",
        report.config.unwrap_or("")
    );
    for hook in &report.hooks {
        match (&hook.chained, installing) {
            (Some(chained), true) => outln!(
                "installed hook {} (runs your previous hook, kept as {}, first)",
                hook.path.display(),
                chained.display()
            ),
            (None, true) => outln!("installed hook {}", hook.path.display()),
            (Some(_), false) => outln!("restored your hook {}", hook.path.display()),
            (None, false) => outln!("removed hook {}", hook.path.display()),
        }
    }
    Ok(0)
}

pub fn cmd_track(cli: &Cli, patterns: &[String], tracking: bool) -> Result<i32, Error> {
    let dir = cwd(cli)?;
    if tracking && patterns.is_empty() {
        let listed = ops::git::tracked(&dir)?;
        if cli.json {
            print::json_list("patterns", &listed);
        } else {
            for pattern in listed {
                outln!("{pattern}");
            }
        }
        return Ok(0);
    }
    let changed = ops::git::track(&dir, patterns, tracking)?;
    if cli.json {
        print::json_list("patterns", &changed);
    } else if !cli.quiet {
        for pattern in patterns {
            let what = match (changed.contains(pattern), tracking) {
                (true, true) => "tracking",
                (false, true) => "already tracked",
                (true, false) => "untracked",
                (false, false) => "was not tracked",
            };
            outln!("{what} {pattern}");
        }
    }
    Ok(0)
}

pub fn cmd_ls(cli: &Cli, rev: Option<&str>) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let listed = ops::ls::ls(&ctx, rev)?;
    if cli.json {
        print::json_list("markers", &listed);
        return Ok(0);
    }
    for item in &listed {
        outln!(
            "{}  {}  {:>10}  {:<7} {:<8} {}{}",
            item.oid,
            item.kind,
            format_size(item.size),
            item.tracked_by,
            if item.cached { "cached" } else { "-" },
            match item.pushed {
                Some(true) => "pushed  ",
                Some(false) => "unpushed",
                None => "-       ",
            },
            format_args!("  {}", item.path)
        );
    }
    Ok(0)
}

/// `czc gc`'s flags.
pub struct GcFlags {
    pub remote: Option<String>,
    pub all_commits: bool,
    pub dry_run: bool,
    pub keep_younger_than: std::time::Duration,
}

pub fn cmd_gc(cli: &Cli, flags: GcFlags) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let target = match flags.remote {
        Some(name) => GcTarget::Remote(name),
        None => GcTarget::Cache,
    };
    let dry_run = flags.dry_run;
    let report = ops::gc::gc(
        &ctx,
        &target,
        flags.all_commits,
        flags.keep_younger_than,
        dry_run,
    )?;
    if !cli.quiet {
        for skipped in &report.skipped {
            errln(&format!("czc: warning: gc skipped {skipped}"));
        }
    }
    if cli.json {
        print::json(&report);
        return Ok(0);
    }
    if cli.quiet {
        return Ok(0);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    if cli.verbose > 0 || dry_run {
        for oid in &report.deleted {
            outln!("{verb} {oid}");
        }
    }
    let packs = match (report.packs_deleted, report.packs_rewritten) {
        (0, 0) => String::new(),
        (deleted, rewritten) => format!(
            " ({deleted} pack{} deleted, {rewritten} repacked)",
            plural(deleted)
        ),
    };
    let kept_also = if report.lost_races > 0 {
        format!(", {} changed meanwhile and left alone", report.lost_races)
    } else if report.unpushed_kept > 0 {
        format!(", {} that no remote holds yet", report.unpushed_kept)
    } else {
        String::new()
    };
    outln!(
        "{verb} {} object{} ({}) from {}{packs}; kept {} referenced, {} younger than the grace period{kept_also}",
        report.deleted.len(),
        plural(report.deleted.len()),
        format_size(report.freed),
        report.target,
        report.referenced,
        report.kept_young,
    );
    Ok(0)
}

pub fn cmd_filter_process(cli: &Cli) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    // Big pipes and buffers: a packet is at most 64 KiB, so an 8 KiB buffer would cost a
    // tiny write and a context switch per packet.
    czcache::fsutil::grow_pipe(io::stdin(), FILTER_PIPE_BYTES);
    czcache::fsutil::grow_pipe(io::stdout(), FILTER_PIPE_BYTES);
    ops::git::filter_process(
        &ctx,
        io::BufReader::with_capacity(FILTER_PIPE_BYTES, io::stdin().lock()),
        io::BufWriter::with_capacity(FILTER_PIPE_BYTES, io::stdout().lock()),
    )?;
    Ok(0)
}

pub fn cmd_clean(cli: &Cli, path: &Path) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let text = ops::git::clean(&ctx, path, &mut io::stdin().lock())?;
    io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| Error::Io {
            path: "stdout".into(),
            source,
        })?;
    Ok(0)
}

pub fn cmd_smudge(cli: &Cli, path: &Path) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    ops::git::smudge(&ctx, path, &mut io::stdin().lock(), &mut out)?;
    out.flush().map_err(|source| Error::Io {
        path: "stdout".into(),
        source,
    })?;
    Ok(0)
}

pub fn cmd_hook(cli: &Cli, hook: &HookCommand) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    match hook {
        HookCommand::PrePush { remote, .. } => pre_push(cli, &ctx, remote),
        HookCommand::PostCheckout {
            previous,
            new,
            branch_flag,
        } => {
            if branch_flag != "1" {
                return Ok(0); // a file checkout: git restored exactly what was asked
            }
            let (fetched, report) = ops::hooks::checkout_changed(&ctx, Some(previous), new)?;
            Ok(print_hook_checkout(cli, &fetched, &report))
        }
        HookCommand::PostMerge { .. } => {
            let (fetched, report) = ops::hooks::checkout_changed(&ctx, Some("ORIG_HEAD"), "HEAD")?;
            Ok(print_hook_checkout(cli, &fetched, &report))
        }
    }
}

const PUSH_STOPPED: &str = "czc: the git push was stopped because its data could not be pushed";

fn pre_push(cli: &Cli, ctx: &ops::Context, remote: &str) -> Result<i32, Error> {
    let mut lines = String::new();
    io::Read::read_to_string(&mut io::stdin(), &mut lines).map_err(|source| Error::Io {
        path: "stdin".into(),
        source,
    })?;
    let report = match ops::hooks::pre_push(ctx, remote, &lines) {
        Ok(report) => report,
        Err(err) => {
            print::report(&err);
            errln(PUSH_STOPPED);
            return Ok(1);
        }
    };
    if report.transferred + report.failed == 0 {
        return Ok(0);
    }
    for err in &report.failures {
        print::report(err);
    }
    // git shows a hook's stderr; stdout may be the push protocol's.
    if !cli.quiet {
        errln(&format!(
            "czc: pushed {} object{} ({}) to {}, {} already there",
            report.transferred,
            plural(report.transferred),
            format_size(report.bytes),
            report.remote,
            report.already
        ));
    }
    if report.failed > 0 {
        errln(PUSH_STOPPED);
        return Ok(1);
    }
    Ok(0)
}

fn print_hook_checkout(cli: &Cli, fetched: &TransferReport, report: &CheckoutReport) -> i32 {
    let code = print::failures(report).max(i32::from(fetched.failed > 0));
    if !cli.quiet && report.restored > 0 {
        errln(&format!(
            "czc: restored {} data file{}",
            report.restored,
            plural(report.restored)
        ));
    }
    code
}
