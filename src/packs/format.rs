//! The pack and pack-index formats (documented in `docs/FORMATS.md`).
//!
//! A pack is `CZCPACK1` followed by objects back to back; it is named by the BLAKE3 of
//! its bytes. Its index lists each object's oid, offset and length, sorted by oid, and
//! ends with the BLAKE3 of everything before it. Both come from a remote, so decoding
//! checks every field before anything uses it: sizes bounded, offsets inside the pack,
//! the index naming the pack its key names. The bytes of each object are hashed when
//! they are read, so a lying index can only make a read fail, never change a file.

use crate::oid::Oid;

/// The first bytes of every pack (the format and its version).
pub const PACK_MAGIC: &[u8; 8] = b"CZCPACK1";
/// The first bytes of every pack index.
pub const INDEX_MAGIC: &[u8; 8] = b"CZCIDX01";
/// No pack may claim to be bigger than this.
pub const PACK_MAX_BYTES: u64 = 4 << 30;
/// No index is read past this (about 1.4 million entries).
pub const INDEX_MAX_BYTES: u64 = 64 << 20;

const HEADER_BYTES: usize = 8 + 32 + 8 + 8;
const ENTRY_BYTES: usize = 32 + 8 + 8;
const TRAILER_BYTES: usize = 32;

/// One object in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub oid: Oid,
    pub offset: u64,
    pub len: u64,
}

/// What a pack holds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// The BLAKE3 of the pack's bytes (its name).
    pub pack: Oid,
    pub pack_size: u64,
    /// Sorted by oid, no oid twice.
    pub entries: Vec<PackEntry>,
}

/// Why an index (or a recipe) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}: {reason}")]
pub struct FormatError {
    pub what: String,
    pub reason: String,
}

fn refuse(what: &str, reason: impl Into<String>) -> FormatError {
    FormatError {
        what: what.into(),
        reason: reason.into(),
    }
}

/// A little-endian reader over a byte slice that never reads past its end.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes, at: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn oid(&mut self) -> Option<Oid> {
        let bytes: [u8; 32] = self.take(32)?.try_into().ok()?;
        Some(Oid::from_hash(blake3::Hash::from_bytes(bytes)))
    }
}

/// Checks the trailing BLAKE3 of `bytes` and returns what it covers.
pub(crate) fn checked_body<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], FormatError> {
    if bytes.len() < TRAILER_BYTES {
        return Err(refuse(what, "too short"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    if blake3::hash(body).as_bytes() != trailer {
        return Err(refuse(
            what,
            "its checksum does not match (truncated or damaged)",
        ));
    }
    Ok(body)
}

impl PackIndex {
    /// The index's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES + TRAILER_BYTES);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(self.pack.as_bytes());
        out.extend_from_slice(&self.pack_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(entry.oid.as_bytes());
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.len.to_le_bytes());
        }
        let trailer = blake3::hash(&out);
        out.extend_from_slice(trailer.as_bytes());
        out
    }

    /// Reads an index that must describe `pack`; `what` names it in errors.
    pub fn decode(what: &str, bytes: &[u8], pack: &Oid) -> Result<PackIndex, FormatError> {
        if bytes.len() as u64 > INDEX_MAX_BYTES {
            return Err(refuse(what, format!("bigger than {INDEX_MAX_BYTES} bytes")));
        }
        let body = checked_body(what, bytes)?;
        let mut fields = Fields::new(body);
        if fields.take(8) != Some(INDEX_MAGIC) {
            return Err(refuse(
                what,
                "not a czc pack index (or a newer version of one)",
            ));
        }
        let short = || refuse(what, "too short");
        let named = fields.oid().ok_or_else(short)?;
        if named != *pack {
            return Err(refuse(what, format!("describes pack {named}, not {pack}")));
        }
        let pack_size = fields.u64().ok_or_else(short)?;
        if !(PACK_MAGIC.len() as u64..=PACK_MAX_BYTES).contains(&pack_size) {
            return Err(refuse(what, format!("claims a pack of {pack_size} bytes")));
        }
        let count = fields.u64().ok_or_else(short)?;
        let expected = (count as u128) * ENTRY_BYTES as u128 + HEADER_BYTES as u128;
        if expected != body.len() as u128 {
            return Err(refuse(
                what,
                format!("says {count} entries but holds {} bytes", body.len()),
            ));
        }
        let mut entries: Vec<PackEntry> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let entry = PackEntry {
                oid: fields.oid().ok_or_else(short)?,
                offset: fields.u64().ok_or_else(short)?,
                len: fields.u64().ok_or_else(short)?,
            };
            let inside = entry.offset >= PACK_MAGIC.len() as u64
                && entry
                    .offset
                    .checked_add(entry.len)
                    .is_some_and(|end| end <= pack_size);
            if !inside {
                return Err(refuse(
                    what,
                    format!(
                        "places {} at {}+{}, outside the pack's {pack_size} bytes",
                        entry.oid, entry.offset, entry.len
                    ),
                ));
            }
            if entries.last().is_some_and(|last| last.oid >= entry.oid) {
                return Err(refuse(what, "entries are not sorted by oid"));
            }
            entries.push(entry);
        }
        Ok(PackIndex {
            pack: *pack,
            pack_size,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackIndex {
        let mut entries: Vec<PackEntry> = (0..5u64)
            .map(|i| PackEntry {
                oid: Oid::of_bytes(&i.to_le_bytes()),
                offset: 8 + i * 10,
                len: 10,
            })
            .collect();
        entries.sort_by_key(|e| e.oid);
        PackIndex {
            pack: Oid::of_bytes(b"pack"),
            pack_size: 58,
            entries,
        }
    }

    #[test]
    fn an_index_reads_back_as_written() {
        let index = sample();
        let bytes = index.encode();
        assert_eq!(PackIndex::decode("i", &bytes, &index.pack).unwrap(), index);
    }

    #[test]
    fn damaged_and_lying_indexes_are_refused() {
        let index = sample();
        let bytes = index.encode();
        let decode = |bytes: &[u8]| PackIndex::decode("i", bytes, &index.pack).unwrap_err();
        assert!(decode(&bytes[..bytes.len() - 1])
            .reason
            .contains("checksum"));
        assert!(decode(&bytes[..10]).reason.contains("too short"));
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        assert!(decode(&flipped).reason.contains("checksum"));
        let other = Oid::of_bytes(b"other");
        assert!(PackIndex::decode("i", &bytes, &other)
            .unwrap_err()
            .reason
            .contains("describes pack"));
        // Well-formed (checksum recomputed) but lying.
        let lie = |change: &dyn Fn(&mut PackIndex)| {
            let mut lying = sample();
            change(&mut lying);
            decode(&lying.encode()).reason
        };
        assert!(lie(&|i| i.entries[2].offset = 55).contains("outside the pack"));
        assert!(lie(&|i| i.entries[2].offset = 2).contains("outside the pack"));
        assert!(lie(&|i| i.entries[2].len = u64::MAX).contains("outside the pack"));
        assert!(lie(&|i| i.entries.swap(0, 1)).contains("not sorted"));
        assert!(lie(&|i| i.pack_size = u64::MAX).contains("claims a pack"));
        let mut counted = sample().encode();
        counted[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        let body = counted.len() - 32;
        let trailer = blake3::hash(&counted[..body]);
        counted[body..].copy_from_slice(trailer.as_bytes());
        assert!(decode(&counted).reason.contains("entries but holds"));
        let mut magic = bytes.clone();
        magic[..8].copy_from_slice(b"CZCIDX99");
        let body = magic.len() - 32;
        let trailer = blake3::hash(&magic[..body]);
        magic[body..].copy_from_slice(trailer.as_bytes());
        assert!(decode(&magic).reason.contains("not a czc pack index"));
    }
}
