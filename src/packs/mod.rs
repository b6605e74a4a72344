//! Packs: many small objects in one remote file, so a push or fetch of 100,000 files is
//! a few dozen requests instead of 100,000 round trips.
//!
//! [`Packed`] wraps any storage. Reading, it finds objects loose (`objects/..`, what
//! every version of czc wrote and folders still write) or in packs (`packs/<id>.pack`
//! with its index `packs/<id>.idx`); a remote may hold both. Writing (on S3 and HTTP
//! remotes), a batch of small objects goes out as packs of about [`PACK_TARGET`] bytes:
//! the pack first, then its index, so an index never names a pack that is not there.
//! Indexes are kept in the local cache (they never change: a pack is named by its
//! hash) and the set of packs is refreshed by listing `packs/`.

pub mod fetch;
pub mod format;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::oid::Oid;
use crate::report::Progress;
use crate::storage::{
    object_key_oid, too_long, with_retries, KeyInfo, PackedAt, ReadStorage, StorageError,
    WriteStorage,
};
use format::{PackEntry, PackIndex, INDEX_MAX_BYTES, PACK_MAGIC};

/// Packs are cut at about this size: big enough that 100,000 small files are a few
/// dozen uploads, small enough that a killed push loses little and a pack uploads in
/// one request.
pub const PACK_TARGET: u64 = 32 << 20;
/// Objects from this size up are not packed (they are worth a request of their own).
pub const PACK_OBJECT_MAX: u64 = 16 << 20;
/// A push that finds objects in a pack older than this marks the pack as wanted again,
/// restarting the grace period `gc --remote` counts from.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);

/// The key of a pack.
pub fn pack_key(pack: &Oid) -> String {
    format!("packs/{}.pack", pack.hex())
}

/// The key of a pack's index.
pub fn index_key(pack: &Oid) -> String {
    format!("packs/{}.idx", pack.hex())
}

/// The key whose time says when a push last found a pack's objects wanted.
pub fn seen_key(pack: &Oid) -> String {
    format!("packs/{}.seen", pack.hex())
}

/// The pack a `packs/<hex>.<suffix>` key names.
pub fn pack_of_key(key: &str, suffix: &str) -> Option<Oid> {
    let name = key.strip_prefix("packs/")?.strip_suffix(suffix)?;
    Oid::from_hex(name.strip_suffix('.')?).ok()
}

/// Whether a remote's pushes write packs or loose objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackWrites {
    /// Small objects go out in packs (S3, HTTP: every request is a round trip).
    Packs,
    /// Every object loose (folders: a file is as cheap as a range of one).
    Loose,
}

/// Which packs a remote holds and what is in them.
#[derive(Debug, Default)]
struct PackMap {
    indexes: HashMap<Oid, Arc<PackIndex>>,
    objects: HashMap<Oid, (Oid, u64, u64)>,
}

impl PackMap {
    fn add(&mut self, index: Arc<PackIndex>) {
        for entry in &index.entries {
            self.objects
                .entry(entry.oid)
                .or_insert((index.pack, entry.offset, entry.len));
        }
        self.indexes.insert(index.pack, index);
    }

    fn locate(&self, oid: &Oid) -> Option<PackedAt> {
        self.objects.get(oid).map(|(pack, offset, len)| PackedAt {
            pack: pack_key(pack),
            offset: *offset,
            len: *len,
        })
    }
}

/// A storage whose objects may be packed. See the module documentation.
pub struct Packed<S> {
    inner: S,
    writes: PackWrites,
    /// Where indexes are kept between runs (`None`: in memory only).
    index_dir: Option<PathBuf>,
    /// The pack map and when it was listed.
    map: Mutex<Option<(Arc<PackMap>, Instant)>>,
}

/// A miss on a map listed longer ago than this lists `packs/` again (a push elsewhere
/// may have packed the object since); a younger map is trusted, so a chain's first
/// remote that lacks many objects does not list once per object.
const RELIST_AFTER: Duration = Duration::from_secs(2);

impl<S: ReadStorage> Packed<S> {
    pub fn new(inner: S, writes: PackWrites, index_dir: Option<PathBuf>) -> Packed<S> {
        Packed {
            inner,
            writes,
            index_dir,
            map: Mutex::new(None),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn bad_data(&self, key: &str, message: String) -> StorageError {
        StorageError::Io {
            storage: self.inner.describe(),
            key: key.into(),
            source: io::Error::new(io::ErrorKind::InvalidData, message),
        }
    }

    /// The pack map as last loaded, loading it on first use.
    fn map(&self) -> Result<Arc<PackMap>, StorageError> {
        if let Some((map, _)) = self.map.lock().unwrap().clone() {
            return Ok(map);
        }
        self.reload()
    }

    /// Lists `packs/` and reads the indexes not known yet (from the local copies when
    /// there are, else from the remote); packs gone from the listing are forgotten.
    fn reload(&self) -> Result<Arc<PackMap>, StorageError> {
        use rayon::prelude::*;
        let listed: Vec<Oid> = with_retries(|| self.inner.list("packs/"))?
            .iter()
            .filter_map(|key| pack_of_key(key, "idx"))
            .collect();
        let known = match self.map.lock().unwrap().clone() {
            Some((map, _)) => map,
            None => Arc::default(),
        };
        let read: Vec<Result<Arc<PackIndex>, StorageError>> = listed
            .par_iter()
            .map(|pack| match known.indexes.get(pack) {
                Some(index) => Ok(index.clone()),
                None => self.read_index(pack).map(Arc::new),
            })
            .collect();
        let mut map = PackMap::default();
        for index in read {
            map.add(index?);
        }
        let map = Arc::new(map);
        *self.map.lock().unwrap() = Some((map.clone(), Instant::now()));
        Ok(map)
    }

    fn read_index(&self, pack: &Oid) -> Result<PackIndex, StorageError> {
        let key = index_key(pack);
        let what = format!("{}: {key}", self.inner.describe());
        let kept = self
            .index_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.idx", pack.hex())));
        if let Some(bytes) = kept.as_ref().and_then(|path| std::fs::read(path).ok()) {
            if let Ok(index) = PackIndex::decode(&what, &bytes, pack) {
                return Ok(index);
            }
        }
        let mut temp = tempfile::tempfile().map_err(|source| StorageError::Io {
            storage: "temp".into(),
            key: key.clone(),
            source,
        })?;
        let got = with_retries(|| {
            io::Seek::rewind(&mut temp)
                .and_then(|_| temp.set_len(0))
                .map_err(|source| StorageError::Io {
                    storage: "temp".into(),
                    key: key.clone(),
                    source,
                })?;
            self.inner.copy_into(&key, &mut temp, INDEX_MAX_BYTES)
        })?;
        if got.is_none() {
            return Err(self.bad_data(&key, "listed but gone (deleted by a gc meanwhile?)".into()));
        }
        let mut bytes = Vec::new();
        io::Seek::rewind(&mut temp)
            .and_then(|_| temp.read_to_end(&mut bytes))
            .map_err(|source| StorageError::Io {
                storage: "temp".into(),
                key: key.clone(),
                source,
            })?;
        let index = PackIndex::decode(&what, &bytes, pack)
            .map_err(|err| self.bad_data(&key, err.reason))?;
        if let Some(path) = kept {
            // Best effort: without it the index is read again next time.
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = crate::fsutil::write_atomic(&path, &bytes);
        }
        Ok(index)
    }

    /// Where an object key's object is packed, asked after the key was not found
    /// loose: loose objects are read without listing packs, so a remote (or an older
    /// server) that has no packs never has to answer for them.
    fn packed_object(&self, key: &str) -> Result<Option<PackedAt>, StorageError> {
        let Some(oid) = object_key_oid(key) else {
            return Ok(None);
        };
        let loaded = self.map.lock().unwrap().clone();
        let map = match loaded {
            Some((map, listed)) => match map.locate(&oid) {
                Some(at) => return Ok(Some(at)),
                None if listed.elapsed() < RELIST_AFTER => return Ok(None),
                None => self.reload()?,
            },
            None => self.reload()?,
        };
        Ok(map.locate(&oid))
    }

    /// Every pack index the remote holds (for gc).
    pub fn indexes(&self) -> Result<Vec<Arc<PackIndex>>, StorageError> {
        Ok(self.reload()?.indexes.values().cloned().collect())
    }
}

impl<S: ReadStorage> ReadStorage for Packed<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        if let Some(copied) = self.inner.copy_into(key, out, max)? {
            return Ok(Some(copied));
        }
        match self.packed_object(key)? {
            Some(at) if at.len > max => Err(too_long(self, key, max)),
            Some(at) => self
                .inner
                .copy_range_into(&at.pack, at.offset..at.offset + at.len, out),
            None => Ok(None),
        }
    }

    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn Write,
    ) -> Result<Option<u64>, StorageError> {
        if let Some(copied) = self.inner.copy_range_into(key, range.clone(), out)? {
            return Ok(Some(copied));
        }
        let Some(at) = self.packed_object(key)? else {
            return Ok(None);
        };
        if range.end > at.len {
            return Err(crate::storage::short_range(
                self,
                key,
                range.end - range.start,
                at.len.saturating_sub(range.start),
            ));
        }
        self.inner.copy_range_into(
            &at.pack,
            at.offset + range.start..at.offset + range.end,
            out,
        )
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        if let Some(hash) = self.inner.hash(key)? {
            return Ok(Some(hash));
        }
        // An object key names its oid; reading it checks the bytes.
        Ok(self.packed_object(key)?.and_then(|_| object_key_oid(key)))
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        if let Some(time) = self.inner.last_modified(key)? {
            return Ok(Some(time));
        }
        match self.packed_object(key)? {
            Some(at) => self.inner.last_modified(&at.pack),
            None => Ok(None),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.inner.exists(key)? || self.packed_object(key)?.is_some())
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        if let Some(size) = self.inner.size(key)? {
            return Ok(Some(size));
        }
        Ok(self.packed_object(key)?.map(|at| at.len))
    }

    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.inner.local_file(key)
    }

    fn describe_key(&self, key: &str) -> Result<Option<KeyInfo>, StorageError> {
        if let Some(info) = self.inner.describe_key(key)? {
            return Ok(Some(info));
        }
        Ok(self.packed_object(key)?.map(|at| KeyInfo {
            size: Some(at.len),
            hash: object_key_oid(key),
            ..KeyInfo::default()
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = self.inner.list(prefix)?;
        if "objects/".starts_with(prefix) || prefix.starts_with("objects/") {
            let map = self.reload()?;
            keys.extend(
                map.objects
                    .keys()
                    .map(Oid::object_key)
                    .filter(|key| key.starts_with(prefix)),
            );
            keys.sort();
            keys.dedup();
        }
        Ok(keys)
    }

    fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, StorageError> {
        let map = if keys.iter().any(|key| object_key_oid(key).is_some()) {
            self.reload()?
        } else {
            Arc::new(PackMap::default())
        };
        let mut found: Vec<bool> = keys
            .iter()
            .map(|key| object_key_oid(key).is_some_and(|oid| map.objects.contains_key(&oid)))
            .collect();
        // Only what no pack holds is asked of the storage itself.
        let rest: Vec<String> = keys
            .iter()
            .zip(&found)
            .filter(|(_, packed)| !**packed)
            .map(|(key, _)| key.clone())
            .collect();
        if !rest.is_empty() {
            let mut loose = self.inner.exists_many(&rest)?.into_iter();
            for slot in found.iter_mut().filter(|packed| !**packed) {
                *slot = loose.next().unwrap_or(false);
            }
        }
        Ok(found)
    }

    fn pack_locations(&self, oids: &[Oid]) -> Result<Vec<Option<PackedAt>>, StorageError> {
        let map = self.map()?;
        Ok(oids.iter().map(|oid| map.locate(oid)).collect())
    }
}

/// Why an object could not go into a pack (reported for that object only).
fn local_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        storage: "local".into(),
        key: path.display().to_string(),
        source,
    }
}

impl<S: WriteStorage> Packed<S> {
    /// Builds one pack from `items` (object key, file) and uploads it, then its index.
    /// One result per item: an item whose file cannot be read or does not hash to its
    /// key fails alone; a failed upload fails the whole group.
    fn push_pack(
        &self,
        items: &[&(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        let mut results: Vec<Option<Result<(), StorageError>>> =
            (0..items.len()).map(|_| None).collect();
        let dir = self.index_dir.clone().unwrap_or_else(std::env::temp_dir);
        let _ = std::fs::create_dir_all(&dir);
        let temp = match tempfile::Builder::new()
            .prefix(".czc-pack-")
            .tempfile_in(&dir)
        {
            Ok(temp) => temp,
            Err(source) => {
                let err = local_error(&dir, source);
                return items.iter().map(|_| Err(clone_error(&err))).collect();
            }
        };
        let mut out = io::BufWriter::with_capacity(1 << 20, temp.as_file());
        let mut hasher = blake3::Hasher::new();
        let mut offset = PACK_MAGIC.len() as u64;
        let mut entries: HashMap<Oid, PackEntry> = HashMap::new();
        let mut bytes_in = 0u64;
        let mut write = |bytes: &[u8], out: &mut io::BufWriter<&File>| {
            hasher.update(bytes);
            out.write_all(bytes)
        };
        if let Err(source) = write(PACK_MAGIC, &mut out) {
            let err = local_error(temp.path(), source);
            return items.iter().map(|_| Err(clone_error(&err))).collect();
        }
        let mut buf = Vec::new();
        for (slot, (key, src)) in results.iter_mut().zip(items) {
            let Some(oid) = object_key_oid(key) else {
                *slot = Some(Err(StorageError::BadKey {
                    storage: self.describe(),
                    key: key.clone(),
                    reason: "only objects go into packs",
                }));
                continue;
            };
            buf.clear();
            let read = File::open(src)
                .and_then(|file| file.take(PACK_OBJECT_MAX + 1).read_to_end(&mut buf));
            if let Err(source) = read {
                *slot = Some(Err(local_error(src, source)));
                continue;
            }
            let found = Oid::of_bytes(&buf);
            if let Err(source) = crate::storage::check_object_bytes(key, &found, src) {
                *slot = Some(Err(local_error(src, source)));
                continue;
            }
            bytes_in += buf.len() as u64;
            if entries.contains_key(&oid) {
                continue;
            }
            if let Err(source) = write(&buf, &mut out) {
                let err = local_error(temp.path(), source);
                return items.iter().map(|_| Err(clone_error(&err))).collect();
            }
            entries.insert(
                oid,
                PackEntry {
                    oid,
                    offset,
                    len: buf.len() as u64,
                },
            );
            offset += buf.len() as u64;
        }
        if let Err(source) = out.flush() {
            let err = local_error(temp.path(), source);
            return items.iter().map(|_| Err(clone_error(&err))).collect();
        }
        drop(out);
        let uploaded = if entries.is_empty() {
            Ok(())
        } else {
            let pack = Oid::from_hash(hasher.finalize());
            let mut entries: Vec<PackEntry> = entries.into_values().collect();
            entries.sort_by_key(|entry| entry.oid);
            let index = PackIndex {
                pack,
                pack_size: offset,
                entries,
            };
            self.upload_pack(temp.path(), &index).map(|()| {
                let mut guard = self.map.lock().unwrap();
                // Our own pack joins a map already listed (when is unchanged); with no
                // map yet, the first read lists and finds it.
                if let Some((old, listed)) = guard.as_ref() {
                    let mut map = PackMap::default();
                    for index in old.indexes.values() {
                        map.add(index.clone());
                    }
                    map.add(Arc::new(index));
                    *guard = Some((Arc::new(map), *listed));
                }
            })
        };
        progress.bytes_done(bytes_in);
        progress.files_done(items.len() as u64);
        results
            .into_iter()
            .map(|slot| match (slot, &uploaded) {
                (Some(result), _) => result,
                (None, Ok(())) => Ok(()),
                (None, Err(err)) => Err(clone_error(err)),
            })
            .collect()
    }

    /// Uploads a built pack, then its index (and keeps the index locally).
    pub(crate) fn upload_pack(
        &self,
        pack_file: &Path,
        index: &PackIndex,
    ) -> Result<(), StorageError> {
        let pack_key = pack_key(&index.pack);
        // Unconditional: a pack is named by the hash of its bytes, so a pack already
        // there holds the same bytes (and S3 cannot make a multipart upload conditional).
        with_retries(|| self.inner.put(&pack_key, pack_file))?;
        let bytes = index.encode();
        let dir = self.index_dir.clone().unwrap_or_else(std::env::temp_dir);
        let local = |source| local_error(&dir, source);
        let kept = dir.join(format!("{}.idx", index.pack.hex()));
        std::fs::create_dir_all(&dir).map_err(local)?;
        crate::fsutil::write_atomic(&kept, &bytes).map_err(local)?;
        let result = with_retries(|| self.inner.put(&index_key(&index.pack), &kept));
        if self.index_dir.is_none() {
            let _ = std::fs::remove_file(&kept);
        }
        result
    }

    /// Deletes a pack: its index first, so no reader is sent to a missing pack.
    pub fn delete_pack(&self, pack: &Oid) -> Result<(), StorageError> {
        self.inner.delete(&index_key(pack))?;
        self.inner.delete(&pack_key(pack))?;
        let _ = self.inner.delete(&seen_key(pack));
        if let Some(dir) = &self.index_dir {
            let _ = std::fs::remove_file(dir.join(format!("{}.idx", pack.hex())));
        }
        Ok(())
    }

    /// When a pack was last written or found wanted by a push (the later of the two).
    pub fn pack_age_start(&self, pack: &Oid) -> Result<Option<SystemTime>, StorageError> {
        let written = self.inner.last_modified(&pack_key(pack))?;
        let seen = self.inner.last_modified(&seen_key(pack))?;
        Ok(written.max(seen))
    }
}

/// Storage errors are not `Clone` (they hold an `io::Error`); a group's failure is
/// reported for each of its objects.
fn clone_error(err: &StorageError) -> StorageError {
    match err {
        StorageError::LostRace {
            storage,
            key,
            found,
        } => StorageError::LostRace {
            storage: storage.clone(),
            key: key.clone(),
            found: found.clone(),
        },
        StorageError::Io {
            storage,
            key,
            source,
        } => StorageError::Io {
            storage: storage.clone(),
            key: key.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => StorageError::Io {
            storage: String::new(),
            key: String::new(),
            source: io::Error::other(other.to_string()),
        },
    }
}

impl<S: WriteStorage> WriteStorage for Packed<S> {
    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.inner.put(key, src)
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        if self.inner.delete(key)? {
            return Ok(true);
        }
        match self.packed_object(key)? {
            Some(at) => Err(StorageError::Io {
                storage: self.describe(),
                key: key.into(),
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the object is in pack {}; czc gc --remote removes unreferenced objects from packs",
                        at.pack
                    ),
                ),
            }),
            None => Ok(false),
        }
    }

    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        // Best effort: a pack listing that fails only risks a second, loose copy.
        if let Ok(Some(_)) = self.packed_object(key) {
            return Err(StorageError::LostRace {
                storage: self.describe(),
                key: key.into(),
                found: "already in a pack".into(),
            });
        }
        self.inner.put_if_absent(key, src)
    }

    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError> {
        self.inner.put_if_hash_matches(key, src, expected)
    }

    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
        self.inner.put_if_newer(key, src)
    }

    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
        self.inner.delete_if_hash_matches(key, expected)
    }

    fn refresh(&self, keys: &[String]) -> Result<(), StorageError> {
        let map = self.map()?;
        let mut packs: Vec<Oid> = keys
            .iter()
            .filter_map(|key| object_key_oid(key))
            .filter_map(|oid| map.objects.get(&oid).map(|(pack, _, _)| *pack))
            .collect();
        packs.sort();
        packs.dedup();
        let loose: Vec<String> = keys
            .iter()
            .filter(|key| object_key_oid(key).is_none_or(|oid| !map.objects.contains_key(&oid)))
            .cloned()
            .collect();
        self.inner.refresh(&loose)?;
        for pack in packs {
            let old = self
                .pack_age_start(&pack)?
                .and_then(|time| time.elapsed().ok())
                .is_some_and(|age| age >= REFRESH_AFTER);
            if old {
                let mark = tempfile::NamedTempFile::new()
                    .map_err(|source| local_error(Path::new("temp"), source))?;
                with_retries(|| self.inner.put(&seen_key(&pack), mark.path()))?;
            }
        }
        Ok(())
    }

    fn sweep_stale_uploads(
        &self,
        prefixes: &[String],
        older_than: Duration,
    ) -> Result<usize, StorageError> {
        self.inner.sweep_stale_uploads(prefixes, older_than)
    }

    fn put_many_if_absent(
        &self,
        items: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        use rayon::prelude::*;
        if self.writes == PackWrites::Loose {
            return self.inner.put_many_if_absent(items, progress);
        }
        let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
        let sizes: Vec<u64> = items.iter().map(|(_, path)| size(path)).collect();
        let packable = |index: usize| {
            object_key_oid(&items[index].0).is_some() && sizes[index] < PACK_OBJECT_MAX
        };
        // Groups of about PACK_TARGET bytes, in the order given.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_bytes = 0u64;
        for index in (0..items.len()).filter(|i| packable(*i)) {
            if groups.is_empty() || group_bytes + sizes[index] > PACK_TARGET {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            groups.last_mut().unwrap().push(index);
            group_bytes += sizes[index];
        }
        let loose: Vec<usize> = (0..items.len()).filter(|i| !packable(*i)).collect();
        let loose_items: Vec<(String, PathBuf)> = loose.iter().map(|i| items[*i].clone()).collect();
        let mut results: Vec<Option<Result<(), StorageError>>> =
            (0..items.len()).map(|_| None).collect();
        let packed: Vec<Vec<Result<(), StorageError>>> = groups
            .par_iter()
            .map(|group| {
                let members: Vec<&(String, PathBuf)> = group.iter().map(|i| &items[*i]).collect();
                self.push_pack(&members, progress)
            })
            .collect();
        for (group, outcome) in groups.iter().zip(packed) {
            for (index, result) in group.iter().zip(outcome) {
                results[*index] = Some(result);
            }
        }
        for (index, result) in loose
            .iter()
            .zip(self.inner.put_many_if_absent(&loose_items, progress))
        {
            results[*index] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.expect("one result per item"))
            .collect()
    }
}
