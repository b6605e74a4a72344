//! git's pkt-line framing: 4 hex digits of length (counting themselves), then the payload;
//! `0000` is a flush. Content streams through [`ContentReader`] and [`ContentWriter`]
//! in packets, so a blob of any size never sits in memory.

use std::io::{self, Read, Write};

/// The largest packet git accepts, header included.
pub const MAX_PACKET: usize = 65520;
/// The most payload one packet carries.
pub const MAX_PAYLOAD: usize = MAX_PACKET - 4;

/// A protocol violation: what was expected and what came instead.
#[derive(Debug, thiserror::Error)]
pub enum PktError {
    #[error("git closed the filter pipe")]
    Closed,
    #[error("malformed pkt-line from git: {0}")]
    Malformed(String),
    #[error("pipe to git: {0}")]
    Io(#[from] io::Error),
}

/// One packet read: data, or the flush that ends a list or a content stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    Data(Vec<u8>),
    Flush,
}

/// Reads packets from git.
pub struct PktReader<R> {
    inner: R,
}

impl<R: Read> PktReader<R> {
    pub fn new(inner: R) -> PktReader<R> {
        PktReader { inner }
    }

    /// Reads one packet's header; returns the payload length, or None for a flush.
    /// A clean end of input before any header byte is [`PktError::Closed`].
    fn read_header(&mut self) -> Result<Option<usize>, PktError> {
        let mut header = [0u8; 4];
        let mut filled = 0;
        while filled < 4 {
            match self.inner.read(&mut header[filled..]) {
                Ok(0) if filled == 0 => return Err(PktError::Closed),
                Ok(0) => {
                    return Err(PktError::Malformed(format!(
                        "input ended inside a packet header ({filled} of 4 bytes)"
                    )))
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        let text = std::str::from_utf8(&header)
            .ok()
            .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                PktError::Malformed(format!(
                    "bad packet length {:?}",
                    String::from_utf8_lossy(&header)
                ))
            })?;
        let len = usize::from_str_radix(text, 16).expect("four hex digits");
        match len {
            0 => Ok(None),
            1..=4 => Err(PktError::Malformed(format!(
                "packet length {text} is not allowed"
            ))),
            len if len > MAX_PACKET => Err(PktError::Malformed(format!(
                "packet length {len} is over the limit of {MAX_PACKET}"
            ))),
            len => Ok(Some(len - 4)),
        }
    }

    fn read_payload(&mut self, len: usize) -> Result<Vec<u8>, PktError> {
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).map_err(|err| {
            if err.kind() == io::ErrorKind::UnexpectedEof {
                PktError::Malformed(format!("input ended inside a {len}-byte packet"))
            } else {
                err.into()
            }
        })?;
        Ok(payload)
    }

    pub fn read_packet(&mut self) -> Result<Packet, PktError> {
        match self.read_header()? {
            None => Ok(Packet::Flush),
            Some(len) => Ok(Packet::Data(self.read_payload(len)?)),
        }
    }

    /// Reads one text line (trailing LF removed); a flush here is a protocol error.
    pub fn read_line(&mut self) -> Result<String, PktError> {
        match self.read_packet()? {
            Packet::Data(data) => text_line(data),
            Packet::Flush => Err(PktError::Malformed(
                "expected a text line, got a flush".into(),
            )),
        }
    }

    /// Reads text lines up to the next flush.
    pub fn read_list(&mut self) -> Result<Vec<String>, PktError> {
        let mut lines = Vec::new();
        loop {
            match self.read_packet()? {
                Packet::Data(data) => lines.push(text_line(data)?),
                Packet::Flush => return Ok(lines),
            }
        }
    }

    /// Reads `key=value` lines up to the next flush. Keys never hold `=`; values may.
    pub fn read_pairs(&mut self) -> Result<Vec<(String, String)>, PktError> {
        self.read_list()?
            .into_iter()
            .map(|line| match line.split_once('=') {
                Some((key, value)) => Ok((key.to_string(), value.to_string())),
                None => Err(PktError::Malformed(format!(
                    "expected key=value, got {line:?}"
                ))),
            })
            .collect()
    }

    /// The content packets up to the next flush, as a stream.
    pub fn content(&mut self) -> ContentReader<'_, R> {
        ContentReader {
            reader: self,
            buf: Vec::new(),
            pos: 0,
            done: false,
            broken: None,
        }
    }
}

fn text_line(mut data: Vec<u8>) -> Result<String, PktError> {
    if data.last() == Some(&b'\n') {
        data.pop();
    }
    String::from_utf8(data)
        .map_err(|err| PktError::Malformed(format!("a text line that is not UTF-8: {err}")))
}

/// Reads content packets until the flush that ends them.
pub struct ContentReader<'a, R> {
    reader: &'a mut PktReader<R>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    /// The first protocol error: the stream is unusable after it, and it is the one
    /// worth reporting (not the end of input that follows).
    broken: Option<String>,
}

impl<R: Read> ContentReader<'_, R> {
    /// Reads and drops whatever content is left, up to its flush.
    pub fn drain(&mut self) -> Result<(), PktError> {
        while !self.done {
            self.fill()?;
            self.pos = self.buf.len();
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<(), PktError> {
        if let Some(message) = &self.broken {
            return Err(PktError::Malformed(message.clone()));
        }
        while self.pos == self.buf.len() && !self.done {
            match self.reader.read_packet() {
                Ok(Packet::Data(data)) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Ok(Packet::Flush) => self.done = true,
                Err(PktError::Closed) => {
                    let message = "git closed the pipe in the middle of the content";
                    self.broken = Some(message.into());
                    return Err(PktError::Malformed(message.into()));
                }
                Err(err) => {
                    self.broken = Some(match &err {
                        PktError::Malformed(m) => m.clone(),
                        other => other.to_string(),
                    });
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.fill().map_err(|err| match err {
            PktError::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        })?;
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes packets to git.
pub struct PktWriter<W: Write> {
    inner: W,
}

impl<W: Write> PktWriter<W> {
    pub fn new(inner: W) -> PktWriter<W> {
        PktWriter { inner }
    }

    pub fn data(&mut self, payload: &[u8]) -> io::Result<()> {
        debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
        write!(self.inner, "{:04x}", payload.len() + 4)?;
        self.inner.write_all(payload)
    }

    /// One text line, LF-terminated as git writes them.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let mut payload = Vec::with_capacity(text.len() + 1);
        payload.extend_from_slice(text.as_bytes());
        payload.push(b'\n');
        self.data(&payload)
    }

    pub fn flush_packet(&mut self) -> io::Result<()> {
        self.inner.write_all(b"0000")?;
        self.inner.flush()
    }

    /// Lines then a flush.
    pub fn list(&mut self, lines: &[&str]) -> io::Result<()> {
        for line in lines {
            self.line(line)?;
        }
        self.flush_packet()
    }

    /// Content as packets (no flush: the caller ends it, maybe with an error status).
    pub fn content(&mut self) -> ContentWriter<'_, W> {
        ContentWriter {
            writer: self,
            buf: Vec::with_capacity(MAX_PAYLOAD),
        }
    }
}

/// Cuts a byte stream into full packets.
pub struct ContentWriter<'a, W: Write> {
    writer: &'a mut PktWriter<W>,
    buf: Vec<u8>,
}

impl<W: Write> ContentWriter<'_, W> {
    /// Sends what is buffered; call before ending the content with a flush.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.writer.data(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl<W: Write> Write for ContentWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PAYLOAD {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            if chunk.is_empty() {
                out.extend_from_slice(b"0000");
            } else {
                out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
                out.extend_from_slice(chunk);
            }
        }
        out
    }

    #[test]
    fn lines_pairs_and_content_round_trip() {
        let input = framed(&[
            b"command=smudge\n",
            b"pathname=a=b.bin",
            b"",
            b"abc",
            b"def",
            b"",
        ]);
        let mut reader = PktReader::new(&input[..]);
        assert_eq!(
            reader.read_pairs().unwrap(),
            vec![
                ("command".to_string(), "smudge".to_string()),
                ("pathname".to_string(), "a=b.bin".to_string())
            ]
        );
        let mut content = Vec::new();
        reader.content().read_to_end(&mut content).unwrap();
        assert_eq!(content, b"abcdef");
        assert!(matches!(reader.read_packet(), Err(PktError::Closed)));
    }

    #[test]
    fn big_content_is_cut_into_full_packets() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        {
            let mut writer = PktWriter::new(&mut out);
            let mut content = writer.content();
            content.write_all(&data).unwrap();
            content.finish().unwrap();
            writer.flush_packet().unwrap();
        }
        assert_eq!(&out[..4], format!("{MAX_PACKET:04x}").as_bytes());
        let mut reader = PktReader::new(&out[..]);
        let mut back = Vec::new();
        reader.content().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for (input, expect) in [
            (&b"zz12hello"[..], "bad packet length"),
            (b"0003", "not allowed"),
            (b"fff1", "over the limit"),
            (b"0010abc", "ended inside"),
            (b"00", "inside a packet header"),
        ] {
            let err = PktReader::new(input).read_packet().unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        let err = PktReader::new(&framed(&[b"novalue", b""])[..])
            .read_pairs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("key=value"), "{err}");
    }
}
