//! Command-line parsing (clap) and output. Nothing here decides policy: it turns flags
//! into library calls and library results into lines.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
    Save {
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
    Checkout {
        paths: Vec<PathBuf>,
        /// Overwrite files with unsaved changes.
        #[arg(short, long)]
        force: bool,
    },
    /// Replace materialized files with private writable copies.
    Unprotect {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show each marker's state: ok, modified, missing, not-cached.
    Status {
        paths: Vec<PathBuf>,
        /// Also check that the remote (default: remote.default) has every object:
        /// `not-pushed` otherwise.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
    },
    /// Inspect and maintain the local cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Upload the objects the markers under the paths reference that the remote lacks.
    Push {
        paths: Vec<PathBuf>,
        /// The remote to push to (default: remote.default).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Push every cached object, not only those markers reference.
        #[arg(long)]
        all: bool,
    },
    /// Download into the cache what the markers under the paths reference.
    Fetch {
        paths: Vec<PathBuf>,
        /// Read from this remote only (default: the remote.read chain).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
    },
    /// Fetch, then check out.
    Pull {
        paths: Vec<PathBuf>,
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Overwrite files with unsaved changes.
        #[arg(short, long)]
        force: bool,
    },
    /// Copy a key of a remote through the local cache and print the local path;
    /// downloads again only when the remote copy changed.
    Get {
        /// `<remote>:<key>`
        #[arg(value_parser = parse_remote_key)]
        target: (String, String),
    },
    /// Upload a file to a key of a remote, optionally conditionally.
    Put {
        /// `<remote>:<key>`
        #[arg(value_parser = parse_remote_key)]
        target: (String, String),
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
    Serve {
        /// A folder (created if it does not exist yet), or the name of a configured remote.
        source: String,
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
    },
    /// Edit the named remotes in .czcache.toml.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add (or replace) a remote.
    Add {
        name: String,
        /// A folder (/path, file:///path, relative to the project), s3://bucket/prefix or
        /// http(s)://host/prefix.
        url: String,
        /// Make it remote.default (where push writes).
        #[arg(long)]
        default: bool,
        #[arg(long)]
        read_only: bool,
        /// Unsigned requests (public buckets).
        #[arg(long)]
        anonymous: bool,
        /// An S3-compatible endpoint.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
    /// List the remotes.
    List,
    /// Remove a remote (and its mentions in remote.default and remote.read).
    Remove { name: String },
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
    match execute(&cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            report(&err);
            1
        }
    }
}

/// Prints one `czc: error:` line, with paths shown relative to the current folder.
fn report(err: &Error) {
    let mut message = err.to_string().replace('\n', " ");
    if let Ok(here) = std::env::current_dir() {
        message = message.replace(&format!("{}/", here.display()), "");
    }
    eprintln!("czc: error: {message}");
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
    Ok((dir, config))
}

fn open_workspace(cli: &Cli, force: bool) -> Result<Workspace, Error> {
    let (dir, config) = load_config(cli)?;
    Ok(Workspace::open(&dir, &config, &Env::from_process())?
        .with_force(force)
        .with_jobs(cli.jobs.unwrap_or(czcache::remote::DEFAULT_TRANSFER_JOBS))
        .with_progress(!cli.no_progress && !cli.quiet && !cli.json))
}

fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    println!("{text}");
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
                println!(
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
                            println!(
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
                print_json(&saved);
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
                        println!("{}", dest.display());
                    }
                    code
                }
                None => {
                    let path = ws.open_path(&target)?;
                    if cli.json {
                        print_json(&serde_json::json!({ "path": path }));
                    } else {
                        println!("{}", path.display());
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
                println!(
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
                println!(
                    "unprotected {count} file{}",
                    if count == 1 { "" } else { "s" }
                );
            }
            Ok(0)
        }
        Command::Status { paths, remote } => {
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
                print_json(&statuses);
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
                    println!("{line}");
                }
            }
            Ok(if errors.is_empty() { 0 } else { 1 })
        }
        Command::Cache { command } => cache_command(cli, command),
        Command::Push { paths, remote, all } => {
            let ws = open_workspace(cli, false)?;
            let report = ws.push(paths, remote.as_deref(), *all)?;
            Ok(print_transfer(cli, "pushed", "to", &report))
        }
        Command::Fetch { paths, remote } => {
            let ws = open_workspace(cli, false)?;
            let report = ws.fetch(paths, remote.as_deref())?;
            Ok(print_transfer(cli, "fetched", "from", &report))
        }
        Command::Pull {
            paths,
            remote,
            force,
        } => {
            let ws = open_workspace(cli, *force)?;
            let fetched = ws.fetch(paths, remote.as_deref())?;
            let fetch_code = print_transfer(cli, "fetched", "from", &fetched);
            let report = ws.checkout(paths)?;
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
                println!(
                    "restored {} file{}, {} already up to date",
                    report.restored,
                    if report.restored == 1 { "" } else { "s" },
                    report.unchanged
                );
            }
            Ok(fetch_code.max(code))
        }
        Command::Remote { command } => remote_command(cli, command),
        Command::Serve {
            source,
            listen,
            tokens,
            public_read,
            max_upload,
            read_only,
        } => serve_command(
            cli,
            source,
            listen,
            tokens,
            *public_read,
            max_upload,
            *read_only,
        ),
        Command::Get {
            target: (remote, key),
        } => {
            let ws = open_workspace(cli, false)?;
            let storage = ws.remotes().open(remote)?.reader();
            let fetched = czcache::remote::get_key(ws.cache(), remote, storage.as_ref(), key)?;
            if cli.json {
                print_json(&fetched);
            } else {
                println!("{}", fetched.path.display());
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
            if cli.json {
                print_json(&serde_json::json!({ "written": written }));
            } else if !cli.quiet {
                if written {
                    println!("uploaded {} to {remote}:{key}", file.display());
                } else {
                    println!(
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
            if !cli.quiet && !cli.json {
                println!("deleted {remote}:{key}");
            }
            Ok(0)
        }
    }
}

fn serve_command(
    cli: &Cli,
    source: &str,
    listen: &str,
    tokens: &std::path::Path,
    public_read: bool,
    max_upload: &str,
    read_only: bool,
) -> Result<i32, Error> {
    use czcache::serve::{read_tokens, serve, Backend, ServeOptions};
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
    let options = ServeOptions {
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
        println!(
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
            };
            czcache::config::add_remote(&file, name, &entry, *default)?;
            if !cli.quiet && !cli.json {
                println!("added remote {name} ({url}) to {}", file.display());
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
                print_json(&list);
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
                    println!("{name}\t{}{notes}", entry.url);
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
            if !cli.quiet && !cli.json {
                println!("removed remote {name}");
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
    let (dir, config) = load_config(cli)?;
    let mut cache = LocalCache::open(&config.cache)?;
    let remotes = czcache::remote::Remotes::from_config(
        &config,
        &workspace::find_root(&dir),
        &Env::from_process(),
    );
    cache.set_protect_unpushed(remotes.has_writable_default());
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
                println!("location:  {}", info.root.display());
                println!("index:     {} ({})", info.index, info.index_path.display());
                println!("objects:   {}", info.objects);
                println!(
                    "size:      {} of {} ({percent:.1}%)",
                    format_size(info.size),
                    format_size(info.size_limit)
                );
                println!("hits:      {}", info.hits);
                println!("misses:    {}", info.misses);
                println!(
                    "unpushed:  {} objects ({}) no remote holds yet",
                    info.awaiting_push,
                    format_size(info.awaiting_push_bytes)
                );
            }
            Ok(0)
        }
        CacheCommand::Evict { to } => {
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
                }));
            } else if !cli.quiet {
                println!(
                    "evicted {} objects, freed {}; cache holds {}",
                    report.removed.len(),
                    format_size(report.freed),
                    format_size(report.size_after)
                );
            }
            Ok(0)
        }
        CacheCommand::Verify => {
            let report = cache.verify()?;
            if cli.json {
                print_json(&serde_json::json!({
                    "checked": report.checked,
                    "corrupt": report.corrupt.iter().map(|(oid, path)| serde_json::json!({"oid": oid, "quarantine": path})).collect::<Vec<_>>(),
                    "index_added": report.index_added,
                    "index_dropped": report.index_dropped,
                    "index_rebuilt": report.index_rebuilt,
                }));
            } else if !cli.quiet {
                println!(
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
                println!("removed {removed} objects");
            }
            Ok(0)
        }
    }
}
