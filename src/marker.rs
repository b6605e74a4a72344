//! Markers (the small text files committed in place of big ones) and manifests (the
//! object a directory marker names). Both have one canonical form, so re-saving
//! unchanged content rewrites them byte for byte.

use std::collections::HashSet;

use crate::oid::{Oid, OidError};

/// The marker format version this build reads and writes.
pub const VERSION: &str = "czc/1";
/// A marker is never larger than this; anything larger is content, not a marker.
pub const MAX_MARKER_BYTES: usize = 1024;
/// How every marker's text begins: blobs that do not start so are content, cheaply.
pub const MARKER_START: &[u8] = b"version = \"czc/";
/// File name suffix of sidecar markers.
pub const SUFFIX: &str = ".czc";
const MANIFEST_VERSION: &str = "czc-manifest/1";

/// What a marker stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    File,
    /// A folder; the oid names a [`Manifest`] listing `files` entries.
    Dir {
        files: u64,
    },
}

/// The parsed content of a marker file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub oid: Oid,
    /// Bytes of the file, or for a folder the total bytes of its files.
    pub size: u64,
    pub kind: MarkerKind,
}

/// Why a marker's text is not a valid marker.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("is {0} bytes, over the {MAX_MARKER_BYTES}-byte limit for a marker")]
    TooLarge(usize),
    #[error("is not UTF-8 text")]
    NotText,
    #[error("is not valid TOML: {0}")]
    Syntax(String),
    #[error("unknown key '{0}'")]
    UnknownKey(String),
    #[error("missing key '{0}'")]
    MissingKey(&'static str),
    #[error("unsupported version '{0}' (this czc reads '{VERSION}'; upgrade czc)")]
    UnsupportedVersion(String),
    #[error("key '{key}' has a bad value: {reason}")]
    BadValue { key: &'static str, reason: String },
    #[error("bad oid: {0}")]
    Oid(#[from] OidError),
    #[error("is not a valid manifest (JSON): {0}")]
    ManifestSyntax(String),
    #[error("names '{0}', inside a .git folder; czc never writes there")]
    GitPath(String),
    #[error("has no name before '.czc' (a marker P.czc stands for the file or folder P)")]
    NoName,
    #[error("says {key} = {marker}, but {what} {actual}")]
    Disagrees {
        key: &'static str,
        marker: u64,
        what: &'static str,
        actual: u64,
    },
    #[error("is a symlink to {0}, outside the project; czc reads no marker through it")]
    SymlinkOutside(String),
}

impl Marker {
    pub fn file(oid: Oid, size: u64) -> Marker {
        Marker {
            oid,
            size,
            kind: MarkerKind::File,
        }
    }

    /// The canonical text: fixed key order, LF line ends, no timestamps.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "version = \"{VERSION}\"\noid = \"{}\"\nsize = {}\n",
            self.oid, self.size
        );
        if let MarkerKind::Dir { files } = self.kind {
            text.push_str(&format!("kind = \"dir\"\nfiles = {files}\n"));
        }
        text
    }

    /// Parses marker bytes, naming the offending key or value on error.
    pub fn parse(bytes: &[u8]) -> Result<Marker, MarkerError> {
        if bytes.len() > MAX_MARKER_BYTES {
            return Err(MarkerError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| MarkerError::NotText)?;
        if text.contains('\0') {
            return Err(MarkerError::NotText);
        }
        let table: toml::Table = text
            .parse()
            .map_err(|err: toml::de::Error| MarkerError::Syntax(err.message().to_string()))?;
        for key in table.keys() {
            if !matches!(key.as_str(), "version" | "oid" | "size" | "kind" | "files") {
                return Err(MarkerError::UnknownKey(key.clone()));
            }
        }
        let version = string_key(&table, "version")?;
        if version != VERSION {
            return Err(MarkerError::UnsupportedVersion(version.to_string()));
        }
        let oid: Oid = string_key(&table, "oid")?.parse()?;
        let size = count_key(&table, "size")?;
        let kind = match table.get("kind") {
            None => {
                if table.contains_key("files") {
                    return Err(MarkerError::BadValue {
                        key: "files",
                        reason: "only a marker with kind = \"dir\" has files".into(),
                    });
                }
                MarkerKind::File
            }
            Some(toml::Value::String(kind)) if kind == "dir" => MarkerKind::Dir {
                files: count_key(&table, "files")?,
            },
            Some(toml::Value::String(kind)) if kind == "file" => MarkerKind::File,
            Some(other) => {
                return Err(MarkerError::BadValue {
                    key: "kind",
                    reason: format!("expected \"dir\", found {other}"),
                })
            }
        };
        Ok(Marker { oid, size, kind })
    }

    /// Whether some bytes are a valid marker (cheap: anything over 1 KiB is content).
    pub fn looks_like_marker(bytes: &[u8]) -> bool {
        bytes.len() <= MAX_MARKER_BYTES && Marker::parse(bytes).is_ok()
    }
}

fn string_key<'a>(table: &'a toml::Table, key: &'static str) -> Result<&'a str, MarkerError> {
    match table.get(key) {
        None => Err(MarkerError::MissingKey(key)),
        Some(toml::Value::String(value)) => Ok(value),
        Some(other) => Err(MarkerError::BadValue {
            key,
            reason: format!("expected a string, found {other}"),
        }),
    }
}

fn count_key(table: &toml::Table, key: &'static str) -> Result<u64, MarkerError> {
    match table.get(key) {
        None => Err(MarkerError::MissingKey(key)),
        Some(toml::Value::Integer(value)) if *value >= 0 => Ok(*value as u64),
        Some(other) => Err(MarkerError::BadValue {
            key,
            reason: format!("expected a whole number of bytes or files, found {other}"),
        }),
    }
}

/// One file of a folder marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Relative, `/`-separated, never `..` or absolute.
    pub path: String,
    pub oid: Oid,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}

/// The object a directory marker names: every file of the folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Sorted by path, no duplicates.
    pub files: Vec<ManifestEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDoc {
    version: String,
    files: Vec<ManifestEntry>,
}

impl serde::Serialize for Oid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Oid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Oid, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Manifest {
    /// Builds a manifest, sorting entries so the text is canonical.
    pub fn new(mut files: Vec<ManifestEntry>) -> Result<Manifest, MarkerError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest { files };
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|entry| entry.size).sum()
    }

    /// Canonical JSON, one file per line so diffs of manifests stay readable.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{{\"version\":\"{MANIFEST_VERSION}\",\"files\":[\n");
        for (i, entry) in self.files.iter().enumerate() {
            // serde_json of a plain struct cannot fail.
            out.push_str(&serde_json::to_string(entry).unwrap_or_default());
            out.push_str(if i + 1 < self.files.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        out.push_str("]}\n");
        out.into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Result<Manifest, MarkerError> {
        // Manifests czc wrote are canonical: read those line by line, several times faster
        // than a general JSON parse; anything else takes the general path.
        let files = match parse_canonical(bytes) {
            Some(files) => files,
            None => Self::parse_json(bytes)?,
        };
        let manifest = Manifest { files };
        manifest.validate()?;
        Ok(manifest)
    }

    fn parse_json(bytes: &[u8]) -> Result<Vec<ManifestEntry>, MarkerError> {
        let doc: ManifestDoc = serde_json::from_slice(bytes)
            .map_err(|err| MarkerError::ManifestSyntax(err.to_string()))?;
        if doc.version != MANIFEST_VERSION {
            return Err(MarkerError::UnsupportedVersion(doc.version));
        }
        Ok(doc.files)
    }

    /// Paths relative and safe, strictly sorted (so no duplicates), and no path both a
    /// file and a folder: a manifest that breaks any of these is refused whole, before
    /// anything is written.
    fn validate(&self) -> Result<(), MarkerError> {
        let bad = |reason: String| MarkerError::BadValue {
            key: "path",
            reason,
        };
        let mut files = HashSet::with_capacity(self.files.len());
        let mut previous: Option<&str> = None;
        for entry in &self.files {
            check_relative_path(&entry.path)?;
            if let Some(previous) = previous {
                match previous.cmp(entry.path.as_str()) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(bad(format!("'{}' is listed twice", entry.path)))
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(bad(format!(
                            "paths are not sorted ('{previous}' comes before '{}')",
                            entry.path
                        )))
                    }
                }
            }
            previous = Some(&entry.path);
            files.insert(entry.path.as_str());
        }
        for entry in &self.files {
            let mut end = 0;
            while let Some(slash) = entry.path[end..].find('/') {
                end += slash;
                let folder = &entry.path[..end];
                if files.contains(folder) {
                    return Err(bad(format!(
                        "'{folder}' is listed as a file and as the folder of '{}'",
                        entry.path
                    )));
                }
                end += 1;
            }
        }
        Ok(())
    }

    /// Checks a folder marker's `files` and `size` against this manifest.
    pub fn check_marker(&self, marker: &Marker) -> Result<(), MarkerError> {
        if let MarkerKind::Dir { files } = marker.kind {
            if files != self.files.len() as u64 {
                return Err(MarkerError::Disagrees {
                    key: "files",
                    marker: files,
                    what: "its manifest lists",
                    actual: self.files.len() as u64,
                });
            }
        }
        if marker.size != self.total_size() {
            return Err(MarkerError::Disagrees {
                key: "size",
                marker: marker.size,
                what: "the files of its manifest add up to",
                actual: self.total_size(),
            });
        }
        Ok(())
    }
}

/// Parses the exact text [`Manifest::to_bytes`] writes, or says `None`.
fn parse_canonical(bytes: &[u8]) -> Option<Vec<ManifestEntry>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body = text
        .strip_prefix(&format!(
            "{{\"version\":\"{MANIFEST_VERSION}\",\"files\":[\n"
        ))?
        .strip_suffix("]}\n")?;
    let mut files = Vec::with_capacity(body.len() / 110);
    for line in body.lines() {
        let line = line.strip_suffix(',').unwrap_or(line);
        let rest = line.strip_prefix("{\"path\":\"")?;
        let (path, rest) = rest.split_once("\",\"oid\":\"")?;
        if path.contains(['\\', '"']) || path.chars().any(char::is_control) {
            return None; // escapes: leave them to the JSON parser
        }
        let (oid, rest) = rest.split_once("\",\"size\":")?;
        let (size, rest) = rest.split_once(",\"executable\":")?;
        let executable = match rest {
            "true}" => true,
            "false}" => false,
            _ => return None,
        };
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        files.push(ManifestEntry {
            path: path.to_string(),
            oid: oid.parse().ok()?,
            size: size.parse().ok()?,
            executable,
        });
    }
    Some(files)
}

/// A manifest path must stay inside its folder on every platform.
fn check_relative_path(path: &str) -> Result<(), MarkerError> {
    let bad = |reason: &str| MarkerError::BadValue {
        key: "path",
        reason: format!("'{path}' {reason}"),
    };
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(bad("is not a relative '/'-separated path"));
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' {
        return Err(bad("is an absolute Windows path"));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("has an empty, '.' or '..' component"));
        }
        if is_git_name(part) {
            return Err(MarkerError::GitPath(path.to_string()));
        }
    }
    Ok(())
}

/// Whether a path component is `.git` in any case (case-insensitive filesystems, and
/// git itself on them, treat `.GIT` as `.git`).
pub fn is_git_name(part: &str) -> bool {
    part.eq_ignore_ascii_case(".git")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid() -> Oid {
        Oid::of_bytes(b"data")
    }

    #[test]
    fn file_marker_round_trips_canonically() {
        let marker = Marker::file(oid(), 42);
        let text = marker.to_text();
        assert_eq!(
            text,
            format!("version = \"czc/1\"\noid = \"{}\"\nsize = 42\n", oid())
        );
        assert_eq!(Marker::parse(text.as_bytes()).unwrap(), marker);
    }

    #[test]
    fn dir_marker_round_trips() {
        let marker = Marker {
            oid: oid(),
            size: 7,
            kind: MarkerKind::Dir { files: 3 },
        };
        assert_eq!(Marker::parse(marker.to_text().as_bytes()).unwrap(), marker);
        assert!(marker.to_text().ends_with("kind = \"dir\"\nfiles = 3\n"));
    }

    #[test]
    fn errors_name_the_key_or_value() {
        let good = Marker::file(oid(), 1).to_text();
        let unknown = format!("{good}color = \"red\"\n");
        assert_eq!(
            Marker::parse(unknown.as_bytes()).unwrap_err().to_string(),
            "unknown key 'color'"
        );
        let future = good.replace("czc/1", "czc/9");
        assert!(Marker::parse(future.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("'czc/9'"));
        let no_size = good.replace("size = 1\n", "");
        assert_eq!(
            Marker::parse(no_size.as_bytes()).unwrap_err().to_string(),
            "missing key 'size'"
        );
        let negative = good.replace("size = 1", "size = -1");
        assert!(Marker::parse(negative.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("'size'"));
        assert!(matches!(
            Marker::parse(&[0xff, 0xfe, 0x00]),
            Err(MarkerError::NotText)
        ));
        assert!(matches!(
            Marker::parse(&vec![b'#'; 2000]),
            Err(MarkerError::TooLarge(2000))
        ));
    }

    #[test]
    fn manifest_is_sorted_and_rejects_escapes() {
        let entry = |path: &str| ManifestEntry {
            path: path.into(),
            oid: oid(),
            size: 1,
            executable: false,
        };
        let manifest = Manifest::new(vec![entry("b"), entry("a/c"), entry("q\"uote")]).unwrap();
        assert_eq!(manifest.files[0].path, "a/c");
        let bytes = manifest.to_bytes();
        assert!(
            parse_canonical(&bytes).is_none(),
            "escaped names take the JSON path"
        );
        assert_eq!(Manifest::parse(&bytes).unwrap(), manifest);
        let plain = Manifest::new(vec![entry("b"), entry("a/c")]).unwrap();
        assert_eq!(parse_canonical(&plain.to_bytes()).unwrap(), plain.files);
        assert_eq!(Manifest::parse(&plain.to_bytes()).unwrap(), plain);
        // Non-canonical but valid JSON (other spacing, key order) still parses.
        let loose = format!(
            "{{ \"files\": [ {{\"size\": 1, \"oid\": \"{}\", \"path\": \"b\"}} ], \"version\": \"czc-manifest/1\" }}",
            oid()
        );
        assert_eq!(
            Manifest::parse(loose.as_bytes()).unwrap().files,
            vec![entry("b")]
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "C:/x",
            "",
            ".git/hooks/post-checkout",
            "deep/er/.GIT/config",
            ".Git",
        ] {
            assert!(Manifest::new(vec![entry(bad)]).is_err(), "{bad}");
        }
        assert!(Manifest::new(vec![entry("a"), entry("a")]).is_err());
        assert!(Manifest::new(vec![entry(".gitignore"), entry("x.git/y")]).is_ok());
    }

    fn doc(paths: &[&str]) -> Vec<u8> {
        let lines: Vec<String> = paths
            .iter()
            .map(|path| {
                format!(
                    "{{\"path\":\"{path}\",\"oid\":\"{}\",\"size\":1,\"executable\":false}}",
                    oid()
                )
            })
            .collect();
        format!(
            "{{\"version\":\"czc-manifest/1\",\"files\":[\n{}\n]}}\n",
            lines.join(",\n")
        )
        .into_bytes()
    }

    #[test]
    fn manifest_refuses_conflicts_duplicates_and_disorder() {
        assert!(Manifest::parse(&doc(&["a", "b/c"])).is_ok());
        let err = |paths: &[&str]| Manifest::parse(&doc(paths)).unwrap_err().to_string();
        assert!(err(&["a", "a.txt", "a/b"])
            .contains("'a' is listed as a file and as the folder of 'a/b'"));
        assert!(err(&["x/y", "x/y/z"]).contains("'x/y' is listed as a file"));
        assert!(err(&["a", "a"]).contains("listed twice"));
        assert!(err(&["b", "a"]).contains("not sorted"));
        assert!(err(&[".git/hooks/post-checkout"]).contains(".git"));
        let json = Manifest::parse(b"{\"version\": 3").unwrap_err().to_string();
        assert!(json.contains("JSON") && !json.contains("TOML"), "{json}");
    }

    #[test]
    fn folder_marker_must_agree_with_its_manifest() {
        let manifest = Manifest::parse(&doc(&["a", "b"])).unwrap();
        let marker = |size, files| Marker {
            oid: oid(),
            size,
            kind: MarkerKind::Dir { files },
        };
        assert!(manifest.check_marker(&marker(2, 2)).is_ok());
        let wrong_count = manifest
            .check_marker(&marker(2, 3))
            .unwrap_err()
            .to_string();
        assert_eq!(wrong_count, "says files = 3, but its manifest lists 2");
        let wrong_size = manifest
            .check_marker(&marker(5, 2))
            .unwrap_err()
            .to_string();
        assert!(wrong_size.contains("size = 5"), "{wrong_size}");
    }
}
