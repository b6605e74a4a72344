//! `czc install` / `uninstall` (filter configuration and hooks) and `czc track` /
//! `untrack` (`.gitattributes` lines). git's own config command writes the config, so
//! its locking and file format rules apply; hooks chain to whatever was there before.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::GitError;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;

/// The filter settings `czc install` writes, as `git lfs install` does for LFS.
pub const FILTER_CONFIG: [(&str, &str); 4] = [
    ("filter.czc.process", "czc filter-process"),
    ("filter.czc.clean", "czc clean %f"),
    ("filter.czc.smudge", "czc smudge %f"),
    ("filter.czc.required", "true"),
];

/// The hooks, compiled in so the installed copy always matches this czc.
pub const HOOKS: [(&str, &str); 3] = [
    ("pre-push", include_str!("../../hooks/pre-push")),
    ("post-checkout", include_str!("../../hooks/post-checkout")),
    ("post-merge", include_str!("../../hooks/post-merge")),
];

/// Every czc hook carries this line, so an older czc's hook is recognised as ours.
const HOOK_MARK: &str = "# czc hook:";
/// Where a pre-existing hook is moved; czc's hook runs it first.
const CHAINED_SUFFIX: &str = ".czc-chained";

/// Which git config file the filter goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `~/.gitconfig` (git's `--global`): every repository of the user.
    User,
    /// The current repository's `.git/config`.
    Repo,
}

/// What install or uninstall did, for the user.
#[derive(Debug, Default, serde::Serialize)]
pub struct InstallReport {
    pub config: Option<&'static str>,
    /// Hooks written (or removed), each with the hook it chains to (or restored), if any.
    pub hooks: Vec<HookChange>,
}

#[derive(Debug, serde::Serialize)]
pub struct HookChange {
    pub path: PathBuf,
    pub chained: Option<PathBuf>,
}

/// Runs `git` in `dir`; its stderr becomes the error.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| Error::Io {
            path: "git".into(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Git(GitError::Command {
            args: args.join(" "),
            stderr: stderr.trim().into(),
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string())
}

fn scope_flag(scope: Scope) -> &'static str {
    match scope {
        Scope::User => "--global",
        Scope::Repo => "--local",
    }
}

/// The folder git runs hooks from (honours core.hooksPath), or None outside a repo.
pub fn hooks_dir(dir: &Path) -> Result<Option<PathBuf>> {
    match git(dir, &["rev-parse", "--git-path", "hooks"]) {
        Ok(path) => Ok(Some(dir.join(path))),
        Err(_) => Ok(None),
    }
}

fn report_for(scope: Scope) -> InstallReport {
    InstallReport {
        config: Some(match scope {
            Scope::User => "user (~/.gitconfig)",
            Scope::Repo => "repository (.git/config)",
        }),
        hooks: Vec::new(),
    }
}

/// Writes the filter config and, inside a repository, the hooks. Idempotent.
pub fn install(dir: &Path, scope: Scope) -> Result<InstallReport> {
    let hooks = hooks_dir(dir)?;
    if scope == Scope::Repo && hooks.is_none() {
        return Err(Error::Git(GitError::InstallOutsideRepository {
            dir: dir.into(),
        }));
    }
    let flag = scope_flag(scope);
    for (key, value) in FILTER_CONFIG {
        git(dir, &["config", flag, key, value])?;
    }
    let mut report = report_for(scope);
    if let Some(hooks) = hooks {
        fs::create_dir_all(&hooks).at(&hooks)?;
        for (name, script) in HOOKS {
            if let Some(change) = install_hook(&hooks.join(name), script)? {
                report.hooks.push(change);
            }
        }
    }
    Ok(report)
}

/// Puts czc's hooks into the repository around `dir` (chaining hooks that are there),
/// as the filter process does whenever git runs it: a clone of a repository whose
/// filter is in the user's git config gets them without `czc install`. Idempotent, and
/// nothing is written when they are already in place.
pub fn install_hooks(dir: &Path) -> Result<Vec<HookChange>> {
    let Some(hooks) = hooks_dir(dir)? else {
        return Ok(Vec::new());
    };
    fs::create_dir_all(&hooks).at(&hooks)?;
    let mut changes = Vec::new();
    for (name, script) in HOOKS {
        if let Some(change) = install_hook(&hooks.join(name), script)? {
            changes.push(change);
        }
    }
    Ok(changes)
}

/// Writes one hook; an existing foreign hook is kept as `<hook>.czc-chained`.
fn install_hook(path: &Path, script: &str) -> Result<Option<HookChange>> {
    let chained = chained_path(path);
    let mut moved = None;
    match fs::read(path) {
        Ok(current) if current == script.as_bytes() => return Ok(None),
        Ok(current) if is_ours(&current) => {}
        Ok(_) => {
            if chained.exists() {
                return Err(Error::Git(GitError::HookTaken {
                    hook: path.into(),
                    chained: chained.clone(),
                }));
            }
            fs::rename(path, &chained).at(path)?;
            moved = Some(chained.clone());
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).at(path),
    }
    fsutil::write_atomic(path, script.as_bytes()).at(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).at(path)?;
    Ok(Some(HookChange {
        path: path.into(),
        chained: moved.or_else(|| chained.exists().then_some(chained)),
    }))
}

fn chained_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CHAINED_SUFFIX);
    PathBuf::from(name)
}

fn is_ours(script: &[u8]) -> bool {
    String::from_utf8_lossy(script).contains(HOOK_MARK)
}

/// Removes the filter config and, inside a repository, czc's hooks (restoring the
/// hooks they chained to). Idempotent.
pub fn uninstall(dir: &Path, scope: Scope) -> Result<InstallReport> {
    let flag = scope_flag(scope);
    let hooks = hooks_dir(dir)?;
    if scope == Scope::User || hooks.is_some() {
        // Exit code 5/128 when the section is absent: nothing to remove.
        let _ = git(dir, &["config", flag, "--remove-section", "filter.czc"]);
    }
    let mut report = report_for(scope);
    if let Some(hooks) = hooks {
        for (name, _) in HOOKS {
            let path = hooks.join(name);
            match fs::read(&path) {
                Ok(current) if is_ours(&current) => {}
                _ => continue,
            }
            let chained = chained_path(&path);
            if chained.exists() {
                fs::rename(&chained, &path).at(&chained)?;
                report.hooks.push(HookChange {
                    path,
                    chained: Some(chained),
                });
            } else {
                fs::remove_file(&path).at(&path)?;
                report.hooks.push(HookChange {
                    path,
                    chained: None,
                });
            }
        }
    }
    Ok(report)
}

/// The attributes a tracked pattern gets.
const TRACK_ATTRS: &str = "filter=czc diff=czc merge=czc -text";

/// git attribute patterns end at whitespace; Git LFS writes a space this way too.
fn escape_pattern(pattern: &str) -> String {
    pattern.replace(' ', "[[:space:]]")
}

fn unescape_pattern(pattern: &str) -> String {
    pattern.replace("[[:space:]]", " ")
}

/// The patterns of `.gitattributes` lines that send files through czc.
pub fn tracked_patterns(root: &Path) -> Result<Vec<String>> {
    let path = root.join(".gitattributes");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).at(&path),
    };
    Ok(text
        .lines()
        .filter_map(czc_pattern)
        .map(|p| unescape_pattern(&p))
        .collect())
}

/// The pattern of a line whose attributes include `filter=czc`.
fn czc_pattern(line: &str) -> Option<String> {
    let mut fields = line.split_whitespace();
    let pattern = fields.next().filter(|p| !p.starts_with('#'))?;
    fields
        .any(|attr| attr == "filter=czc")
        .then(|| pattern.to_string())
}

/// Adds `.gitattributes` lines for patterns not tracked yet; returns the added ones.
pub fn track(root: &Path, patterns: &[String]) -> Result<Vec<String>> {
    let path = root.join(".gitattributes");
    let mut text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).at(&path),
    };
    let existing: Vec<String> = text.lines().filter_map(czc_pattern).collect();
    let mut added = Vec::new();
    for pattern in patterns {
        if pattern.trim().is_empty() || pattern.contains('\n') {
            return Err(Error::Git(GitError::BadPattern(pattern.clone())));
        }
        let escaped = escape_pattern(pattern);
        if existing.contains(&escaped) || added.contains(pattern) {
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{escaped} {TRACK_ATTRS}\n"));
        added.push(pattern.clone());
    }
    if !added.is_empty() {
        fsutil::write_atomic(&path, text.as_bytes()).at(&path)?;
    }
    Ok(added)
}

/// Removes the czc lines of the given patterns; returns the removed ones.
pub fn untrack(root: &Path, patterns: &[String]) -> Result<Vec<String>> {
    let path = root.join(".gitattributes");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).at(&path),
    };
    let escaped: Vec<String> = patterns.iter().map(|p| escape_pattern(p)).collect();
    let mut removed = Vec::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| match czc_pattern(line) {
            Some(pattern) if escaped.contains(&pattern) => {
                removed.push(unescape_pattern(&pattern));
                false
            }
            _ => true,
        })
        .collect();
    if !removed.is_empty() {
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        fsutil::write_atomic(&path, out.as_bytes()).at(&path)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_adds_once_lists_and_untracks() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".gitattributes"), "*.txt text").unwrap();
        let added = track(dir.path(), &["*.h5ad".into(), "my data/*.bin".into()]).unwrap();
        assert_eq!(added.len(), 2);
        assert!(track(dir.path(), &["*.h5ad".into()]).unwrap().is_empty());
        let text = fs::read_to_string(dir.path().join(".gitattributes")).unwrap();
        assert_eq!(
            text,
            "*.txt text\n*.h5ad filter=czc diff=czc merge=czc -text\n\
             my[[:space:]]data/*.bin filter=czc diff=czc merge=czc -text\n"
        );
        assert_eq!(
            tracked_patterns(dir.path()).unwrap(),
            vec!["*.h5ad", "my data/*.bin"]
        );
        assert_eq!(
            untrack(dir.path(), &["my data/*.bin".into(), "*.nope".into()]).unwrap(),
            vec!["my data/*.bin"]
        );
        assert_eq!(tracked_patterns(dir.path()).unwrap(), vec!["*.h5ad"]);
        assert!(track(dir.path(), &["".into()]).is_err());
    }

    #[test]
    fn every_hook_carries_the_mark_and_a_shebang() {
        for (name, script) in HOOKS {
            assert!(script.starts_with("#!/bin/sh\n"), "{name}");
            assert!(script.contains(HOOK_MARK), "{name}");
            assert!(script.contains(&format!("czc hook {name}")), "{name}");
        }
    }
}
