//! Editing the named remotes of a project: `remote add`, `list`, `remove`.

use std::path::{Path, PathBuf};

use crate::config::{Config, RemoteEntry, PROJECT_FILE};
use crate::error::{Error, Result};

/// A configured remote as `remote list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct ListedRemote {
    pub name: String,
    pub url: String,
    pub read_only: bool,
    pub anonymous: bool,
    /// Where push writes.
    pub default: bool,
    /// Its place in `remote.read` (0 first), if it is there.
    pub read_order: Option<usize>,
}

/// The remotes `config` names, by name.
pub fn list(config: &Config) -> Vec<ListedRemote> {
    config
        .remotes
        .iter()
        .map(|(name, entry)| ListedRemote {
            name: name.clone(),
            url: entry.url.clone(),
            read_only: entry.read_only,
            anonymous: entry.anonymous,
            default: config.remote.default.as_deref() == Some(name.as_str()),
            read_order: config.remote.read.iter().position(|r| r == name),
        })
        .collect()
}

/// What `remote add` did.
#[derive(Debug, serde::Serialize)]
pub struct AddReport {
    pub added: String,
    pub url: String,
    pub file: PathBuf,
}

/// Adds (or replaces) remote `name` in the project file at `root`, after checking its url
/// and endpoint; `default` makes it where push writes.
pub fn add(root: &Path, name: &str, entry: &RemoteEntry, default: bool) -> Result<AddReport> {
    crate::storage::check_url(&entry.url)?;
    if let Some(endpoint) = &entry.endpoint {
        crate::storage::check_endpoint(endpoint)?;
    }
    let file = root.join(PROJECT_FILE);
    crate::config::add_remote(&file, name, entry, default)?;
    Ok(AddReport {
        added: name.into(),
        url: entry.url.clone(),
        file,
    })
}

/// What `remote remove` did.
#[derive(Debug, serde::Serialize)]
pub struct RemoveReport {
    pub removed: String,
}

/// Removes remote `name` (and its mentions in `remote.default` and `remote.read`) from
/// the project file at `root`.
pub fn remove(root: &Path, config: &Config, name: &str) -> Result<RemoveReport> {
    if !crate::config::remove_remote(&root.join(PROJECT_FILE), name)? {
        return Err(Error::UnknownRemote {
            name: name.into(),
            known: config
                .remotes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(RemoveReport {
        removed: name.into(),
    })
}
