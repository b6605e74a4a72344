//! Git integration: the clean/smudge filter (one-shot and long-running), `czc install`
//! and its hooks, `.gitattributes` tracking, and reading markers from history with gix.

pub mod filter;
pub mod history;
pub mod install;
pub mod pktline;

pub use history::{FoundMarker, History, Selection};
