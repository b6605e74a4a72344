//! One behaviour suite for every [`Cache`]: call these from tests with each kind. A
//! `seed` function puts bytes under a key the way the cache's own storage gets them
//! (a file on the share, an upload to the bucket), so read-only caches are tested too.

use std::path::Path;

use super::{Cache, PutCondition};
use crate::error::Error;
use crate::oid::Oid;
use crate::storage::StorageError;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a test file");
    path
}

/// Reads: misses, hits that keep the key's file name, hash and time, and a rewritten key
/// read again. `seed(key, bytes)` stores bytes under a key behind the cache.
pub fn read_suite(cache: &dyn Cache, seed: &dyn Fn(&str, &[u8])) {
    let missing = cache.get("nowhere/at-all.bin");
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{}: a missing key is NotFound: {missing:?}",
        cache.describe()
    );
    assert_eq!(cache.hash("nowhere/at-all.bin").unwrap(), None);
    seed("data/cells.h5ad", b"first version");
    let path = cache.get("data/cells.h5ad").unwrap();
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("cells.h5ad"),
        "{}: the path keeps the key's name",
        cache.describe()
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"first version");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut cache.open("data/cells.h5ad").unwrap(), &mut text).unwrap();
    assert_eq!(text, "first version");
    assert_eq!(
        cache.hash("data/cells.h5ad").unwrap(),
        Some(Oid::of_bytes(b"first version"))
    );
    assert!(cache.last_modified("data/cells.h5ad").unwrap().is_some());
    // Rewritten behind the cache: the next get sees it.
    seed("data/cells.h5ad", b"second, longer version");
    assert_eq!(
        std::fs::read(cache.get("data/cells.h5ad").unwrap()).unwrap(),
        b"second, longer version",
        "{}: a rewritten key is read again",
        cache.describe()
    );
    let bad = cache.get("../escape");
    assert!(bad.is_err(), "{}: '..' is refused", cache.describe());
    // A known hash: the right one is served, another is refused, never served.
    let current = Oid::of_bytes(b"second, longer version");
    let fetched = cache.fetch("data/cells.h5ad", Some(&current)).unwrap();
    assert_eq!(
        std::fs::read(&fetched.path).unwrap(),
        b"second, longer version"
    );
    assert_eq!(fetched.oid, Some(current));
    // (An old version still in the local cache may be served by its hash: those are the
    // bytes asked for. Bytes that were never stored cannot be.)
    let wrong = cache.fetch("data/cells.h5ad", Some(&Oid::of_bytes(b"never stored")));
    assert!(
        matches!(
            wrong,
            Err(Error::HashMismatch { .. } | Error::NoMatchingCopy { .. })
        ),
        "{}: a copy of other bytes is refused: {wrong:?}",
        cache.describe()
    );
    assert_eq!(
        cache.list("data/").unwrap(),
        vec!["data/cells.h5ad".to_string()],
        "{}: list",
        cache.describe()
    );
}

/// Writes: every condition holds or loses as it says, deletes too.
pub fn write_suite(cache: &dyn Cache) {
    let scratch = tempfile::tempdir().unwrap();
    let v1 = write_file(scratch.path(), "v1", b"one");
    let v2 = write_file(scratch.path(), "v2", b"two");
    let key = "runs/7/results.csv";
    let lost = |result: crate::error::Result<bool>| {
        matches!(result, Err(Error::Storage(StorageError::LostRace { .. })))
    };
    assert!(cache.put(key, &v1, PutCondition::IfAbsent).unwrap());
    assert!(
        lost(cache.put(key, &v2, PutCondition::IfAbsent)),
        "{}: if-absent over an existing key loses",
        cache.describe()
    );
    assert!(lost(cache.put(
        key,
        &v2,
        PutCondition::IfMatch(Oid::of_bytes(b"stale"))
    )));
    assert_eq!(std::fs::read(cache.get(key).unwrap()).unwrap(), b"one");
    assert!(cache
        .put(key, &v2, PutCondition::IfMatch(Oid::of_bytes(b"one")))
        .unwrap());
    assert_eq!(std::fs::read(cache.get(key).unwrap()).unwrap(), b"two");
    assert_eq!(cache.hash(key).unwrap(), Some(Oid::of_bytes(b"two")));
    // A file older than the stored copy is not written with if-newer.
    let old = write_file(scratch.path(), "old", b"old");
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    assert!(!cache.put(key, &old, PutCondition::IfNewer).unwrap());
    assert!(cache.put(key, &v1, PutCondition::Always).unwrap());
    assert_eq!(std::fs::read(cache.get(key).unwrap()).unwrap(), b"one");
    assert!(lost(
        cache.delete(key, Some(Oid::of_bytes(b"two"))).map(|_| true)
    ));
    assert!(cache.delete(key, Some(Oid::of_bytes(b"one"))).unwrap());
    assert!(!cache.delete(key, None).unwrap());
    assert!(matches!(cache.get(key), Err(Error::NotFound { .. })));
}

/// A read-only cache refuses every write and changes nothing.
pub fn read_only_suite(cache: &dyn Cache) {
    let scratch = tempfile::tempdir().unwrap();
    let file = write_file(scratch.path(), "f", b"refused");
    let refused = cache.put("data/cells.h5ad", &file, PutCondition::Always);
    assert!(
        matches!(refused, Err(Error::ReadOnlyCache { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        cache.delete("data/cells.h5ad", None),
        Err(Error::ReadOnlyCache { .. })
    ));
}
