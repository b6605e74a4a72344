//! Configuration: built-in defaults, the user file, the project's `.czcache.toml`, then
//! `CZC_*` environment variables, each layer overriding the one before. Flags are applied
//! by the caller on the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The project file at the repo root.
pub const PROJECT_FILE: &str = ".czcache.toml";
/// The default cache size limit.
pub const DEFAULT_SIZE_LIMIT: u64 = 20 << 30;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: String,
        message: String,
    },
    #[error("{origin}: bad value '{value}' for {key}: {reason}")]
    Value {
        origin: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot find a home folder: set HOME or CZC_CACHE_DIR")]
    NoHome,
}

/// Which index backend records the cache's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Csv,
    Json,
    Sqlite,
}

impl FromStr for IndexKind {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "csv" => Ok(IndexKind::Csv),
            "json" => Ok(IndexKind::Json),
            "sqlite" => Ok(IndexKind::Sqlite),
            _ => Err("expected csv, json or sqlite".into()),
        }
    }
}

/// How a file is materialized from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Reflink,
    Hardlink,
    Copy,
}

impl FromStr for LinkKind {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "reflink" => Ok(LinkKind::Reflink),
            "hardlink" => Ok(LinkKind::Hardlink),
            "copy" => Ok(LinkKind::Copy),
            _ => Err("expected reflink, hardlink or copy".into()),
        }
    }
}

/// How a chain of read remotes picks the copy to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadPolicy {
    #[default]
    First,
    Newest,
}

/// The `[cache]` section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub size_limit: u64,
    pub index: IndexKind,
    pub link: Vec<LinkKind>,
}

/// The `[remote]` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub default: Option<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub policy: ReadPolicy,
}

/// One `[remotes.<name>]` entry.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteEntry {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub read_only: bool,
    /// How long to wait for an answer, and between reads of a body: `"60s"`, `"2m"`, or
    /// seconds as a number. `CZC_REMOTE_<NAME>_TIMEOUT` or `CZC_TIMEOUT` override it.
    #[serde(default, deserialize_with = "duration_setting")]
    pub timeout: Option<Duration>,
    /// How long to wait to connect; `CZC_CONNECT_TIMEOUT` overrides it.
    #[serde(default, deserialize_with = "duration_setting")]
    pub connect_timeout: Option<Duration>,
    /// Whether pushes put small objects into packs (default: on S3 and HTTP remotes, not
    /// on folders). `false` keeps every object loose, as versions before packs wrote.
    pub packs: Option<bool>,
}

/// One `[caches.<name>]` entry: a cache of keys a command (`get`/`put`/`rm --cache`) or
/// a program (`open_cache`) asks for by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheEntry {
    /// Remotes read, in order (default: `write` alone).
    #[serde(default)]
    pub read: Vec<String>,
    /// The remote writes go through to; none: a read-only cache.
    pub write: Option<String>,
    /// Which copy `read` serves: the first that has the key, or the newest.
    #[serde(default)]
    pub policy: ReadPolicy,
    /// Copy what is read into the local cache (default). `false` serves a local
    /// read-only folder remote's files in place (a cluster share): one `read`, no `write`.
    #[serde(default = "copy_by_default")]
    pub copy: bool,
}

fn copy_by_default() -> bool {
    true
}

/// The caches every configuration has: the local cache alone, and a read-only anonymous
/// copy of the `public` remote (which the user or project configures).
pub const BUILTIN_CACHES: [&str; 2] = ["local", "public"];

/// A duration in configuration: whole seconds, or text such as `"500ms"`, `"30s"`, `"2m"`.
fn duration_setting<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Seconds(u64),
        Text(String),
    }
    match Setting::deserialize(deserializer)? {
        Setting::Seconds(seconds) => Ok(Some(Duration::from_secs(seconds))),
        Setting::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Parses `"500ms"`, `"30s"`, `"2m"`, `"1h"` or plain seconds; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. \"30s\", \"2m\")"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{text}' (ms, s, m, h)")),
    };
    let duration = Duration::from_secs_f64(number * scale);
    if duration.is_zero() {
        return Err(format!("'{text}' is zero: a timeout must be positive"));
    }
    Ok(duration)
}

/// The whole configuration after layering.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cache: CacheConfig,
    pub remote: RemoteConfig,
    pub remotes: BTreeMap<String, RemoteEntry>,
    /// Named caches (`[caches.<name>]`), besides the built-in ones.
    pub caches: BTreeMap<String, CacheEntry>,
    /// The cache `open_cache(None)` and `--cache` without a name use (`cache.default`).
    pub default_cache: Option<String>,
    /// Settings that were ignored, and why (the front end shows them).
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    cache: Option<CacheLayer>,
    remote: Option<RemoteConfig>,
    remotes: Option<BTreeMap<String, RemoteEntry>>,
    caches: Option<BTreeMap<String, CacheEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheLayer {
    dir: Option<String>,
    size_limit: Option<toml::Value>,
    index: Option<IndexKind>,
    link: Option<Vec<LinkKind>>,
    default: Option<String>,
}

/// Where the environment says things are; injected so tests never read the real home.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    fn home(&self) -> Result<PathBuf, ConfigError> {
        self.get("HOME")
            .map(PathBuf::from)
            .ok_or(ConfigError::NoHome)
    }

    /// `$XDG_CONFIG_HOME/czcache/config.toml`, else `~/.config/czcache/config.toml`.
    pub fn user_config_path(&self) -> Option<PathBuf> {
        let base = match self.get("XDG_CONFIG_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => self.home().ok()?.join(".config"),
        };
        Some(base.join("czcache").join("config.toml"))
    }

    fn default_cache_dir(&self) -> Result<PathBuf, ConfigError> {
        match self.get("XDG_CACHE_HOME") {
            Some(dir) => Ok(PathBuf::from(dir).join("czcache")),
            None => Ok(self.home()?.join(".cache").join("czcache")),
        }
    }

    fn expand_tilde(&self, path: &str) -> Result<PathBuf, ConfigError> {
        match path.strip_prefix("~/") {
            Some(rest) => Ok(self.home()?.join(rest)),
            None if path == "~" => self.home(),
            None => Ok(PathBuf::from(path)),
        }
    }
}

impl Config {
    /// Layers defaults, the user file, the project file (if `project_root` has one) and
    /// the environment.
    pub fn load(project_root: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        let mut config = Config {
            cache: CacheConfig {
                dir: PathBuf::new(),
                size_limit: DEFAULT_SIZE_LIMIT,
                index: IndexKind::Sqlite,
                link: vec![LinkKind::Reflink, LinkKind::Copy],
            },
            remote: RemoteConfig::default(),
            remotes: BTreeMap::new(),
            caches: BTreeMap::new(),
            default_cache: None,
            warnings: Vec::new(),
        };
        let project_file = project_root.map(|root| root.join(PROJECT_FILE));
        let mut dir: Option<PathBuf> = None;
        let mut files = Vec::new();
        if let Some(path) = env.user_config_path() {
            files.push(path);
        }
        if let Some(root) = project_root {
            files.push(root.join(PROJECT_FILE));
        }
        for path in files {
            let Some(layer) = read_layer(&path)? else {
                continue;
            };
            let origin = path.display().to_string();
            if let Some(cache) = layer.cache {
                if let Some(value) = cache.dir {
                    let expanded = env.expand_tilde(&value)?;
                    // A relative dir in the project file is relative to the project.
                    dir = Some(match path.parent() {
                        Some(parent) if expanded.is_relative() => parent.join(expanded),
                        _ => expanded,
                    });
                }
                if let Some(value) = cache.size_limit {
                    let limit = size_from_toml(&value, &origin)?;
                    if Some(&path) == project_file.as_ref() {
                        // One cache serves every project: a cloned repository must not
                        // shrink it (and evict what other projects need).
                        config.warnings.push(format!(
                            "{origin}: cache.size_limit is ignored: the cache is shared by every project, so its limit is set in the user config ({}) or CZC_CACHE_SIZE_LIMIT",
                            env.user_config_path()
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|| "~/.config/czcache/config.toml".into())
                        ));
                    } else {
                        config.cache.size_limit = limit;
                    }
                }
                if let Some(index) = cache.index {
                    config.cache.index = index;
                }
                if let Some(link) = cache.link {
                    config.cache.link = checked_links(link, &origin)?;
                }
                if let Some(default) = cache.default {
                    config.default_cache = Some(default);
                }
            }
            if let Some(caches) = layer.caches {
                config.caches.extend(caches);
            }
            if let Some(remote) = layer.remote {
                config.remote = remote;
            }
            if let Some(remotes) = layer.remotes {
                config.remotes.extend(remotes);
            }
        }
        if let Some(value) = env.get("CZC_CACHE_DIR") {
            dir = Some(env.expand_tilde(value)?);
        }
        if let Some(value) = env.get("CZC_CACHE_SIZE_LIMIT") {
            config.cache.size_limit = parse_size(value).map_err(|reason| ConfigError::Value {
                origin: "environment".into(),
                key: "CZC_CACHE_SIZE_LIMIT".into(),
                value: value.into(),
                reason,
            })?;
        }
        if let Some(value) = env.get("CZC_CACHE_INDEX") {
            config.cache.index = value.parse().map_err(|reason| ConfigError::Value {
                origin: "environment".into(),
                key: "CZC_CACHE_INDEX".into(),
                value: value.into(),
                reason,
            })?;
        }
        if let Some(value) = env.get("CZC_CACHE_LINK") {
            let links = value
                .split(',')
                .map(|part| part.trim().parse::<LinkKind>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ConfigError::Value {
                    origin: "environment".into(),
                    key: "CZC_CACHE_LINK".into(),
                    value: value.into(),
                    reason,
                })?;
            config.cache.link = checked_links(links, "environment")?;
        }
        config.cache.dir = match dir {
            Some(dir) => dir,
            None => env.default_cache_dir()?,
        };
        config.check_remote_names()?;
        config.check_cache_names()?;
        if let Some(value) = env.get("CZC_LOCK_TIMEOUT") {
            if value.trim().parse::<u64>().is_err() {
                return Err(ConfigError::Value {
                    origin: "environment".into(),
                    key: "CZC_LOCK_TIMEOUT".into(),
                    value: value.into(),
                    reason: "expected a whole number of seconds".into(),
                });
            }
        }
        Ok(config)
    }

    /// Every named cache names configured remotes, and `cache.default` a cache.
    fn check_cache_names(&self) -> Result<(), ConfigError> {
        for (name, entry) in &self.caches {
            let key = format!("caches.{name}");
            let named = entry.read.iter().chain(entry.write.iter());
            for remote in named {
                if !self.remotes.contains_key(remote) {
                    return Err(self.unknown_remote(&key, remote));
                }
            }
            if entry.read.is_empty() && entry.write.is_none() {
                return Err(ConfigError::Value {
                    origin: "configuration".into(),
                    key,
                    value: name.clone(),
                    reason: "names no remote: give read = [...] and/or write = \"<remote>\"".into(),
                });
            }
        }
        if let Some(default) = &self.default_cache {
            if !self.caches.contains_key(default) && !BUILTIN_CACHES.contains(&default.as_str()) {
                return Err(ConfigError::Value {
                    origin: "configuration".into(),
                    key: "cache.default".into(),
                    value: default.clone(),
                    reason: format!("no such cache (known: {})", self.cache_names().join(", ")),
                });
            }
        }
        Ok(())
    }

    /// The built-in caches and the configured ones, sorted, each once.
    pub fn cache_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_CACHES.iter().map(|n| n.to_string()).collect();
        names.extend(self.caches.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    fn unknown_remote(&self, key: &str, name: &str) -> ConfigError {
        let known: Vec<&str> = self.remotes.keys().map(String::as_str).collect();
        ConfigError::Value {
            origin: "configuration".into(),
            key: key.into(),
            value: name.into(),
            reason: format!(
                "no [remotes.{name}] is configured (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        }
    }

    /// `remote.default` and every name in `remote.read` must be a configured remote.
    fn check_remote_names(&self) -> Result<(), ConfigError> {
        let named = self
            .remote
            .default
            .iter()
            .map(|name| ("remote.default", name))
            .chain(self.remote.read.iter().map(|name| ("remote.read", name)));
        for (key, name) in named {
            if !self.remotes.contains_key(name) {
                return Err(self.unknown_remote(key, name));
            }
        }
        Ok(())
    }
}

/// Adds (or replaces) `[remotes.<name>]` in a config file, keeping its comments and
/// layout; with `make_default`, also sets `remote.default`.
pub fn add_remote(
    path: &Path,
    name: &str,
    entry: &RemoteEntry,
    make_default: bool,
) -> Result<(), ConfigError> {
    check_remote_name(path, name)?;
    let mut doc = read_document(path)?;
    // Comments after the last table are the document's trailing text: they belong to
    // that table, so they go before the tables added below, not after them.
    let trailing = doc.trailing().as_str().unwrap_or("").to_string();
    let moved_comments = trailing.trim().starts_with('#');
    if moved_comments {
        doc.set_trailing("");
    }
    let remotes = doc
        .entry("remotes")
        .or_insert_with(|| {
            let mut table = toml_edit::Table::new();
            table.set_implicit(true);
            toml_edit::Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| edit_error(path, "'remotes' is not a table"))?;
    let mut table = toml_edit::Table::new();
    table["url"] = toml_edit::value(entry.url.as_str());
    if let Some(endpoint) = &entry.endpoint {
        table["endpoint"] = toml_edit::value(endpoint.as_str());
    }
    if let Some(region) = &entry.region {
        table["region"] = toml_edit::value(region.as_str());
    }
    if entry.anonymous {
        table["anonymous"] = toml_edit::value(true);
    }
    if entry.read_only {
        table["read_only"] = toml_edit::value(true);
    }
    if moved_comments {
        table.decor_mut().set_prefix(format!(
            "{}\n",
            trailing.trim_end_matches('\n').to_owned() + "\n"
        ));
    }
    remotes.insert(name, toml_edit::Item::Table(table));
    if make_default {
        let remote = doc
            .entry("remote")
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
            .as_table_mut()
            .ok_or_else(|| edit_error(path, "'remote' is not a table"))?;
        remote["default"] = toml_edit::value(name);
    }
    write_document(path, &doc)
}

/// Removes `[remotes.<name>]` and its mentions in `remote.default` and `remote.read`;
/// false if there was no such remote.
pub fn remove_remote(path: &Path, name: &str) -> Result<bool, ConfigError> {
    let mut doc = read_document(path)?;
    let removed = doc
        .get_mut("remotes")
        .and_then(|item| item.as_table_mut())
        .and_then(|table| table.remove(name))
        .is_some();
    if !removed {
        return Ok(false);
    }
    if let Some(remote) = doc.get_mut("remote").and_then(|item| item.as_table_mut()) {
        if remote.get("default").and_then(|v| v.as_str()) == Some(name) {
            remote.remove("default");
        }
        if let Some(read) = remote.get_mut("read").and_then(|v| v.as_array_mut()) {
            read.retain(|v| v.as_str() != Some(name));
        }
    }
    write_document(path, &doc)?;
    Ok(true)
}

fn check_remote_name(path: &Path, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::Value {
            origin: path.display().to_string(),
            key: "remote name".into(),
            value: name.into(),
            reason: "use letters, digits, '-' and '_'".into(),
        });
    }
    Ok(())
}

fn edit_error(path: &Path, message: &str) -> ConfigError {
    ConfigError::Syntax {
        path: path.into(),
        line: String::new(),
        message: message.into(),
    }
}

fn read_document(path: &Path) -> Result<toml_edit::DocumentMut, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.into(),
                source,
            })
        }
    };
    // Refuse to edit a file czc could not load: the edit would hide the problem.
    toml::from_str::<FileLayer>(&text).map_err(|err| ConfigError::Syntax {
        path: path.into(),
        line: String::new(),
        message: err.message().replace('\n', " "),
    })?;
    text.parse()
        .map_err(|err: toml_edit::TomlError| edit_error(path, &err.to_string().replace('\n', " ")))
}

fn write_document(path: &Path, doc: &toml_edit::DocumentMut) -> Result<(), ConfigError> {
    crate::fsutil::write_atomic(path, doc.to_string().as_bytes()).map_err(|source| {
        ConfigError::Read {
            path: path.into(),
            source,
        }
    })
}

fn checked_links(links: Vec<LinkKind>, origin: &str) -> Result<Vec<LinkKind>, ConfigError> {
    if links.is_empty() {
        return Err(ConfigError::Value {
            origin: origin.into(),
            key: "cache.link".into(),
            value: "[]".into(),
            reason: "name at least one of reflink, hardlink, copy".into(),
        });
    }
    Ok(links)
}

fn read_layer(path: &Path) -> Result<Option<FileLayer>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.into(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|err: toml::de::Error| {
            let line = err
                .span()
                .map(|span| format!(" line {}", text[..span.start].matches('\n').count() + 1))
                .unwrap_or_default();
            ConfigError::Syntax {
                path: path.into(),
                line,
                message: err.message().replace('\n', " "),
            }
        })
}

fn size_from_toml(value: &toml::Value, origin: &str) -> Result<u64, ConfigError> {
    let result = match value {
        toml::Value::Integer(bytes) if *bytes >= 0 => Ok(*bytes as u64),
        toml::Value::String(text) => parse_size(text),
        _ => Err("expected a size such as \"20GiB\"".to_string()),
    };
    result.map_err(|reason| ConfigError::Value {
        origin: origin.into(),
        key: "cache.size_limit".into(),
        value: value.to_string(),
        reason,
    })
}

/// `"1.5GiB"` → `("1.5", "GiB")`: the leading number and what follows it.
fn number_and_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(split)
}

/// Parses a human size: `1048576`, `512MiB`, `20GiB`, `1.5GB`, `10k`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text);
    let number: f64 = number
        .parse()
        .map_err(|_| "expected a size such as 20GiB".to_string())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit '{other}' (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(bytes as u64)
}

/// Formats bytes for people: `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> Env {
        let mut env = Env::default();
        env.vars
            .insert("HOME".into(), dir.join("home").display().to_string());
        env
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2mb").unwrap(), 2_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(format_size(1536), "1.5 KiB");
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let env_ = env(dir.path());
        let defaults = Config::load(None, &env_).unwrap();
        assert_eq!(defaults.cache.dir, dir.path().join("home/.cache/czcache"));
        assert_eq!(defaults.cache.index, IndexKind::Sqlite);

        let user = dir.path().join("home/.config/czcache");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(
            user.join("config.toml"),
            "[cache]\nindex = \"csv\"\nsize_limit = \"1GiB\"\n",
        )
        .unwrap();
        let project = dir.path().join("proj");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(
            project.join(PROJECT_FILE),
            "[cache]\nindex = \"json\"\nlink = [\"copy\"]\n[remotes.team]\nurl = \"/srv/czc\"\n",
        )
        .unwrap();
        let mut env_ = env_;
        env_.vars.insert("CZC_CACHE_DIR".into(), "/tmp/x".into());
        let config = Config::load(Some(&project), &env_).unwrap();
        assert_eq!(config.cache.index, IndexKind::Json);
        assert_eq!(config.cache.size_limit, 1 << 30);
        assert_eq!(config.cache.link, vec![LinkKind::Copy]);
        assert_eq!(config.cache.dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.remotes["team"].url, "/srv/czc");
    }

    #[test]
    fn remotes_are_added_and_removed_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PROJECT_FILE);
        std::fs::write(&file, "# my settings\n[cache]\nindex = \"csv\"  # small project\n[remote]\nread = [\"share\", \"team\"]\n").unwrap();
        let entry = RemoteEntry {
            url: "/srv/team".into(),
            ..RemoteEntry::default()
        };
        add_remote(&file, "team", &entry, true).unwrap();
        let share = RemoteEntry {
            url: "/mnt/share".into(),
            read_only: true,
            ..RemoteEntry::default()
        };
        add_remote(&file, "share", &share, false).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("# my settings") && text.contains("# small project"),
            "{text}"
        );
        let config = Config::load(Some(dir.path()), &env(dir.path())).unwrap();
        assert_eq!(config.remote.default.as_deref(), Some("team"));
        assert_eq!(config.remotes["team"].url, "/srv/team");
        assert!(config.remotes["share"].read_only);
        assert!(remove_remote(&file, "team").unwrap());
        assert!(!remove_remote(&file, "team").unwrap());
        let config = Config::load(Some(dir.path()), &env(dir.path())).unwrap();
        assert_eq!(config.remote.default, None);
        assert_eq!(config.remote.read, ["share"]);
        assert!(!config.remotes.contains_key("team"));
        assert!(add_remote(&file, "bad name", &entry, false).is_err());
    }

    #[test]
    fn the_example_file_documents_valid_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PROJECT_FILE),
            include_str!("../.czcache.toml.example"),
        )
        .unwrap();
        let config = Config::load(Some(dir.path()), &env(dir.path())).unwrap();
        assert_eq!(config.cache.size_limit, 20 << 30);
        assert_eq!(config.remote.read, ["share", "team", "public"]);
        assert!(config.remotes["public"].anonymous && config.remotes["share"].read_only);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PROJECT_FILE),
            "[cache]\nsise_limit = \"1GiB\"\n",
        )
        .unwrap();
        let err = Config::load(Some(dir.path()), &env(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sise_limit") && err.contains(".czcache.toml"),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");

        std::fs::write(
            dir.path().join(PROJECT_FILE),
            "[cache]\nsize_limit = \"many\"\n",
        )
        .unwrap();
        let err = Config::load(Some(dir.path()), &env(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.size_limit") && err.contains("many"),
            "{err}"
        );
    }
}
