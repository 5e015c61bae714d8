//! A document's bytes on their way to the XML reader: as UTF-8 whatever
//! single-byte encoding they are in, and counted, for line numbers and the
//! cap on any one item.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::READ_AHEAD;
use crate::schema::Encoding;

/// The input, counting what is read: where its lines start, so an offset can
/// be told as a line and column, and how much has been read since the last
/// item began, so no single item grows without bound.
pub(super) struct Counted<R> {
    inner: R,
    offset: u64,
    since_item: u64,
    cap: u64,
    /// Offsets of line breaks read but not yet passed by a position asked for.
    newlines: VecDeque<u64>,
    line: u64,
    line_start: u64,
}

impl<R> Counted<R> {
    pub(super) fn new(inner: R, cap: u64) -> Counted<R> {
        Counted {
            inner,
            offset: 0,
            since_item: 0,
            cap,
            newlines: VecDeque::new(),
            line: 1,
            line_start: 0,
        }
    }

    /// An item begins: what it may read is counted from here.
    pub(super) fn new_item(&mut self) {
        self.since_item = 0;
    }

    /// Offsets asked for never go back.
    pub(super) fn position(&mut self, offset: u64) -> (u64, u64) {
        while let Some(&newline) = self.newlines.front() {
            if newline >= offset {
                break;
            }
            self.newlines.pop_front();
            self.line += 1;
            self.line_start = newline + 1;
        }
        (self.line, offset.saturating_sub(self.line_start) + 1)
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.since_item > self.cap {
            return Err(io::Error::other(
                "an element tag, text, comment or CDATA section longer than the feed's `max_record_size`",
            ));
        }
        let n = self.inner.read(out)?;
        for i in memchr::memchr_iter(b'\n', &out[..n]) {
            self.newlines.push_back(self.offset + i as u64);
        }
        self.offset += n as u64;
        self.since_item += n as u64;
        Ok(n)
    }
}

/// The characters a document is written in, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Windows1252,
    Latin1,
}

/// A document as UTF-8, whatever single-byte encoding it is in: the feed's,
/// or with `auto` the one its XML declaration names (UTF-8 without one).
pub(super) struct Transcoded<R> {
    inner: R,
    charset: Charset,
    /// Bytes read to find the declaration, not yet passed on.
    head: Vec<u8>,
    /// Transcoded bytes not yet passed on, from `at`.
    out: Vec<u8>,
    at: usize,
    raw: Vec<u8>,
    /// Reading the declaration's bytes failed: told at the first read.
    failed: Option<io::Error>,
}

/// The declaration is looked for this far into the document.
const DECLARATION_BYTES: usize = 512;

impl<R: Read> Transcoded<R> {
    /// The reader, and why the document cannot be read when it cannot (an
    /// encoding dropgate does not read): a fixed message, never the
    /// document's own words.
    pub(super) fn new(mut inner: R, encoding: Encoding) -> (Transcoded<R>, Option<&'static str>) {
        let mut head = Vec::new();
        let mut unreadable = None;
        let mut failed = None;
        let charset = match encoding {
            Encoding::Utf8 => Charset::Utf8,
            Encoding::Windows1252 => Charset::Windows1252,
            Encoding::Latin1 => Charset::Latin1,
            Encoding::Auto => {
                if let Err(e) = (&mut inner)
                    .take(DECLARATION_BYTES as u64)
                    .read_to_end(&mut head)
                {
                    failed = Some(e);
                }
                match declared(&head) {
                    Ok(charset) => charset,
                    Err(why) => {
                        unreadable = Some(why);
                        Charset::Utf8
                    }
                }
            }
        };
        let reader = Transcoded {
            inner,
            charset,
            head,
            out: Vec::new(),
            at: 0,
            raw: vec![0; READ_AHEAD],
            failed,
        };
        (reader, unreadable)
    }
}

/// The encoding an XML declaration names, among those dropgate reads.
fn declared(head: &[u8]) -> Result<Charset, &'static str> {
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err("the document is in UTF-16; dropgate reads UTF-8, Windows-1252 and ISO-8859-1");
    }
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let Some(declaration) = head
        .strip_prefix(b"<?xml")
        .and_then(|rest| rest.split(|&b| b == b'>').next())
    else {
        return Ok(Charset::Utf8);
    };
    let text = String::from_utf8_lossy(declaration);
    let Some(after) = text.split_once("encoding").map(|(_, after)| after) else {
        return Ok(Charset::Utf8);
    };
    let name: String = after
        .trim_start()
        .trim_start_matches('=')
        .trim_start()
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    match name.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => Ok(Charset::Utf8),
        "windows-1252" | "cp1252" => Ok(Charset::Windows1252),
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" => Ok(Charset::Latin1),
        _ => Err(
            "the XML declaration names an encoding dropgate does not read (it reads UTF-8, Windows-1252 and ISO-8859-1)",
        ),
    }
}

impl<R: Read> Read for Transcoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // UTF-8 needs no copy once the bytes read for the declaration are passed on.
        if self.charset == Charset::Utf8 && self.head.is_empty() && self.at == self.out.len() {
            return self.inner.read(buf);
        }
        if self.at == self.out.len() {
            self.out.clear();
            self.at = 0;
            let raw = if self.head.is_empty() {
                let n = self.inner.read(&mut self.raw)?;
                &self.raw[..n]
            } else {
                self.out.reserve(self.head.len());
                &std::mem::take(&mut self.head)[..]
            };
            if raw.is_empty() {
                return Ok(0);
            }
            match self.charset {
                Charset::Utf8 => self.out.extend_from_slice(raw),
                Charset::Windows1252 => {
                    let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(raw);
                    self.out.extend_from_slice(text.as_bytes());
                }
                Charset::Latin1 => {
                    for &byte in raw {
                        let mut utf8 = [0; 2];
                        self.out
                            .extend_from_slice(char::from(byte).encode_utf8(&mut utf8).as_bytes());
                    }
                }
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
