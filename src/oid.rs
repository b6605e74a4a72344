//! Object ids: the BLAKE3 hash that names every object, and the fast ways to compute it.
//!
//! Big files are hashed through a memory map on all cores; small ones with one buffered read,
//! so a folder of many small files does not pay for an mmap per file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

/// Files at or above this size are hashed with mmap + rayon.
pub const MMAP_THRESHOLD: u64 = 1 << 20;

const PREFIX: &str = "blake3:";

/// A content address: the BLAKE3 hash of an object's bytes, written `blake3:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid([u8; 32]);

/// Why a string is not an oid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidError {
    #[error("oid '{0}' does not start with 'blake3:'")]
    Algorithm(String),
    #[error("oid '{value}' has {len} hex digits, expected 64")]
    Length { value: String, len: usize },
    #[error("oid '{0}' is not lowercase hex")]
    NotHex(String),
}

impl Oid {
    /// The oid of a byte string.
    pub fn of_bytes(bytes: &[u8]) -> Oid {
        Oid(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_hash(hash: blake3::Hash) -> Oid {
        Oid(*hash.as_bytes())
    }

    /// The 64 lowercase hex digits, without the `blake3:` prefix.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from_digit((byte >> 4) as u32, 16).unwrap_or('0'));
            out.push(char::from_digit((byte & 0xf) as u32, 16).unwrap_or('0'));
        }
        out
    }

    /// Parses 64 lowercase hex digits (no prefix).
    pub fn from_hex(hex: &str) -> Result<Oid, OidError> {
        if hex.len() != 64 {
            return Err(OidError::Length {
                value: hex.to_string(),
                len: hex.len(),
            });
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let hi = HEX_VALUE[pair[0] as usize];
            let lo = HEX_VALUE[pair[1] as usize];
            if (hi | lo) & 0xf0 != 0 {
                return Err(OidError::NotHex(hex.to_string()));
            }
            *byte = (hi << 4) | lo;
        }
        Ok(Oid(bytes))
    }

    /// The partitioned key shared by the cache and every remote: `objects/<hex[0:2]>/<hex[2:]>`.
    pub fn object_key(&self) -> String {
        let hex = self.hex();
        format!("objects/{}/{}", &hex[..2], &hex[2..])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Oid {
    type Err = OidError;

    fn from_str(value: &str) -> Result<Oid, OidError> {
        let hex = value
            .strip_prefix(PREFIX)
            .ok_or_else(|| OidError::Algorithm(value.to_string()))?;
        Oid::from_hex(hex).map_err(|err| match err {
            OidError::Length { len, .. } => OidError::Length {
                value: value.to_string(),
                len,
            },
            _ => OidError::NotHex(value.to_string()),
        })
    }
}

/// Hashes an open file of known size, choosing mmap + rayon for big files.
pub fn hash_open_file(file: &mut File, size: u64, path: &Path) -> io::Result<Oid> {
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        // One read of at most 1 MiB: cheaper than a map for small files.
        // Through `take`: File's own read_to_end asks the size again (one more statx).
        let mut buf = Vec::with_capacity(size as usize + 1);
        Read::by_ref(file).take(size + 1).read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok(Oid::from_hash(hasher.finalize()))
}

/// Hashes the file at `path`; returns its oid and size.
pub fn hash_file(path: &Path) -> io::Result<(Oid, u64)> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let oid = hash_open_file(&mut file, size, path)?;
    Ok((oid, size))
}

/// Streams a reader through the hasher, for content that only arrives once (pipes).
pub fn hash_reader(reader: &mut impl Read) -> io::Result<(Oid, u64)> {
    let mut hasher = blake3::Hasher::new();
    let size = io::copy(reader, &mut hasher)?;
    Ok((Oid::from_hash(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let oid = Oid::of_bytes(b"hello");
        let text = oid.to_string();
        assert!(text.starts_with("blake3:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text.parse::<Oid>().unwrap(), oid);
        assert_eq!(
            text,
            "blake3:ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn rejects_other_algorithms_short_and_uppercase() {
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Oid>(),
            Err(OidError::Algorithm(_))
        ));
        assert!(matches!(
            "blake3:abcd".parse::<Oid>(),
            Err(OidError::Length { len: 4, .. })
        ));
        let upper = format!("blake3:{}", "A".repeat(64));
        assert!(matches!(upper.parse::<Oid>(), Err(OidError::NotHex(_))));
    }

    #[test]
    fn object_key_is_partitioned() {
        let oid = Oid::of_bytes(b"");
        let key = oid.object_key();
        assert_eq!(
            key,
            format!("objects/{}/{}", &oid.hex()[..2], &oid.hex()[2..])
        );
    }

    #[test]
    fn small_and_big_files_hash_like_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 10, MMAP_THRESHOLD as usize + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &data).unwrap();
            let (oid, len) = hash_file(&path).unwrap();
            assert_eq!(len, size as u64);
            assert_eq!(oid, Oid::of_bytes(&data));
            assert_eq!(hash_reader(&mut &data[..]).unwrap().0, oid);
        }
    }
}
