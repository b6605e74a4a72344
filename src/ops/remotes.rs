//! Editing the named remotes of a project: `remote add`, `list`, `remove`.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, Env, RemoteEntry, PROJECT_FILE};
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

/// Where `remote add` and `remote remove` edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFile {
    /// The project's `.czcache.toml` (committed: the team's remotes).
    Project,
    /// The user's `~/.config/czcache/config.toml` (every project, and outside any).
    User,
}

/// The file `which` names for the project at `root`.
pub fn config_file(which: ConfigFile, root: &Path, env: &Env) -> Result<PathBuf> {
    match which {
        ConfigFile::Project => Ok(root.join(PROJECT_FILE)),
        ConfigFile::User => env
            .user_config_path()
            .ok_or(Error::Config(ConfigError::NoHome)),
    }
}

/// Adds (or replaces) remote `name` in `file`, after checking its url and endpoint;
/// `default` makes it where push writes. In the user file a folder must be absolute:
/// there is no project for a relative one to be relative to.
pub fn add(
    file: &Path,
    which: ConfigFile,
    name: &str,
    entry: &RemoteEntry,
    default: bool,
) -> Result<AddReport> {
    crate::storage::check_url(&entry.url)?;
    if let Some(endpoint) = &entry.endpoint {
        crate::storage::check_endpoint(endpoint)?;
    }
    if which == ConfigFile::User {
        if let Some(folder) = crate::storage::folder_of(&entry.url, None)? {
            if folder.is_relative() {
                return Err(Error::Usage(format!(
                    "'{}' is relative; a remote in the user config needs an absolute path",
                    entry.url
                )));
            }
        }
    }
    let dir = crate::fsutil::parent_dir(file);
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    crate::config::add_remote(file, name, entry, default)?;
    Ok(AddReport {
        added: name.into(),
        url: entry.url.clone(),
        file: file.into(),
    })
}

/// What `remote remove` did.
#[derive(Debug, serde::Serialize)]
pub struct RemoveReport {
    pub removed: String,
}

/// Removes remote `name` (and its mentions in `remote.default` and `remote.read`) from
/// `file`.
pub fn remove(file: &Path, config: &Config, name: &str) -> Result<RemoveReport> {
    if !crate::config::remove_remote(file, name)? {
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
