//! The project's own commands: init, save, open, cat, checkout, unprotect, status.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use czcache::ops::{self, status::RemoteCheck};
use czcache::workspace::{CheckoutReport, State};
use czcache::Error;

use super::print::{self, plural};
use super::{context, cwd, Cli};

pub fn cmd_init(cli: &Cli) -> Result<i32, Error> {
    let report = ops::git::init(&cwd(cli)?)?;
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        let what = if report.created {
            "initialized"
        } else {
            "already initialized"
        };
        outln!(
            "{what} {}",
            report.root.join(czcache::config::PROJECT_FILE).display()
        );
    }
    Ok(0)
}

pub fn cmd_save(cli: &Cli, paths: &[PathBuf]) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let report = ops::save::save(&ctx, paths);
    for err in &report.errors {
        print::report(err);
    }
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        for item in &report.saved {
            outln!(
                "saved {} {} {}",
                ctx.display(&item.path),
                item.oid,
                item.size
            );
        }
    }
    Ok(i32::from(!report.errors.is_empty()))
}

pub fn cmd_open(cli: &Cli, target: &str, to: Option<&Path>, force: bool) -> Result<i32, Error> {
    let ctx = context(cli, force)?;
    match to {
        Some(dest) => {
            let report = ops::checkout::open_to(&ctx, target, dest)?;
            let code = print::failures(&report);
            if cli.json {
                print::json(&report);
            } else if !cli.quiet {
                outln!("{}", dest.display());
            }
            Ok(code)
        }
        None => {
            let report = ops::checkout::open(&ctx, target)?;
            if cli.json {
                print::json(&report);
            } else {
                outln!("{}", report.path.display());
            }
            Ok(0)
        }
    }
}

pub fn cmd_cat(cli: &Cli, target: &str) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    ops::checkout::cat(&ctx, target, &mut out)?;
    out.flush().map_err(|source| Error::Io {
        path: "<stdout>".into(),
        source,
    })?;
    Ok(0)
}

pub fn cmd_checkout(cli: &Cli, paths: &[PathBuf], force: bool) -> Result<i32, Error> {
    let ctx = context(cli, force)?;
    let report = ops::checkout::checkout(&ctx, paths)?;
    let code = print::failures(&report);
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        print_restored(&report, cli.verbose > 0);
    }
    Ok(code)
}

/// `restored 3 files (2 by reflink, 1 by copy), 5 already up to date`.
pub fn print_restored(report: &CheckoutReport, how: bool) {
    let links: Vec<String> = report
        .links
        .iter()
        .map(|(k, n)| format!("{n} by {k}"))
        .collect();
    let how = if how && !links.is_empty() {
        format!(" ({})", links.join(", "))
    } else {
        String::new()
    };
    outln!(
        "restored {} file{}{how}, {} already up to date",
        report.restored,
        plural(report.restored),
        report.unchanged
    );
}

pub fn cmd_unprotect(cli: &Cli, paths: &[PathBuf]) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let report = ops::checkout::unprotect(&ctx, paths)?;
    if cli.json {
        print::json(&report);
    } else if !cli.quiet {
        outln!(
            "unprotected {} file{}",
            report.unprotected,
            plural(report.unprotected)
        );
    }
    Ok(0)
}

pub fn cmd_status(
    cli: &Cli,
    paths: &[PathBuf],
    remote: Option<&str>,
    exit_code: bool,
) -> Result<i32, Error> {
    let ctx = context(cli, false)?;
    let check = match remote {
        None => RemoteCheck::None,
        Some("") => RemoteCheck::Default,
        Some(name) => RemoteCheck::Named(name.into()),
    };
    let report = ops::status::status(&ctx, paths, &check)?;
    for err in &report.errors {
        print::report(err);
    }
    if cli.json {
        print::json(&report);
    } else {
        for status in &report.files {
            if cli.quiet && status.state == State::Ok {
                continue;
            }
            let mut line = format!(
                "{:<11} {}",
                status.state.as_str(),
                ctx.display(&status.path)
            );
            if let Some(counts) = &status.files {
                line.push_str(&print::folder_summary(counts));
            }
            outln!("{line}");
            if cli.verbose > 0 {
                for file in &status.changed {
                    let path = status.path.join(&file.path);
                    outln!("  {:<11} {}", file.state.as_str(), ctx.display(&path));
                }
            }
        }
    }
    let failed = !report.errors.is_empty() || (exit_code && !report.all_ok());
    Ok(i32::from(failed))
}
