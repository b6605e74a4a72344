//! FastCDC on every core: the same cut points as one sequential pass, found in parallel.
//!
//! A file is cut in segments of [`SEGMENT`] bytes, each on its own thread, each as if a
//! chunk began at its start (a *provisional* chain), and every chunk is hashed there,
//! on bytes still in that thread's buffer. A chunk boundary depends only on where the
//! previous chunk ended, so once the true chain (coming from the segment before) lands
//! on a boundary of the provisional chain, the two agree from there on. Stitching walks
//! the true chain: it adopts a segment's chunks from the first boundary the chains share
//! and cuts (and hashes) the few chunks before it itself, usually one or two per segment.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::recipe::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use crate::oid::Oid;

/// Bytes each thread cuts at a time; its buffer holds this plus one chunk's maximum.
pub const SEGMENT: u64 = 16 << 20;

/// One chunk of a file: where it sits, and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub offset: u64,
    pub len: u64,
    pub oid: Oid,
}

/// Why chunking stopped: the file could not be read, or `emit` refused a chunk.
#[derive(Debug)]
pub enum ChunkingError<E> {
    Read(io::Error),
    Emit(E),
}

/// The FastCDC 2020 chunk that starts at `data[0]`, its length. `at_end`: `data` runs to
/// the end of the file; otherwise it must hold at least [`CHUNK_MAX`] bytes, so the cut
/// is the one a pass over the whole file makes.
fn first_cut(data: &[u8]) -> usize {
    let mut chunks = fastcdc::v2020::FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    chunks.next().map_or(data.len(), |chunk| chunk.length)
}

fn read_at(file: &File, buf: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)
}

/// Cuts `file` (`len` bytes) into the chunks one sequential FastCDC pass would make,
/// hashing each, on up to `threads` threads; `emit` gets them in file order.
pub fn chunk_file<E>(
    file: &File,
    len: u64,
    threads: usize,
    emit: impl FnMut(ChunkSpan) -> Result<(), E>,
) -> Result<(), ChunkingError<E>> {
    chunk_file_in(file, len, SEGMENT, threads, emit)
}

fn chunk_file_in<E>(
    file: &File,
    len: u64,
    segment: u64,
    threads: usize,
    mut emit: impl FnMut(ChunkSpan) -> Result<(), E>,
) -> Result<(), ChunkingError<E>> {
    let segments = len.div_ceil(segment).max(1) as usize;
    let threads = threads.clamp(1, segments);
    let next_segment = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Finished segments' provisional chains (a few dozen spans each), by segment.
    let done: Mutex<HashMap<usize, io::Result<Vec<ChunkSpan>>>> = Mutex::new(HashMap::new());
    let ready = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    // Workers may run ahead of the stitcher (a segment's result is a
                    // few dozen spans); a failed stitch stops them at the next segment.
                    let k = next_segment.fetch_add(1, Ordering::Relaxed);
                    if k >= segments || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A panic still answers, so the stitcher never waits for nothing.
                    let chain = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        provisional_chain(file, len, segment, k, &mut buf)
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("a chunking thread panicked")));
                    done.lock().unwrap().insert(k, chain);
                    ready.notify_all();
                }
            });
        }
        let result = stitch(file, len, segments, &done, &ready, &mut emit);
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Segment `k`'s chunks as if one began at its start, up to the first that ends at or
/// past the segment's end (or the file's).
fn provisional_chain(
    file: &File,
    len: u64,
    segment: u64,
    k: usize,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<ChunkSpan>> {
    let start = k as u64 * segment;
    let end = (start + segment).min(len);
    let buf_end = (end + CHUNK_MAX as u64).min(len);
    read_at(file, buf, start, (buf_end - start) as usize)?;
    let mut spans = Vec::new();
    let mut at = 0usize;
    while start + (at as u64) < end {
        let cut = first_cut(&buf[at..]);
        spans.push(ChunkSpan {
            offset: start + at as u64,
            len: cut as u64,
            oid: Oid::from_hash(blake3::hash(&buf[at..at + cut])),
        });
        at += cut;
    }
    Ok(spans)
}

fn stitch<E>(
    file: &File,
    len: u64,
    segments: usize,
    done: &Mutex<HashMap<usize, io::Result<Vec<ChunkSpan>>>>,
    ready: &Condvar,
    emit: &mut impl FnMut(ChunkSpan) -> Result<(), E>,
) -> Result<(), ChunkingError<E>> {
    let mut at = 0u64; // where the true chain's next chunk begins
    let mut buf = Vec::new();
    for k in 0..segments {
        let chain = {
            let mut done = done.lock().unwrap();
            loop {
                if let Some(chain) = done.remove(&k) {
                    break chain;
                }
                done = ready.wait(done).unwrap();
            }
        };
        let chain = chain.map_err(ChunkingError::Read)?;
        let chain_end = chain.last().map_or(at, |span| span.offset + span.len);
        while at < chain_end {
            if let Ok(shared) = chain.binary_search_by_key(&at, |span| span.offset) {
                for span in &chain[shared..] {
                    emit(*span).map_err(ChunkingError::Emit)?;
                }
                at = chain_end;
                break;
            }
            // Not in step yet: the true chain's next chunk, cut here.
            let window = (len - at).min(CHUNK_MAX as u64) as usize;
            read_at(file, &mut buf, at, window).map_err(ChunkingError::Read)?;
            let cut = first_cut(&buf);
            emit(ChunkSpan {
                offset: at,
                len: cut as u64,
                oid: Oid::from_hash(blake3::hash(&buf[..cut])),
            })
            .map_err(ChunkingError::Emit)?;
            at += cut as u64;
        }
    }
    debug_assert_eq!(at, len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sequential(data: &[u8]) -> Vec<ChunkSpan> {
        fastcdc::v2020::FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .map(|chunk| ChunkSpan {
                offset: chunk.offset as u64,
                len: chunk.length as u64,
                oid: Oid::of_bytes(&data[chunk.offset..chunk.offset + chunk.length]),
            })
            .collect()
    }

    fn parallel(data: &[u8], segment: u64, threads: usize) -> Vec<ChunkSpan> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        let mut spans = Vec::new();
        chunk_file_in::<()>(&file, data.len() as u64, segment, threads, |span| {
            spans.push(span);
            Ok(())
        })
        .unwrap();
        spans
    }

    #[test]
    fn parallel_cuts_are_the_sequential_ones() {
        let mut data = crate::storage::conformance::noise(40 << 20, 7);
        // Zeros in the middle: maximum-size chunks whose chains never meet a
        // provisional one begun elsewhere (the stitcher cuts all of them itself).
        data[12 << 20..20 << 20].fill(0);
        let want = sequential(&data);
        assert!(want.len() > 20);
        for (segment, threads) in [
            (SEGMENT, 2),
            (3 << 20, 2),
            (5 << 20 | 12345, 3),
            (1 << 20, 1),
        ] {
            assert_eq!(parallel(&data, segment, threads), want, "segment {segment}");
        }
        // Short files: one chunk, and a file ending inside its last segment's first chunk.
        for n in [1usize, CHUNK_MIN - 1, CHUNK_MIN + 1, (9 << 20) + 17] {
            assert_eq!(
                parallel(&data[..n], 2 << 20, 2),
                sequential(&data[..n]),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn a_refused_chunk_stops_the_pass() {
        let data = crate::storage::conformance::noise(12 << 20, 3);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let mut seen = 0;
        let result = chunk_file_in(&file, data.len() as u64, 1 << 20, 2, |_| {
            seen += 1;
            if seen == 3 {
                Err("full")
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(ChunkingError::Emit("full"))));
        assert_eq!(seen, 3);
        // A file shorter than it claims is a read error, not a short chunk list.
        let result = chunk_file_in::<()>(&file, data.len() as u64 + 5, 1 << 20, 2, |_| Ok(()));
        assert!(matches!(result, Err(ChunkingError::Read(_))));
    }
}
