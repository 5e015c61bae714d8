//! Delimited records read with a size cap.
//!
//! The `csv` crate's reader grows a record's buffer until the record ends, so
//! a file with no line break is held whole in memory. This reader drives
//! `csv_core` (the same parser) with a buffer that stops growing at the cap:
//! the rest of an over-long record is parsed into a scratch buffer and
//! dropped, and the record is reported as too large.

use std::io::{self, BufRead};

/// How records are split, and how large one may be.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    /// Counted in the file's own bytes (delimiters, quotes and the line
    /// break included), so neither the field text nor the number of fields
    /// can grow past it.
    pub max_record_bytes: usize,
}

/// Where in a field the parser is, followed byte by byte beside it: only
/// this tells a file that ends inside a quoted field from a last line that
/// merely holds a stray quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or half of `""`.
    QuoteInQuoted,
}

impl Quoting {
    fn after(self, byte: u8, dialect: &Dialect) -> Quoting {
        let ends_field = byte == dialect.delimiter || byte == b'\n' || byte == b'\r';
        match self {
            Quoting::FieldStart if byte == dialect.quote => Quoting::Quoted,
            Quoting::FieldStart | Quoting::Unquoted if ends_field => Quoting::FieldStart,
            Quoting::FieldStart | Quoting::Unquoted => Quoting::Unquoted,
            Quoting::Quoted if byte == dialect.quote => Quoting::QuoteInQuoted,
            Quoting::Quoted => Quoting::Quoted,
            Quoting::QuoteInQuoted if byte == dialect.quote => Quoting::Quoted,
            Quoting::QuoteInQuoted if ends_field => Quoting::FieldStart,
            Quoting::QuoteInQuoted => Quoting::Unquoted,
        }
    }
}

/// One record's fields, as raw bytes.
#[derive(Debug, Default)]
pub struct Record {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
    /// 1-based line the record starts on.
    pub line: u64,
}

impl Record {
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone {
        let ends = &self.ends[..self.fields];
        ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.bytes[start..end]
        })
    }

    /// The fields' bytes end to end, as [`Record::texts`] takes them decoded.
    pub fn content(&self) -> &[u8] {
        let end = self.fields.checked_sub(1).map_or(0, |last| self.ends[last]);
        &self.bytes[..end]
    }

    /// The fields as slices of `whole`, the text of [`Record::content`];
    /// `None` if a field does not start and end on a character boundary
    /// (bytes that are a character only once fields are joined).
    pub fn texts<'a>(
        &'a self,
        whole: &'a str,
    ) -> Option<impl ExactSizeIterator<Item = &'a str> + Clone> {
        let ends = &self.ends[..self.fields];
        if !ends.iter().all(|&end| whole.is_char_boundary(end)) {
            return None;
        }
        Some(ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &whole[start..end]
        }))
    }

    /// A lone empty field: a line holding nothing but blanks the parser kept.
    fn is_blank(&self) -> bool {
        self.fields == 1 && self.ends[0] == 0
    }
}

/// What reading the next record found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record,
    /// Longer than the cap; its bytes were dropped. The record starts on `line`.
    TooLarge {
        line: u64,
    },
    /// The file ended inside a quoted field that opened on `line`.
    UnclosedQuote {
        line: u64,
    },
    End,
}

/// Reads records one at a time from buffered input.
pub struct RecordReader<R> {
    input: R,
    parser: csv_core::Reader,
    dialect: Dialect,
    /// Where over-long records are parsed and dropped.
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
}

const FIRST_RECORD_BYTES: usize = 4 << 10;
const FIRST_ENDS: usize = 64;

impl<R: BufRead> RecordReader<R> {
    pub fn new(input: R, dialect: Dialect) -> RecordReader<R> {
        let parser = csv_core::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .quote(dialect.quote)
            .build();
        RecordReader {
            input,
            parser,
            dialect,
            scratch: Vec::new(),
            scratch_ends: Vec::new(),
        }
    }

    /// Reads the next record into `record`, skipping blank lines.
    pub fn next(&mut self, record: &mut Record) -> io::Result<Next> {
        loop {
            let next = self.next_record(record)?;
            if next == Next::Record && record.is_blank() {
                continue;
            }
            return Ok(next);
        }
    }

    fn next_record(&mut self, record: &mut Record) -> io::Result<Next> {
        use csv_core::ReadRecordResult as Parsed;
        // One byte over the cap: the parser reports a full buffer before it
        // looks at the byte after the last one written, so a record of
        // exactly the cap needs room for one more.
        let cap = self.dialect.max_record_bytes.saturating_add(1);
        self.skip_line_breaks()?;
        record.line = self.parser.line();
        record.fields = 0;
        if record.bytes.is_empty() {
            record.bytes.resize(FIRST_RECORD_BYTES.min(cap), 0);
        }
        if record.ends.is_empty() {
            record.ends.resize(FIRST_ENDS, 0);
        }
        let (mut out, mut ends) = (0, 0);
        let mut raw = 0usize;
        let mut too_large = false;
        let mut quoting = Quoting::FieldStart;
        loop {
            let input = self.input.fill_buf()?;
            let at_end = input.is_empty();
            if too_large && self.scratch.is_empty() {
                // Only a file with an over-long record needs them.
                self.scratch = vec![0; 64 << 10];
                self.scratch_ends = vec![0; 1024];
            }
            let (parsed, read, written, ended) = if too_large {
                self.parser
                    .read_record(input, &mut self.scratch, &mut self.scratch_ends)
            } else {
                self.parser
                    .read_record(input, &mut record.bytes[out..], &mut record.ends[ends..])
            };
            // Only the state at the end of the file matters, and a record
            // that ends here starts the next one afresh: so only the part of
            // a record that runs on past this buffer is followed.
            if parsed != Parsed::Record {
                let dialect = self.dialect;
                quoting = input[..read]
                    .iter()
                    .fold(quoting, |state, &b| state.after(b, &dialect));
            }
            self.input.consume(read);
            raw += read;
            if !too_large {
                out += written;
                ends += ended;
                // The line break that ends a record does not count against it.
                too_large = raw > self.dialect.max_record_bytes + 2;
            }
            match parsed {
                Parsed::InputEmpty => {}
                Parsed::OutputFull if too_large => {}
                Parsed::OutputFull if record.bytes.len() >= cap => too_large = true,
                Parsed::OutputFull => {
                    let grown = (record.bytes.len() * 2).min(cap);
                    record.bytes.resize(grown, 0);
                }
                Parsed::OutputEndsFull if too_large => {}
                Parsed::OutputEndsFull => {
                    let grown = record.ends.len() * 2;
                    record.ends.resize(grown, 0);
                }
                Parsed::Record => {
                    if at_end && quoting == Quoting::Quoted {
                        return Ok(Next::UnclosedQuote {
                            line: if too_large {
                                record.line
                            } else {
                                record.line + unclosed_field_newlines(record, ends)
                            },
                        });
                    }
                    if too_large {
                        return Ok(Next::TooLarge { line: record.line });
                    }
                    record.fields = ends;
                    return Ok(Next::Record);
                }
                Parsed::End => return Ok(Next::End),
            }
        }
    }
}

impl<R: BufRead> RecordReader<R> {
    /// Consumes blank lines before a record (the parser would skip them too)
    /// so that the record's line is the one it starts on.
    fn skip_line_breaks(&mut self) -> io::Result<()> {
        loop {
            let input = self.input.fill_buf()?;
            let breaks = input
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            if breaks == 0 {
                return Ok(());
            }
            let newlines = input[..breaks].iter().filter(|&&b| b == b'\n').count();
            self.parser.set_line(self.parser.line() + newlines as u64);
            self.input.consume(breaks);
        }
    }
}

/// Line breaks inside the fields before the last one (quoted fields may
/// hold them), so the last field's first line can be told.
fn unclosed_field_newlines(record: &Record, ends: usize) -> u64 {
    let last_start = match ends {
        0 | 1 => 0,
        n => record.ends[n - 2],
    };
    record.bytes[..last_start]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(cap: usize) -> Dialect {
        Dialect {
            delimiter: b',',
            quote: b'"',
            max_record_bytes: cap,
        }
    }

    fn read_all(input: &[u8], cap: usize) -> Vec<(Next, u64, Vec<String>)> {
        let mut reader = RecordReader::new(io::BufReader::with_capacity(7, input), dialect(cap));
        let mut record = Record::default();
        let mut out = Vec::new();
        loop {
            let next = reader.next(&mut record).unwrap();
            if next == Next::End {
                return out;
            }
            let fields = if next == Next::Record {
                record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect()
            } else {
                Vec::new()
            };
            out.push((next, record.line, fields));
        }
    }

    #[test]
    fn fields_lines_and_quotes_as_the_csv_crate_reads_them() {
        let got = read_all(b"a,b\n\n\"x\ny\",\"q\"\"q\"\r\nlast,1", 1 << 20);
        assert_eq!(
            got,
            vec![
                (Next::Record, 1, vec!["a".into(), "b".into()]),
                (Next::Record, 3, vec!["x\ny".into(), "q\"q".into()]),
                (Next::Record, 5, vec!["last".into(), "1".into()]),
            ]
        );
    }

    #[test]
    fn an_over_long_record_is_dropped_and_reading_goes_on() {
        let mut input = b"h1,h2\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend(b",y\nok,1\n");
        let got = read_all(&input, 1000);
        assert_eq!(got[0].0, Next::Record);
        assert_eq!(got[1].0, Next::TooLarge { line: 2 });
        assert_eq!(got[2], (Next::Record, 3, vec!["ok".into(), "1".into()]));
    }

    #[test]
    fn a_line_of_delimiters_is_capped_too() {
        let input = format!("a,b\n{}\nok,1\n", ",".repeat(100_000));
        let got = read_all(input.as_bytes(), 1000);
        assert_eq!(got[1].0, Next::TooLarge { line: 2 });
        assert_eq!(got[2].2, ["ok", "1"]);
    }

    #[test]
    fn a_stray_quote_on_a_last_line_is_not_an_open_quote() {
        let got = read_all(b"name,height\nBob,5'11\"", 1 << 20);
        assert_eq!(got[1].0, Next::Record);
        assert_eq!(got[1].2, ["Bob", "5'11\""]);
        let got = read_all(b"a,b\n1,\"2\"\"x", 1 << 20);
        assert_eq!(got[1].0, Next::UnclosedQuote { line: 2 });
    }

    #[test]
    fn fields_are_slices_of_the_decoded_record_only_on_character_boundaries() {
        let mut reader = RecordReader::new(&b"ab,\xc3\xa9\n\xc3,\xa9\n"[..], dialect(1 << 20));
        let mut record = Record::default();
        assert_eq!(reader.next(&mut record).unwrap(), Next::Record);
        let whole = std::str::from_utf8(record.content()).unwrap();
        assert_eq!(whole, "abé");
        let texts: Vec<&str> = record.texts(whole).unwrap().collect();
        assert_eq!(texts, ["ab", "é"]);
        // `é` split by the delimiter: joined, the two fields read as UTF-8,
        // but neither is, so each must go to the decoder on its own.
        assert_eq!(reader.next(&mut record).unwrap(), Next::Record);
        let whole = std::str::from_utf8(record.content()).unwrap();
        assert!(record.texts(whole).is_none());
    }

    #[test]
    fn a_record_of_exactly_the_cap_is_read() {
        let input = format!("{},b\n", "a".repeat(98));
        let got = read_all(input.as_bytes(), 99);
        assert_eq!(got[0].0, Next::Record, "{got:?}");
        assert_eq!(got[0].2[0].len(), 98);
    }

    #[test]
    fn an_unclosed_quote_is_found_where_it_opened() {
        let got = read_all(
            b"a,b\n1,2\n\"multi\nline\",\"open\nrest\nof file\n",
            1 << 20,
        );
        assert_eq!(got[1].0, Next::Record);
        assert_eq!(got[2].0, Next::UnclosedQuote { line: 4 });
        // A last line without a line break is not a problem by itself.
        let got = read_all(b"a,b\n1,\"2\"", 1 << 20);
        assert_eq!(got[1].0, Next::Record);
    }
}
