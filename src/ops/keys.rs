//! Keys (not content-addressed) of a remote, a named cache or a plain URL: `get`, `put`,
//! `rm`, through the key cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Context;
use crate::caches::keys::{self, KeyFetch, PutCondition};
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::storage::{OpenedStorage, StorageOptions, WriteStorage};

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTarget {
    /// `<remote>:<key>`: a configured remote.
    Remote { remote: String, key: String },
    /// `--cache [<name>] <key>`: a named cache (none: `cache.default`, else `local`).
    Cache { cache: Option<String>, key: String },
    /// `s3://bucket/path/file`, `https://host/path/file`, `/path/file`: the file a URL
    /// names, with no remote configured.
    Url(String),
}

impl KeyTarget {
    /// What the user typed: `<remote>:<key>`, a URL (`scheme://…`) or an absolute path;
    /// with `cache`, the text is the key of that cache.
    pub fn parse(text: &str, cache: Option<Option<&str>>) -> Result<KeyTarget> {
        if let Some(cache) = cache {
            return Ok(KeyTarget::Cache {
                cache: cache.map(str::to_string),
                key: text.into(),
            });
        }
        if text.contains("://") || text.starts_with('/') {
            return Ok(KeyTarget::Url(text.into()));
        }
        match text.split_once(':') {
            Some((remote, key)) if !remote.is_empty() && !key.is_empty() => Ok(KeyTarget::Remote {
                remote: remote.into(),
                key: key.into(),
            }),
            _ => Err(Error::Usage(format!(
                "'{text}' is not <remote>:<key>, a URL, or a key with --cache"
            ))),
        }
    }
}

/// A URL split into the storage holding its file and the file's key there.
fn split_url(url: &str) -> Result<(String, String)> {
    let no_file = || Error::Usage(format!("'{url}' names no file"));
    let (prefix, path) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (base, name) = path.rsplit_once('/').ok_or_else(no_file)?;
    if name.is_empty() || (!prefix.is_empty() && base.is_empty()) {
        return Err(no_file());
    }
    let base = if base.is_empty() { "/" } else { base };
    Ok((format!("{prefix}{base}"), name.to_string()))
}

/// The name a URL's storage goes under in the key cache: its records must not mix with
/// a remote's (remote names have no `.`).
fn url_storage_name(base: &str) -> String {
    format!("url.{}", &Oid::of_bytes(base.as_bytes()).hex()[..16])
}

fn open_url(ctx: &Context, url: &str) -> Result<(String, String, OpenedStorage)> {
    let (base, key) = split_url(url)?;
    let options = StorageOptions {
        base_dir: Some(ctx.root().to_path_buf()),
        ..StorageOptions::default()
    };
    let opened = crate::storage::open_storage(&base, &options)?;
    Ok((url_storage_name(&base), key, opened))
}

/// A URL's storage for writing; a read-only one is refused, naming the URL.
fn open_url_writer(ctx: &Context, url: &str) -> Result<(String, String, Arc<dyn WriteStorage>)> {
    let (name, key, opened) = open_url(ctx, url)?;
    let storage = opened
        .writer()
        .ok_or_else(|| Error::ReadOnlyRemote { name: url.into() })?;
    Ok((name, key, storage))
}

/// What `get` found.
#[derive(Debug, serde::Serialize)]
pub struct GetReport {
    /// The read-only local copy (for a cache served in place, the storage's own file).
    pub path: PathBuf,
    /// The key's hash and size and whether this get downloaded it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oid: Option<Oid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded: Option<bool>,
}

impl From<KeyFetch> for GetReport {
    fn from(fetched: KeyFetch) -> GetReport {
        GetReport {
            path: fetched.path,
            oid: fetched.oid,
            size: Some(fetched.size),
            downloaded: Some(fetched.downloaded),
        }
    }
}

/// A read-only local path of the key's current bytes, downloaded again only if the
/// stored copy changed.
pub fn get(ctx: &Context, target: &KeyTarget) -> Result<GetReport> {
    let cache = ctx.workspace.cache();
    match target {
        KeyTarget::Remote { remote, key } => {
            let storage = ctx.remotes().open(remote)?.reader();
            Ok(keys::get_key(cache, remote, storage.as_ref(), key)?.into())
        }
        KeyTarget::Url(url) => {
            let (name, key, opened) = open_url(ctx, url)?;
            Ok(keys::get_key(cache, &name, opened.reader().as_ref(), &key)?.into())
        }
        KeyTarget::Cache { cache: name, key } => {
            let named = ctx.named_cache(name.as_deref())?;
            Ok(named.fetch(key, None)?.into())
        }
    }
}

/// What `put` did.
#[derive(Debug, serde::Serialize)]
pub struct PutReport {
    /// False when `IfNewer` found the stored copy at least as new.
    pub written: bool,
}

/// Uploads `file` to the key under `condition`; a lost race is an error.
pub fn put(
    ctx: &Context,
    target: &KeyTarget,
    file: &Path,
    condition: PutCondition,
) -> Result<PutReport> {
    let (name, key, storage) = match target {
        KeyTarget::Cache { cache: name, key } => {
            let written = ctx
                .named_cache(name.as_deref())?
                .put(key, file, condition)?;
            return Ok(PutReport { written });
        }
        KeyTarget::Remote { remote, key } => {
            let (_, storage) = ctx.remotes().writer(Some(remote))?;
            (remote.clone(), key.clone(), storage)
        }
        KeyTarget::Url(url) => open_url_writer(ctx, url)?,
    };
    let written = keys::put_key(storage.as_ref(), &key, file, condition)?;
    if written {
        // The next `get` of this key is a local hit on what was just written, not a
        // stale copy from before.
        keys::remember_key(ctx.workspace.cache(), &name, storage.as_ref(), &key, file)?;
    }
    Ok(PutReport { written })
}

/// What `rm` did.
#[derive(Debug, serde::Serialize)]
pub struct RemoveReport {
    /// The key, as given.
    pub removed: String,
}

/// Deletes the key, only if it still holds `if_match` when given; a key that is not
/// there is [`Error::NotFound`].
pub fn rm(ctx: &Context, target: &KeyTarget, if_match: Option<Oid>) -> Result<RemoveReport> {
    let (removed, shown) = match target {
        KeyTarget::Cache { cache: name, key } => (
            ctx.named_cache(name.as_deref())?.delete(key, if_match)?,
            key.clone(),
        ),
        KeyTarget::Remote { remote, key } => {
            let (_, storage) = ctx.remotes().writer(Some(remote))?;
            let removed = keys::remove_key(
                ctx.workspace.cache(),
                remote,
                storage.as_ref(),
                key,
                if_match,
            )?;
            (removed, format!("{remote}:{key}"))
        }
        KeyTarget::Url(url) => {
            let (name, key, storage) = open_url_writer(ctx, url)?;
            let removed = keys::remove_key(
                ctx.workspace.cache(),
                &name,
                storage.as_ref(),
                &key,
                if_match,
            )?;
            (removed, url.clone())
        }
    };
    if !removed {
        return Err(Error::NotFound {
            path: PathBuf::from(&shown),
        });
    }
    Ok(RemoveReport { removed: shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_remote_keys_urls_or_cache_keys() {
        assert_eq!(
            KeyTarget::parse("team:models/w.bin", None).unwrap(),
            KeyTarget::Remote {
                remote: "team".into(),
                key: "models/w.bin".into()
            }
        );
        assert_eq!(
            KeyTarget::parse("s3://bucket/a/b.bin", None).unwrap(),
            KeyTarget::Url("s3://bucket/a/b.bin".into())
        );
        assert_eq!(
            KeyTarget::parse("models/w.bin", Some(Some("public"))).unwrap(),
            KeyTarget::Cache {
                cache: Some("public".into()),
                key: "models/w.bin".into()
            }
        );
        assert!(matches!(
            KeyTarget::parse("nocolon", None),
            Err(Error::Usage(_))
        ));
        assert_eq!(
            split_url("s3://bucket/a/b.bin").unwrap(),
            ("s3://bucket/a".to_string(), "b.bin".to_string())
        );
        assert_eq!(
            split_url("/data/refs/x.fa").unwrap(),
            ("/data/refs".to_string(), "x.fa".to_string())
        );
        assert!(split_url("s3://bucket").is_err());
        assert!(split_url("https://").is_err());
    }
}
