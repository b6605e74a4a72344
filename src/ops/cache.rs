//! Maintenance of the local cache: `cache info`, `evict`, `verify`, `clear`.

use std::path::PathBuf;

use crate::cache::{CacheInfo, LocalCache};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::oid::Oid;

/// Where the cache is, what it holds, which projects' objects await push.
pub fn info(config: &Config) -> Result<CacheInfo> {
    LocalCache::open(&config.cache)?.info()
}

/// What `cache evict` did.
#[derive(Debug, serde::Serialize)]
pub struct EvictReport {
    pub evicted: usize,
    pub freed: u64,
    /// The cache's size afterwards.
    pub size: u64,
    /// Objects no remote holds yet that were kept (and keep the cache over `to`).
    pub unpushed_kept: usize,
    pub include_unpushed: bool,
}

/// Evicts least recently used objects down to `to` bytes (default: the limit). Objects
/// no remote holds are kept unless `include_unpushed`. Another process in the cache is
/// [`Error::Busy`]: nothing is evicted under a reader.
pub fn evict(config: &Config, to: Option<u64>, include_unpushed: bool) -> Result<EvictReport> {
    let mut cache = LocalCache::open(&config.cache)?;
    cache.set_protect_unpushed(!include_unpushed);
    let target = to.unwrap_or_else(|| cache.size_limit());
    let report = cache.evict_to(target)?;
    if report.deferred {
        return Err(Error::Busy {
            path: cache.root().to_path_buf(),
        });
    }
    Ok(EvictReport {
        evicted: report.removed.len(),
        freed: report.freed,
        size: report.size_after,
        unpushed_kept: report.unpushed_kept,
        include_unpushed,
    })
}

/// A corrupt object `verify` found, and where it was moved.
#[derive(Debug, serde::Serialize)]
pub struct Quarantined {
    pub oid: Oid,
    pub quarantine: PathBuf,
}

/// What `cache verify` found and repaired.
#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub corrupt: Vec<Quarantined>,
    pub index_added: usize,
    pub index_dropped: usize,
    pub index_rebuilt: bool,
}

/// Rehashes every object (quarantining corrupt ones) and rebuilds the index from disk,
/// even from an index that cannot be read at all.
pub fn verify(config: &Config) -> Result<VerifyReport> {
    let (cache, index_set_aside) = LocalCache::open_for_repair(&config.cache)?;
    let report = cache.verify()?;
    Ok(VerifyReport {
        checked: report.checked,
        corrupt: report
            .corrupt
            .into_iter()
            .map(|(oid, quarantine)| Quarantined { oid, quarantine })
            .collect(),
        index_added: report.index_added,
        index_dropped: report.index_dropped,
        index_rebuilt: report.index_rebuilt || index_set_aside,
    })
}

/// What `cache clear` did.
#[derive(Debug, serde::Serialize)]
pub struct ClearReport {
    pub removed: usize,
}

/// Removes every object.
pub fn clear(config: &Config) -> Result<ClearReport> {
    Ok(ClearReport {
        removed: LocalCache::open(&config.cache)?.clear()?,
    })
}
