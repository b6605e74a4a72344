//! Reading many packed objects in a few requests: objects of one pack that lie close
//! together are read as one range and split on the way in, each object hashed into its
//! own staging file. Whatever fails here (a broken read, bytes that do not hash to
//! their oid) is left to the caller's one-object path, which reports it properly.

use std::io::{self, Write};

use rayon::prelude::*;

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
