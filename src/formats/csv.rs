//! CSV (and any one-byte delimiter), with a header record naming the
//! columns or with columns by position, read record by record with a size cap.

use std::io::{BufReader, Read};

use super::RecordSource;
use super::csv_reader::{Dialect, Next, Record, RecordReader};
use crate::problem::{Code, Problem};
use crate::schema::{CsvLayout, Encoding, Schema};
use crate::validate::{Decoder, Outcome, ReadError, check_record, match_header};

/// Streams a CSV file through the schema, one record at a time.
pub struct CsvSource<'s, R: Read> {
    schema: &'s Schema,
    reader: RecordReader<BufReader<R>>,
    decoder: Decoder,
    /// For each field of the file, the schema column it fills.
    field_columns: Vec<Option<usize>>,
    record: Record,
    /// Records read so far, header excluded.
    records: u64,
}

impl<'s, R: Read> CsvSource<'s, R> {
    /// Reads the header, when the file has one. Problems with it (missing or
    /// unexpected columns) are returned in the `Vec`; the file can then not be
    /// read further.
    pub fn open(
        schema: &'s Schema,
        layout: &CsvLayout,
        input: R,
        encoding: Encoding,
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
        if let Some(positions) = &layout.positions {
            return Ok(Ok(CsvSource {
                schema,
                reader,
                decoder,
                field_columns: positions.clone(),
                record: Record::default(),
                records: 0,
            }));
        }
        let mut header = Record::default();
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
        Ok(Ok(CsvSource {
            schema,
            reader,
            decoder,
            field_columns,
            record: header,
            records: 0,
        }))
    }
}

impl<R: Read> RecordSource for CsvSource<'_, R> {
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        let next = self.reader.next(&mut self.record)?;
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
            Next::Record => Some(check_record(
                self.schema,
                &self.field_columns,
                &mut self.decoder,
                self.record.line,
                self.record.iter(),
            )?),
        };
        self.records += 1;
        Ok(outcome)
    }

    fn records(&self) -> u64 {
        self.records
    }
}
