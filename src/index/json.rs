//! The JSON index: one array of objects, for tools that want to read the cache.

use std::path::PathBuf;

use super::file::{table_index, TableFile, TableFormat};
use super::Entry;
use crate::config::IndexKind;

/// An index kept as `index.json`: `{"version":1,"objects":[...]}`.
pub struct JsonIndex(TableFile<JsonFormat>);

impl JsonIndex {
    pub fn open(path: PathBuf) -> JsonIndex {
        JsonIndex(TableFile::new(path, JsonFormat))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Doc {
    version: u32,
    objects: Vec<Entry>,
}

pub(crate) struct JsonFormat;

impl TableFormat for JsonFormat {
    fn decode(&self, bytes: &[u8]) -> Result<Vec<Entry>, String> {
        let doc: Doc = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
        Ok(doc.objects)
    }

    fn encode(&self, entries: &[Entry]) -> Vec<u8> {
        let doc = Doc {
            version: 1,
            objects: entries.to_vec(),
        };
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }
}

table_index!(JsonIndex, IndexKind::Json);
