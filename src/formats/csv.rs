//! CSV (and any one-byte delimiter), with a header record naming the
//! columns or with columns by position, read record by record with a size cap.

use std::io::{BufReader, Read};

use super::RecordSource;
use super::csv_reader::{Dialect, Next, Record, RecordReader};
use super::framing::{FileValues, TrailerCheck, header_values};
use crate::problem::{Code, Problem};
use crate::schema::{CsvLayout, Encoding, Schema, TrailerRecord};
use crate::validate::{Decoder, Outcome, ReadError, Value, check_record_in_file, match_header};

/// Streams a CSV file through the schema, one record at a time.
pub struct CsvSource<'s, R: Read> {
    schema: &'s Schema,
    trailer_record: Option<&'s TrailerRecord>,
    reader: RecordReader<BufReader<R>>,
    decoder: Decoder,
    /// For each field of the file, the schema column it fills.
    field_columns: Vec<Option<usize>>,
    record: Record,
    /// The record after `record`, read ahead when the trailer is the last
    /// record whatever it holds: only the end of the file tells it apart.
    ahead: Option<(Next, Record)>,
    /// A buffer to read ahead into, kept between records.
    spare: Record,
    /// Data records read so far: header and trailer records excluded.
    records: u64,
    /// The trailer record, when the feed has one: what it says, checked at the end.
    trailer: Option<TrailerCheck<'s>>,
    /// The header record's checked fields, by column: every record's too.
    file_values: FileValues,
    /// A mapped row's values, given back to fill with the next record's.
    spare_row: Option<Vec<Value>>,
}

impl<'s, R: Read> CsvSource<'s, R> {
    /// Reads the header, when the file has one. Problems with it (missing or
    /// unexpected columns) are returned in the `Vec`; the file can then not be
    /// read further.
    pub fn open(
        schema: &'s Schema,
        layout: &'s CsvLayout,
        input: R,
        encoding: Encoding,
        received: Option<(usize, Value)>,
    ) -> Result<Result<Self, Vec<Problem>>, ReadError> {
        let mut reader = RecordReader::new(
            BufReader::with_capacity(64 << 10, input),
            Dialect {
                delimiter: layout.delimiter,
                quote: layout.quote,
                max_record_bytes: schema.max_record_bytes,
            },
        );
        let mut decoder = Decoder::new(encoding);
        let source = |reader, decoder, field_columns, record, file_values| CsvSource {
            schema,
            trailer_record: layout.trailer_record.as_ref(),
            reader,
            decoder,
            field_columns,
            record,
            ahead: None,
            spare: Record::default(),
            records: 0,
            trailer: layout.trailer_record.as_ref().map(TrailerCheck::new),
            file_values,
            spare_row: None,
        };
        let mut header = Record::default();
        let mut file_values: FileValues = received.into_iter().collect();
        if let Some(expected) = &layout.header_record {
            let found = reader.next(&mut header)?;
            let tagged = found == Next::Record
                && expected
                    .tag
                    .as_ref()
                    .is_none_or(|tag| first_field_is(&header, tag));
            if !tagged {
                let what = match &expected.tag {
                    Some(tag) => format!("a first record starting `{tag}`"),
                    None => "a header record".to_string(),
                };
                return Ok(Err(vec![Problem::file(
                    header.line.max(1),
                    Code::HeaderRecordMissing,
                    format!("the file does not start with its header record: {what} was expected"),
                )]));
            }
            let fields: Vec<&[u8]> = header.iter().collect();
            match header_values(expected, header.line, &fields, &mut decoder)? {
                Ok(values) => file_values.extend(values),
                Err(problems) => return Ok(Err(problems)),
            }
        }
        if let Some(positions) = &layout.positions {
            return Ok(Ok(source(
                reader,
                decoder,
                positions.clone(),
                header,
                file_values,
            )));
        }
        let header_problem = |code, message| vec![Problem::file(1, code, message)];
        match reader.next(&mut header)? {
            Next::Record => {}
            Next::End => {
                return Ok(Err(header_problem(
                    Code::EmptyFile,
                    "the file is empty: a header record was expected".into(),
                )));
            }
            Next::TooLarge { .. } => {
                return Ok(Err(header_problem(
                    Code::HeaderTooLarge,
                    format!(
                        "the first record is longer than the feed's limit of {} bytes \
                         (`max_record_size`): the file has no usable header",
                        schema.max_record_bytes
                    ),
                )));
            }
            Next::UnclosedQuote { line } => {
                return Ok(Err(header_problem(
                    Code::UnclosedQuote,
                    format!("a quoted field in the header opened on line {line} is never closed"),
                )));
            }
        }
        let field_columns = match match_header(schema, &mut decoder, header.iter())? {
            Ok(field_columns) => field_columns,
            Err(problems) => return Ok(Err(problems)),
        };
        Ok(Ok(source(
            reader,
            decoder,
            field_columns,
            header,
            file_values,
        )))
    }
}

impl<R: Read> CsvSource<'_, R> {
    fn read_trailer(&mut self) {
        let fields: Vec<&[u8]> = self.record.iter().collect();
        if let Some(trailer) = &mut self.trailer {
            trailer.read(self.record.line, &fields);
        }
    }

    fn spoilt(&mut self) {
        if let Some(trailer) = &mut self.trailer {
            trailer.spoilt();
        }
    }
}

/// Whether a record's first field is `tag` (spaces around it ignored).
fn first_field_is(record: &Record, tag: &str) -> bool {
    record
        .iter()
        .next()
        .is_some_and(|f| f.trim_ascii() == tag.as_bytes())
}

impl<R: Read> RecordSource for CsvSource<'_, R> {
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        let next = match self.ahead.take() {
            Some((next, record)) => {
                self.spare = std::mem::replace(&mut self.record, record);
                next
            }
            None => self.reader.next(&mut self.record)?,
        };
        if self.trailer_record.is_some_and(|t| t.tag.is_none()) && next == Next::Record {
            let mut following = std::mem::take(&mut self.spare);
            let after = self.reader.next(&mut following)?;
            if after == Next::End {
                self.read_trailer();
                return Ok(None);
            }
            self.ahead = Some((after, following));
        }
        let invalid =
            |line, code, message| Some(Outcome::Invalid(vec![Problem::file(line, code, message)]));
        let outcome = match next {
            Next::End => return Ok(None),
            Next::TooLarge { line } => invalid(
                line,
                Code::RecordTooLarge,
                format!(
                    "the record is longer than the feed's limit of {} bytes (`max_record_size`)",
                    self.schema.max_record_bytes
                ),
            ),
            Next::UnclosedQuote { line } => invalid(
                line,
                Code::UnclosedQuote,
                format!(
                    "a quoted field opened on line {line} is never closed: the rest of the file was read into it"
                ),
            ),
            Next::Record => {
                let trailer_line = self.trailer.as_ref().and_then(TrailerCheck::line);
                if let Some(tag) = self.trailer_record.and_then(|t| t.tag.as_ref())
                    && trailer_line.is_none()
                    && first_field_is(&self.record, tag)
                {
                    self.read_trailer();
                    return self.next_outcome();
                }
                if let Some(trailer_line) = trailer_line {
                    self.spoilt();
                    return Ok(invalid(
                        self.record.line,
                        Code::AfterTrailer,
                        format!("a record after the trailer record on line {trailer_line}"),
                    ));
                }
                let record = &self.record;
                let texts = self
                    .decoder
                    .borrow_whole(record.content())
                    .and_then(|whole| record.texts(whole));
                let outcome = match texts {
                    Some(texts) => check_record_in_file(
                        self.schema,
                        &self.field_columns,
                        &mut self.decoder,
                        record.line,
                        texts,
                        &self.file_values,
                        self.spare_row.take().unwrap_or_default(),
                    )?,
                    None => check_record_in_file(
                        self.schema,
                        &self.field_columns,
                        &mut self.decoder,
                        record.line,
                        record.iter(),
                        &self.file_values,
                        self.spare_row.take().unwrap_or_default(),
                    )?,
                };
                if let Some(trailer) = &mut self.trailer {
                    trailer.count(&outcome);
                }
                Some(outcome)
            }
        };
        if !matches!(outcome, Some(Outcome::Valid(_))) {
            self.spoilt();
        }
        self.records += 1;
        Ok(outcome)
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn reuse(&mut self, values: Vec<Value>) {
        self.spare_row = Some(values);
    }

    fn finish(&mut self) -> Vec<Problem> {
        let (records, line) = (self.records, self.record.line);
        match &mut self.trailer {
            Some(trailer) => trailer.finish(records, line),
            None => Vec::new(),
        }
    }
}
