//! CSV (and any one-byte delimiter), with a header record naming the
//! columns or with columns by position, read record by record with a size cap.

use std::io::{BufReader, Read};

use super::RecordSource;
use super::csv_reader::{Dialect, Next, Record, RecordReader};
use crate::problem::{Code, Problem};
use crate::schema::{CsvLayout, Encoding, HeaderRecord, Schema, TrailerRecord};
use crate::validate::{
    Decoder, Outcome, ReadError, Value, check_record, check_record_in_file, match_header,
};

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
    /// The trailer, once read: its line, and what it says.
    trailer: Option<(u64, Vec<Problem>, Claims)>,
    /// The sum of the trailer's total column over valid data records, and
    /// whether every data record was valid (otherwise the sum says nothing).
    total: f64,
    all_valid: bool,
    /// The header record's checked fields, by column: every record's too.
    file_values: Vec<(usize, Value)>,
}

/// What a trailer record says of the file.
#[derive(Default)]
struct Claims {
    count: Option<u64>,
    total: Option<f64>,
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
            trailer: None,
            total: 0.0,
            all_valid: true,
            file_values,
        };
        let mut header = Record::default();
        let mut file_values = Vec::new();
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
            match check_header_fields(expected, &header, &mut decoder)? {
                Ok(values) => {
                    file_values = (expected.first_column..).zip(values).collect();
                }
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

    /// Notes what a trailer record says; problems with the record itself
    /// are kept for the end of the file.
    fn read_trailer(&mut self, trailer: &TrailerRecord) {
        let line = self.record.line;
        let fields: Vec<&[u8]> = self.record.iter().collect();
        let mut problems = Vec::new();
        let mut number = |field: usize, code: Code, what: &str| -> Option<f64> {
            let text = fields
                .get(field)
                .and_then(|f| std::str::from_utf8(f).ok())
                .map(str::trim);
            match text
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|n| n.is_finite())
            {
                Some(n) => Some(n),
                None => {
                    problems.push(Problem {
                        line,
                        column: None,
                        field: Some(field + 1),
                        code,
                        message: format!(
                            "the trailer's {what} (field {}) is not a number",
                            field + 1
                        ),
                    });
                    None
                }
            }
        };
        let claims = Claims {
            count: trailer
                .count_field
                .and_then(|f| number(f, Code::TrailerCount, "record count"))
                .map(|n| n as u64),
            total: trailer
                .total
                .and_then(|(f, _)| number(f, Code::TrailerTotal, "control total")),
        };
        self.trailer = Some((line, problems, claims));
    }
}

/// Checks the header record's declared fields, as columns are checked:
/// their values in declared order, or the problems.
fn check_header_fields(
    expected: &HeaderRecord,
    record: &Record,
    decoder: &mut Decoder,
) -> Result<Result<Vec<Value>, Vec<Problem>>, ReadError> {
    if expected.fields.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let fields: Vec<&[u8]> = record.iter().collect();
    let width = expected
        .fields
        .iter()
        .map(|(p, _)| p + 1)
        .max()
        .unwrap_or(0);
    let mut field_columns = vec![None; fields.len().max(width)];
    for (index, (position, _)) in expected.fields.iter().enumerate() {
        field_columns[*position] = Some(index);
    }
    if fields.len() < width {
        return Ok(Err(vec![Problem::file(
            record.line,
            Code::FieldCount,
            format!(
                "the header record has {} fields; its checked fields need {width}",
                fields.len()
            ),
        )]));
    }
    let shape = Schema::plain(expected.fields.iter().map(|(_, c)| c.clone()).collect());
    Ok(
        match check_record(
            &shape,
            &field_columns,
            decoder,
            record.line,
            fields.into_iter(),
        )? {
            Outcome::Valid(row) => Ok(row.values),
            Outcome::Invalid(problems) => Err(problems),
        },
    )
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
        if let Some(trailer) = self.trailer_record
            && trailer.tag.is_none()
            && next == Next::Record
            && self.trailer.is_none()
        {
            let mut following = std::mem::take(&mut self.spare);
            let after = self.reader.next(&mut following)?;
            if after == Next::End {
                self.read_trailer(trailer);
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
                if let Some(trailer) = self.trailer_record
                    && let Some(tag) = &trailer.tag
                    && first_field_is(&self.record, tag)
                    && self.trailer.is_none()
                {
                    self.read_trailer(trailer);
                    return self.next_outcome();
                }
                if let Some((trailer_line, ..)) = &self.trailer {
                    self.all_valid = false;
                    return Ok(invalid(
                        self.record.line,
                        Code::AfterTrailer,
                        format!("a record after the trailer record on line {trailer_line}"),
                    ));
                }
                let outcome = check_record_in_file(
                    self.schema,
                    &self.field_columns,
                    &mut self.decoder,
                    self.record.line,
                    self.record.iter(),
                    &self.file_values,
                )?;
                if let (Some(trailer), Outcome::Valid(row)) = (self.trailer_record, &outcome)
                    && let Some((_, column)) = trailer.total
                {
                    self.total += row.values[column].as_number().unwrap_or(0.0);
                }
                Some(outcome)
            }
        };
        if !matches!(outcome, Some(Outcome::Valid(_))) {
            self.all_valid = false;
        }
        self.records += 1;
        Ok(outcome)
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn finish(&mut self) -> Vec<Problem> {
        let Some(trailer) = self.trailer_record else {
            return Vec::new();
        };
        let Some((line, mut problems, claims)) = self.trailer.take() else {
            let what = match &trailer.tag {
                Some(tag) => format!("a trailer record starting `{tag}`"),
                None => "a trailer record".to_string(),
            };
            return vec![Problem::file(
                self.record.line,
                Code::TrailerRecordMissing,
                format!("the file does not end with {what}: it may be cut short"),
            )];
        };
        if let Some(count) = claims.count
            && count != self.records
        {
            problems.push(Problem::file(
                line,
                Code::TrailerCount,
                format!(
                    "the trailer counts {count} records; the file holds {}",
                    self.records
                ),
            ));
        }
        if let Some(total) = claims.total
            && self.all_valid
            && (total - self.total).abs() > 1e-6 * total.abs().max(1.0)
        {
            problems.push(Problem::file(
                line,
                Code::TrailerTotal,
                format!(
                    "the trailer's control total is {total}; the records add up to {}",
                    self.total
                ),
            ));
        }
        problems
    }
}
