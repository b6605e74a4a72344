//! Chunked objects: a big object is cut into content-defined chunks (FastCDC), the
//! chunks go into packs like small objects, and a recipe lists them in order. Change
//! 1 MiB in the middle of a 4 GiB file and only the chunks around it are new.
//!
//! A recipe (`recipes/<object hex>`, documented in `docs/FORMATS.md`) is
//! `CZCRCP01` | object oid (32) | object size (8) | count (8) | per chunk: oid (32),
//! length (8) | BLAKE3 of all before (32). It comes from a remote, so decoding checks
//! that it names the object its key names, that the lengths add up to the size and
//! that each is within the chunker's bounds; the assembled file is hashed whole before
//! anything sees it.

use std::ops::Range;

use super::format::{checked_body, Fields, FormatError};
use crate::oid::Oid;

pub const RECIPE_MAGIC: &[u8; 8] = b"CZCRCP01";
/// Objects from this size up are chunked on remotes that write packs.
pub const CHUNKED_MIN: u64 = 16 << 20;
/// Chunk sizes: FastCDC's minimum, average and maximum.
pub const CHUNK_MIN: usize = 256 << 10;
pub const CHUNK_AVG: usize = 1 << 20;
pub const CHUNK_MAX: usize = 4 << 20;
/// No recipe is read past this (1.6 million chunks, over a TiB of object).
pub const RECIPE_MAX_BYTES: u64 = 64 << 20;

const HEADER_BYTES: usize = 8 + 32 + 8 + 8;
const ENTRY_BYTES: usize = 32 + 8;

/// The key of an object's recipe (flat, so one listing finds every recipe).
pub fn recipe_key(oid: &Oid) -> String {
    format!("recipes/{}", oid.hex())
}

/// The object a `recipes/<hex>` key names.
pub fn recipe_of_key(key: &str) -> Option<Oid> {
    Oid::from_hex(key.strip_prefix("recipes/")?).ok()
}

/// How an object is made of chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub oid: Oid,
    pub size: u64,
    pub chunks: Vec<(Oid, u64)>,
}

impl Recipe {
    /// Each chunk with its place in the object.
    pub fn placed(&self) -> Vec<(Oid, Range<u64>)> {
        let mut at = 0;
        self.chunks
            .iter()
            .map(|(oid, len)| {
                let range = at..at + len;
                at += len;
                (*oid, range)
            })
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.chunks.len() * ENTRY_BYTES + 32);
        out.extend_from_slice(RECIPE_MAGIC);
        out.extend_from_slice(self.oid.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for (oid, len) in &self.chunks {
            out.extend_from_slice(oid.as_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        let trailer = blake3::hash(&out);
        out.extend_from_slice(trailer.as_bytes());
        out
    }

    /// Reads a recipe that must describe `object`; `what` names it in errors.
    pub fn decode(what: &str, bytes: &[u8], object: &Oid) -> Result<Recipe, FormatError> {
        let refuse = |reason: String| FormatError {
            what: what.into(),
            reason,
        };
        if bytes.len() as u64 > RECIPE_MAX_BYTES {
            return Err(refuse(format!("bigger than {RECIPE_MAX_BYTES} bytes")));
        }
        let body = checked_body(what, bytes)?;
        let mut fields = Fields::new(body);
        if fields.take(8) != Some(RECIPE_MAGIC) {
            return Err(refuse(
                "not a czc recipe (or a newer version of one)".into(),
            ));
        }
        let short = || refuse("too short".into());
        let oid = fields.oid().ok_or_else(short)?;
        if oid != *object {
            return Err(refuse(format!("describes {oid}, not {object}")));
        }
        let size = fields.u64().ok_or_else(short)?;
        let count = fields.u64().ok_or_else(short)?;
        let expected = (body.len() - HEADER_BYTES) as u64;
        if count.checked_mul(ENTRY_BYTES as u64) != Some(expected) {
            return Err(refuse(format!(
                "says {count} chunks but holds {expected} bytes of them"
            )));
        }
        let mut chunks = Vec::with_capacity(count as usize);
        let mut total = 0u64;
        for n in 0..count {
            let chunk = fields.oid().ok_or_else(short)?;
            let len = fields.u64().ok_or_else(short)?;
            let last = n + 1 == count;
            // Every chunk but the last is at least the minimum; none over the maximum.
            if len == 0 || len > CHUNK_MAX as u64 || (!last && len < CHUNK_MIN as u64) {
                return Err(refuse(format!("chunk {n} has an impossible length {len}")));
            }
            total = total.checked_add(len).ok_or_else(short)?;
            chunks.push((chunk, len));
        }
        if total != size {
            return Err(refuse(format!(
                "its chunks add up to {total} bytes, not the object's {size}"
            )));
        }
        Ok(Recipe { oid, size, chunks })
    }
}

/// Where content-defined chunks of `data` end: the same bytes cut the same way
/// wherever they sit in a file, so an edit changes only the chunks it touches.
pub fn cut(data: &[u8]) -> Vec<Range<u64>> {
    if data.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(|chunk| chunk.offset as u64..(chunk.offset + chunk.length) as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::noise;

    fn recipe_of(data: &[u8]) -> Recipe {
        let chunks = cut(data)
            .into_iter()
            .map(|r| {
                let bytes = &data[r.start as usize..r.end as usize];
                (Oid::of_bytes(bytes), bytes.len() as u64)
            })
            .collect();
        Recipe {
            oid: Oid::of_bytes(data),
            size: data.len() as u64,
            chunks,
        }
    }

    #[test]
    fn an_edit_in_the_middle_changes_only_the_chunks_around_it() {
        let mut data = noise(24 << 20, 1);
        let before = recipe_of(&data);
        assert!(before.chunks.len() > 10, "{}", before.chunks.len());
        for byte in &mut data[12 << 20..(12 << 20) + (1 << 20)] {
            *byte ^= 0x5a;
        }
        let after = recipe_of(&data);
        let old: std::collections::HashSet<_> = before.chunks.iter().collect();
        let new_bytes: u64 = after
            .chunks
            .iter()
            .filter(|c| !old.contains(c))
            .map(|(_, len)| len)
            .sum();
        assert!(new_bytes <= 9 << 20, "{new_bytes} new bytes");
        assert!(new_bytes >= 1 << 20);
    }

    #[test]
    fn a_recipe_round_trips_and_every_lie_is_refused() {
        let data = noise(6 << 20, 2);
        let recipe = recipe_of(&data);
        let bytes = recipe.encode();
        assert_eq!(Recipe::decode("r", &bytes, &recipe.oid).unwrap(), recipe);
        let reason = |bytes: &[u8], oid: &Oid| Recipe::decode("r", bytes, oid).unwrap_err().reason;
        assert!(reason(&bytes, &Oid::of_bytes(b"other")).contains("describes"));
        assert!(reason(&bytes[..bytes.len() - 1], &recipe.oid).contains("checksum"));
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        assert!(reason(&flipped, &recipe.oid).contains("checksum"));
        // Well-formed but lying: sizes that do not add up, a chunk too big.
        let mut wrong_size = recipe.clone();
        wrong_size.size += 1;
        assert!(reason(&wrong_size.encode(), &recipe.oid).contains("add up"));
        let mut huge = recipe.clone();
        huge.chunks[0].1 = CHUNK_MAX as u64 + 1;
        huge.size = huge.chunks.iter().map(|c| c.1).sum();
        assert!(reason(&huge.encode(), &recipe.oid).contains("impossible length"));
        let mut tiny = recipe.clone();
        tiny.chunks[0].1 = 1;
        assert!(reason(&tiny.encode(), &recipe.oid).contains("impossible length"));
        let mut magic = bytes.clone();
        magic[..8].copy_from_slice(b"CZCRCP99");
        let body_len = magic.len() - 32;
        let trailer = blake3::hash(&magic[..body_len]);
        magic[body_len..].copy_from_slice(trailer.as_bytes());
        assert!(reason(&magic, &recipe.oid).contains("newer version"));
    }

    #[test]
    fn keys_name_their_object() {
        let oid = Oid::of_bytes(b"x");
        assert_eq!(recipe_of_key(&recipe_key(&oid)), Some(oid));
        assert_eq!(recipe_of_key("recipes/zz"), None);
        assert_eq!(recipe_of_key("objects/ab/cd"), None);
    }
}
