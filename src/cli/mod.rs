//! Command-line parsing (clap) and output. Nothing here decides policy: it turns flags
//! into library calls and library results into lines.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod progress;

/// `println!` that ends the command quietly (exit 0) when stdout is a closed pipe
/// (`czc status | head -1`), as ripgrep does, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        if let Err(err) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            exit_on_stdout_error(err);
        }
    }};
}

/// A closed pipe is a quiet success; any other failure to print is an error.
fn exit_on_stdout_error(err: io::Error) -> ! {
    if err.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("czc: error: writing to stdout: {err}");
    std::process::exit(1);
}
use czcache::cache::LocalCache;
use czcache::config::{format_size, parse_size, Config, Env, RemoteEntry};
use czcache::remote::{PutCondition, TransferReport};
use czcache::workspace::{self, CheckoutReport, State, Workspace};
use czcache::Error;
use czcache::Oid;

#[derive(Parser)]
#[command(
    name = "czc",
    version,
    about = "Version large data files next to git: a content-addressed cache with markers"
)]
struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Print only problems.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Parallel jobs for hashing and copying (default: one per core).
    #[arg(short = 'j', long = "jobs", global = true, value_name = "N")]
    jobs: Option<usize>,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write .czcache.toml at the project root (if absent).
    Init,
    /// Hash files or folders into the cache and write their markers.
    #[command(
        after_help = "Example:\n  czc save data/cells.h5ad images/\n  git add data/cells.h5ad.czc images.czc data/.gitignore .gitignore"
    )]
    Save {
        /// Files or folders to save (or their markers).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the path of a read-only copy of a saved file (or place one with --to).
    Open {
        /// A marker, a saved path, or an oid.
        target: String,
        /// Materialize a read-only copy here instead.
        #[arg(long, value_name = "DEST")]
        to: Option<PathBuf>,
        /// Overwrite DEST even if it holds unsaved changes.
        #[arg(short, long)]
        force: bool,
    },
    /// Stream a saved file to stdout.
    Cat {
        /// A marker, a saved path, or an oid.
        target: String,
    },
    /// Restore every marker under the paths (default: the whole project) as read-only files.
    #[command(
        after_help = "Example:\n  czc checkout            # the whole project\n  czc checkout data/ --force"
    )]
    Checkout {
        /// Files, folders or their markers; glob patterns such as 'data/*.h5ad' too.
        paths: Vec<PathBuf>,
        /// Overwrite files with unsaved changes.
        #[arg(short, long)]
        force: bool,
    },
    /// Replace materialized files with private writable copies.
    Unprotect {
        /// Materialized files or folders to make writable.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show each marker's state: ok, modified, missing, not-cached.
    #[command(
        after_help = "Example:\n  czc status\n  czc -v status data/\n  czc status --remote --exit-code   # in CI: everything pushed and in place?"
    )]
    Status {
        /// Files, folders or their markers; glob patterns such as 'data/*.h5ad' too.
        paths: Vec<PathBuf>,
        /// Also check that the remote (default: remote.default) has every object:
        /// `not-pushed` otherwise.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
        /// Exit 1 when anything is not `ok` (a CI gate).
        #[arg(long)]
        exit_code: bool,
    },
    /// Inspect and maintain the local cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Upload the objects the markers under the paths reference that the remote lacks.
    #[command(after_help = "Example:\n  czc push\n  czc push data/ --remote team -j 16")]
    Push {
        /// Files, folders or their markers; glob patterns such as 'data/*.h5ad' too.
        paths: Vec<PathBuf>,
        /// The remote to push to (default: remote.default).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Push every cached object, not only those markers reference.
        #[arg(long)]
        all: bool,
    },
    /// Download into the cache what the markers under the paths reference (or, with
    /// --rev, --branches or --all-commits, what those commits reference).
    Fetch {
        /// Files, folders or their markers; glob patterns such as 'data/*.h5ad' too.
        paths: Vec<PathBuf>,
        /// Read from this remote only (default: the remote.read chain).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Fetch, then check out.
    #[command(after_help = "Example:\n  czc pull\n  czc pull 'models/*.pt' --remote share")]
    Pull {
        /// Files, folders or their markers; glob patterns such as 'data/*.h5ad' too.
        paths: Vec<PathBuf>,
        /// Fetch from this remote only (a cache miss at checkout still reads the chain).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Overwrite files with unsaved changes.
        #[arg(short, long)]
        force: bool,
    },
    /// Copy a key of a remote through the local cache and print the local path;
    /// downloads again only when the remote copy changed.
    #[command(
        after_help = "Example:\n  czc get store:models/bert.bin\n  python train.py --weights \"$(czc get store:models/bert.bin)\""
    )]
    Get {
        /// `<remote>:<key>`
        #[arg(value_parser = parse_remote_key)]
        target: (String, String),
    },
    /// Upload a file to a key of a remote, optionally conditionally.
    #[command(
        after_help = "Example:\n  czc put store:results/run1.csv out.csv --if-absent\n  czc put store:results/best.csv out.csv --if-match blake3:<the hash you last read>"
    )]
    Put {
        /// `<remote>:<key>`
        #[arg(value_parser = parse_remote_key)]
        target: (String, String),
        /// The file to upload.
        file: PathBuf,
        /// Only if the key does not exist yet.
        #[arg(long, conflicts_with_all = ["if_match", "if_newer"])]
        if_absent: bool,
        /// Only if the key still holds the bytes with this hash (blake3:<64 hex>).
        #[arg(long, value_name = "HASH", value_parser = parse_oid, conflicts_with = "if_newer")]
        if_match: Option<Oid>,
        /// Only if FILE is newer than the stored copy.
        #[arg(long)]
        if_newer: bool,
    },
    /// Delete a key of a remote.
    Rm {
        /// `<remote>:<key>`
        #[arg(value_parser = parse_remote_key)]
        target: (String, String),
        /// Only if the key still holds the bytes with this hash.
        #[arg(long, value_name = "HASH", value_parser = parse_oid)]
        if_match: Option<Oid>,
    },
    /// Serve a folder or a configured remote over HTTP, as a remote for other clones.
    #[command(
        after_help = "Example:\n  echo \"$(openssl rand -hex 16)\" > tokens.txt\n  czc serve /srv/czc --listen 0.0.0.0:8080 --tokens tokens.txt"
    )]
    Serve(ServeArgs),
    /// Set up git to run files through czc: the filter in your git config (the
    /// repository's with --local) and, inside a repository, czc's hooks.
    Install {
        /// In this repository's git config instead of the user's.
        #[arg(long)]
        local: bool,
    },
    /// Undo `czc install`: remove the filter config and czc's hooks (restoring the hooks
    /// they chained to).
    Uninstall {
        /// From this repository's git config instead of the user's.
        #[arg(long)]
        local: bool,
    },
    /// Send files matching patterns through czc (.gitattributes); no pattern: list them.
    Track {
        /// gitattributes patterns, e.g. '*.h5ad' or 'models/**'.
        patterns: Vec<String>,
    },
    /// Stop sending files matching patterns through czc.
    Untrack {
        /// Patterns given to `czc track`.
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// List the tracked data files (sidecar markers and filtered files) with their
    /// cached and pushed state.
    Ls {
        /// Read this commit instead of HEAD and the working tree.
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
    },
    /// Delete objects that no marker references: a remote's (--remote), or the local
    /// cache's (--cache: across every repository that uses it).
    #[command(group(clap::ArgGroup::new("gc_target").required(true).args(["remote", "cache"])))]
    Gc {
        /// Delete from this remote what nothing references.
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Delete from the local cache what no known repository references.
        #[arg(long)]
        cache: bool,
        /// Keep what any commit references (default: branch and tag tips, HEAD and the
        /// working tree).
        #[arg(long)]
        all_commits: bool,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Never delete what was written (remote) or used (cache) more recently than
        /// this, e.g. 7d, 12h, 0s: another clone may have pushed it a minute ago.
        #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_age)]
        keep_younger_than: std::time::Duration,
    },
    /// git's long-running filter process (set up by `czc install`).
    #[command(hide = true)]
    FilterProcess,
    /// git's clean filter, one file: content on stdin, marker on stdout.
    #[command(hide = true)]
    Clean {
        /// The file's path in the repository, as git passes it.
        path: PathBuf,
    },
    /// git's smudge filter, one file: marker on stdin, content on stdout.
    #[command(hide = true)]
    Smudge {
        /// The file's path in the repository, as git passes it.
        path: PathBuf,
    },
    /// What czc's git hooks run.
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: HookCommand,
    },
    /// Edit the named remotes in .czcache.toml.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// What this commit references (repeatable).
    #[arg(long, value_name = "REV")]
    rev: Vec<String>,
    /// What the tip of every local branch references.
    #[arg(long)]
    branches: bool,
    /// What any commit reachable from a ref references.
    #[arg(long)]
    all_commits: bool,
}

impl HistoryArgs {
    fn selection(&self) -> Option<czcache::git::Selection> {
        (!self.rev.is_empty() || self.branches || self.all_commits).then(|| {
            czcache::git::Selection {
                revs: self.rev.clone(),
                branches: self.branches,
                all_commits: self.all_commits,
                remote_tips: false,
            }
        })
    }
}

#[derive(Subcommand)]
enum HookCommand {
    /// Before git pushes: upload what the pushed commits reference.
    PrePush {
        /// The git remote's name, as git passes it.
        remote: String,
        /// The git remote's url.
        url: Option<String>,
    },
    /// After git checks out: restore the sidecar markers that changed.
    PostCheckout {
        /// The commit checked out before.
        previous: String,
        /// The commit checked out now.
        new: String,
        /// 1 for a branch checkout, 0 for files.
        branch_flag: String,
    },
    /// After git merges: restore the sidecar markers that changed.
    PostMerge {
        /// 1 for a squash merge.
        squash: Option<String>,
    },
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not an age like 7d, 12h, 30m or 0s"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("'{text}' is not an age like 7d, 12h, 30m or 0s")),
    };
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add (or replace) a remote.
    Add {
        /// A name of letters, digits, '-' and '_'.
        name: String,
        /// A folder (/path, file:///path, relative to the project), s3://bucket/prefix or
        /// http(s)://host/prefix.
        url: String,
        /// Make it remote.default (where push writes).
        #[arg(long)]
        default: bool,
        /// czc must never write to it (a cluster share, a public bucket).
        #[arg(long)]
        read_only: bool,
        /// Unsigned requests (public buckets).
        #[arg(long)]
        anonymous: bool,
        /// An S3-compatible endpoint.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The S3 region (default us-east-1).
        #[arg(long)]
        region: Option<String>,
    },
    /// List the remotes.
    List,
    /// Remove a remote (and its mentions in remote.default and remote.read).
    Remove {
        /// The remote's name.
        name: String,
    },
}

/// `czc serve`'s arguments.
#[derive(clap::Args)]
struct ServeArgs {
    /// A folder (created if it does not exist yet), or the name of a configured remote.
    source: String,
    /// Where to listen (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    listen: String,
    /// A file of bearer tokens, one per line: writes need one, reads too unless
    /// --public-read.
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,
    /// Let anyone read without a token.
    #[arg(long)]
    public_read: bool,
    /// The largest upload accepted.
    #[arg(long, value_name = "SIZE", default_value = "64GiB")]
    max_upload: String,
    /// Refuse every write.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    limits: ServeLimitArgs,
}

/// `czc serve`'s protections against slow and hostile clients.
#[derive(clap::Args)]
struct ServeLimitArgs {
    /// Close a connection that has not sent a request's headers within this time
    /// (idle keep-alive connections too).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    header_timeout: std::time::Duration,
    /// Give up an upload whose body sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg)]
    body_timeout: std::time::Duration,
    /// Open connections in all; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Open connections from one address; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_ip: usize,
    /// After SIGTERM, how long requests in flight may take before the server exits.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    shutdown_grace: std::time::Duration,
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    czcache::config::parse_duration(text)
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Location, index, size and limit, object count, hits and misses.
    Info,
    /// Evict least-recently-used objects down to a size (default: the limit).
    Evict {
        /// Target size, e.g. 5GiB.
        #[arg(long, value_name = "SIZE")]
        to: Option<String>,
        /// Also evict objects no remote holds yet: their only copy is lost.
        #[arg(long)]
        include_unpushed: bool,
    },
    /// Rehash every object, quarantine corrupt ones, rebuild the index from disk.
    Verify,
    /// Remove every object.
    Clear,
}

/// Runs the CLI; returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = err.exit_code();
            let _ = err.print();
            return if code == 0 { 0 } else { 2 };
        }
    };
    if cli.json {
        if let Ok(dir) = cwd(&cli) {
            let _ = JSON_ROOT.set(workspace::find_root(&dir));
        }
    }
    // No bars from the filter: git owns the terminal then.
    let filtering = matches!(
        cli.command,
        Command::FilterProcess | Command::Clean { .. } | Command::Smudge { .. }
    );
    let bars = !cli.no_progress && !cli.quiet && !cli.json && !filtering;
    czcache::report::set_process_reporter(std::sync::Arc::new(progress::StderrReporter::new(
        bars, cli.quiet,
    )));
    match execute(&cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            report(&err);
            if cli.json {
                // Machine readers get the failure on stdout too.
                print_json(&serde_json::json!({ "error": one_line(&err) }));
            }
            1
        }
    }
}

/// Prints one `czc: error:` line, with paths shown relative to the current folder.
fn report(err: &Error) {
    eprintln!("czc: error: {}", one_line(err));
}

/// An error as one line, paths relative to the current folder.
fn one_line(err: &Error) -> String {
    let mut message = err.to_string().replace('\n', " ");
    if let Ok(here) = std::env::current_dir() {
        message = message.replace(&format!("{}/", here.display()), "");
    }
    message
}

fn is_broken_pipe(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

fn cwd(cli: &Cli) -> Result<PathBuf, Error> {
    let here = std::env::current_dir().map_err(|source| Error::Io {
        path: ".".into(),
        source,
    })?;
    let dir = match &cli.dir {
        Some(dir) => here.join(dir),
        None => here,
    };
    if !dir.is_dir() {
        return Err(Error::NotFound { path: dir });
    }
    Ok(dir)
}

fn load_config(cli: &Cli) -> Result<(PathBuf, Config), Error> {
    let dir = cwd(cli)?;
    let root = workspace::find_root(&dir);
    let config = Config::load(Some(&root), &Env::from_process())?;
    if !cli.quiet {
        for warning in &config.warnings {
            eprintln!("czc: warning: {warning}");
        }
    }
    Ok((dir, config))
}

fn open_workspace(cli: &Cli, force: bool) -> Result<Workspace, Error> {
    let (dir, config) = load_config(cli)?;
    Ok(Workspace::open(&dir, &config, &Env::from_process())?
        .with_force(force)
        .with_jobs(cli.jobs.unwrap_or(czcache::remote::DEFAULT_TRANSFER_JOBS)))
}

/// The project root JSON paths are made relative to (set once per run).
static JSON_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The version of the `--json` documents (docs/FORMATS.md); raised when a field changes
/// meaning or goes away, not when one is added.
const JSON_VERSION: u64 = 1;

/// Prints a report as one JSON object with the schema version first.
fn print_json(value: &impl serde::Serialize) {
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let mut document = serde_json::Map::new();
    document.insert("version".into(), JSON_VERSION.into());
    match value {
        serde_json::Value::Object(fields) => document.extend(fields),
        other => {
            document.insert("result".into(), other);
        }
    }
    print_document(serde_json::Value::Object(document));
}

/// Prints a list as `{"version": 1, "<name>": [...]}`.
fn print_json_list(name: &str, items: &impl serde::Serialize) {
    let mut document = serde_json::Map::new();
    document.insert("version".into(), JSON_VERSION.into());
    document.insert(
        name.into(),
        serde_json::to_value(items).unwrap_or(serde_json::Value::Null),
    );
    print_document(serde_json::Value::Object(document));
}

fn print_document(mut value: serde_json::Value) {
    if let Some(root) = JSON_ROOT.get() {
        relative_paths(&mut value, &format!("{}/", root.display()));
    }
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "null".into());
    outln!("{text}");
}

/// Paths inside the project become relative to its root, in every JSON report alike.
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

fn execute(cli: &Cli) -> Result<i32, Error> {
    if let Some(jobs) = cli.jobs {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global();
    }
    match &cli.command {
        Command::Init => {
            let dir = cwd(cli)?;
            let root = workspace::find_root(&dir);
            let created = workspace::init(&root)?;
            if cli.json {
                print_json(&serde_json::json!({ "root": root, "created": created }));
            } else if !cli.quiet {
                let what = if created {
                    "initialized"
                } else {
                    "already initialized"
                };
                outln!(
                    "{what} {}",
                    root.join(czcache::config::PROJECT_FILE).display()
                );
            }
            Ok(0)
        }
        Command::Save { paths } => {
            let ws = open_workspace(cli, false)?;
            let results = ws.save(paths);
            ws.finish();
            let mut failed = 0;
            let mut saved = Vec::new();
            for (_, result) in results {
                match result {
                    Ok(item) => {
                        if !cli.json && !cli.quiet {
                            outln!(
                                "saved {} {} {}",
                                ws.display(&item.path),
                                item.oid,
                                item.size
                            );
                        }
                        saved.push(item);
                    }
                    Err(err) => {
                        failed += 1;
                        report(&err);
                    }
                }
            }
            if cli.json {
                print_json_list("saved", &saved);
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        Command::Open { target, to, force } => {
            let ws = open_workspace(cli, *force)?;
            let target = ws.target(target)?;
            let code = match to {
                Some(dest) => {
                    let report = ws.open_to(&target, dest)?;
                    let code = print_failures(&report);
                    if cli.json {
                        print_json(&report);
                    } else if !cli.quiet {
                        outln!("{}", dest.display());
                    }
                    code
                }
                None => {
                    let path = ws.open_path(&target)?;
                    if cli.json {
                        print_json(&serde_json::json!({ "path": path }));
                    } else {
                        outln!("{}", path.display());
                    }
                    0
                }
            };
            ws.finish();
            Ok(code)
        }
        Command::Cat { target } => {
            let ws = open_workspace(cli, false)?;
            let target = ws.target(target)?;
            let stdout = io::stdout();
            let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
            ws.cat(&target, &mut out)?;
            out.flush().map_err(|source| Error::Io {
                path: "<stdout>".into(),
                source,
            })?;
            ws.finish();
            Ok(0)
        }
        Command::Checkout { paths, force } => {
            let ws = open_workspace(cli, *force)?;
            let report = ws.checkout(paths)?;
            ws.finish();
            let code = print_failures(&report);
            if cli.json {
                print_json(&report);
            } else if !cli.quiet {
                let links: Vec<String> = report
                    .links
                    .iter()
                    .map(|(k, n)| format!("{n} by {k}"))
                    .collect();
                let how = if cli.verbose > 0 && !links.is_empty() {
                    format!(" ({})", links.join(", "))
                } else {
                    String::new()
                };
                outln!(
                    "restored {} file{}{how}, {} already up to date",
                    report.restored,
                    if report.restored == 1 { "" } else { "s" },
                    report.unchanged
                );
            }
            Ok(code)
        }
        Command::Unprotect { paths } => {
            let ws = open_workspace(cli, false)?;
            let count = ws.unprotect(paths)?;
            if cli.json {
                print_json(&serde_json::json!({ "unprotected": count }));
            } else if !cli.quiet {
                outln!(
                    "unprotected {count} file{}",
                    if count == 1 { "" } else { "s" }
                );
            }
            Ok(0)
        }
        Command::Status {
            paths,
            remote,
            exit_code,
        } => {
            let ws = open_workspace(cli, false)?;
            let (mut statuses, errors) = ws.status(paths)?;
            if let Some(remote) = remote {
                let name = (!remote.is_empty()).then_some(remote.as_str());
                ws.mark_not_pushed(&mut statuses, name)?;
            }
            ws.finish();
            for err in &errors {
                report(err);
            }
            if cli.json {
                print_json_list("files", &statuses);
            } else {
                for status in &statuses {
                    if cli.quiet && status.state == State::Ok {
                        continue;
                    }
                    let mut line =
                        format!("{:<11} {}", status.state.as_str(), ws.display(&status.path));
                    if let Some(counts) = &status.files {
                        line.push_str(&folder_summary(counts));
                    }
                    outln!("{line}");
                    if cli.verbose > 0 {
                        for file in &status.changed {
                            let path = status.path.join(&file.path);
                            outln!("  {:<11} {}", file.state.as_str(), ws.display(&path));
                        }
                    }
                }
            }
            let all_ok = statuses.iter().all(|s| s.state == State::Ok);
            Ok(if !errors.is_empty() || (*exit_code && !all_ok) {
                1
            } else {
                0
            })
        }
        Command::Cache { command } => cache_command(cli, command),
        Command::Push { paths, remote, all } => {
            let ws = open_workspace(cli, false)?;
            let report = ws.push(paths, remote.as_deref(), *all)?;
            Ok(print_transfer(cli, "pushed", "to", &report))
        }
        Command::Fetch {
            paths,
            remote,
            history,
        } => {
            let ws = open_workspace(cli, false)?;
            let report = match history.selection() {
                Some(selection) => {
                    if !paths.is_empty() {
                        return Err(Error::Git(
                            "give paths or --rev/--branches/--all-commits, not both".into(),
                        ));
                    }
                    czcache::git::ops::fetch_history(&ws, &selection, remote.as_deref())?
                }
                None => ws.fetch(paths, remote.as_deref())?,
            };
            Ok(print_transfer(cli, "fetched", "from", &report))
        }
        Command::Pull {
            paths,
            remote,
            force,
        } => {
            let ws = open_workspace(cli, *force)?;
            // Filtered files whose smudge was skipped hold marker text: fill them in.
            let (filtered_fetch, filtered) = czcache::git::ops::pull_filtered(&ws, paths)?;
            let has_sidecars = !paths.is_empty() || !ws.find_markers(&[])?.is_empty();
            let (mut fetched, mut report) = if has_sidecars || filtered.restored == 0 {
                match (ws.fetch(paths, remote.as_deref()), filtered.restored) {
                    // Patterns that matched only filtered files.
                    (Err(Error::NotFound { .. }), restored) if restored > 0 => {
                        (TransferReport::default(), CheckoutReport::default())
                    }
                    (fetched, _) => (fetched?, ws.checkout(paths)?),
                }
            } else {
                (TransferReport::default(), CheckoutReport::default())
            };
            fetched.transferred += filtered_fetch.transferred;
            fetched.bytes += filtered_fetch.bytes;
            fetched.failed += filtered_fetch.failed;
            fetched.failures.extend(filtered_fetch.failures);
            if fetched.remote.is_empty() {
                fetched.remote = filtered_fetch.remote;
            }
            report.restored += filtered.restored;
            report.failures.extend(filtered.failures);
            // What the named remote could not give, checkout may have had from the rest
            // of the chain: then it is a warning, and the exit code says success.
            let (recovered, still_failed): (Vec<Error>, Vec<Error>) =
                std::mem::take(&mut fetched.failures)
                    .into_iter()
                    .partition(|err| match err {
                        Error::NotInRemotes { oid, .. } | Error::NotCached { oid, .. } => {
                            ws.cache().contains(oid)
                        }
                        _ => false,
                    });
            if !recovered.is_empty() && !cli.quiet {
                eprintln!(
                    "czc: warning: {} could not give {} object{} ({}); {} came from the other remotes instead",
                    fetched.remote,
                    recovered.len(),
                    if recovered.len() == 1 { "" } else { "s" },
                    one_line(&recovered[0]),
                    if recovered.len() == 1 { "it" } else { "they" }
                );
            }
            fetched.failed = fetched.failed.saturating_sub(recovered.len());
            fetched.failures = still_failed;
            let fetch_code = print_transfer(cli, "fetched", "from", &fetched);
            ws.finish();
            // Objects the fetch could not get were reported once already.
            let code = print_failures(&CheckoutReport {
                failures: report
                    .failures
                    .into_iter()
                    .filter(|err| !matches!(err, Error::NotCached { .. }))
                    .collect(),
                ..CheckoutReport::default()
            });
            if !cli.json && !cli.quiet {
                outln!(
                    "restored {} file{}, {} already up to date",
                    report.restored,
                    if report.restored == 1 { "" } else { "s" },
                    report.unchanged
                );
            }
            Ok(fetch_code.max(code))
        }
        Command::Remote { command } => remote_command(cli, command),
        Command::Install { local } | Command::Uninstall { local } => {
            use czcache::git::install::{self, Scope};
            let dir = cwd(cli)?;
            let scope = if *local { Scope::Repo } else { Scope::User };
            let installing = matches!(cli.command, Command::Install { .. });
            let report = if installing {
                install::install(&dir, scope)?
            } else {
                install::uninstall(&dir, scope)?
            };
            if cli.json {
                print_json(&report);
            } else if !cli.quiet {
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
                        (Some(_), false) => {
                            outln!("restored your hook {}", hook.path.display())
                        }
                        (None, false) => outln!("removed hook {}", hook.path.display()),
                    }
                }
            }
            Ok(0)
        }
        Command::Track { patterns } | Command::Untrack { patterns } => {
            use czcache::git::install;
            let dir = cwd(cli)?;
            let root = workspace::find_root(&dir);
            let tracking = matches!(cli.command, Command::Track { .. });
            if tracking && patterns.is_empty() {
                let listed = install::tracked_patterns(&root)?;
                if cli.json {
                    print_json_list("patterns", &listed);
                } else {
                    for pattern in listed {
                        outln!("{pattern}");
                    }
                }
                return Ok(0);
            }
            let changed = if tracking {
                install::track(&root, patterns)?
            } else {
                install::untrack(&root, patterns)?
            };
            if cli.json {
                print_json_list("patterns", &changed);
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
        Command::Ls { rev } => {
            let ws = open_workspace(cli, false)?;
            let listed = czcache::git::ops::ls(&ws, rev.as_deref())?;
            if cli.json {
                print_json_list("markers", &listed);
            } else {
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
            }
            Ok(0)
        }
        Command::Gc {
            remote,
            cache,
            all_commits,
            dry_run,
            keep_younger_than,
        } => {
            let (dir, config) = load_config(cli)?;
            let ws = Workspace::open(&dir, &config, &Env::from_process())?;
            let selection = czcache::git::Selection {
                all_commits: *all_commits,
                ..Default::default()
            };
            let report = match (remote, cache) {
                (Some(name), _) => czcache::git::ops::gc_remote(
                    &ws,
                    name,
                    &selection,
                    *keep_younger_than,
                    *dry_run,
                )?,
                _ => czcache::git::ops::gc_cache(
                    &ws,
                    &config,
                    &selection,
                    *keep_younger_than,
                    *dry_run,
                )?,
            };
            if !cli.quiet {
                for skipped in &report.skipped {
                    eprintln!("czc: warning: gc skipped {skipped}");
                }
            }
            if cli.json {
                print_json(&report);
            } else if !cli.quiet {
                if cli.verbose > 0 || *dry_run {
                    for oid in &report.deleted {
                        outln!(
                            "{} {oid}",
                            if *dry_run { "would delete" } else { "deleted" }
                        );
                    }
                }
                outln!(
                    "{} {} object{} ({}) from {}; kept {} referenced, {} younger than the grace period{}",
                    if *dry_run { "would delete" } else { "deleted" },
                    report.deleted.len(),
                    if report.deleted.len() == 1 { "" } else { "s" },
                    format_size(report.freed),
                    report.target,
                    report.referenced,
                    report.kept_young,
                    if report.lost_races > 0 {
                        format!(", {} changed meanwhile and left alone", report.lost_races)
                    } else if report.unpushed_kept > 0 {
                        format!(", {} that no remote holds yet", report.unpushed_kept)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(0)
        }
        Command::FilterProcess => {
            let ws = open_workspace(cli, false)?;
            // As Git LFS does: the hooks (pre-push above all) wherever the filter runs.
            if let Err(err) = czcache::git::install::install_hooks(ws.root()) {
                eprintln!("czc: warning: could not install czc's git hooks: {err}");
            }
            // Big pipes and buffers: a packet is at most 64 KiB, so an 8 KiB buffer
            // would cost a tiny write and a context switch per packet.
            czcache::fsutil::grow_pipe(io::stdin(), FILTER_PIPE_BYTES);
            czcache::fsutil::grow_pipe(io::stdout(), FILTER_PIPE_BYTES);
            let result = czcache::git::filter::filter_process(
                &ws,
                io::BufReader::with_capacity(FILTER_PIPE_BYTES, io::stdin().lock()),
                io::BufWriter::with_capacity(FILTER_PIPE_BYTES, io::stdout().lock()),
            );
            ws.finish();
            match result {
                Ok(()) => Ok(0),
                Err(err) => Err(Error::Git(err.to_string())),
            }
        }
        Command::Clean { path } => {
            let ws = open_workspace(cli, false)?;
            let text = czcache::git::filter::clean(&ws, path, &mut io::stdin().lock())?;
            io::stdout()
                .write_all(text.as_bytes())
                .map_err(|source| Error::Io {
                    path: "stdout".into(),
                    source,
                })?;
            Ok(0)
        }
        Command::Smudge { path } => {
            let ws = open_workspace(cli, false)?;
            let mut out = io::BufWriter::new(io::stdout().lock());
            czcache::git::filter::smudge(&ws, path, &mut io::stdin().lock(), &mut out)?;
            out.flush().map_err(|source| Error::Io {
                path: "stdout".into(),
                source,
            })?;
            Ok(0)
        }
        Command::Hook { hook } => hook_command(cli, hook),
        Command::Serve(args) => serve_command(cli, args),
        Command::Get {
            target: (remote, key),
        } => {
            let ws = open_workspace(cli, false)?;
            let storage = ws.remotes().open(remote)?.reader();
            let fetched = czcache::remote::get_key(ws.cache(), remote, storage.as_ref(), key)?;
            if cli.json {
                print_json(&fetched);
            } else {
                outln!("{}", fetched.path.display());
            }
            Ok(0)
        }
        Command::Put {
            target: (remote, key),
            file,
            if_absent,
            if_match,
            if_newer,
        } => {
            let ws = open_workspace(cli, false)?;
            let (_, storage) = ws.remotes().writer(Some(remote))?;
            let condition = match (if_absent, if_match, if_newer) {
                (true, _, _) => PutCondition::IfAbsent,
                (_, Some(oid), _) => PutCondition::IfMatch(*oid),
                (_, _, true) => PutCondition::IfNewer,
                _ => PutCondition::Always,
            };
            let path = cwd(cli)?.join(file);
            let written = czcache::remote::put_key(storage.as_ref(), key, &path, condition)?;
            if written {
                // The next `czc get` of this key is a local hit on what was just written,
                // not a stale copy from before.
                czcache::remote::remember_key(ws.cache(), remote, storage.as_ref(), key, &path)?;
            }
            if cli.json {
                print_json(&serde_json::json!({ "written": written }));
            } else if !cli.quiet {
                if written {
                    outln!("uploaded {} to {remote}:{key}", file.display());
                } else {
                    outln!(
                        "{remote}:{key} is at least as new as {}; nothing written",
                        file.display()
                    );
                }
            }
            Ok(0)
        }
        Command::Rm {
            target: (remote, key),
            if_match,
        } => {
            let ws = open_workspace(cli, false)?;
            let (_, storage) = ws.remotes().writer(Some(remote))?;
            let removed =
                czcache::remote::remove_key(ws.cache(), remote, storage.as_ref(), key, *if_match)?;
            if !removed {
                return Err(Error::NotFound {
                    path: PathBuf::from(format!("{remote}:{key}")),
                });
            }
            if cli.json {
                print_json(&serde_json::json!({ "removed": format!("{remote}:{key}") }));
            } else if !cli.quiet {
                outln!("deleted {remote}:{key}");
            }
            Ok(0)
        }
    }
}

fn serve_command(cli: &Cli, args: &ServeArgs) -> Result<i32, Error> {
    use czcache::serve::{read_tokens, serve, Backend, ServeOptions};
    let ServeArgs {
        source,
        listen,
        tokens,
        public_read,
        max_upload,
        read_only,
        limits,
    } = args;
    let (public_read, read_only) = (*public_read, *read_only);
    let limits = czcache::serve::ServeLimits {
        header_timeout: limits.header_timeout,
        body_idle_timeout: limits.body_timeout,
        max_connections: limits.max_connections.max(1),
        max_connections_per_ip: limits.max_connections_per_ip.max(1),
        shutdown_grace: limits.shutdown_grace,
    };
    let (dir, config) = load_config(cli)?;
    let max_upload = parse_size(max_upload).map_err(|reason| {
        Error::Config(czcache::config::ConfigError::Value {
            origin: "--max-upload".into(),
            key: "--max-upload".into(),
            value: max_upload.into(),
            reason,
        })
    })?;
    let tokens = read_tokens(&dir.join(tokens))?;
    let folder = dir.join(source);
    let backend = if config.remotes.contains_key(source) && !folder.is_dir() {
        let remotes = czcache::remote::Remotes::from_config(
            &config,
            &workspace::find_root(&dir),
            &Env::from_process(),
        );
        let opened = remotes.open(source)?;
        Backend::Other(if read_only {
            czcache::storage::OpenedStorage::ReadOnly(opened.reader())
        } else {
            opened
        })
    } else {
        std::fs::create_dir_all(&folder).map_err(|err| Error::Io {
            path: folder.clone(),
            source: err,
        })?;
        Backend::Folder {
            storage: czcache::storage::FolderStorage::new(folder),
            writable: !read_only,
        }
    };
    let what = backend.describe();
    let staging = match &backend {
        Backend::Folder { storage, .. } => storage.root().join(".czc-serve-tmp"),
        Backend::Other(_) => config.cache.dir.join("tmp").join("serve"),
    };
    let options = ServeOptions {
        staging,
        limits,
        listen: listen.into(),
        tokens,
        public_read,
        max_upload,
    };
    serve(backend, options, |addr| {
        eprintln!("czc: serving {what} on http://{addr}");
    })?;
    Ok(0)
}

/// `<remote>:<key>` as given on the command line.
fn parse_remote_key(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((remote, key)) if !remote.is_empty() && !key.is_empty() => {
            Ok((remote.to_string(), key.to_string()))
        }
        _ => Err(format!("'{text}' is not <remote>:<key>")),
    }
}

fn parse_oid(text: &str) -> Result<Oid, String> {
    text.parse()
        .map_err(|err: czcache::oid::OidError| err.to_string())
}

fn print_transfer(cli: &Cli, verb: &str, direction: &str, transfer: &TransferReport) -> i32 {
    for err in &transfer.failures {
        report(err);
    }
    if cli.json {
        print_json(transfer);
    } else if !cli.quiet {
        outln!(
            "{verb} {} object{} ({}) {direction} {}, {} already there{}",
            transfer.transferred,
            if transfer.transferred == 1 { "" } else { "s" },
            format_size(transfer.bytes),
            if transfer.remote.is_empty() {
                "no remote"
            } else {
                &transfer.remote
            },
            transfer.already,
            if transfer.failed > 0 {
                format!(", {} failed", transfer.failed)
            } else {
                String::new()
            }
        );
    }
    if transfer.failed > 0 {
        1
    } else {
        0
    }
}

fn remote_command(cli: &Cli, command: &RemoteCommand) -> Result<i32, Error> {
    let (dir, config) = load_config(cli)?;
    let root = workspace::find_root(&dir);
    let file = root.join(czcache::config::PROJECT_FILE);
    match command {
        RemoteCommand::Add {
            name,
            url,
            default,
            read_only,
            anonymous,
            endpoint,
            region,
        } => {
            let entry = RemoteEntry {
                url: url.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                anonymous: *anonymous,
                read_only: *read_only,
                ..RemoteEntry::default()
            };
            czcache::storage::check_url(url)?;
            if let Some(endpoint) = endpoint {
                czcache::storage::check_endpoint(endpoint)?;
            }
            czcache::config::add_remote(&file, name, &entry, *default)?;
            if cli.json {
                print_json(&serde_json::json!({ "added": name, "url": url, "file": file }));
            } else if !cli.quiet {
                outln!("added remote {name} ({url}) to {}", file.display());
            }
            Ok(0)
        }
        RemoteCommand::List => {
            if cli.json {
                let list: Vec<_> = config
                    .remotes
                    .iter()
                    .map(|(name, entry)| {
                        serde_json::json!({
                            "name": name,
                            "url": entry.url,
                            "read_only": entry.read_only,
                            "anonymous": entry.anonymous,
                            "default": config.remote.default.as_deref() == Some(name.as_str()),
                            "read_order": config.remote.read.iter().position(|r| r == name),
                        })
                    })
                    .collect();
                print_json_list("remotes", &list);
            } else {
                for (name, entry) in &config.remotes {
                    let mut notes = Vec::new();
                    if config.remote.default.as_deref() == Some(name.as_str()) {
                        notes.push("default".to_string());
                    }
                    if let Some(i) = config.remote.read.iter().position(|r| r == name) {
                        notes.push(format!("read #{}", i + 1));
                    }
                    if entry.read_only {
                        notes.push("read-only".into());
                    }
                    if entry.anonymous {
                        notes.push("anonymous".into());
                    }
                    let notes = if notes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", notes.join(", "))
                    };
                    outln!("{name}\t{}{notes}", entry.url);
                }
            }
            Ok(0)
        }
        RemoteCommand::Remove { name } => {
            if !czcache::config::remove_remote(&file, name)? {
                return Err(Error::UnknownRemote {
                    name: name.clone(),
                    known: config
                        .remotes
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if cli.json {
                print_json(&serde_json::json!({ "removed": name }));
            } else if !cli.quiet {
                outln!("removed remote {name}");
            }
            Ok(0)
        }
    }
}

fn folder_summary(counts: &workspace::FolderCounts) -> String {
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

fn hook_command(cli: &Cli, hook: &HookCommand) -> Result<i32, Error> {
    let ws = open_workspace(cli, false)?;
    match hook {
        HookCommand::PrePush { remote, .. } => {
            let mut lines = String::new();
            io::Read::read_to_string(&mut io::stdin(), &mut lines).map_err(|source| Error::Io {
                path: "stdin".into(),
                source,
            })?;
            let report = match czcache::git::ops::pre_push(&ws, remote, &lines) {
                Ok(report) => report,
                Err(err) => {
                    self::report(&err);
                    eprintln!("czc: the git push was stopped because its data could not be pushed");
                    return Ok(1);
                }
            };
            if report.transferred + report.failed == 0 {
                return Ok(0);
            }
            for err in &report.failures {
                self::report(err);
            }
            // git shows a hook's stderr; stdout may be the push protocol's.
            if !cli.quiet {
                eprintln!(
                    "czc: pushed {} object{} ({}) to {}, {} already there",
                    report.transferred,
                    if report.transferred == 1 { "" } else { "s" },
                    format_size(report.bytes),
                    report.remote,
                    report.already
                );
            }
            if report.failed > 0 {
                eprintln!("czc: the git push was stopped because its data could not be pushed");
                return Ok(1);
            }
            Ok(0)
        }
        HookCommand::PostCheckout {
            previous,
            new,
            branch_flag,
        } => {
            if branch_flag != "1" {
                return Ok(0); // a file checkout: git restored exactly what was asked
            }
            let (fetched, report) = czcache::git::ops::checkout_changed(&ws, Some(previous), new)?;
            ws.finish();
            Ok(print_hook_checkout(cli, &fetched, &report))
        }
        HookCommand::PostMerge { .. } => {
            let (fetched, report) =
                czcache::git::ops::checkout_changed(&ws, Some("ORIG_HEAD"), "HEAD")?;
            ws.finish();
            Ok(print_hook_checkout(cli, &fetched, &report))
        }
    }
}

/// Pipe and buffer size for git's filter process.
const FILTER_PIPE_BYTES: usize = 1 << 20;

fn print_hook_checkout(cli: &Cli, fetched: &TransferReport, report: &CheckoutReport) -> i32 {
    let code = print_failures(report).max(if fetched.failed > 0 { 1 } else { 0 });
    if !cli.quiet && report.restored > 0 {
        eprintln!(
            "czc: restored {} data file{}",
            report.restored,
            if report.restored == 1 { "" } else { "s" }
        );
    }
    code
}

fn print_failures(failures: &CheckoutReport) -> i32 {
    for err in &failures.failures {
        report(err);
    }
    if failures.failures.is_empty() {
        0
    } else {
        1
    }
}

fn cache_command(cli: &Cli, command: &CacheCommand) -> Result<i32, Error> {
    let (_, config) = load_config(cli)?;
    let (mut cache, index_set_aside) = if matches!(command, CacheCommand::Verify) {
        LocalCache::open_for_repair(&config.cache)?
    } else {
        (LocalCache::open(&config.cache)?, false)
    };
    match command {
        CacheCommand::Info => {
            let info = cache.info()?;
            if cli.json {
                print_json(&info);
            } else {
                let percent = if info.size_limit > 0 {
                    info.size as f64 * 100.0 / info.size_limit as f64
                } else {
                    0.0
                };
                outln!("location:  {}", info.root.display());
                outln!("index:     {} ({})", info.index, info.index_path.display());
                outln!("objects:   {}", info.objects);
                outln!(
                    "size:      {} of {} ({percent:.1}%)",
                    format_size(info.size),
                    format_size(info.size_limit)
                );
                outln!("hits:      {}", info.hits);
                outln!("misses:    {}", info.misses);
                outln!(
                    "unpushed:  {} objects ({}) no remote holds yet",
                    info.awaiting_push,
                    format_size(info.awaiting_push_bytes)
                );
                for project in &info.awaiting_push_by_project {
                    let name = if project.project.as_os_str().is_empty() {
                        "(no known project)".to_string()
                    } else {
                        project.project.display().to_string()
                    };
                    outln!(
                        "           {} objects ({}) in {name}: run `czc push` there",
                        project.objects,
                        format_size(project.bytes)
                    );
                }
            }
            Ok(0)
        }
        CacheCommand::Evict {
            to,
            include_unpushed,
        } => {
            cache.set_protect_unpushed(!include_unpushed);
            let target = match to {
                Some(text) => parse_size(text).map_err(|reason| {
                    Error::Config(czcache::config::ConfigError::Value {
                        origin: "--to".into(),
                        key: "--to".into(),
                        value: text.clone(),
                        reason,
                    })
                })?,
                None => cache.size_limit(),
            };
            let report = cache.evict_to(target)?;
            if report.deferred {
                eprintln!(
                    "czc: error: another czc process is using the cache; nothing was evicted, try again when it is done"
                );
                return Ok(1);
            }
            if cli.json {
                print_json(&serde_json::json!({
                    "evicted": report.removed.len(),
                    "freed": report.freed,
                    "size": report.size_after,
                    "unpushed_kept": report.unpushed_kept,
                    "include_unpushed": include_unpushed,
                }));
            } else if !cli.quiet {
                outln!(
                    "evicted {} objects, freed {}; cache holds {}{}",
                    report.removed.len(),
                    format_size(report.freed),
                    format_size(report.size_after),
                    if *include_unpushed {
                        " (--include-unpushed: objects no remote holds were evicted too)"
                            .to_string()
                    } else if report.unpushed_kept > 0 {
                        format!(
                            "; kept {} objects no remote holds yet (`czc push` them, or pass --include-unpushed to lose them)",
                            report.unpushed_kept
                        )
                    } else {
                        String::new()
                    }
                );
            }
            Ok(0)
        }
        CacheCommand::Verify => {
            let mut report = cache.verify()?;
            report.index_rebuilt |= index_set_aside;
            if cli.json {
                print_json(&serde_json::json!({
                    "checked": report.checked,
                    "corrupt": report.corrupt.iter().map(|(oid, path)| serde_json::json!({"oid": oid, "quarantine": path})).collect::<Vec<_>>(),
                    "index_added": report.index_added,
                    "index_dropped": report.index_dropped,
                    "index_rebuilt": report.index_rebuilt,
                }));
            } else if !cli.quiet {
                outln!(
                    "checked {} objects: {} corrupt, index +{} -{}{}",
                    report.checked,
                    report.corrupt.len(),
                    report.index_added,
                    report.index_dropped,
                    if report.index_rebuilt {
                        " (rebuilt)"
                    } else {
                        ""
                    }
                );
            }
            for (oid, path) in &report.corrupt {
                eprintln!(
                    "czc: error: object {oid} is corrupt; moved to {}",
                    path.display()
                );
            }
            Ok(if report.corrupt.is_empty() { 0 } else { 1 })
        }
        CacheCommand::Clear => {
            let removed = cache.clear()?;
            if cli.json {
                print_json(&serde_json::json!({ "removed": removed }));
            } else if !cli.quiet {
                outln!("removed {removed} objects");
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command, nested ones too, says what it is.
    #[test]
    fn every_option_and_argument_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "czc", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }

    /// The commands people start with show an example in their help.
    #[test]
    fn main_commands_show_an_example() {
        let cli = Cli::command();
        for name in [
            "save", "checkout", "status", "push", "pull", "get", "put", "serve",
        ] {
            let sub = cli.find_subcommand(name).unwrap();
            let after = sub
                .get_after_help()
                .map(|text| text.to_string())
                .unwrap_or_default();
            assert!(after.contains("czc "), "{name} has no example");
        }
    }
}
