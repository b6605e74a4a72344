//! The CSV index: one row per object, readable with any spreadsheet tool.

use std::path::PathBuf;

use super::file::{table_index, TableFile, TableFormat};
use super::Entry;
use crate::config::IndexKind;

/// An index kept as `index.csv` (header `oid,size,added_at,last_used_at,hits,pushed`).
pub struct CsvIndex(TableFile<CsvFormat>);

impl CsvIndex {
    pub fn open(path: PathBuf) -> CsvIndex {
        CsvIndex(TableFile::new(path, CsvFormat))
    }
}

pub(crate) struct CsvFormat;

const HEADER: [&str; 6] = ["oid", "size", "added_at", "last_used_at", "hits", "pushed"];
/// The header before `pushed` existed; such files still load (nothing pushed).
const HEADER_V1: [&str; 5] = ["oid", "size", "added_at", "last_used_at", "hits"];

impl TableFormat for CsvFormat {
    fn decode(&self, bytes: &[u8]) -> Result<Vec<Entry>, String> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let mut reader = ::csv::Reader::from_reader(bytes);
        let header = reader.headers().map_err(|err| err.to_string())?;
        let found: Vec<&str> = header.iter().collect();
        if found != HEADER && found != HEADER_V1 {
            return Err(format!("header is not {}", HEADER.join(",")));
        }
        reader
            .deserialize()
            .enumerate()
            .map(|(row, record)| record.map_err(|err| format!("row {}: {err}", row + 2)))
            .collect()
    }

    fn encode(&self, entries: &[Entry]) -> Vec<u8> {
        let mut writer = ::csv::Writer::from_writer(Vec::new());
        if entries.is_empty() {
            let _ = writer.write_record(HEADER);
        }
        for entry in entries {
            // Serializing plain numbers and strings into a Vec cannot fail.
            let _ = writer.serialize(entry);
        }
        writer.into_inner().unwrap_or_default()
    }
}

table_index!(CsvIndex, IndexKind::Csv);
