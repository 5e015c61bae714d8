//! Validation: a feed's declared schema applied to each record of a file.
//!
//! [`check_record`] is a pure function from (schema, record) to either typed
//! values or every problem found in that record; [`CsvRows`] drives it over a
//! streamed CSV so memory does not grow with file size.

mod value;

use std::borrow::Cow;
use std::io::Read;

use serde::Serialize;

use crate::domain::nhs_number::{NhsNumber, NhsNumberError};
pub use value::Value;

/// How bytes in a file become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    Windows1252,
    /// UTF-8 when the whole file is valid UTF-8, Windows-1252 otherwise.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraColumns {
    Error,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateTimeFormat {
    /// ISO 8601 / RFC 3339 with a `Z` or numeric offset.
    Iso8601,
    /// A chrono format; must include an offset (`%z`) unless read as UTC.
    Chrono(String),
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    String {
        max_length: Option<usize>,
        pattern: Option<regex::Regex>,
    },
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Decimal {
        min: Option<f64>,
        max: Option<f64>,
    },
    Date {
        format: String,
    },
    DateTime {
        format: DateTimeFormat,
    },
    Code {
        values: Vec<String>,
        ignore_case: bool,
    },
    Boolean {
        true_values: Vec<String>,
        false_values: Vec<String>,
    },
    NhsNumber,
}

impl ColumnKind {
    pub fn describe(&self) -> &'static str {
        match self {
            ColumnKind::String { .. } => "string",
            ColumnKind::Integer { .. } => "integer",
            ColumnKind::Decimal { .. } => "decimal",
            ColumnKind::Date { .. } => "date",
            ColumnKind::DateTime { .. } => "datetime",
            ColumnKind::Code { .. } => "code",
            ColumnKind::Boolean { .. } => "boolean",
            ColumnKind::NhsNumber => "nhs_number",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub required: bool,
    /// Values identify a person and are never copied into a problem report.
    pub identifier: bool,
    pub kind: ColumnKind,
}

/// The declared shape of a feed's files.
#[derive(Debug, Clone)]
pub struct Schema {
    pub delimiter: u8,
    pub quote: u8,
    pub encoding: Encoding,
    pub extra_columns: ExtraColumns,
    pub columns: Vec<ColumnSpec>,
}

/// One thing wrong with a file, located as precisely as possible.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// 1-based line where the record starts (0 for the file as a whole).
    pub line: u64,
    /// Column name from the schema or header, when the problem is in one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// 1-based position of the field in the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<usize>,
    /// Stable, machine-readable problem code.
    pub code: &'static str,
    /// What is wrong, for a person; never contains an identifier's value.
    pub message: String,
}

/// A record that passed every check: one value per schema column.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u64,
    pub values: Vec<Value>,
}

/// Reading stopped before the end of the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
    /// `auto` met non-UTF-8 bytes after non-ASCII UTF-8 text: the whole file must be read again as Windows-1252.
    #[error("the file mixes UTF-8 and Windows-1252 text")]
    EncodingChanged,
}

/// Turns field bytes into text following the schema's encoding.
#[derive(Debug)]
struct Decoder {
    encoding: Encoding,
    saw_non_ascii_utf8: bool,
}

enum Decoded<'a> {
    Text(Cow<'a, str>),
    Invalid,
    Restart,
}

impl Decoder {
    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Decoded<'a> {
        match self.encoding {
            Encoding::Windows1252 => Decoded::Text(
                encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(bytes)
                    .0,
            ),
            Encoding::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Decoded::Text(Cow::Borrowed(s)),
                Err(_) => Decoded::Invalid,
            },
            Encoding::Auto => match std::str::from_utf8(bytes) {
                Ok(s) => {
                    self.saw_non_ascii_utf8 |= !s.is_ascii();
                    Decoded::Text(Cow::Borrowed(s))
                }
                // Everything so far was ASCII, which reads the same in both:
                // switching now treats the whole file as Windows-1252.
                Err(_) if !self.saw_non_ascii_utf8 => {
                    self.encoding = Encoding::Windows1252;
                    self.decode(bytes)
                }
                Err(_) => Decoded::Restart,
            },
        }
    }
}

/// Streams a CSV file through the schema, one record at a time.
pub struct CsvRows<'s, R: Read> {
    schema: &'s Schema,
    reader: csv::Reader<R>,
    decoder: Decoder,
    /// For each field of the file, the schema column it fills.
    field_columns: Vec<Option<usize>>,
    header_names: Vec<String>,
    record: csv::ByteRecord,
    /// Records read so far, header excluded.
    pub records: u64,
}

/// What one record of a file turned out to be.
pub enum Outcome {
    Valid(Row),
    Invalid(Vec<Problem>),
}

impl<'s, R: Read> CsvRows<'s, R> {
    /// Reads the header. Problems with it (missing or unexpected columns) are
    /// returned in the `Vec`; the file can then not be read further.
    pub fn open(
        schema: &'s Schema,
        input: R,
        encoding: Encoding,
    ) -> Result<Result<Self, Vec<Problem>>, ReadError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(schema.delimiter)
            .quote(schema.quote)
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut decoder = Decoder {
            encoding,
            saw_non_ascii_utf8: false,
        };
        let mut header = csv::ByteRecord::new();
        if !read_record(&mut reader, &mut header)? {
            return Ok(Err(vec![Problem {
                line: 1,
                column: None,
                field: None,
                code: "empty_file",
                message: "the file is empty: a header record was expected".into(),
            }]));
        }
        let mut problems = Vec::new();
        let mut header_names = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            match decoder.decode(raw) {
                Decoded::Text(t) => header_names.push(t.trim().to_string()),
                Decoded::Restart => return Err(ReadError::EncodingChanged),
                Decoded::Invalid => {
                    problems.push(Problem {
                        line: 1,
                        column: None,
                        field: Some(i + 1),
                        code: "encoding",
                        message: "header name is not valid UTF-8".into(),
                    });
                    header_names.push(String::new());
                }
            }
        }
        let mut field_columns = vec![None; header_names.len()];
        for (i, name) in header_names.iter().enumerate() {
            if header_names[..i].contains(name) {
                problems.push(Problem {
                    line: 1,
                    column: Some(name.clone()),
                    field: Some(i + 1),
                    code: "duplicate_column",
                    message: format!("column `{name}` appears more than once in the header"),
                });
                continue;
            }
            match schema.columns.iter().position(|c| &c.name == name) {
                Some(index) => field_columns[i] = Some(index),
                None if schema.extra_columns == ExtraColumns::Ignore => {}
                None => problems.push(Problem {
                    line: 1,
                    column: Some(name.clone()),
                    field: Some(i + 1),
                    code: "unexpected_column",
                    message: format!("column `{name}` is not declared by the feed"),
                }),
            }
        }
        for (index, column) in schema.columns.iter().enumerate() {
            if !field_columns.contains(&Some(index)) {
                problems.push(Problem {
                    line: 1,
                    column: Some(column.name.clone()),
                    field: None,
                    code: "missing_column",
                    message: format!("the header has no column `{}`", column.name),
                });
            }
        }
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        Ok(Ok(CsvRows {
            schema,
            reader,
            decoder,
            field_columns,
            header_names,
            record: csv::ByteRecord::new(),
            records: 0,
        }))
    }

    /// The next record, checked; `None` at the end of the file.
    pub fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        if !read_record(&mut self.reader, &mut self.record)? {
            return Ok(None);
        }
        self.records += 1;
        let line = self.record.position().map(|p| p.line()).unwrap_or(0);
        check_record(
            self.schema,
            &self.field_columns,
            &self.header_names,
            &mut self.decoder,
            &self.record,
            line,
        )
        .map(Some)
    }
}

fn read_record<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> Result<bool, ReadError> {
    loop {
        match reader.read_byte_record(record) {
            // A blank line (often a trailing CRLF) carries no record.
            Ok(true) if record.len() == 1 && record[0].is_empty() => continue,
            Ok(more) => return Ok(more),
            Err(e) => {
                return Err(match e.into_kind() {
                    csv::ErrorKind::Io(io) => ReadError::Io(io),
                    other => ReadError::Io(std::io::Error::other(format!("{other:?}"))),
                });
            }
        }
    }
}

/// Checks one record against the schema: typed values, or every problem in it.
fn check_record(
    schema: &Schema,
    field_columns: &[Option<usize>],
    header_names: &[String],
    decoder: &mut Decoder,
    record: &csv::ByteRecord,
    line: u64,
) -> Result<Outcome, ReadError> {
    if record.len() != field_columns.len() {
        return Ok(Outcome::Invalid(vec![Problem {
            line,
            column: None,
            field: None,
            code: "field_count",
            message: format!(
                "expected {} fields, found {}",
                field_columns.len(),
                record.len()
            ),
        }]));
    }
    let mut values = vec![Value::Empty; schema.columns.len()];
    let mut problems = Vec::new();
    for (i, raw) in record.iter().enumerate() {
        let Some(index) = field_columns[i] else {
            continue;
        };
        let column = &schema.columns[index];
        let text = match decoder.decode(raw) {
            Decoded::Text(t) => t,
            Decoded::Restart => return Err(ReadError::EncodingChanged),
            Decoded::Invalid => {
                problems.push(Problem {
                    line,
                    column: Some(header_names[i].clone()),
                    field: Some(i + 1),
                    code: "encoding",
                    message: "not valid UTF-8".into(),
                });
                continue;
            }
        };
        match check_value(column, &text) {
            Ok(v) => values[index] = v,
            Err((code, message)) => problems.push(Problem {
                line,
                column: Some(column.name.clone()),
                field: Some(i + 1),
                code,
                message,
            }),
        }
    }
    Ok(if problems.is_empty() {
        Outcome::Valid(Row { line, values })
    } else {
        Outcome::Invalid(problems)
    })
}

type ValueProblem = (&'static str, String);

/// Checks one field. Messages quote the value only for non-identifying columns.
pub fn check_value(column: &ColumnSpec, text: &str) -> Result<Value, ValueProblem> {
    let shown = || {
        if column.identifier {
            String::new()
        } else {
            let mut s: String = text.chars().take(64).collect();
            if s.len() < text.len() {
                s.push('…');
            }
            format!(" `{s}`")
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return if column.required {
            Err(("required", "a value is required".into()))
        } else {
            Ok(Value::Empty)
        };
    }
    match &column.kind {
        ColumnKind::String {
            max_length,
            pattern,
        } => {
            if let Some(max) = max_length {
                let len = text.chars().count();
                if len > *max {
                    return Err((
                        "too_long",
                        format!("{len} characters is longer than the maximum {max}"),
                    ));
                }
            }
            if let Some(p) = pattern
                && !p.is_match(text)
            {
                return Err((
                    "pattern",
                    format!(
                        "value{} does not match the pattern `{}`",
                        shown(),
                        display_pattern(p)
                    ),
                ));
            }
            Ok(Value::Text(text.to_string()))
        }
        ColumnKind::Integer { min, max } => {
            let n: i64 = trimmed.parse().map_err(|_| {
                (
                    "not_integer",
                    format!("value{} is not a whole number", shown()),
                )
            })?;
            check_range(n as f64, *min, *max, &shown)?;
            Ok(Value::Integer(n))
        }
        ColumnKind::Decimal { min, max } => {
            let n: f64 = trimmed
                .parse()
                .ok()
                .filter(|n: &f64| {
                    n.is_finite() && !trimmed.contains(['e', 'E', 'i', 'I', 'n', 'N'])
                })
                .ok_or_else(|| {
                    (
                        "not_decimal",
                        format!("value{} is not a decimal number", shown()),
                    )
                })?;
            check_range(n, *min, *max, &shown)?;
            Ok(Value::Decimal(n))
        }
        ColumnKind::Date { format } => chrono::NaiveDate::parse_from_str(trimmed, format)
            .map(Value::Date)
            .map_err(|_| {
                (
                    "not_date",
                    format!("value{} is not a date in the form `{format}`", shown()),
                )
            }),
        ColumnKind::DateTime { format } => {
            let parsed = match format {
                DateTimeFormat::Iso8601 => chrono::DateTime::parse_from_rfc3339(trimmed).ok(),
                DateTimeFormat::Chrono(f) => chrono::DateTime::parse_from_str(trimmed, f)
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDateTime::parse_from_str(trimmed, f)
                            .ok()
                            .map(|n| n.and_utc().fixed_offset())
                    }),
            };
            parsed.map(Value::DateTime).ok_or_else(|| {
                let expected = match format {
                    DateTimeFormat::Iso8601 => "ISO 8601 with an offset or `Z`".to_string(),
                    DateTimeFormat::Chrono(f) => format!("the form `{f}`"),
                };
                (
                    "not_datetime",
                    format!("value{} is not a date and time in {expected}", shown()),
                )
            })
        }
        ColumnKind::Code {
            values,
            ignore_case,
        } => {
            let found = values.iter().find(|v| {
                if *ignore_case {
                    v.eq_ignore_ascii_case(trimmed)
                } else {
                    v.as_str() == trimmed
                }
            });
            match found {
                Some(code) => Ok(Value::Text(code.clone())),
                None => Err((
                    "not_in_code_list",
                    format!("value{} is not one of {}", shown(), values.join(", ")),
                )),
            }
        }
        ColumnKind::Boolean {
            true_values,
            false_values,
        } => {
            if true_values.iter().any(|v| v == trimmed) {
                Ok(Value::Bool(true))
            } else if false_values.iter().any(|v| v == trimmed) {
                Ok(Value::Bool(false))
            } else {
                Err((
                    "not_boolean",
                    format!(
                        "value{} is neither true ({}) nor false ({})",
                        shown(),
                        true_values.join(", "),
                        false_values.join(", ")
                    ),
                ))
            }
        }
        ColumnKind::NhsNumber => NhsNumber::parse(trimmed).map(Value::Nhs).map_err(|e| {
            let code = match e {
                NhsNumberError::Format => "nhs_number_format",
                NhsNumberError::AllZero => "nhs_number_invalid",
                NhsNumberError::CheckDigitTen | NhsNumberError::CheckDigitMismatch => {
                    "nhs_number_check_digit"
                }
            };
            (code, e.to_string())
        }),
    }
}

fn display_pattern(p: &regex::Regex) -> &str {
    let s = p.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
}

fn check_range(
    n: f64,
    min: Option<f64>,
    max: Option<f64>,
    shown: &dyn Fn() -> String,
) -> Result<(), ValueProblem> {
    let below = min.is_some_and(|m| n < m);
    let above = max.is_some_and(|m| n > m);
    if below || above {
        let range = match (min, max) {
            (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => unreachable!("out of range needs a bound"),
        };
        return Err((
            "out_of_range",
            format!("value{} is outside {range}", shown()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
