//! Command-line parsing (clap) and output. Nothing here decides policy: each
//! subcommand's `cmd_<name>` maps flags to one `czcache::ops` call and prints its report.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use czcache::config::{Config, Env};
use czcache::ops::{Context, Options};
use czcache::workspace;
use czcache::Error;
use czcache::Oid;

#[macro_use]
mod print;
mod admin;
mod git;
mod progress;
mod project;
mod transfer;

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
        /// `<remote>:<key>`, a URL (`s3://bucket/path/file`, `https://…`, `/path/file`), or
        /// with --cache a key of that cache.
        target: String,
        /// Read the key through this named cache (no name: cache.default, else `local`).
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        cache: Option<String>,
    },
    /// Upload a file to a key of a remote, optionally conditionally.
    #[command(
        after_help = "Example:\n  czc put store:results/run1.csv out.csv --if-absent\n  czc put store:results/best.csv out.csv --if-match blake3:<the hash you last read>"
    )]
    Put {
        /// `<remote>:<key>`, a URL, or with --cache a key of that cache.
        target: String,
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
        /// Write the key through this named cache (no name: cache.default, else `local`).
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        cache: Option<String>,
    },
    /// Delete a key of a remote.
    Rm {
        /// `<remote>:<key>`, a URL, or with --cache a key of that cache.
        target: String,
        /// Only if the key still holds the bytes with this hash.
        #[arg(long, value_name = "HASH", value_parser = parse_oid)]
        if_match: Option<Oid>,
        /// Delete the key from this named cache (no name: cache.default, else `local`).
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        cache: Option<String>,
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
        /// In your user config (every project, and outside any) instead of .czcache.toml.
        #[arg(long)]
        user: bool,
    },
    /// List the remotes.
    List,
    /// Remove a remote (and its mentions in remote.default and remote.read).
    Remove {
        /// The remote's name.
        name: String,
        /// From your user config instead of .czcache.toml.
        #[arg(long)]
        user: bool,
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
    /// The named caches (`[caches.<name>]` and the built-in `local` and `public`) for
    /// `get`/`put`/`rm --cache`.
    List,
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
            let _ = print::JSON_ROOT.set(workspace::find_root(&dir));
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
    if let Some(jobs) = cli.jobs {
        // Hashing and copying run on rayon's global pool: -j sizes it.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global();
    }
    match execute(&cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            print::report(&err);
            if cli.json {
                // Machine readers get the failure on stdout too.
                print::json(&serde_json::json!({ "error": print::one_line(&err) }));
            }
            if matches!(err, Error::Usage(_)) {
                2
            } else {
                1
            }
        }
    }
}

fn is_broken_pipe(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The folder the command runs in (`-C`).
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

/// The configuration for the folder the command runs in; its warnings said once.
fn load_config(cli: &Cli) -> Result<(PathBuf, Config), Error> {
    let dir = cwd(cli)?;
    let root = workspace::find_root(&dir);
    let config = Config::load(Some(&root), &Env::from_process())?;
    if !cli.quiet {
        for warning in &config.warnings {
            print::errln(&format!("czc: warning: {warning}"));
        }
    }
    Ok((dir, config))
}

/// The library context for a command on the project around the current folder.
fn context(cli: &Cli, force: bool) -> Result<Context, Error> {
    let (dir, config) = load_config(cli)?;
    Context::open_with(
        &dir,
        config,
        Env::from_process(),
        Options {
            force,
            jobs: cli.jobs,
            reporter: None,
        },
    )
}

fn execute(cli: &Cli) -> Result<i32, Error> {
    use Command as C;
    match &cli.command {
        C::Init => project::cmd_init(cli),
        C::Save { paths } => project::cmd_save(cli, paths),
        C::Open { target, to, force } => project::cmd_open(cli, target, to.as_deref(), *force),
        C::Cat { target } => project::cmd_cat(cli, target),
        C::Checkout { paths, force } => project::cmd_checkout(cli, paths, *force),
        C::Unprotect { paths } => project::cmd_unprotect(cli, paths),
        C::Status {
            paths,
            remote,
            exit_code,
        } => project::cmd_status(cli, paths, remote.as_deref(), *exit_code),
        C::Cache { command } => admin::cmd_cache(cli, command),
        C::Push { paths, remote, all } => transfer::cmd_push(cli, paths, remote.as_deref(), *all),
        C::Fetch {
            paths,
            remote,
            history,
        } => transfer::cmd_fetch(cli, paths, remote.as_deref(), history),
        C::Pull {
            paths,
            remote,
            force,
        } => transfer::cmd_pull(cli, paths, remote.as_deref(), *force),
        C::Remote { command } => admin::cmd_remote(cli, command),
        C::Install { local } => git::cmd_install(cli, *local, true),
        C::Uninstall { local } => git::cmd_install(cli, *local, false),
        C::Track { patterns } => git::cmd_track(cli, patterns, true),
        C::Untrack { patterns } => git::cmd_track(cli, patterns, false),
        C::Ls { rev } => git::cmd_ls(cli, rev.as_deref()),
        C::Gc {
            remote,
            all_commits,
            dry_run,
            keep_younger_than,
            ..
        } => git::cmd_gc(
            cli,
            git::GcFlags {
                remote: remote.clone(),
                all_commits: *all_commits,
                dry_run: *dry_run,
                keep_younger_than: *keep_younger_than,
            },
        ),
        C::FilterProcess => git::cmd_filter_process(cli),
        C::Clean { path } => git::cmd_clean(cli, path),
        C::Smudge { path } => git::cmd_smudge(cli, path),
        C::Hook { hook } => git::cmd_hook(cli, hook),
        C::Serve(args) => admin::cmd_serve(cli, args),
        C::Get { target, cache } => transfer::cmd_get(cli, target, cache.as_deref()),
        C::Put {
            target,
            file,
            if_absent,
            if_match,
            if_newer,
            cache,
        } => transfer::cmd_put(
            cli,
            target,
            cache.as_deref(),
            file,
            transfer::PutFlags {
                if_absent: *if_absent,
                if_match: *if_match,
                if_newer: *if_newer,
            },
        ),
        C::Rm {
            target,
            if_match,
            cache,
        } => transfer::cmd_rm(cli, target, cache.as_deref(), *if_match),
    }
}

fn parse_oid(text: &str) -> Result<Oid, String> {
    text.parse()
        .map_err(|err: czcache::oid::OidError| err.to_string())
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
