//! Which backend `czc serve` fronts: a folder, or a configured remote of that name.

use std::path::{Path, PathBuf};

use crate::config::{Config, Env};
use crate::error::{IoContext, Result};
use crate::serve::Backend;
use crate::storage::{FolderStorage, OpenedStorage};

/// The backend for `source` and where its uploads are staged: a configured remote of
/// that name (unless a folder of that name exists in `dir`), else the folder `dir/source`
/// (created if missing). `read_only` serves reads only.
pub fn backend(
    config: &Config,
    env: &Env,
    dir: &Path,
    source: &str,
    read_only: bool,
) -> Result<(Backend, PathBuf)> {
    let folder = dir.join(source);
    if config.remotes.contains_key(source) && !folder.is_dir() {
        let remotes =
            crate::remote::Remotes::from_config(config, &crate::workspace::find_root(dir), env);
        let opened = remotes.open(source)?;
        let opened = if read_only {
            OpenedStorage::ReadOnly(opened.reader())
        } else {
            opened
        };
        // Inside the cache, swept when a server starts: a killed server leaks nothing.
        let staging = config.cache.dir.join("tmp").join("serve");
        return Ok((Backend::Other(opened), staging));
    }
    std::fs::create_dir_all(&folder).at(&folder)?;
    let staging = folder.join(".czc-serve-tmp");
    Ok((
        Backend::Folder {
            storage: FolderStorage::new(folder),
            writable: !read_only,
        },
        staging,
    ))
}
