//! Git integration: the clean/smudge filter (one-shot and long-running), `czc install`
//! and its hooks, `.gitattributes` tracking, and reading markers from history with gix.

pub mod filter;
pub mod history;
pub mod install;
pub mod pktline;

pub use history::{FoundMarker, History, Selection};

use std::path::PathBuf;

/// A cause from another crate (gix), kept as the error's source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with git: the repository, a revision, history, the git binary, the
/// filter protocol, or a gc that refuses to judge by stale history.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}: not in a git repository ({source})", dir.display())]
    NotARepository {
        dir: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("{what}: {source}")]
    Read {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("{origin}:{path}: blob {id} is missing")]
    MissingBlob {
        origin: String,
        path: String,
        id: String,
    },
    #[error("`git {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("pre-push: git passed an unexpected line {0:?}")]
    PrePushLine(String),
    #[error("'{0}' is not a commit id")]
    BadCommitId(String),
    #[error(transparent)]
    Filter(#[from] filter::FilterError),
    #[error("{} is not inside a git repository; run `czc install --local` in one, or `czc install`", dir.display())]
    InstallOutsideRepository { dir: PathBuf },
    #[error("{} is not czc's hook, and {} is taken too; merge them by hand, then run czc install again", hook.display(), chained.display())]
    HookTaken { hook: PathBuf, chained: PathBuf },
    #[error("'{0}' is not a pattern git can track")]
    BadPattern(String),
    #[error("--rev {rev}: {} is not in a git repository", dir.display())]
    RevOutsideRepository { rev: String, dir: PathBuf },
    #[error("gc stopped before deleting anything: cannot read the refs of git remote {remote} ({source}); gc needs an up-to-date view of history, so retry when it is reachable")]
    RemoteRefsUnreadable {
        remote: String,
        #[source]
        source: Box<crate::error::Error>,
    },
    #[error("gc stopped before deleting anything: {remote}'s {reference} is at {commit}, which this clone has not fetched; run `git fetch {remote}` first")]
    NotFetched {
        remote: String,
        reference: String,
        commit: String,
    },
    #[error("gc stopped before deleting anything: {source}; fix or fetch it first")]
    GcRefused {
        #[source]
        source: Box<crate::error::Error>,
    },
    #[error("in {}: {source}", repo.display())]
    InRepository {
        repo: PathBuf,
        #[source]
        source: Box<crate::error::Error>,
    },
}
