//! Fixed-width text: one record a line, each column at its own characters
//! (`start`, `length`), padding trimmed. Lines are read with a size cap, so
//! a file without line breaks is never held whole.

use std::io::{BufRead, BufReader, Read};

use super::RecordSource;
use crate::problem::{Code, Problem};
use crate::schema::{Encoding, FixedLayout, Schema};
use crate::validate::{Decoder, Outcome, ReadError, check_record};

pub struct FixedSource<'s, R: Read> {
    schema: &'s Schema,
    layout: &'s FixedLayout,
    input: BufReader<R>,
    decoder: Decoder,
    /// Positions in characters are positions in bytes, except in UTF-8 text.
    utf8: bool,
    /// Field `i` fills column `i`.
    field_columns: Vec<Option<usize>>,
    /// The characters a record must have to hold every column.
    width: usize,
    line: Vec<u8>,
    /// Byte offsets of the line's first `width + 1` character boundaries,
    /// when characters are not bytes.
    offsets: Vec<usize>,
    /// Lines read so far, blank ones included.
    lines: u64,
    records: u64,
}

enum Line {
    Text,
    TooLarge,
    End,
}

impl<'s, R: Read> FixedSource<'s, R> {
    pub fn open(
        schema: &'s Schema,
        layout: &'s FixedLayout,
        input: R,
        encoding: Encoding,
    ) -> FixedSource<'s, R> {
        FixedSource {
            schema,
            layout,
            input: BufReader::with_capacity(64 << 10, input),
            decoder: Decoder::new(encoding),
            utf8: matches!(encoding, Encoding::Utf8 | Encoding::Auto),
            field_columns: (0..schema.columns.len()).map(Some).collect(),
            width: layout.width(),
            line: Vec::new(),
            offsets: Vec::new(),
            lines: 0,
            records: 0,
        }
    }

    /// The next line into `self.line`, without its line break; beyond the
    /// cap the rest of the line is skipped, not kept.
    fn read_line(&mut self) -> std::io::Result<Line> {
        self.line.clear();
        let cap = self.schema.max_record_bytes;
        let mut too_large = false;
        let mut any = false;
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            let room = cap.saturating_sub(self.line.len());
            if take > room {
                too_large = true;
            }
            self.line.extend_from_slice(&available[..take.min(room)]);
            self.input.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        if !any {
            return Ok(Line::End);
        }
        self.lines += 1;
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        // A byte-order mark is not the first character of the first record.
        if self.lines == 1 && self.utf8 && self.line.starts_with(b"\xEF\xBB\xBF") {
            self.line.drain(..3);
        }
        Ok(if too_large {
            Line::TooLarge
        } else {
            Line::Text
        })
    }

    /// How many characters the line has, counting no further than the
    /// layout's width; where characters are not bytes, notes the byte
    /// offset of each of them (and of the end) in `offsets`.
    fn count_characters(&mut self) -> usize {
        self.offsets.clear();
        let text = match std::str::from_utf8(&self.line) {
            Ok(text) if self.utf8 && !self.line.is_ascii() => text,
            _ => return self.line.len(),
        };
        self.offsets.extend(
            text.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(text.len()))
                .take(self.width + 1),
        );
        self.offsets.len() - 1
    }
}

impl<R: Read> RecordSource for FixedSource<'_, R> {
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        let line = loop {
            match self.read_line()? {
                Line::End => return Ok(None),
                Line::Text if self.line.iter().all(|b| b.is_ascii_whitespace()) => continue,
                line => break line,
            }
        };
        self.records += 1;
        let number = self.lines;
        if matches!(line, Line::TooLarge) {
            return Ok(Some(Outcome::Invalid(vec![Problem::file(
                number,
                Code::RecordTooLarge,
                format!(
                    "the record is longer than the feed's limit of {} bytes (`max_record_size`)",
                    self.schema.max_record_bytes
                ),
            )])));
        }
        let chars = self.count_characters();
        let needed = self.width;
        if chars < needed {
            return Ok(Some(Outcome::Invalid(vec![Problem::file(
                number,
                Code::FieldCount,
                format!("the record is {chars} characters long; the layout needs {needed}"),
            )])));
        }
        let offsets = &self.offsets;
        let byte = |char_index: usize| offsets.get(char_index).copied().unwrap_or(char_index);
        let fields: Vec<&[u8]> = self
            .layout
            .spans
            .iter()
            .map(|&(start, length)| {
                let field = &self.line[byte(start)..byte(start + length)];
                if self.layout.trim {
                    field.trim_ascii()
                } else {
                    field
                }
            })
            .collect();
        Ok(Some(check_record(
            self.schema,
            &self.field_columns,
            &mut self.decoder,
            number,
            fields.iter().copied(),
        )?))
    }

    fn records(&self) -> u64 {
        self.records
    }
}
