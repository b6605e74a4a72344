//! Everything the CLI prints: result lines on stdout (a closed pipe ends the command
//! quietly), `--json` documents, and `czc: error:` lines on stderr.

use std::io::{self, Write};
use std::path::PathBuf;

use czcache::config::format_size;
use czcache::remote::TransferReport;
use czcache::workspace::{CheckoutReport, FolderCounts};
use czcache::Error;

/// `println!` that ends the command quietly (exit 0) when stdout is a closed pipe
/// (`czc status | head -1`), as ripgrep does, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(err) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            $crate::cli::print::exit_on_stdout_error(err);
        }
    }};
}

/// A closed pipe is a quiet success; any other failure to print is an error.
pub fn exit_on_stdout_error(err: io::Error) -> ! {
    if err.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(io::stderr(), "czc: error: writing to stdout: {err}");
    std::process::exit(1);
}

/// One line on stderr; a closed stderr loses it, never the command.
pub fn errln(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// Prints one `czc: error:` line, with paths shown relative to the current folder.
pub fn report(err: &Error) {
    errln(&format!("czc: error: {}", one_line(err)));
}

/// An error as one line, paths relative to the current folder.
pub fn one_line(err: &Error) -> String {
    let mut message = err.to_string().replace('\n', " ");
    if let Ok(here) = std::env::current_dir() {
        message = message.replace(&format!("{}/", here.display()), "");
    }
    message
}

/// "s" unless exactly one.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The version of the `--json` documents (docs/FORMATS.md); raised when a field changes
/// meaning or goes away, not when one is added.
const JSON_VERSION: u64 = 1;

/// The project root JSON paths are made relative to (set once per run).
pub static JSON_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Prints a report as one JSON object with the schema version first.
pub fn json(value: &impl serde::Serialize) {
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let mut document = serde_json::Map::new();
    document.insert("version".into(), JSON_VERSION.into());
    match value {
        serde_json::Value::Object(fields) => document.extend(fields),
        other => {
            document.insert("result".into(), other);
        }
    }
    document_out(serde_json::Value::Object(document));
}

/// Prints a list as `{"version": 1, "<name>": [...]}`.
pub fn json_list(name: &str, items: &impl serde::Serialize) {
    let mut document = serde_json::Map::new();
    document.insert("version".into(), JSON_VERSION.into());
    document.insert(
        name.into(),
        serde_json::to_value(items).unwrap_or(serde_json::Value::Null),
    );
    document_out(serde_json::Value::Object(document));
}

fn document_out(mut value: serde_json::Value) {
    if let Some(root) = JSON_ROOT.get() {
        relative_paths(&mut value, &format!("{}/", root.display()));
    }
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "null".into());
    outln!("{text}");
}

/// Rewrites absolute paths under the project root as relative ones, everywhere.
fn relative_paths(value: &mut serde_json::Value, root: &str) {
    match value {
        serde_json::Value::String(text) => {
            if let Some(rel) = text.strip_prefix(root) {
                *text = rel.to_string();
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| relative_paths(v, root)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| relative_paths(v, root)),
        _ => {}
    }
}

/// The summary line of a push or fetch; its failures as error lines. Exit code 1 if
/// anything failed.
pub fn transfer(
    json: bool,
    quiet: bool,
    verb: &str,
    direction: &str,
    report: &TransferReport,
) -> i32 {
    for err in &report.failures {
        self::report(err);
    }
    if json {
        self::json(report);
    } else if !quiet {
        outln!(
            "{verb} {} object{} ({}) {direction} {}, {} already there{}",
            report.transferred,
            plural(report.transferred),
            format_size(report.bytes),
            if report.remote.is_empty() {
                "no remote"
            } else {
                &report.remote
            },
            report.already,
            if report.failed > 0 {
                format!(", {} failed", report.failed)
            } else {
                String::new()
            }
        );
    }
    i32::from(report.failed > 0)
}

/// A checkout's failures as error lines; exit code 1 if there were any.
pub fn failures(report: &CheckoutReport) -> i32 {
    for err in &report.failures {
        self::report(err);
    }
    i32::from(!report.failures.is_empty())
}

/// `/ (2 modified, 1 missing of 40 files)` after a folder marker's status.
pub fn folder_summary(counts: &FolderCounts) -> String {
    let total = counts.ok + counts.modified + counts.missing + counts.not_cached;
    let mut parts = Vec::new();
    for (n, what) in [
        (counts.modified, "modified"),
        (counts.missing, "missing"),
        (counts.not_cached, "not-cached"),
        (counts.added, "added"),
        (counts.not_pushed, "not-pushed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        format!("/ ({total} files)")
    } else {
        format!("/ ({} of {total} files)", parts.join(", "))
    }
}
