//! git's clean and smudge filters, one-shot (`czc clean %f`, `czc smudge %f`) and as
//! the long-running `czc filter-process` (protocol version 2, with `delay`).
//!
//! Clean turns content into a marker: the bytes stream into the cache's staging while
//! being hashed, never into memory. Content that already is a valid marker passes
//! through (as canonical text), so re-adding a file whose smudge was skipped changes
//! nothing. Smudge turns a marker back into content, fetching through the remote chain;
//! in the long-running form, objects that must be fetched are delayed and fetched in
//! one parallel batch when git asks which blobs are ready.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::pktline::{PktError, PktReader, PktWriter};
use crate::error::{Error, IoContext, Result};
use crate::marker::{Marker, MarkerError, MarkerKind, MARKER_START, MAX_MARKER_BYTES};
use crate::oid::Oid;
use crate::workspace::Workspace;

/// Set to `1` to leave marker text in the working tree instead of fetching content.
pub const SKIP_SMUDGE_VAR: &str = "CZC_SKIP_SMUDGE";

/// Reads at most `limit + 1` bytes, so the caller can tell "fits" from "longer".
fn read_head(input: &mut impl Read, limit: usize, name: &Path) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(limit + 1);
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut head)
        .at(name)?;
    Ok(head)
}

/// What a blob handed to smudge holds.
enum Pointer {
    /// A valid marker of one file.
    Marker(Marker),
    /// Not ours: content committed before the pattern was tracked, passed through.
    Content,
}

/// Tells a marker from other content. Text that starts like a marker but does not
/// parse is an error naming the file: a damaged pointer must not be checked out as if
/// it were the data.
fn classify(head: &[u8], path: &Path) -> Result<Pointer> {
    if head.len() > MAX_MARKER_BYTES || !head.starts_with(MARKER_START) {
        return Ok(Pointer::Content);
    }
    match Marker::parse(head) {
        Ok(marker) if marker.kind == MarkerKind::File => Ok(Pointer::Marker(marker)),
        Ok(_) => Err(Error::Marker {
            path: path.into(),
            source: MarkerError::BadValue {
                key: "kind",
                reason: "a folder marker cannot stand for a filtered file".into(),
            },
        }),
        Err(source) => Err(Error::Marker {
            path: path.into(),
            source,
        }),
    }
}

/// Content up to this size is cleaned in memory: hashed before anything is written, so
/// content the cache already holds (git re-cleaning a touched or racily clean file, a
/// `git add` of an unchanged file) costs no write at all.
const IN_MEMORY_CLEAN: usize = 4 << 20;

/// Clean: content in, canonical marker text out. The content goes into the cache,
/// fsynced before this returns.
pub fn clean(ws: &Workspace, path: &Path, input: &mut impl Read) -> Result<String> {
    let mut buffer = Vec::new();
    let (text, _) = clean_with(ws, path, input, true, &mut buffer)?;
    Ok(text)
}

/// `durable: false` leaves the fsync to the caller (the filter process syncs the cache's
/// filesystem once when git is done, instead of once per file). `buffer` is scratch
/// space a caller cleaning many files reuses. Returns the marker text and the oid of
/// content that was already cached (to record as used).
fn clean_with(
    ws: &Workspace,
    path: &Path,
    input: &mut impl Read,
    durable: bool,
    buffer: &mut Vec<u8>,
) -> Result<(String, Option<Oid>)> {
    buffer.clear();
    input
        .take(IN_MEMORY_CLEAN as u64 + 1)
        .read_to_end(buffer)
        .at(path)?;
    if buffer.len() <= MAX_MARKER_BYTES {
        if let Ok(marker) = Marker::parse(buffer) {
            if marker.kind == MarkerKind::File {
                return Ok((marker.to_text(), None));
            }
        }
    }
    let cache = ws.cache();
    let staged = if buffer.len() <= IN_MEMORY_CLEAN {
        let oid = Oid::of_bytes(buffer);
        if cache.contains(&oid) {
            return Ok((Marker::file(oid, buffer.len() as u64).to_text(), Some(oid)));
        }
        cache.stage_bytes(buffer)?
    } else {
        cache.stage_reader(&mut (&buffer[..]).chain(input), path)?
    };
    let admitted = if durable {
        cache.commit(vec![staged])?
    } else {
        cache.commit_fetched(vec![staged])?
    }
    .remove(0);
    Ok((Marker::file(admitted.oid, admitted.size).to_text(), None))
}

/// Smudge of content already read: writes the object a marker names (or non-marker
/// content unchanged) to `out`. Fetches through the remote chain on a cache miss.
fn smudge_head(ws: &Workspace, path: &Path, head: &[u8], out: &mut impl Write) -> Result<()> {
    match classify(head, path)? {
        Pointer::Content => out.write_all(head).at(path),
        Pointer::Marker(_) if skip_smudge() => out.write_all(head).at(path),
        Pointer::Marker(marker) => {
            ws.ensure(&marker.oid, Some(marker.size), path)?;
            ws.cache()
                .copy_to_writer(&marker.oid, path, out)
                .map(|_| ())
        }
    }
}

/// Smudge, one-shot: marker in, content out.
pub fn smudge(
    ws: &Workspace,
    path: &Path,
    input: &mut impl Read,
    out: &mut impl Write,
) -> Result<()> {
    let head = read_head(input, MAX_MARKER_BYTES, path)?;
    if head.len() > MAX_MARKER_BYTES {
        // Not a pointer: pass it all through, streaming.
        out.write_all(&head).at(path)?;
        io::copy(input, out).at(path)?;
        return Ok(());
    }
    smudge_head(ws, path, &head, out)
}

fn skip_smudge() -> bool {
    std::env::var(SKIP_SMUDGE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// How a filter process ended.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter-process: {0}")]
    Protocol(#[from] PktError),
    #[error("filter-process: git sent {0}")]
    Handshake(String),
}

impl From<io::Error> for FilterError {
    fn from(err: io::Error) -> FilterError {
        FilterError::Protocol(PktError::Io(err))
    }
}

/// The long-running filter: serves git until it closes the pipe.
pub fn filter_process(
    ws: &Workspace,
    input: impl Read,
    output: impl Write,
) -> std::result::Result<(), FilterError> {
    let mut reader = PktReader::new(input);
    let mut writer = PktWriter::new(output);
    handshake(&mut reader, &mut writer)?;
    let mut session = Session {
        ws,
        delayed: BTreeMap::new(),
        ready: BTreeMap::new(),
        cleaned: 0,
        used: Vec::new(),
        buffer: Vec::new(),
    };
    ws.cache().defer_eviction();
    let result = session.serve(&mut reader, &mut writer);
    // One index update, one filesystem sync and one eviction pass for the whole run,
    // not one per file.
    let touched = ws.cache().touch(&session.used);
    let synced = if session.cleaned > 0 {
        ws.cache().sync()
    } else {
        Ok(())
    };
    let evicted = ws.cache().resume_eviction();
    result?;
    for outcome in [touched, synced, evicted] {
        if let Err(err) = outcome {
            report(&err);
        }
    }
    Ok(())
}

impl Session<'_> {
    fn serve<R: Read, W: Write>(
        &mut self,
        reader: &mut PktReader<R>,
        writer: &mut PktWriter<W>,
    ) -> std::result::Result<(), FilterError> {
        loop {
            let request = match reader.read_pairs() {
                Ok(pairs) => pairs,
                // git is done with us.
                Err(PktError::Closed) => return Ok(()),
                Err(err) => return Err(err.into()),
            };
            let value = |key: &str| {
                request
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let command = value("command").unwrap_or_default().to_string();
            let pathname = value("pathname").map(PathBuf::from);
            let can_delay = value("can-delay") == Some("1");
            match (command.as_str(), pathname) {
                ("clean", Some(path)) => self.clean(reader, writer, &path)?,
                ("smudge", Some(path)) => self.smudge(reader, writer, &path, can_delay)?,
                ("list_available_blobs", _) => self.list_available(writer)?,
                (other, _) => {
                    crate::report::process_reporter().error(&format!(
                        "filter-process: git asked for an unknown command {other:?}"
                    ));
                    writer.list(&["status=error"])?;
                }
            }
        }
    }
}

fn handshake<R: Read, W: Write>(
    reader: &mut PktReader<R>,
    writer: &mut PktWriter<W>,
) -> std::result::Result<(), FilterError> {
    let hello = reader.read_list()?;
    if hello.first().map(String::as_str) != Some("git-filter-client") {
        return Err(FilterError::Handshake(format!(
            "{:?} instead of git-filter-client",
            hello.first().map(String::as_str).unwrap_or("a flush")
        )));
    }
    if !hello.iter().any(|line| line == "version=2") {
        return Err(FilterError::Handshake(format!(
            "versions {:?}; czc speaks version 2",
            &hello[1..]
        )));
    }
    writer.list(&["git-filter-server", "version=2"])?;
    let offered = reader.read_list()?;
    let ours: Vec<&str> = ["capability=clean", "capability=smudge", "capability=delay"]
        .into_iter()
        .filter(|cap| offered.iter().any(|o| o == cap))
        .collect();
    writer.list(&ours)?;
    Ok(())
}

struct Session<'a> {
    ws: &'a Workspace,
    /// Delayed smudges whose objects are not fetched yet: path → oid.
    delayed: BTreeMap<PathBuf, Marker>,
    /// Delayed smudges announced to git as available: path → oid.
    ready: BTreeMap<PathBuf, Marker>,
    /// Files cleaned into the cache without their own fsync.
    cleaned: usize,
    /// Objects smudged (or cleaned and already cached), to record as used once at the end.
    used: Vec<Oid>,
    /// Scratch space for cleaning and smudging, reused from file to file.
    buffer: Vec<u8>,
}

/// Logs a failed file the way git shows filter messages: one line naming the file.
fn report(err: &Error) {
    crate::report::process_reporter().error(&err.to_string().replace('\n', " "));
}

impl Session<'_> {
    fn clean<R: Read, W: Write>(
        &mut self,
        reader: &mut PktReader<R>,
        writer: &mut PktWriter<W>,
        path: &Path,
    ) -> std::result::Result<(), FilterError> {
        let mut content = reader.content();
        let result = clean_with(self.ws, path, &mut content, false, &mut self.buffer);
        self.cleaned += 1;
        if let Ok((_, Some(oid))) = &result {
            self.used.push(*oid);
        }
        // Big files' content is gone by now; keep the scratch space small files need.
        self.buffer.shrink_to(IN_MEMORY_CLEAN + 1);
        // A failure part-way (cache full, disk error) leaves content unread: finish
        // reading the request before answering.
        // A broken pipe or stream: nothing sane is left to answer.
        content.drain()?;
        match result {
            Ok((text, _)) => send_bytes(writer, text.as_bytes()),
            Err(err) => refuse(writer, &err),
        }
    }

    fn smudge<R: Read, W: Write>(
        &mut self,
        reader: &mut PktReader<R>,
        writer: &mut PktWriter<W>,
        path: &Path,
        can_delay: bool,
    ) -> std::result::Result<(), FilterError> {
        // A pointer is tiny; anything larger is content we pass through, spooled to
        // disk because the whole request must be read before answering.
        let mut content = reader.content();
        let head = read_head(&mut content, MAX_MARKER_BYTES, path);
        let head = match head {
            Ok(head) => head,
            Err(Error::Io { source, .. }) => {
                return Err(PktError::Malformed(source.to_string()).into())
            }
            Err(other) => unreachable!("read_head only fails with I/O errors: {other}"),
        };
        if head.len() > MAX_MARKER_BYTES {
            return self.pass_through(head, &mut content, writer);
        }
        content.drain()?;
        if let Some(marker) = self.ready.remove(path) {
            // git asks again for a blob we delayed; its content is empty this time.
            return self.send_object(writer, path, &marker);
        }
        match classify(&head, path) {
            Ok(Pointer::Marker(marker)) if !skip_smudge() => {
                let cached = self.ws.cache().contains(&marker.oid);
                if !cached && can_delay && self.ws.has_source() {
                    self.delayed.insert(path.to_path_buf(), marker);
                    writer.list(&["status=delayed"])?;
                    return Ok(());
                }
                // send_object fetches what is missing (and refuses what it cannot get).
                self.send_object(writer, path, &marker)
            }
            Ok(_) => send_bytes(writer, &head),
            Err(err) => refuse(writer, &err),
        }
    }

    fn pass_through<R: Read, W: Write>(
        &mut self,
        head: Vec<u8>,
        content: &mut super::pktline::ContentReader<'_, R>,
        writer: &mut PktWriter<W>,
    ) -> std::result::Result<(), FilterError> {
        let spool = self.ws.cache().spool_file();
        let mut spool = match spool {
            Ok(file) => file,
            Err(err) => {
                content.drain()?;
                return refuse(writer, &err);
            }
        };
        spool.write_all(&head)?;
        io::copy(content, &mut spool)?;
        spool.flush()?;
        let mut file = spool.into_inner().map_err(|err| err.into_error())?;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0))?;
        writer.list(&["status=success"])?;
        let mut out = writer.content();
        io::copy(&mut file, &mut out)?;
        out.finish()?;
        writer.flush_packet()?;
        writer.flush_packet()?;
        Ok(())
    }

    /// Streams a cached object as a successful smudge, hashing as it goes: one read of
    /// the object, not a verifying read and then a copy. Bytes that turn out not to
    /// match end the reply with an error (git then fails that file rather than writing
    /// it), and the damaged copy is quarantined.
    fn send_object<W: Write>(
        &mut self,
        writer: &mut PktWriter<W>,
        path: &Path,
        marker: &Marker,
    ) -> std::result::Result<(), FilterError> {
        let oid = &marker.oid;
        let opened = self.ws.ensure(oid, Some(marker.size), path).and_then(|()| {
            let (object, _) = self.ws.cache().object_file(oid, path)?;
            std::fs::File::open(&object).at(&object)
        });
        let mut file = match opened {
            Ok(file) => file,
            Err(err) => {
                return refuse(writer, &err);
            }
        };
        writer.list(&["status=success"])?;
        let mut out = writer.content();
        let mut hasher = blake3::Hasher::new();
        let buf = &mut self.buffer;
        buf.resize(super::pktline::MAX_PAYLOAD * 4, 0);
        let copied: io::Result<()> = loop {
            match file.read(buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => break Err(err),
            }
        };
        out.finish()?;
        writer.flush_packet()?;
        let failure = match copied {
            Err(err) => Some(format!("{}: {err}", path.display())),
            Ok(()) if Oid::from_hash(hasher.finalize()) != *oid => {
                Some(match self.ws.cache().quarantine(oid) {
                    Ok(err) | Err(err) => format!("{}: {err}", path.display()),
                })
            }
            Ok(()) => None,
        };
        match failure {
            None => {
                self.used.push(*oid);
                writer.flush_packet()?;
            }
            Some(message) => {
                crate::report::process_reporter().error(&message);
                writer.list(&["status=error"])?;
            }
        }
        Ok(())
    }

    /// git's "which delayed blobs are ready?": fetches every delayed object in one
    /// parallel batch, then names them all (failures too, so git asks again and hears
    /// the reason for that very file). An empty list tells git we are done.
    fn list_available<W: Write>(
        &mut self,
        writer: &mut PktWriter<W>,
    ) -> std::result::Result<(), FilterError> {
        let delayed = std::mem::take(&mut self.delayed);
        if !delayed.is_empty() {
            let wanted: Vec<(Oid, PathBuf)> = delayed
                .iter()
                .map(|(path, marker)| (marker.oid, path.clone()))
                .collect();
            let sizes = delayed.values().map(|m| (m.oid, m.size)).collect();
            // Per-object failures surface when git asks for each file.
            if let Err(err) = self.ws.ensure_many(&wanted, &sizes) {
                report(&err);
            }
        }
        let lines: Vec<String> = delayed
            .keys()
            .map(|path| format!("pathname={}", path.display()))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        writer.list(&refs)?;
        writer.list(&["status=success"])?;
        self.ready.extend(delayed);
        Ok(())
    }
}

/// Answers git's request with a failure, after saying why on stderr.
fn refuse<W: Write>(
    writer: &mut PktWriter<W>,
    err: &Error,
) -> std::result::Result<(), FilterError> {
    report(err);
    writer.list(&["status=error"])?;
    Ok(())
}

fn send_bytes<W: Write>(
    writer: &mut PktWriter<W>,
    bytes: &[u8],
) -> std::result::Result<(), FilterError> {
    writer.list(&["status=success"])?;
    let mut out = writer.content();
    out.write_all(bytes)?;
    out.finish()?;
    writer.flush_packet()?;
    writer.flush_packet()?;
    Ok(())
}
