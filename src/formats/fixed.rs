//! Fixed-width text: one record a line, each column at its own characters
//! (`start`, `length`), padding trimmed; optionally a header line and a
//! trailer line framing them. Lines are read with a size cap, so a file
//! without line breaks is never held whole.

use std::io::{BufRead, BufReader, Read};

use super::RecordSource;
use super::framing::{FileValues, TrailerCheck, header_values};
use crate::problem::{Code, Problem};
use crate::schema::{Encoding, FixedLayout, Schema};
use crate::validate::{Decoder, Outcome, ReadError, Value, check_record_in_file};

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
    /// The line after `line` (what it was, its text, its number), read
    /// ahead when the trailer is the last line whatever it holds.
    ahead: Option<(Line, Vec<u8>, u64)>,
    /// The trailer line, when the feed has one: what it says, checked at the end.
    trailer: Option<TrailerCheck<'s>>,
    /// The header line's checked fields, by column: every record's too.
    file_values: FileValues,
    /// A mapped row's values, given back to fill with the next record's.
    spare_row: Option<Vec<Value>>,
}

enum Line {
    Text,
    TooLarge,
    End,
}

impl<'s, R: Read> FixedSource<'s, R> {
    /// Reads the header line, when the feed has one; problems with it come
    /// back in the `Vec`, and the file can then not be read further.
    pub fn open(
        schema: &'s Schema,
        layout: &'s FixedLayout,
        input: R,
        encoding: Encoding,
        received: Option<(usize, Value)>,
    ) -> Result<Result<FixedSource<'s, R>, Vec<Problem>>, ReadError> {
        let mut source = FixedSource {
            schema,
            layout,
            input: BufReader::with_capacity(64 << 10, input),
            decoder: Decoder::new(encoding),
            utf8: matches!(encoding, Encoding::Utf8 | Encoding::Auto),
            field_columns: (0..schema.data_columns()).map(Some).collect(),
            width: layout.width(),
            line: Vec::new(),
            offsets: Vec::new(),
            lines: 0,
            records: 0,
            ahead: None,
            trailer: layout
                .trailer_record
                .as_ref()
                .map(|t| TrailerCheck::new(&t.record)),
            file_values: received.into_iter().collect(),
            spare_row: None,
        };
        let Some(header) = &layout.header_record else {
            return Ok(Ok(source));
        };
        let found = source.next_line()?;
        let tagged = matches!(found, Some((Line::Text, _)))
            && header
                .record
                .tag
                .as_ref()
                .is_none_or(|tag| source.line.starts_with(tag.as_bytes()));
        let number = found.map_or(1, |(_, n)| n);
        if !tagged {
            let what = match &header.record.tag {
                Some(tag) => format!("a first line starting `{tag}`"),
                None => "a header line".to_string(),
            };
            return Ok(Err(vec![Problem::file(
                number,
                Code::HeaderRecordMissing,
                format!("the file does not start with its header record: {what} was expected"),
            )]));
        }
        let fields = match source.cut(&header.spans) {
            Ok(fields) => fields,
            Err(chars) => {
                return Ok(Err(vec![Problem::file(
                    number,
                    Code::FieldCount,
                    format!(
                        "the header line is {chars} characters long; its checked fields need {}",
                        width(&header.spans)
                    ),
                )]));
            }
        };
        let line = source.line.clone();
        let fields: Vec<&[u8]> = fields.iter().map(|&(a, b)| &line[a..b]).collect();
        match header_values(&header.record, number, &fields, &mut source.decoder)? {
            Ok(values) => source.file_values.extend(values),
            Err(problems) => return Ok(Err(problems)),
        }
        Ok(Ok(source))
    }

    /// The next line that is not blank, into `self.line`, with its number.
    fn next_line(&mut self) -> std::io::Result<Option<(Line, u64)>> {
        if let Some((line, text, number)) = self.ahead.take() {
            self.line = text;
            return Ok(Some((line, number)));
        }
        loop {
            match self.read_line()? {
                Line::End => return Ok(None),
                Line::Text if self.line.iter().all(|b| b.is_ascii_whitespace()) => continue,
                line => return Ok(Some((line, self.lines))),
            }
        }
    }

    /// Whether the line in `self.line` is the file's last that is not blank:
    /// the next is read ahead, and kept for `next_line`.
    fn is_last(&mut self) -> std::io::Result<bool> {
        let current = std::mem::take(&mut self.line);
        let next = self.next_line()?;
        let following = std::mem::replace(&mut self.line, current);
        match next {
            None => Ok(true),
            Some((line, number)) => {
                self.ahead = Some((line, following, number));
                Ok(false)
            }
        }
    }

    /// The byte ranges of `spans` in the line, trimmed as the layout says;
    /// `Err` with the line's length in characters when it is too short.
    fn cut(&mut self, spans: &[(usize, usize)]) -> Result<Vec<(usize, usize)>, usize> {
        let needed = width(spans);
        let chars = self.count_characters(needed);
        if chars < needed {
            return Err(chars);
        }
        let offsets = &self.offsets;
        let byte = |char_index: usize| offsets.get(char_index).copied().unwrap_or(char_index);
        Ok(spans
            .iter()
            .map(|&(start, length)| {
                let (mut from, mut to) = (byte(start), byte(start + length));
                if self.layout.trim {
                    let field = &self.line[from..to];
                    let kept = field.trim_ascii();
                    from += kept.as_ptr() as usize - field.as_ptr() as usize;
                    to = from + kept.len();
                }
                (from, to)
            })
            .collect())
    }

    /// The fields of a trailer line, for its check.
    fn read_trailer(&mut self, number: u64) {
        let Some(framed) = &self.layout.trailer_record else {
            return;
        };
        // A trailer too short for its fields says nothing: each is then missing.
        let ranges = self.cut(&framed.spans).unwrap_or_default();
        let fields: Vec<&[u8]> = ranges.iter().map(|&(a, b)| &self.line[a..b]).collect();
        if let Some(trailer) = &mut self.trailer {
            trailer.read(number, &fields);
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
    fn count_characters(&mut self, width: usize) -> usize {
        self.offsets.clear();
        let text = match std::str::from_utf8(&self.line) {
            Ok(text) if self.utf8 && !self.line.is_ascii() => text,
            _ => return self.line.len(),
        };
        self.offsets.extend(
            text.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(text.len()))
                .take(width + 1),
        );
        self.offsets.len() - 1
    }
}

/// The characters a line must have to hold every one of `spans`.
fn width(spans: &[(usize, usize)]) -> usize {
    spans.iter().map(|(s, l)| s + l).max().unwrap_or(0)
}

impl<R: Read> RecordSource for FixedSource<'_, R> {
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        let Some((line, number)) = self.next_line()? else {
            return Ok(None);
        };
        if let Some(framed) = &self.layout.trailer_record
            && let Some(trailer) = &self.trailer
            && trailer.line().is_none()
            && matches!(line, Line::Text)
        {
            let is_trailer = match &framed.record.tag {
                Some(tag) => self.line.starts_with(tag.as_bytes()),
                None => self.is_last()?,
            };
            if is_trailer {
                self.read_trailer(number);
                return self.next_outcome();
            }
        }
        let invalid = |this: &mut Self, code, message| {
            if let Some(trailer) = &mut this.trailer {
                trailer.spoilt();
            }
            Ok(Some(Outcome::Invalid(vec![Problem::file(
                number, code, message,
            )])))
        };
        if let Some(trailer_line) = self.trailer.as_ref().and_then(TrailerCheck::line) {
            return invalid(
                self,
                Code::AfterTrailer,
                format!("a record after the trailer record on line {trailer_line}"),
            );
        }
        self.records += 1;
        if matches!(line, Line::TooLarge) {
            let message = format!(
                "the record is longer than the feed's limit of {} bytes (`max_record_size`)",
                self.schema.max_record_bytes
            );
            return invalid(self, Code::RecordTooLarge, message);
        }
        let ranges = match self.cut(&self.layout.spans) {
            Ok(ranges) => ranges,
            Err(chars) => {
                let message = format!(
                    "the record is {chars} characters long; the layout needs {}",
                    self.width
                );
                return invalid(self, Code::FieldCount, message);
            }
        };
        let line = &self.line;
        let fields = ranges.iter().map(|&(a, b)| &line[a..b]);
        let outcome = check_record_in_file(
            self.schema,
            &self.field_columns,
            &mut self.decoder,
            number,
            fields,
            &self.file_values,
            self.spare_row.take().unwrap_or_default(),
        )?;
        if let Some(trailer) = &mut self.trailer {
            trailer.count(&outcome);
        }
        Ok(Some(outcome))
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn reuse(&mut self, values: Vec<Value>) {
        self.spare_row = Some(values);
    }

    fn finish(&mut self) -> Vec<Problem> {
        let (records, line) = (self.records, self.lines.max(1));
        match &mut self.trailer {
            Some(trailer) => trailer.finish(records, line),
            None => Vec::new(),
        }
    }
}
