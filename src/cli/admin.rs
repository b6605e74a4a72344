//! Administration: the cache, the named remotes, `czc serve`.

use czcache::config::{format_size, parse_size, ConfigError, RemoteEntry};
use czcache::ops;
use czcache::workspace;
use czcache::Error;

use super::print::{self, errln};
use super::{load_config, CacheCommand, Cli, RemoteCommand, ServeArgs};

pub fn cmd_cache(cli: &Cli, command: &CacheCommand) -> Result<i32, Error> {
    let (_, config) = load_config(cli)?;
    match command {
        CacheCommand::Info => cache_info(cli, &ops::cache::info(&config)?),
        CacheCommand::Evict {
            to,
            include_unpushed,
        } => {
            let to = to
                .as_deref()
                .map(|text| size_flag("--to", text))
                .transpose()?;
            let report = ops::cache::evict(&config, to, *include_unpushed)?;
            if cli.json {
                print::json(&report);
            } else if !cli.quiet {
                let note = if report.include_unpushed {
                    " (--include-unpushed: objects no remote holds were evicted too)".to_string()
                } else if report.unpushed_kept > 0 {
                    format!(
                        "; kept {} objects no remote holds yet (`czc push` them, or pass --include-unpushed to lose them)",
                        report.unpushed_kept
                    )
                } else {
                    String::new()
                };
                outln!(
                    "evicted {} objects, freed {}; cache holds {}{note}",
                    report.evicted,
                    format_size(report.freed),
                    format_size(report.size),
                );
            }
            Ok(0)
        }
        CacheCommand::Verify => {
            let report = ops::cache::verify(&config)?;
            if cli.json {
                print::json(&report);
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
            for item in &report.corrupt {
                errln(&format!(
                    "czc: error: object {} is corrupt; moved to {}",
                    item.oid,
                    item.quarantine.display()
                ));
            }
            Ok(i32::from(!report.corrupt.is_empty()))
        }
        CacheCommand::List => {
            let listed = czcache::caches::list(&config);
            if cli.json {
                print::json_list("caches", &listed);
                return Ok(0);
            }
            for cache in &listed {
                let mut notes = vec![cache.kind.to_string()];
                if !cache.read.is_empty() {
                    notes.push(format!("read {}", cache.read.join(", ")));
                }
                if let Some(write) = &cache.write {
                    notes.push(format!("write {write}"));
                }
                if cache.default {
                    notes.push("default".into());
                }
                outln!("{}\t{}", cache.name, notes.join(", "));
            }
            Ok(0)
        }
        CacheCommand::Clear => {
            let report = ops::cache::clear(&config)?;
            if cli.json {
                print::json(&report);
            } else if !cli.quiet {
                outln!("removed {} objects", report.removed);
            }
            Ok(0)
        }
    }
}

fn cache_info(cli: &Cli, info: &czcache::cache::CacheInfo) -> Result<i32, Error> {
    if cli.json {
        print::json(info);
        return Ok(0);
    }
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
    Ok(0)
}

/// A size flag (`--to 5GiB`), or an error naming the flag.
fn size_flag(flag: &str, text: &str) -> Result<u64, Error> {
    parse_size(text).map_err(|reason| {
        Error::Config(ConfigError::Value {
            origin: flag.into(),
            key: flag.into(),
            value: text.into(),
            reason,
        })
    })
}

pub fn cmd_remote(cli: &Cli, command: &RemoteCommand) -> Result<i32, Error> {
    use czcache::ops::remotes::{config_file, ConfigFile};
    let (dir, config) = load_config(cli)?;
    let root = workspace::find_root(&dir);
    let env = czcache::config::Env::from_process();
    let which = |user: bool| {
        if user {
            ConfigFile::User
        } else {
            ConfigFile::Project
        }
    };
    match command {
        RemoteCommand::Add {
            name,
            url,
            default,
            read_only,
            anonymous,
            endpoint,
            region,
            user,
        } => {
            let file = config_file(which(*user), &root, &env)?;
            let entry = RemoteEntry {
                url: url.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                anonymous: *anonymous,
                read_only: *read_only,
                ..RemoteEntry::default()
            };
            let report = ops::remotes::add(&file, which(*user), name, &entry, *default)?;
            if cli.json {
                print::json(&report);
            } else if !cli.quiet {
                outln!("added remote {name} ({url}) to {}", report.file.display());
            }
        }
        RemoteCommand::List => {
            let listed = ops::remotes::list(&config);
            if cli.json {
                print::json_list("remotes", &listed);
            } else {
                for remote in &listed {
                    outln!("{}\t{}{}", remote.name, remote.url, remote_notes(remote));
                }
            }
        }
        RemoteCommand::Remove { name, user } => {
            let file = config_file(which(*user), &root, &env)?;
            let report = ops::remotes::remove(&file, &config, name)?;
            if cli.json {
                print::json(&report);
            } else if !cli.quiet {
                outln!("removed remote {name}");
            }
        }
    }
    Ok(0)
}

/// `  (default, read #1, read-only)` after a remote's url.
fn remote_notes(remote: &ops::remotes::ListedRemote) -> String {
    let mut notes = Vec::new();
    if remote.default {
        notes.push("default".to_string());
    }
    if let Some(i) = remote.read_order {
        notes.push(format!("read #{}", i + 1));
    }
    if remote.read_only {
        notes.push("read-only".into());
    }
    if remote.anonymous {
        notes.push("anonymous".into());
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("  ({})", notes.join(", "))
    }
}

pub fn cmd_serve(cli: &Cli, args: &ServeArgs) -> Result<i32, Error> {
    use czcache::serve::{read_tokens, serve, ServeLimits, ServeOptions};
    let limits = &args.limits;
    let limits = ServeLimits {
        header_timeout: limits.header_timeout,
        body_idle_timeout: limits.body_timeout,
        max_connections: limits.max_connections.max(1),
        max_connections_per_ip: limits.max_connections_per_ip.max(1),
        shutdown_grace: limits.shutdown_grace,
    };
    let (dir, config) = load_config(cli)?;
    let max_upload = size_flag("--max-upload", &args.max_upload)?;
    let tokens = read_tokens(&dir.join(&args.tokens))?;
    let (backend, staging) = ops::serve::backend(
        &config,
        &czcache::config::Env::from_process(),
        &dir,
        &args.source,
        args.read_only,
    )?;
    let what = backend.describe();
    let options = ServeOptions {
        staging,
        limits,
        listen: args.listen.clone(),
        tokens,
        public_read: args.public_read,
        max_upload,
    };
    serve(backend, options, |addr| {
        errln(&format!("czc: serving {what} on http://{addr}"));
    })?;
    Ok(0)
}
