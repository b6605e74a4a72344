//! Markers in git history, read with gix (no checkout, no `git` process): sidecar
//! `*.czc` files and the marker blobs that the czc filter stores for tracked files.
//! Each tree is visited once however many commits share it, so walking every commit of
//! a long history costs about as much as the distinct trees in it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::error::{Error, Result};
use crate::marker::{Marker, MARKER_START, MAX_MARKER_BYTES, SUFFIX};

/// A marker found in a commit.
#[derive(Debug, Clone)]
pub struct FoundMarker {
    /// Path of the data it stands for, relative to the repository root.
    pub data_path: PathBuf,
    pub marker: Marker,
    /// A `.czc` sidecar file (true) or a blob the filter stored for the file (false).
    pub sidecar: bool,
}

/// Which commits to read.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Revisions (anything `git rev-parse` takes).
    pub revs: Vec<String>,
    /// The tip of every local branch.
    pub branches: bool,
    /// Every commit reachable from any ref (branches, tags, remote branches) or HEAD.
    pub all_commits: bool,
    /// The tips of remote-tracking branches and tags too (what gc keeps: commits a
    /// teammate pushed are needed whether or not a local branch points at them).
    pub remote_tips: bool,
}

/// A repository opened for reading history.
pub struct History {
    repo: gix::Repository,
}

/// A failed read of the repository, with gix's error as its source.
fn read_error(what: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Git(super::GitError::Read {
        what,
        source: Box::new(source),
    })
}

impl History {
    /// Opens the repository around `dir`.
    pub fn open(dir: &Path) -> Result<History> {
        let repo = gix::discover(dir).map_err(|err| {
            Error::Git(super::GitError::NotARepository {
                dir: dir.into(),
                source: Box::new(err),
            })
        })?;
        Ok(History { repo })
    }

    /// The working tree's root, if the repository has one.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The commit a revision names.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId> {
        let id = self
            .repo
            .rev_parse_single(rev)
            .map_err(|err| read_error(format!("revision '{rev}'"), err))?;
        let commit = id
            .object()
            .and_then(|object| object.peel_to_commit())
            .map_err(|err| read_error(format!("revision '{rev}' is not a commit"), err))?;
        Ok(commit.id)
    }

    /// HEAD's commit, or None on an unborn branch.
    pub fn head(&self) -> Result<Option<ObjectId>> {
        match self.repo.head_id() {
            Ok(id) => Ok(Some(id.detach())),
            Err(_) if self.repo.head().map(|h| h.is_unborn()).unwrap_or(false) => Ok(None),
            Err(err) => Err(read_error("reading HEAD".into(), err)),
        }
    }

    /// The commits each ref under `prefix` points at (tags peeled; refs to non-commits
    /// skipped).
    fn tips(&self, prefix: Option<&str>) -> Result<Vec<ObjectId>> {
        let platform = self
            .repo
            .references()
            .map_err(|err| read_error("reading refs".into(), err))?;
        let iter = match prefix {
            Some(prefix) => platform.prefixed(prefix),
            None => platform.all(),
        }
        .map_err(|err| read_error("reading refs".into(), err))?;
        let mut tips = Vec::new();
        for reference in iter {
            let Ok(mut reference) = reference else {
                continue;
            };
            if let Ok(commit) = reference.peel_to_commit() {
                tips.push(commit.id);
            }
        }
        Ok(tips)
    }

    /// Whether this repository holds the object `hex` names (a commit a remote reports).
    pub fn has_object(&self, hex: &str) -> bool {
        ObjectId::from_hex(hex.as_bytes()).is_ok_and(|id| self.repo.has_object(id))
    }

    /// The commits a selection names: HEAD when it names nothing.
    pub fn select(&self, selection: &Selection) -> Result<Vec<ObjectId>> {
        let mut tips = Vec::new();
        for rev in &selection.revs {
            tips.push(self.resolve(rev)?);
        }
        if selection.branches {
            tips.extend(self.tips(Some("refs/heads/"))?);
        }
        if selection.remote_tips {
            tips.extend(self.tips(Some("refs/remotes/"))?);
            tips.extend(self.tips(Some("refs/tags/"))?);
        }
        if selection.all_commits {
            tips.extend(self.tips(None)?);
            tips.extend(self.head()?);
            return self.walk(&tips, &[]);
        }
        if tips.is_empty() {
            tips.extend(self.head()?);
        }
        let mut seen = HashSet::new();
        tips.retain(|id| seen.insert(*id));
        Ok(tips)
    }

    /// Every commit reachable from `tips` but not from `hidden`.
    pub fn walk(&self, tips: &[ObjectId], hidden: &[ObjectId]) -> Result<Vec<ObjectId>> {
        if tips.is_empty() {
            return Ok(Vec::new());
        }
        let hidden: Vec<ObjectId> = hidden
            .iter()
            .filter(|id| self.repo.has_object(id))
            .copied()
            .collect();
        let walk = self
            .repo
            .rev_walk(tips.iter().copied())
            .with_hidden(hidden)
            .all()
            .map_err(|err| read_error("walking history".into(), err))?;
        let mut commits = Vec::new();
        for info in walk {
            let info = info.map_err(|err| read_error("walking history".into(), err))?;
            commits.push(info.id);
        }
        Ok(commits)
    }

    /// The remote-tracking tips of one remote (what it is known to have already).
    pub fn remote_tips(&self, remote: &str) -> Result<Vec<ObjectId>> {
        if remote.is_empty() || remote.contains("..") || remote.contains(':') {
            return Ok(Vec::new());
        }
        self.tips(Some(&format!("refs/remotes/{remote}/")))
    }

    /// Every marker in the trees of `commits`, each (marker oid, data path) once. Markers
    /// that fail to parse are errors naming the commit and path.
    pub fn markers(&self, commits: &[ObjectId]) -> Result<(Vec<FoundMarker>, Vec<Error>)> {
        let mut walker = TreeWalker::new(&self.repo);
        for id in commits {
            walker.visit(self.tree_of(*id)?, &mut String::new(), id)?;
        }
        Ok((walker.found, walker.errors))
    }

    /// The markers the filter stored for files in the index (staged, committed or not)
    /// whose paths `tracked` matches (`.gitattributes` patterns with `filter=czc`):
    /// only those blobs are opened, so a big index costs a pass over its entries.
    pub fn staged_markers(&self, tracked: &[String]) -> Result<(Vec<FoundMarker>, Vec<Error>)> {
        let matcher = TrackedPaths::new(tracked);
        let index = self
            .repo
            .index_or_empty()
            .map_err(|err| read_error("the index".into(), err))?;
        let mut walker = TreeWalker::new(&self.repo);
        for entry in index.entries() {
            if entry.mode.is_submodule() || entry.mode.is_sparse() || entry.stage_raw() != 0 {
                continue;
            }
            let path = entry.path(&index).to_string();
            if !path.ends_with(SUFFIX) && matcher.matches(&path) {
                walker.blob_in(entry.id, path, "index");
            }
        }
        Ok((walker.found, walker.errors))
    }

    /// The sidecar markers of `new` that differ from `old` (all of them without `old`).
    /// Subtrees the two commits share are skipped unread and filtered blobs are never
    /// opened, so a checkout that moves 1,000 filtered files costs two tree walks.
    pub fn changed_sidecars(
        &self,
        old: Option<ObjectId>,
        new: ObjectId,
    ) -> Result<(Vec<FoundMarker>, Vec<Error>)> {
        let mut walker = TreeWalker::new(&self.repo);
        let new_tree = self.tree_of(new)?;
        let old_tree = old.map(|old| self.tree_of(old)).transpose()?;
        walker.diff(new_tree, old_tree, &mut String::new(), &new)?;
        Ok((walker.found, walker.errors))
    }

    fn tree_of(&self, commit: ObjectId) -> Result<ObjectId> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree_id())
            .map_err(|err| read_error(format!("commit {commit}"), err))?;
        Ok(tree.detach())
    }
}

struct TreeWalker<'r> {
    repo: &'r gix::Repository,
    trees: HashSet<ObjectId>,
    /// (blob, path) pairs already looked at.
    blobs: HashSet<(ObjectId, String)>,
    found: Vec<FoundMarker>,
    errors: Vec<Error>,
}

impl<'r> TreeWalker<'r> {
    fn new(repo: &'r gix::Repository) -> TreeWalker<'r> {
        TreeWalker {
            repo,
            trees: HashSet::new(),
            blobs: HashSet::new(),
            found: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn visit(&mut self, tree_id: ObjectId, prefix: &mut String, commit: &ObjectId) -> Result<()> {
        if !self.trees.insert(tree_id) {
            return Ok(());
        }
        let (subtrees, blobs): (Vec<_>, Vec<_>) = self
            .entries(tree_id, commit)?
            .into_iter()
            .partition(|(_, _, is_tree)| *is_tree);
        for (name, id, _) in blobs {
            let path = format!("{prefix}{name}");
            if self.blobs.insert((id, path.clone())) {
                self.blob(id, path, commit);
            }
        }
        for (name, id, _) in subtrees {
            let len = prefix.len();
            prefix.push_str(&name);
            prefix.push('/');
            self.visit(id, prefix, commit)?;
            prefix.truncate(len);
        }
        Ok(())
    }

    /// (name, id, is a tree) of each entry of a tree.
    fn entries(
        &self,
        tree_id: ObjectId,
        commit: &ObjectId,
    ) -> Result<Vec<(String, ObjectId, bool)>> {
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(|err| read_error(format!("tree {tree_id} of commit {commit}"), err))?;
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let entry = entry
                .map_err(|err| read_error(format!("tree {tree_id} of commit {commit}"), err))?;
            let mode = entry.inner.mode;
            if mode.is_tree() || mode.is_blob() {
                entries.push((
                    entry.inner.filename.to_string(),
                    entry.inner.oid.to_owned(),
                    mode.is_tree(),
                ));
            }
        }
        Ok(entries)
    }

    /// Sidecars under `new` whose blob differs from the same path under `old`.
    fn diff(
        &mut self,
        new: ObjectId,
        old: Option<ObjectId>,
        prefix: &mut String,
        commit: &ObjectId,
    ) -> Result<()> {
        if old == Some(new) {
            return Ok(());
        }
        let before: std::collections::HashMap<String, (ObjectId, bool)> = match old {
            Some(old) => self
                .entries(old, commit)?
                .into_iter()
                .map(|(name, id, is_tree)| (name, (id, is_tree)))
                .collect(),
            None => Default::default(),
        };
        for (name, id, is_tree) in self.entries(new, commit)? {
            let was = before.get(&name).copied();
            if is_tree {
                let len = prefix.len();
                prefix.push_str(&name);
                prefix.push('/');
                let old_subtree = was.filter(|(_, was_tree)| *was_tree).map(|(id, _)| id);
                self.diff(id, old_subtree, prefix, commit)?;
                prefix.truncate(len);
            } else if name.ends_with(SUFFIX) && was.map(|(id, _)| id) != Some(id) {
                self.blob(id, format!("{prefix}{name}"), commit);
            }
        }
        Ok(())
    }

    fn blob(&mut self, id: ObjectId, path: String, commit: &ObjectId) {
        self.blob_in(id, path, &commit.to_string()[..12]);
    }

    /// Reads blob `id` at `path` of `origin` (a short commit id, or `index`).
    fn blob_in(&mut self, id: ObjectId, path: String, origin: &str) {
        let sidecar = path.ends_with(SUFFIX);
        match self.repo.find_header(id) {
            Ok(header) if header.size() as usize <= MAX_MARKER_BYTES => {}
            _ if sidecar => {}
            _ => return,
        }
        let Ok(blob) = self.repo.find_blob(id) else {
            self.errors.push(Error::Git(super::GitError::MissingBlob {
                origin: origin.into(),
                path: path.clone(),
                id: id.to_string(),
            }));
            return;
        };
        if !sidecar && !blob.data.starts_with(MARKER_START) {
            return;
        }
        match Marker::parse(&blob.data) {
            Ok(marker) => {
                let data_path = if sidecar {
                    PathBuf::from(&path[..path.len() - SUFFIX.len()])
                } else {
                    PathBuf::from(&path)
                };
                self.found.push(FoundMarker {
                    data_path,
                    marker,
                    sidecar,
                });
            }
            Err(source) => self.errors.push(Error::Marker {
                path: PathBuf::from(format!("{origin}:{path}")),
                source,
            }),
        }
    }
}

/// `.gitattributes` patterns as git matches them: a pattern without a slash matches a
/// file name at any depth, one with a slash the path from the root.
struct TrackedPaths {
    by_name: globset::GlobSet,
    by_path: globset::GlobSet,
}

impl TrackedPaths {
    fn new(patterns: &[String]) -> TrackedPaths {
        let mut by_name = globset::GlobSetBuilder::new();
        let mut by_path = globset::GlobSetBuilder::new();
        for pattern in patterns {
            let anchored = pattern.trim_end_matches('/').contains('/');
            let text = pattern.trim_start_matches('/');
            // An unparsable pattern tracks nothing, as git ignores it.
            let Ok(glob) = globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
            else {
                continue;
            };
            if anchored {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        TrackedPaths {
            by_name: by_name
                .build()
                .unwrap_or_else(|_| globset::GlobSet::empty()),
            by_path: by_path
                .build()
                .unwrap_or_else(|_| globset::GlobSet::empty()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.by_name.is_match(name) || self.by_path.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::TrackedPaths;

    #[test]
    fn a_folder_outside_git_is_a_typed_error_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let err = match super::History::open(dir.path()) {
            Err(err) => err,
            Ok(_) => panic!("{} is no repository", dir.path().display()),
        };
        assert!(
            matches!(
                &err,
                crate::error::Error::Git(crate::git::GitError::NotARepository { .. })
            ),
            "{err:?}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "gix's cause is kept"
        );
        assert!(err.to_string().contains("not in a git repository"));
    }

    #[test]
    fn tracked_patterns_match_as_git_matches_them() {
        let tracked = TrackedPaths::new(&[
            "*.h5ad".to_string(),
            "/models/*.bin".to_string(),
            "data/**/*.parquet".to_string(),
        ]);
        assert!(tracked.matches("a.h5ad"));
        assert!(tracked.matches("deep/er/a.h5ad"));
        assert!(tracked.matches("models/w.bin"));
        assert!(!tracked.matches("other/models/w.bin"));
        assert!(!tracked.matches("models/sub/w.bin"));
        assert!(tracked.matches("data/x/y/t.parquet"));
        assert!(tracked.matches("data/t.parquet"));
        assert!(!tracked.matches("a.h5ad.txt"));
    }
}
