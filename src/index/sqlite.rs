//! The SQLite index (the default): WAL mode, so readers never wait for a writer, and
//! batched transactions, so touching 20,000 objects is one commit.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Entry, Index, IndexError};
use crate::config::IndexKind;
use crate::oid::Oid;

/// An index kept in `index.sqlite`.
pub struct SqliteIndex {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteIndex {
    pub fn open(path: PathBuf) -> Result<SqliteIndex, IndexError> {
        match Self::open_writable(&path) {
            // A cache this user may only read (another user's, a read-only mount): WAL
            // needs a writable folder even to read, so read the file as immutable.
            Err(IndexError::Sqlite { .. }) if path.is_file() && !folder_is_writable(&path) => {
                let uri = format!("file:{}?immutable=1", path.display());
                let conn = Connection::open_with_flags(
                    uri,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_URI,
                )
                .map_err(|source| classify(&path, source))?;
                Ok(SqliteIndex {
                    path,
                    conn: Mutex::new(conn),
                })
            }
            other => other,
        }
    }

    fn open_writable(path: &Path) -> Result<SqliteIndex, IndexError> {
        let path = path.to_path_buf();
        let err = |source| classify(&path, source);
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        // Processes opening a new cache at once race to switch it to WAL and create the
        // table; SQLite answers "locked" at once there (no busy handler), so wait here.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match Self::prepare(&conn) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if matches!(
                        failure.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(other) => return Err(err(other)),
            }
        }
        Ok(SqliteIndex {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// WAL mode, the table, and the `pushed` column for indexes made before it existed.
    fn prepare(conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                oid TEXT PRIMARY KEY,
                size INTEGER NOT NULL,
                added_at INTEGER NOT NULL,
                last_used_at INTEGER NOT NULL,
                hits INTEGER NOT NULL,
                pushed INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;",
        )?;
        let has_pushed: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'pushed'")
            .and_then(|mut stmt| stmt.exists([]))?;
        if !has_pushed {
            conn.execute_batch("ALTER TABLE objects ADD COLUMN pushed INTEGER NOT NULL DEFAULT 0")?;
        }
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> IndexError {
        classify(&self.path, source)
    }

    fn with_tx<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, IndexError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // IMMEDIATE takes the write lock up front, so busy_timeout applies instead of a
        // deadlock error when two processes upgrade at once.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let value = work(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(value)
    }

    fn row_to_entry(row: &rusqlite::Row) -> rusqlite::Result<Entry> {
        let text: String = row.get(0)?;
        let oid: Oid = text.parse().map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
        })?;
        Ok(Entry {
            oid,
            size: row.get::<_, i64>(1)? as u64,
            added_at: row.get(2)?,
            last_used_at: row.get(3)?,
            hits: row.get::<_, i64>(4)? as u64,
            pushed: row.get::<_, i64>(5)? != 0,
        })
    }
}

/// Whether a file can be created beside `path` (false on a read-only mount, or a cache
/// folder of another user).
fn folder_is_writable(path: &Path) -> bool {
    let folder = crate::fsutil::parent_dir(path);
    tempfile::tempfile_in(folder).is_ok()
}

/// A database that is garbage, truncated or a folder is corrupt (`cache verify` rebuilds
/// it); anything else is an ordinary SQLite error.
fn classify(path: &Path, source: rusqlite::Error) -> IndexError {
    let corrupt = match &source {
        rusqlite::Error::SqliteFailure(failure, _) => {
            matches!(
                failure.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) || (failure.code == rusqlite::ErrorCode::CannotOpen && path.is_dir())
        }
        _ => false,
    };
    if corrupt {
        return IndexError::Corrupt {
            path: path.into(),
            reason: if path.is_dir() {
                "it is a folder, not a file".into()
            } else {
                source.to_string()
            },
        };
    }
    IndexError::Sqlite {
        path: path.into(),
        source,
    }
}

const INSERT: &str = "INSERT INTO objects (oid, size, added_at, last_used_at, hits, pushed)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(oid) DO UPDATE SET size = excluded.size,
        last_used_at = max(last_used_at, excluded.last_used_at),
        pushed = max(pushed, excluded.pushed)";
const SELECT: &str = "SELECT oid, size, added_at, last_used_at, hits, pushed FROM objects";

impl Index for SqliteIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Sqlite
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn insert(&self, entries: &[Entry]) -> Result<(), IndexError> {
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for e in entries {
                stmt.execute(params![
                    e.oid.to_string(),
                    e.size as i64,
                    e.added_at,
                    e.last_used_at,
                    e.hits as i64,
                    e.pushed as i64
                ])?;
            }
            Ok(())
        })
    }

    fn touch(&self, oids: &[Oid], now: i64) -> Result<(), IndexError> {
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE objects SET last_used_at = ?2, hits = hits + 1 WHERE oid = ?1",
            )?;
            for oid in oids {
                stmt.execute(params![oid.to_string(), now])?;
            }
            Ok(())
        })
    }

    fn mark_pushed(&self, oids: &[Oid]) -> Result<(), IndexError> {
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached("UPDATE objects SET pushed = 1 WHERE oid = ?1")?;
            for oid in oids {
                stmt.execute(params![oid.to_string()])?;
            }
            Ok(())
        })
    }

    fn remove(&self, oids: &[Oid]) -> Result<(), IndexError> {
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM objects WHERE oid = ?1")?;
            for oid in oids {
                stmt.execute(params![oid.to_string()])?;
            }
            Ok(())
        })
    }

    fn get(&self, oid: &Oid) -> Result<Option<Entry>, IndexError> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        conn.query_row(
            &format!("{SELECT} WHERE oid = ?1"),
            params![oid.to_string()],
            Self::row_to_entry,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    fn entries(&self) -> Result<Vec<Entry>, IndexError> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut stmt = conn.prepare(SELECT).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], Self::row_to_entry)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn replace(&self, entries: &[Entry]) -> Result<(), IndexError> {
        self.with_tx(|tx| {
            tx.execute("DELETE FROM objects", [])?;
            let mut stmt = tx.prepare_cached(INSERT)?;
            for e in entries {
                stmt.execute(params![
                    e.oid.to_string(),
                    e.size as i64,
                    e.added_at,
                    e.last_used_at,
                    e.hits as i64,
                    e.pushed as i64
                ])?;
            }
            Ok(())
        })
    }
}
