//! Reading many packed objects in a few requests: objects of one pack that lie close
//! together are read as one range and split on the way in, each object hashed into its
//! own staging file. Whatever fails here (a broken read, bytes that do not hash to
//! their oid) is left to the caller's one-object path, which reports it properly.

use std::io::{self, Write};
use std::path::Path;

use rayon::prelude::*;

use super::recipe::Recipe;
use crate::cache::{LocalCache, Staged};
use crate::oid::Oid;
use crate::storage::{PackedAt, ReadStorage};

/// Objects closer than this are read in one range (the gap is read and dropped).
pub const GAP_MAX: u64 = 256 << 10;
/// No single ranged read asks for more than this.
pub const RANGE_MAX: u64 = 16 << 20;

/// One ranged read: `start..end` of `pack`, and the objects in it (position in the
/// request, offset from `start`, length, oid).
#[derive(Debug, PartialEq, Eq)]
struct RangeRead {
    pack: String,
    start: u64,
    end: u64,
    pieces: Vec<(usize, u64, u64, Oid)>,
}

/// Groups the wanted objects into ranged reads, neighbours coalesced.
fn plan(wanted: &[(Oid, PackedAt)]) -> Vec<RangeRead> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&wanted[*a].1, &wanted[*b].1);
        (&a.pack, a.offset).cmp(&(&b.pack, b.offset))
    });
    let mut reads: Vec<RangeRead> = Vec::new();
    for index in order {
        let (oid, at) = &wanted[index];
        let end = at.offset + at.len;
        match reads.last_mut() {
            Some(read)
                if read.pack == at.pack
                    && at.offset >= read.end
                    && at.offset - read.end <= GAP_MAX
                    && end - read.start <= RANGE_MAX =>
            {
                read.pieces
                    .push((index, at.offset - read.start, at.len, *oid));
                read.end = end;
            }
            _ => reads.push(RangeRead {
                pack: at.pack.clone(),
                start: at.offset,
                end,
                pieces: vec![(index, 0, at.len, *oid)],
            }),
        }
    }
    reads
}

/// Downloads packed objects into the cache's staging: one result per wanted object,
/// `None` for those the caller must fetch one by one. Reads run in parallel on the
/// current rayon pool.
pub fn fetch_packed(
    cache: &LocalCache,
    storage: &dyn ReadStorage,
    wanted: &[(Oid, PackedAt)],
) -> Vec<Option<Staged>> {
    let reads = plan(wanted);
    let done: Vec<Vec<(usize, Staged)>> = reads
        .par_iter()
        .map(|read| {
            let mut splitter = Splitter {
                cache,
                pieces: &read.pieces,
                pos: 0,
                next: 0,
                current: None,
                staged: Vec::new(),
            };
            let copied = crate::storage::with_retries(|| {
                splitter.restart();
                storage.copy_range_into(&read.pack, read.start..read.end, &mut splitter)
            });
            match copied {
                Ok(Some(_)) => splitter.staged,
                _ => Vec::new(),
            }
        })
        .collect();
    let mut out: Vec<Option<Staged>> = (0..wanted.len()).map(|_| None).collect();
    for (index, staged) in done.into_iter().flatten() {
        out[index] = Some(staged);
    }
    out
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The oid of everything written.
    pub(crate) fn finish(self) -> Oid {
        Oid::from_hash(self.hasher.finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Piece {
    temp: io::BufWriter<tempfile::NamedTempFile>,
    hasher: blake3::Hasher,
    left: u64,
    size: u64,
}

/// A writer that cuts a ranged read into its objects.
struct Splitter<'a> {
    cache: &'a LocalCache,
    pieces: &'a [(usize, u64, u64, Oid)],
    pos: u64,
    next: usize,
    current: Option<Piece>,
    staged: Vec<(usize, Staged)>,
}

impl Splitter<'_> {
    /// Back to the start, for a retried read.
    fn restart(&mut self) {
        self.pos = 0;
        self.next = 0;
        self.current = None;
        self.staged.clear();
    }

    fn open(&mut self) -> io::Result<()> {
        let (_, _, len, _) = self.pieces[self.next];
        let temp = self.cache.new_temp().map_err(io::Error::other)?;
        self.current = Some(Piece {
            temp: io::BufWriter::with_capacity(256 << 10, temp),
            hasher: blake3::Hasher::new(),
            left: len,
            size: len,
        });
        if len == 0 {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let piece = self.current.take().expect("a piece is open");
        let (index, _, _, wanted) = self.pieces[self.next];
        self.next += 1;
        let oid = Oid::from_hash(piece.hasher.finalize());
        let temp = piece.temp.into_inner().map_err(|err| err.into_error())?;
        if oid == wanted {
            self.cache.report(piece.size);
            self.staged
                .push((index, Staged::new(temp.into_temp_path(), oid, piece.size)));
        }
        // A mismatch is dropped here: the one-object path reads it again and says so.
        Ok(())
    }
}

impl Write for Splitter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.is_none() {
                let Some(&(_, start, _, _)) = self.pieces.get(self.next) else {
                    return Ok(buf.len()); // past the last piece
                };
                if self.pos < start {
                    let skip = (start - self.pos).min(rest.len() as u64) as usize;
                    self.pos += skip as u64;
                    rest = &rest[skip..];
                    continue;
                }
                self.open()?;
                continue;
            }
            let piece = self.current.as_mut().expect("a piece is open");
            let take = piece.left.min(rest.len() as u64) as usize;
            piece.hasher.update(&rest[..take]);
            piece.temp.write_all(&rest[..take])?;
            piece.left -= take as u64;
            self.pos += take as u64;
            rest = &rest[take..];
            if piece.left == 0 {
                self.finish()?;
            }
        }
        // Objects of length 0 right at the end of what arrived.
        while self.current.is_none()
            && self
                .pieces
                .get(self.next)
                .is_some_and(|&(_, start, len, _)| len == 0 && start <= self.pos)
        {
            self.open()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a chunked object could not be assembled (the caller reports it and tries the
/// next remote).
#[derive(Debug, thiserror::Error)]
pub enum ChunkedError {
    #[error("its chunk {0} is in no pack of the remote")]
    MissingChunk(Oid),
    #[error("chunk {chunk} arrived corrupt")]
    CorruptChunk { chunk: Oid },
    #[error("the assembled object hashes to {found}")]
    WrongObject { found: Oid },
    #[error("{0}")]
    Storage(#[source] crate::storage::StorageError),
    #[error("{path}: {source}")]
    Local {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Downloads a chunked object into the cache's staging: every chunk it lacks read by
/// coalesced ranges in parallel, written at its place and hashed, then the whole file
/// hashed against the oid before anything sees it. The file grows in
/// `<cache>/partial/<oid>`, so a pull killed midway resumes: the chunks already there
/// (rehashed, not trusted) are not read again.
pub fn fetch_chunked(
    cache: &LocalCache,
    storage: &dyn ReadStorage,
    recipe: &Recipe,
) -> Result<Staged, ChunkedError> {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let placed = recipe.placed();
    let chunk_oids: Vec<Oid> = placed.iter().map(|(oid, _)| *oid).collect();
    let locations = storage
        .pack_locations(&chunk_oids)
        .map_err(ChunkedError::Storage)?;
    let mut wanted: Vec<(Oid, PackedAt)> = Vec::with_capacity(placed.len());
    for ((chunk, range), at) in placed.iter().zip(locations) {
        match at {
            Some(at) if at.len == range.end - range.start => wanted.push((*chunk, at)),
            _ => return Err(ChunkedError::MissingChunk(*chunk)),
        }
    }
    let dir = cache.root().join("partial");
    let local = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChunkedError::Local { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(local(&dir))?;
    let path = dir.join(recipe.oid.hex());
    // One process grows a partial file at a time; another pulling the same object
    // meanwhile waits for nobody and downloads into a file of its own.
    let lock_path = dir.join(format!("{}.lock", recipe.oid.hex()));
    let lock = crate::fsutil::FileLock::try_acquire(&lock_path, crate::fsutil::LockMode::Exclusive)
        .map_err(local(&lock_path))?;
    // `temp`: a private temp file (deleted if this fails); none: the partial file,
    // which stays for the next try.
    let (file, path, temp, resumed) = match &lock {
        Some(_) => {
            let resumed = std::fs::metadata(&path).is_ok_and(|m| m.len() == recipe.size);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(local(&path))?;
            (file, path, None, resumed)
        }
        None => {
            let temp = cache.new_temp().map_err(|err| ChunkedError::Local {
                path: dir.clone(),
                source: io::Error::other(err.to_string()),
            })?;
            let (file, temp_path) = temp.into_parts();
            (file, temp_path.to_path_buf(), Some(temp_path), false)
        }
    };
    file.set_len(recipe.size).map_err(local(&path))?;
    // What an earlier, killed pull left: chunks whose bytes already hash right.
    let have: Vec<bool> = if resumed {
        placed
            .par_iter()
            .map(|(chunk, range)| {
                let mut bytes = vec![0; (range.end - range.start) as usize];
                file.read_exact_at(&mut bytes, range.start).is_ok()
                    && Oid::of_bytes(&bytes) == *chunk
            })
            .collect()
    } else {
        vec![false; placed.len()]
    };
    let reused: u64 = placed
        .iter()
        .zip(&have)
        .filter(|(_, have)| **have)
        .map(|((_, range), _)| range.end - range.start)
        .sum();
    cache.report(reused);
    // Each chunk once (a chunk repeated in the object is written at every place).
    let mut places: std::collections::HashMap<Oid, Vec<u64>> = std::collections::HashMap::new();
    let mut to_read: Vec<(Oid, PackedAt)> = Vec::new();
    for (((chunk, range), at), have) in placed.iter().zip(wanted).zip(&have) {
        if *have {
            continue;
        }
        let spots = places.entry(*chunk).or_default();
        if spots.is_empty() {
            to_read.push(at);
        }
        spots.push(range.start);
    }
    let reads = plan(&to_read);
    let failures: Vec<ChunkedError> = reads
        .par_iter()
        .filter_map(|read| {
            let mut placer = Placer {
                file: &file,
                pieces: &read.pieces,
                places: &places,
                pos: 0,
                next: 0,
                hasher: None,
                buffer: Vec::new(),
                bad: None,
            };
            let copied = crate::storage::with_retries(|| {
                placer.restart();
                storage.copy_range_into(&read.pack, read.start..read.end, &mut placer)
            });
            match copied {
                Err(err) => Some(ChunkedError::Storage(err)),
                Ok(None) => Some(ChunkedError::MissingChunk(read.pieces[0].3)),
                Ok(Some(_)) => match placer.bad {
                    Some(chunk) => Some(ChunkedError::CorruptChunk { chunk }),
                    None if placer.next < read.pieces.len() => {
                        Some(ChunkedError::MissingChunk(read.pieces[placer.next].3))
                    }
                    None => {
                        cache.report(read.pieces.iter().map(|p| p.2).sum());
                        None
                    }
                },
            }
        })
        .collect();
    if let Some(failure) = failures.into_iter().next() {
        // The good chunks stay in the partial file for the next try.
        return Err(failure);
    }
    // Not fsynced, like every fetched object: a crash loses a copy the remote still
    // holds, and a partial file is rehashed chunk by chunk before it is trusted.
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(&path).map_err(local(&path))?;
    let found = Oid::from_hash(hasher.finalize());
    if found != recipe.oid {
        let _ = std::fs::remove_file(&path);
        return Err(ChunkedError::WrongObject { found });
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o444))
        .map_err(local(&path))?;
    let temp = match temp {
        Some(temp) => temp,
        None => tempfile::TempPath::try_from_path(&path).map_err(local(&path))?,
    };
    let staged = Staged::new(temp, recipe.oid, recipe.size);
    if lock.is_some() {
        let _ = std::fs::remove_file(&lock_path);
    }
    Ok(staged)
}

/// A writer at a moving offset of a file shared by several writers (`pwrite`).
pub(crate) struct WriterAt<'a> {
    pub file: &'a std::fs::File,
    pub pos: u64,
}

impl Write for WriterAt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that places the chunks of a ranged read at their spots in the object's
/// file, hashing each; a chunk that does not hash right is noted, not placed twice.
struct Placer<'a> {
    file: &'a std::fs::File,
    pieces: &'a [(usize, u64, u64, Oid)],
    places: &'a std::collections::HashMap<Oid, Vec<u64>>,
    pos: u64,
    next: usize,
    /// The open piece: its hasher, and bytes not yet written.
    hasher: Option<blake3::Hasher>,
    buffer: Vec<u8>,
    bad: Option<Oid>,
}

impl Placer<'_> {
    fn restart(&mut self) {
        self.pos = 0;
        self.next = 0;
        self.hasher = None;
        self.buffer.clear();
        self.bad = None;
    }

    /// A piece is complete in `buffer`: check it, then write it at each place.
    fn finish(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (_, _, _, chunk) = self.pieces[self.next];
        self.next += 1;
        let found = Oid::from_hash(self.hasher.take().expect("open").finalize());
        if found != chunk {
            self.bad = self.bad.or(Some(chunk));
        } else {
            for spot in self.places.get(&chunk).into_iter().flatten() {
                self.file.write_all_at(&self.buffer, *spot)?;
            }
        }
        self.buffer.clear();
        Ok(())
    }
}

impl Write for Placer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let Some(&(_, start, len, _)) = self.pieces.get(self.next) else {
                return Ok(buf.len()); // past the last piece
            };
            if self.hasher.is_none() {
                if self.pos < start {
                    let skip = (start - self.pos).min(rest.len() as u64) as usize;
                    self.pos += skip as u64;
                    rest = &rest[skip..];
                    continue;
                }
                self.hasher = Some(blake3::Hasher::new());
            }
            let left = len - self.buffer.len() as u64;
            let take = left.min(rest.len() as u64) as usize;
            self.hasher.as_mut().expect("open").update(&rest[..take]);
            self.buffer.extend_from_slice(&rest[..take]);
            self.pos += take as u64;
            rest = &rest[take..];
            if self.buffer.len() as u64 == len {
                self.finish()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: &str, offset: u64, len: u64) -> (Oid, PackedAt) {
        (
            Oid::of_bytes(&offset.to_le_bytes()),
            PackedAt {
                pack: pack.into(),
                offset,
                len,
            },
        )
    }

    #[test]
    fn neighbours_are_read_together_and_far_ones_apart() {
        let wanted = vec![
            at("p1", 100, 10),
            at("p2", 8, 10),
            at("p1", 8, 50),
            at("p1", 100 + GAP_MAX + 100, 5),
            at("p1", 60, 40),
        ];
        let reads = plan(&wanted);
        let spans: Vec<(&str, u64, u64, usize)> = reads
            .iter()
            .map(|r| (r.pack.as_str(), r.start, r.end, r.pieces.len()))
            .collect();
        assert_eq!(
            spans,
            [
                ("p1", 8, 110, 3),
                ("p1", 100 + GAP_MAX + 100, 100 + GAP_MAX + 105, 1),
                ("p2", 8, 18, 1)
            ]
        );
        // Pieces keep their request positions and offsets within the read.
        assert_eq!(reads[0].pieces[1].0, 4);
        assert_eq!(reads[0].pieces[1].1, 52);
    }

    #[test]
    fn a_read_never_grows_past_the_range_limit() {
        let wanted: Vec<(Oid, PackedAt)> = (0..10)
            .map(|i| at("p", 8 + i * (4 << 20), 4 << 20))
            .collect();
        let reads = plan(&wanted);
        assert!(reads.iter().all(|r| r.end - r.start <= RANGE_MAX));
        assert_eq!(reads.len(), 3);
    }
}
