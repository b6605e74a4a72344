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

pub mod chunker;
pub mod fetch;
pub mod format;
pub mod recipe;

use std::collections::{HashMap, HashSet};
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
use chunker::ChunkSpan;
use format::{PackEntry, PackIndex, INDEX_MAX_BYTES, PACK_MAGIC};
use recipe::{recipe_key, recipe_of_key, Recipe, CHUNKED_MIN, RECIPE_MAX_BYTES};

/// Packs are cut at about this size: big enough that 100,000 small files are a few
/// dozen uploads, small enough that a killed push loses little and a pack uploads in
/// one request.
pub const PACK_TARGET: u64 = 16 << 20;
/// Objects from this size up are not packed (they are worth a request of their own).
pub const PACK_OBJECT_MAX: u64 = 16 << 20;
/// A push that finds objects in a pack older than this marks the pack as wanted again,
/// restarting the grace period `gc --remote` counts from.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// Threads hashing and packing the chunks of a big object, each uploading its own
/// packs: this many uploads are in flight at once.
const CHUNK_WORKERS: usize = 2;
/// Packs built (in memory) and uploaded at once by a push of small objects.
const PACKS_AT_ONCE: usize = 2;
/// Pack indexes fetched at once when a remote's packs are listed.
const INDEX_READS: usize = 16;

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

/// Which packs a remote holds and what is in them, and which objects it holds as
/// chunks and a recipe.
#[derive(Debug, Default, Clone)]
struct PackMap {
    indexes: HashMap<Oid, Arc<PackIndex>>,
    objects: HashMap<Oid, (Oid, u64, u64)>,
    recipes: HashSet<Oid>,
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
        // The two listings at once: each is a round trip.
        let (packs, recipes) = std::thread::scope(|scope| {
            let recipes = scope.spawn(|| with_retries(|| self.inner.list("recipes/")));
            let packs = with_retries(|| self.inner.list("packs/"));
            (packs, recipes.join().expect("a listing thread panicked"))
        });
        let listed: Vec<Oid> = packs?
            .iter()
            .filter_map(|key| pack_of_key(key, "idx"))
            .collect();
        let known = match self.map.lock().unwrap().clone() {
            Some((map, _)) => map,
            None => Arc::default(),
        };
        // Indexes not kept locally are fetched INDEX_READS at a time (round trips, not
        // CPU: the rayon pool of a 2-core machine would fetch two at a time).
        let next = std::sync::atomic::AtomicUsize::new(0);
        let read: Vec<Result<Arc<PackIndex>, StorageError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..INDEX_READS.min(listed.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut got = Vec::new();
                        loop {
                            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(pack) = listed.get(at) else { break };
                            got.push(match known.indexes.get(pack) {
                                Some(index) => Ok(index.clone()),
                                None => self.read_index(pack).map(Arc::new),
                            });
                        }
                        got
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("an index reader panicked"))
                .collect()
        });
        let mut indexes = read.into_iter().collect::<Result<Vec<_>, _>>()?;
        // In pack order, so which copy of an object packed twice is read does not
        // depend on which reader finished first.
        indexes.sort_by_key(|index| index.pack);
        let mut map = PackMap::default();
        for index in indexes {
            map.add(index);
        }
        map.recipes = recipes?
            .iter()
            .filter_map(|key| recipe_of_key(key))
            .collect();
        let map = Arc::new(map);
        *self.map.lock().unwrap() = Some((map.clone(), Instant::now()));
        Ok(map)
    }

    fn read_index(&self, pack: &Oid) -> Result<PackIndex, StorageError> {
        let key = index_key(pack);
        let kept = format!("{}.idx", pack.hex());
        self.read_kept(&key, &kept, INDEX_MAX_BYTES, |what, bytes| {
            PackIndex::decode(what, bytes, pack)
        })?
        .ok_or_else(|| self.bad_data(&key, "listed but gone (deleted by a gc meanwhile?)".into()))
    }

    /// A remote key that never changes (an index, a recipe), decoded: from its copy
    /// `kept` under the index folder when that copy decodes, else read from the remote
    /// (at most `max` bytes), decoded, and kept for next time.
    fn read_kept<T>(
        &self,
        key: &str,
        kept: &str,
        max: u64,
        decode: impl Fn(&str, &[u8]) -> Result<T, format::FormatError>,
    ) -> Result<Option<T>, StorageError> {
        let what = format!("{}: {key}", self.inner.describe());
        let kept = self.index_dir.as_ref().map(|dir| dir.join(kept));
        if let Some(bytes) = kept.as_ref().and_then(|path| std::fs::read(path).ok()) {
            if let Ok(decoded) = decode(&what, &bytes) {
                return Ok(Some(decoded));
            }
        }
        let Some(bytes) = self.read_small(key, max)? else {
            return Ok(None);
        };
        let decoded = decode(&what, &bytes).map_err(|err| self.bad_data(key, err.reason))?;
        if let Some(path) = kept {
            // Best effort: without it the key is read again next time.
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = crate::fsutil::write_atomic(&path, &bytes);
        }
        Ok(Some(decoded))
    }

    /// What `find` says of the pack map, asked after a key was not found loose: loose
    /// objects are read without listing packs, so a remote (or an older server) that
    /// has no packs never has to answer for them. A miss on a map listed a while ago
    /// lists again.
    fn look_up<T>(&self, find: impl Fn(&PackMap) -> Option<T>) -> Result<Option<T>, StorageError> {
        let loaded = self.map.lock().unwrap().clone();
        let map = match loaded {
            Some((map, listed)) => match find(&map) {
                Some(found) => return Ok(Some(found)),
                None if listed.elapsed() < RELIST_AFTER => return Ok(None),
                None => self.reload()?,
            },
            None => self.reload()?,
        };
        Ok(find(&map))
    }

    /// Where an object key's object is packed (see [`Packed::look_up`]).
    fn packed_object(&self, key: &str) -> Result<Option<PackedAt>, StorageError> {
        match object_key_oid(key) {
            Some(oid) => self.look_up(|map| map.locate(&oid)),
            None => Ok(None),
        }
    }

    /// The recipe of an object key's object, if the remote holds it chunked.
    fn chunked_object(&self, key: &str) -> Result<Option<Recipe>, StorageError> {
        let Some(oid) = object_key_oid(key) else {
            return Ok(None);
        };
        if self
            .look_up(|map| map.recipes.contains(&oid).then_some(()))?
            .is_none()
        {
            return Ok(None);
        }
        self.read_recipe(&oid)
    }

    /// Reads (and checks) an object's recipe: the local copy when there is a good one,
    /// else the remote's, bounded.
    fn read_recipe(&self, oid: &Oid) -> Result<Option<Recipe>, StorageError> {
        let kept = format!("recipes/{}", oid.hex());
        self.read_kept(&recipe_key(oid), &kept, RECIPE_MAX_BYTES, |what, bytes| {
            Recipe::decode(what, bytes, oid)
        })
    }

    /// A small remote key's bytes (an index, a recipe), at most `max` of them.
    fn read_small(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let temp_error = |source| StorageError::Io {
            storage: "temp".into(),
            key: key.into(),
            source,
        };
        let mut temp = tempfile::tempfile().map_err(temp_error)?;
        let got = with_retries(|| {
            io::Seek::rewind(&mut temp)
                .and_then(|_| temp.set_len(0))
                .map_err(temp_error)?;
            self.inner.copy_into(key, &mut temp, max)
        })?;
        if got.is_none() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        io::Seek::rewind(&mut temp)
            .and_then(|_| temp.read_to_end(&mut bytes))
            .map_err(temp_error)?;
        Ok(Some(bytes))
    }

    /// Writes a chunked object into `out` chunk by chunk, each chunk hashed (the caller
    /// hashes the whole). For a plain read; `czc pull` assembles in parallel and resumes.
    fn assemble_into(
        &self,
        key: &str,
        recipe: &Recipe,
        out: &mut dyn Write,
    ) -> Result<u64, StorageError> {
        let map = self.map()?;
        for (chunk, range) in recipe.placed() {
            let Some(at) = map
                .locate(&chunk)
                .or(self.look_up(|map| map.locate(&chunk))?)
            else {
                return Err(self.bad_data(key, format!("its chunk {chunk} is in no pack")));
            };
            if at.len != range.end - range.start {
                return Err(self.bad_data(
                    key,
                    format!("its chunk {chunk} has the wrong length in {}", at.pack),
                ));
            }
            let mut checked = fetch::HashingWriter::new(&mut *out);
            self.inner
                .copy_range_into(&at.pack, at.offset..at.offset + at.len, &mut checked)?
                .ok_or_else(|| self.bad_data(key, format!("{} is gone", at.pack)))?;
            if checked.finish() != chunk {
                return Err(self.bad_data(
                    key,
                    format!("its chunk {chunk} arrived corrupt from {}", at.pack),
                ));
            }
        }
        Ok(recipe.size)
    }

    /// Where an object is packed (listing `packs/` again if the map is old): for a
    /// server answering `/objects/` from packs.
    pub fn locate_object(&self, oid: &Oid) -> Result<Option<PackedAt>, StorageError> {
        self.packed_object(&oid.object_key())
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
            None => match self.chunked_object(key)? {
                Some(recipe) if recipe.size > max => Err(too_long(self, key, max)),
                Some(recipe) => {
                    let mut out = io::BufWriter::with_capacity(1 << 20, out);
                    let size = self.assemble_into(key, &recipe, &mut out)?;
                    out.flush()
                        .map_err(|source| local_error(Path::new(key), source))?;
                    Ok(Some(size))
                }
                None => Ok(None),
            },
        }
    }

    /// A big loose object (one an older version pushed, or a remote with `packs =
    /// false`) is read in ranges of [`fetch::RANGE_MAX`], as many at once as the pool
    /// has threads, each written at its offset; packed and chunked objects go their
    /// own (already parallel) ways.
    fn copy_sized_into(
        &self,
        key: &str,
        out: &mut File,
        size: u64,
    ) -> Result<Option<u64>, StorageError> {
        if size < 2 * fetch::RANGE_MAX || object_key_oid(key).is_none() {
            return self.copy_into(key, out, size);
        }
        // One HEAD, so a key longer than the caller knows it is never read in parts
        // that would hide it; any disagreement goes the plain way, which reports it.
        match self.inner.size(key)? {
            Some(found) if found == size => {}
            _ => return self.copy_into(key, out, size),
        }
        use rayon::prelude::*;
        let parts: Vec<std::ops::Range<u64>> = (0..size)
            .step_by(fetch::RANGE_MAX as usize)
            .map(|start| start..(start + fetch::RANGE_MAX).min(size))
            .collect();
        let file: &File = out;
        let copied: Result<Vec<Option<u64>>, StorageError> = parts
            .par_iter()
            .map(|part| {
                with_retries(|| {
                    let mut at = fetch::WriterAt {
                        file,
                        pos: part.start,
                    };
                    self.inner.copy_range_into(key, part.clone(), &mut at)
                })
            })
            .collect();
        match copied?
            .iter()
            .try_fold(0u64, |sum, part| part.map(|n| sum + n))
        {
            Some(total) => Ok(Some(total)),
            // Gone between the HEAD and a read (a gc): as if it never was.
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
        Ok(self.inner.exists(key)?
            || self.packed_object(key)?.is_some()
            || object_key_oid(key)
                .map(|oid| self.look_up(|map| map.recipes.contains(&oid).then_some(())))
                .transpose()?
                .flatten()
                .is_some())
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        if let Some(size) = self.inner.size(key)? {
            return Ok(Some(size));
        }
        if let Some(at) = self.packed_object(key)? {
            return Ok(Some(at.len));
        }
        Ok(self.chunked_object(key)?.map(|recipe| recipe.size))
    }

    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.inner.local_file(key)
    }

    fn describe_key(&self, key: &str) -> Result<Option<KeyInfo>, StorageError> {
        if let Some(info) = self.inner.describe_key(key)? {
            return Ok(Some(info));
        }
        let size = match self.packed_object(key)? {
            Some(at) => Some(at.len),
            None => self.chunked_object(key)?.map(|recipe| recipe.size),
        };
        Ok(size.map(|size| KeyInfo {
            size: Some(size),
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
                    .chain(&map.recipes)
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
            .map(|key| {
                object_key_oid(key)
                    .is_some_and(|oid| map.objects.contains_key(&oid) || map.recipes.contains(&oid))
            })
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

    fn recipe(&self, oid: &Oid) -> Result<Option<Recipe>, StorageError> {
        if !self.map()?.recipes.contains(oid) {
            return Ok(None);
        }
        self.read_recipe(oid)
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

/// A pack being built in memory (at most [`PACK_TARGET`] plus one object): objects
/// appended, hashed as they go, then sent in one request.
struct PackBuilder {
    bytes: Vec<u8>,
    hasher: blake3::Hasher,
    entries: HashMap<Oid, PackEntry>,
}

impl PackBuilder {
    fn new() -> PackBuilder {
        let mut builder = PackBuilder {
            bytes: Vec::with_capacity(PACK_TARGET as usize + (1 << 20)),
            hasher: blake3::Hasher::new(),
            entries: HashMap::new(),
        };
        builder.write(PACK_MAGIC);
        builder
    }

    fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends an object (once: a repeat is already in).
    fn add(&mut self, oid: Oid, bytes: &[u8]) {
        if self.entries.contains_key(&oid) {
            return;
        }
        let offset = self.offset();
        self.write(bytes);
        self.entries.insert(
            oid,
            PackEntry {
                oid,
                offset,
                len: bytes.len() as u64,
            },
        );
    }

    /// Uploads the pack and its index (nothing if it holds no object).
    fn upload<S: WriteStorage>(self, packed: &Packed<S>) -> Result<(), StorageError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<PackEntry> = self.entries.into_values().collect();
        entries.sort_by_key(|entry| entry.oid);
        let index = PackIndex {
            pack: Oid::from_hash(self.hasher.finalize()),
            pack_size: self.bytes.len() as u64,
            entries,
        };
        packed.upload_pack(bytes::Bytes::from(self.bytes), &index)?;
        let mut guard = packed.map.lock().unwrap();
        // Our own pack joins a map already listed (when is unchanged); with no map
        // yet, the first read lists and finds it.
        if let Some((map, _)) = guard.as_mut() {
            Arc::make_mut(map).add(Arc::new(index));
        }
        Ok(())
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
        let mut builder = PackBuilder::new();
        let mut results: Vec<Option<Result<(), StorageError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut bytes_in = 0u64;
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
            builder.add(oid, &buf);
        }
        let uploaded = builder.upload(self);
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

    /// Pushes a big object as chunks and a recipe: only the chunks the remote lacks
    /// are uploaded (in packs, several at once), the recipe last, so a recipe never
    /// names a chunk that is not there. A push killed midway resumes: the packs that
    /// made it hold their chunks, and the next push finds them.
    fn push_chunked(
        &self,
        key: &str,
        src: &Path,
        progress: &dyn Progress,
    ) -> Result<(), StorageError> {
        use std::sync::mpsc;
        let Some(oid) = object_key_oid(key) else {
            return Err(StorageError::BadKey {
                storage: self.describe(),
                key: key.into(),
                reason: "only objects are chunked",
            });
        };
        let local = |source| local_error(src, source);
        let there = self.reload()?;
        let dir = self.index_dir.clone().unwrap_or_else(std::env::temp_dir);
        let claimed: Mutex<HashSet<Oid>> = Mutex::new(HashSet::new());
        let file = File::open(src).map_err(local)?;
        let len = file.metadata().map_err(local)?.len();
        let (send, receive) = mpsc::sync_channel::<ChunkSpan>(4 * CHUNK_WORKERS);
        // Shared by the workers and dropped with the last of them, so the cutter's
        // send fails (and it stops) if every worker has stopped on an error.
        let receive = Arc::new(Mutex::new(receive));
        let (whole, chunks) = std::thread::scope(|scope| {
            // The whole file's hash (it must be the oid) beside the chunking.
            let whole = scope.spawn(|| {
                let mut hasher = blake3::Hasher::new();
                hasher.update_mmap_rayon(src)?;
                Ok::<Oid, io::Error>(Oid::from_hash(hasher.finalize()))
            });
            // Chunks the remote lacks are read again (from the page cache), checked
            // against the hash the cutter gave them, and packed by the workers, each
            // filling its own pack and uploading it when full.
            let workers: Vec<_> = (0..CHUNK_WORKERS)
                .map(|_| {
                    let receive = receive.clone();
                    let file = &file;
                    scope.spawn(move || -> Result<(), StorageError> {
                        use std::os::unix::fs::FileExt;
                        let mut builder: Option<PackBuilder> = None;
                        let mut data = Vec::new();
                        loop {
                            let next = receive.lock().unwrap().recv();
                            let Ok(span) = next else { break };
                            data.resize(span.len as usize, 0);
                            file.read_exact_at(&mut data, span.offset).map_err(local)?;
                            if Oid::of_bytes(&data) != span.oid {
                                return Err(local(io::Error::other(format!(
                                    "changed while it was pushed (bytes at {} no longer hash to {})",
                                    span.offset, span.oid
                                ))));
                            }
                            let pack = match builder.as_mut() {
                                Some(pack) => pack,
                                None => builder.insert(PackBuilder::new()),
                            };
                            pack.add(span.oid, &data);
                            if pack.offset() >= PACK_TARGET {
                                let full = builder.take().expect("a pack");
                                let bytes = full.offset();
                                full.upload(self)?;
                                progress.bytes_done(bytes);
                            }
                        }
                        if let Some(last) = builder {
                            let bytes = last.offset();
                            last.upload(self)?;
                            progress.bytes_done(bytes);
                        }
                        Ok(())
                    })
                })
                .collect();
            drop(receive); // the workers hold it now
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let mut chunks: Vec<(Oid, u64)> = Vec::new();
            let cut = chunker::chunk_file(&file, len, threads, |span| {
                chunks.push((span.oid, span.len));
                let wanted = !there.objects.contains_key(&span.oid)
                    && claimed.lock().unwrap().insert(span.oid);
                if wanted {
                    send.send(span).map_err(|_| ())?; // a worker failed: reported below
                }
                Ok::<(), ()>(())
            });
            drop(send);
            let mut failed = None;
            for worker in workers {
                if let Err(err) = worker.join().expect("a chunk worker panicked") {
                    failed = failed.or(Some(err));
                }
            }
            let whole = whole.join().expect("the hasher panicked");
            if let Some(err) = failed {
                return Err(err);
            }
            match cut {
                Err(chunker::ChunkingError::Read(err)) => return Err(local(err)),
                Err(chunker::ChunkingError::Emit(())) => {
                    return Err(local(io::Error::other("the chunk workers stopped")))
                }
                Ok(()) => {}
            }
            Ok((whole.map_err(local)?, chunks))
        })?;
        crate::storage::check_object_bytes(key, &whole, src).map_err(local)?;
        // Chunks found in old packs restart those packs' grace periods, as objects
        // found there do: a gc elsewhere must not drop what this recipe will name.
        let found: Vec<String> = chunks
            .iter()
            .filter(|(chunk, _)| there.objects.contains_key(chunk))
            .map(|(chunk, _)| chunk.object_key())
            .collect();
        if !found.is_empty() {
            self.refresh(&found)?;
        }
        let recipe = Recipe {
            oid,
            size: chunks.iter().map(|(_, len)| len).sum(),
            chunks,
        };
        let bytes = recipe.encode();
        let kept = tempfile::NamedTempFile::new_in(&dir)
            .and_then(|mut temp| temp.write_all(&bytes).map(|()| temp))
            .map_err(|source| local_error(&dir, source))?;
        with_retries(|| self.inner.put(&recipe_key(&oid), kept.path()))?;
        if let Some((map, _)) = self.map.lock().unwrap().as_mut() {
            Arc::make_mut(map).recipes.insert(oid);
        }
        progress.files_done(1);
        Ok(())
    }

    /// Uploads a built pack, then its index (and keeps the index locally).
    pub(crate) fn upload_pack(
        &self,
        pack: bytes::Bytes,
        index: &PackIndex,
    ) -> Result<(), StorageError> {
        let pack_key = pack_key(&index.pack);
        // Unconditional and in one request: a pack is named by the hash of its bytes, so
        // a pack already there holds the same bytes; one request (not a multipart upload
        // of parts, then a completion that makes the store copy them again) per pack.
        if let Err(err) = with_retries(|| self.inner.put_bytes(&pack_key, pack.clone())) {
            // A retried write that had in fact landed may be refused by some servers. A
            // pack is named by its bytes: one of the right size there now is this pack
            // (and every read of it is hashed anyway).
            match self.inner.size(&pack_key) {
                Ok(Some(size)) if size == index.pack_size => {}
                _ => return Err(err),
            }
        }
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

    /// Whether a pack is past `grace`, asked again right before it is changed: a push
    /// that came to need its objects meanwhile has marked it seen.
    fn pack_is_old(&self, pack: &Oid, grace: Duration) -> Result<bool, StorageError> {
        Ok(self
            .pack_age_start(pack)?
            .and_then(|time| time.elapsed().ok())
            .is_some_and(|age| age >= grace))
    }

    /// Reads a pack's `keep` entries (each hashed) into a new pack and uploads it.
    fn rewrite_pack(&self, index: &PackIndex, keep: &[PackEntry]) -> Result<(), StorageError> {
        let mut builder = PackBuilder::new();
        let key = pack_key(&index.pack);
        for entry in keep {
            let mut bytes = Vec::with_capacity(entry.len as usize);
            with_retries(|| {
                bytes.clear();
                self.inner
                    .copy_range_into(&key, entry.offset..entry.offset + entry.len, &mut bytes)
            })?
            .ok_or_else(|| self.bad_data(&key, "gone while being repacked".into()))?;
            if Oid::of_bytes(&bytes) != entry.oid {
                // Never carry damaged bytes into a new pack; the old one stays.
                return Err(self.bad_data(
                    &key,
                    format!("holds corrupt bytes for {}; not repacked", entry.oid),
                ));
            }
            builder.add(entry.oid, &bytes);
        }
        builder.upload(self)
    }
}

/// What `gc --remote` did to packs and recipes.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackGcReport {
    /// Objects dropped: packed objects no longer in any pack, chunked objects whose
    /// recipe was deleted.
    pub deleted: Vec<Oid>,
    pub freed: u64,
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
    /// Dead but inside the grace period (packs and recipes).
    pub kept_young: usize,
}

/// A pack is rewritten when less than this share of its bytes is still live.
const REPACK_BELOW_LIVE: f64 = 0.5;

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

    fn put_bytes(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        self.inner.put_bytes(key, bytes)
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
        let chunked: Vec<Oid> = keys
            .iter()
            .filter_map(|key| object_key_oid(key))
            .filter(|oid| map.recipes.contains(oid))
            .collect();
        let loose: Vec<String> = keys
            .iter()
            .filter(|key| {
                object_key_oid(key).is_none_or(|oid| {
                    !map.objects.contains_key(&oid) && !map.recipes.contains(&oid)
                })
            })
            .cloned()
            .collect();
        self.inner.refresh(&loose)?;
        // A recipe found wanted again is written again (same bytes), so its grace
        // period, and with it its chunks', counts from now.
        for oid in chunked {
            let key = recipe_key(&oid);
            let written = match self.inner.listed_time(&key) {
                Some(time) => Some(time),
                None => self.inner.last_modified(&key)?,
            };
            let old = written
                .and_then(|time| time.elapsed().ok())
                .is_some_and(|age| age >= REFRESH_AFTER);
            if !old {
                continue;
            }
            if let Some(recipe) = self.read_recipe(&oid)? {
                let mut temp = tempfile::NamedTempFile::new()
                    .map_err(|source| local_error(Path::new("temp"), source))?;
                temp.write_all(&recipe.encode())
                    .map_err(|source| local_error(temp.path(), source))?;
                with_retries(|| self.inner.put(&key, temp.path()))?;
            }
        }
        for pack in packs {
            // From the listing that loaded the map when it says (one round trip for all
            // packs), else asked.
            let started = match self.inner.listed_time(&pack_key(&pack)) {
                Some(written) => {
                    let seen = self.inner.listed_time(&seen_key(&pack));
                    Some(written.max(seen.unwrap_or(written)))
                }
                None => self.pack_age_start(&pack)?,
            };
            let old = started
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
        let mut prefixes = prefixes.to_vec();
        if self.writes == PackWrites::Packs {
            // Packs are the big uploads here: a killed push's multipart pieces are there.
            prefixes.push("packs/".into());
        }
        self.inner.sweep_stale_uploads(&prefixes, older_than)
    }

    fn gc_packs(
        &self,
        live: &(dyn Fn(&Oid) -> bool + Sync),
        grace: Duration,
        dry_run: bool,
    ) -> Result<PackGcReport, StorageError> {
        let mut report = PackGcReport::default();
        let map = self.reload()?;
        let old = |time: Option<SystemTime>| {
            time.and_then(|time| time.elapsed().ok())
                .is_some_and(|age| age >= grace)
        };
        // Recipes: a dead one past grace goes (its chunks die with it unless another
        // recipe that stays names them); every recipe that stays keeps its chunks.
        let mut live_chunks: HashSet<Oid> = HashSet::new();
        let mut recipes: Vec<Oid> = map.recipes.iter().copied().collect();
        recipes.sort();
        for object in recipes {
            let key = recipe_key(&object);
            if !live(&object) && old(self.inner.last_modified(&key)?) {
                let size = self.read_recipe(&object).ok().flatten().map(|r| r.size);
                if !dry_run {
                    self.inner.delete(&key)?;
                    if let Some(dir) = &self.index_dir {
                        let _ = std::fs::remove_file(dir.join("recipes").join(object.hex()));
                    }
                }
                report.deleted.push(object);
                report.freed += size.unwrap_or(0);
                continue;
            }
            if !live(&object) {
                report.kept_young += 1;
            }
            if let Some(recipe) = self.read_recipe(&object)? {
                live_chunks.extend(recipe.chunks.iter().map(|(chunk, _)| *chunk));
            }
        }
        // Packs: past grace, all dead -> deleted; mostly dead -> rewritten.
        let mut packs: Vec<Arc<PackIndex>> = map.indexes.values().cloned().collect();
        packs.sort_by_key(|index| index.pack);
        for index in packs {
            let wanted = |oid: &Oid| live(oid) || live_chunks.contains(oid);
            let keep: Vec<PackEntry> = index
                .entries
                .iter()
                .filter(|entry| wanted(&entry.oid))
                .copied()
                .collect();
            let live_bytes: u64 = keep.iter().map(|entry| entry.len).sum();
            let all_bytes: u64 = index.entries.iter().map(|entry| entry.len).sum();
            let rewrite =
                !keep.is_empty() && (live_bytes as f64) < REPACK_BELOW_LIVE * all_bytes as f64;
            if !keep.is_empty() && !rewrite {
                continue;
            }
            if !self.pack_is_old(&index.pack, grace)? {
                report.kept_young += 1;
                continue;
            }
            // Dropped: entries not live that no other pack also holds.
            let dropped: Vec<&PackEntry> = index
                .entries
                .iter()
                .filter(|entry| !wanted(&entry.oid))
                .filter(|entry| {
                    map.objects
                        .get(&entry.oid)
                        .is_none_or(|(pack, _, _)| *pack == index.pack)
                })
                .collect();
            if !dry_run {
                if rewrite {
                    // The new pack is up before the old goes: a gc killed in between
                    // leaves the objects twice, never nowhere.
                    self.rewrite_pack(&index, &keep)?;
                }
                if !self.pack_is_old(&index.pack, grace)? {
                    report.kept_young += 1;
                    continue;
                }
                self.delete_pack(&index.pack)?;
            }
            if rewrite {
                report.packs_rewritten += 1;
            } else {
                report.packs_deleted += 1;
            }
            report.deleted.extend(dropped.iter().map(|entry| entry.oid));
            report.freed += dropped.iter().map(|entry| entry.len).sum::<u64>();
        }
        // What a killed gc or push left: packs without an index, past grace.
        let listed = with_retries(|| self.inner.list("packs/"))?;
        let indexed: HashSet<Oid> = listed
            .iter()
            .filter_map(|key| pack_of_key(key, "idx"))
            .collect();
        for pack in listed.iter().filter_map(|key| pack_of_key(key, "pack")) {
            if indexed.contains(&pack) || !self.pack_is_old(&pack, grace)? {
                continue;
            }
            if !dry_run {
                self.inner.delete(&pack_key(&pack))?;
                let _ = self.inner.delete(&seen_key(&pack));
            }
            report.packs_deleted += 1;
        }
        if !dry_run {
            *self.map.lock().unwrap() = None;
        }
        Ok(report)
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
        let chunked = |index: usize| {
            object_key_oid(&items[index].0).is_some()
                && sizes[index] >= CHUNKED_MIN
                && sizes[index] != u64::MAX
        };
        let loose: Vec<usize> = (0..items.len())
            .filter(|i| !packable(*i) && !chunked(*i))
            .collect();
        let loose_items: Vec<(String, PathBuf)> = loose.iter().map(|i| items[*i].clone()).collect();
        // Each pack is built in memory: at most PACKS_AT_ONCE of them, however many
        // threads the caller's pool has.
        let build_all = || -> Vec<Vec<Result<(), StorageError>>> {
            groups
                .par_iter()
                .map(|group| {
                    let members: Vec<&(String, PathBuf)> =
                        group.iter().map(|i| &items[*i]).collect();
                    self.push_pack(&members, progress)
                })
                .collect()
        };
        let packed = if rayon::current_num_threads() > PACKS_AT_ONCE {
            match rayon::ThreadPoolBuilder::new()
                .num_threads(PACKS_AT_ONCE)
                .build()
            {
                Ok(pool) => pool.install(build_all),
                Err(_) => build_all(),
            }
        } else {
            build_all()
        };
        // Allocated only now: the packs in memory are the peak.
        let mut results: Vec<Option<Result<(), StorageError>>> =
            (0..items.len()).map(|_| None).collect();
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
        // One at a time: each fills the link with its own parallel pack uploads.
        for index in (0..items.len()).filter(|i| chunked(*i)) {
            let (key, path) = &items[index];
            results[index] = Some(self.push_chunked(key, path, progress));
        }
        results
            .into_iter()
            .map(|r| r.expect("one result per item"))
            .collect()
    }
}
