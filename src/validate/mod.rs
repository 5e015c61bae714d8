//! Validation: a feed's declared columns applied to each record of a file.
//!
//! [`check_record`] is a pure function from (schema, record) to either typed
//! values or every problem found in that record, whatever the file's
//! layout; the formats under `formats/` read records and call it.

mod rules;
mod unique;
mod value;

pub use unique::Uniqueness;

use std::borrow::Cow;

use crate::domain::contact;
use crate::domain::nhs_number::{NhsNumber, NhsNumberError};
use crate::problem::{Code, Problem};
use crate::schema::{
    ColumnKind, ColumnSpec, DateTimeFormat, Encoding, ExtraColumns, MissingColumns, Schema,
};
use crate::text::{EXCERPT_CHARS, excerpt};
pub use value::Value;

/// Codes listed in a "not one of" message before the rest are counted.
const CODES_LISTED: usize = 12;

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
pub struct Decoder {
    encoding: Encoding,
    saw_non_ascii_utf8: bool,
}

impl Decoder {
    pub fn new(encoding: Encoding) -> Decoder {
        Decoder {
            encoding,
            saw_non_ascii_utf8: false,
        }
    }
}

enum Decoded<'a> {
    Text(Cow<'a, str>),
    Invalid,
    Restart,
}

impl Decoder {
    /// A whole record's bytes as text, when they read the same without
    /// conversion (ASCII, or UTF-8 in a UTF-8 file): one pass for the
    /// record, its fields then slices of it. `None` leaves each field to
    /// [`Decoder::decode`], which finds what is wrong and where.
    pub fn borrow_whole<'a>(&mut self, bytes: &'a [u8]) -> Option<&'a str> {
        match self.encoding {
            Encoding::Windows1252 | Encoding::Latin1 => bytes
                .is_ascii()
                .then(|| std::str::from_utf8(bytes).expect("ASCII is UTF-8")),
            Encoding::Utf8 => std::str::from_utf8(bytes).ok(),
            Encoding::Auto => {
                let text = std::str::from_utf8(bytes).ok()?;
                self.saw_non_ascii_utf8 |= !text.is_ascii();
                Some(text)
            }
        }
    }

    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Decoded<'a> {
        match self.encoding {
            Encoding::Windows1252 | Encoding::Latin1 if bytes.is_ascii() => Decoded::Text(
                Cow::Borrowed(std::str::from_utf8(bytes).expect("ASCII is UTF-8")),
            ),
            Encoding::Windows1252 => Decoded::Text(
                encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(bytes)
                    .0,
            ),
            Encoding::Latin1 => {
                Decoded::Text(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
            }
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

/// A field as a format hands it over: bytes for the decoder, or text that
/// decoding its whole record already gave ([`Decoder::borrow_whole`]).
pub trait RawField<'a>: Copy {
    fn bytes(self) -> &'a [u8];
    fn decoded(self) -> Option<&'a str>;
}

impl<'a> RawField<'a> for &'a [u8] {
    fn bytes(self) -> &'a [u8] {
        self
    }
    fn decoded(self) -> Option<&'a str> {
        None
    }
}

impl<'a> RawField<'a> for &'a str {
    fn bytes(self) -> &'a [u8] {
        self.as_bytes()
    }
    fn decoded(self) -> Option<&'a str> {
        Some(self)
    }
}

/// What one record of a file turned out to be.
pub enum Outcome {
    Valid(Row),
    Invalid(Vec<Problem>),
}

/// Matches a header record's cells to the schema's columns by name: for
/// each field, the column it fills. Every problem with the header comes back
/// in the `Err`; the file can then not be read further.
pub fn match_header<'a>(
    schema: &Schema,
    decoder: &mut Decoder,
    header: impl Iterator<Item = &'a [u8]>,
) -> Result<Result<Vec<Option<usize>>, Vec<Problem>>, ReadError> {
    let mut problems = Vec::new();
    let mut cells = Vec::with_capacity(0);
    for (i, raw) in header.enumerate() {
        match decoder.decode(raw) {
            Decoded::Text(t) => cells.push(Some(t.trim().to_string())),
            Decoded::Restart => return Err(ReadError::EncodingChanged),
            Decoded::Invalid => {
                problems.push(Problem {
                    line: 1,
                    column: None,
                    field: Some(i + 1),
                    code: Code::Encoding,
                    message: format!("header field {} is not valid UTF-8", i + 1),
                });
                cells.push(None);
            }
        }
    }
    // A header record's fields are columns too, but never in this header.
    let data_columns = &schema.columns[..schema.data_columns()];
    let by_name: std::collections::HashMap<Cow<'_, str>, usize> = data_columns
        .iter()
        .enumerate()
        .map(|(index, c)| (schema.names.key(&c.name), index))
        .collect();
    let field_columns: Vec<Option<usize>> = cells
        .iter()
        .map(|cell| by_name.get(&schema.names.key(cell.as_deref()?)).copied())
        .collect();
    // Each declared column's first field; later ones are duplicates.
    let mut first_field = vec![None; schema.columns.len()];
    for (i, column) in field_columns.iter().enumerate() {
        if let Some(index) = column {
            first_field[*index].get_or_insert(i);
        }
    }
    let found: Vec<bool> = first_field.iter().map(Option::is_some).collect();
    if field_columns.iter().all(Option::is_none) && !data_columns.is_empty() {
        problems.push(no_header_problem(schema, &cells));
        return Ok(Err(problems));
    }
    for (i, column) in field_columns.iter().enumerate() {
        match column {
            Some(index) if first_field[*index] != Some(i) => {
                let name = &schema.columns[*index].name;
                problems.push(Problem {
                    line: 1,
                    column: Some(name.clone()),
                    field: Some(i + 1),
                    code: Code::DuplicateColumn,
                    message: format!("column `{name}` appears more than once in the header"),
                });
            }
            Some(_) => {}
            None if schema.extra_columns == ExtraColumns::Ignore => {}
            // Never quoted: a cell that is not a declared name may be data
            // (a file without its header starts with a person's details).
            None => problems.push(Problem {
                line: 1,
                column: None,
                field: Some(i + 1),
                code: Code::UnexpectedColumn,
                message: unexpected_column_message(schema, &found, i, cells[i].as_deref()),
            }),
        }
    }
    for (index, column) in data_columns.iter().enumerate() {
        let may_be_absent = schema.missing_columns == MissingColumns::Allow && !column.required;
        if !found[index] && !may_be_absent {
            problems.push(Problem {
                line: 1,
                column: Some(column.name.clone()),
                field: None,
                code: Code::MissingColumn,
                message: format!("the header has no column `{}`", column.name),
            });
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    Ok(Ok(field_columns))
}

/// Line 1 names none of the declared columns. Described by the shape of its
/// fields, never their values: it is most likely a first row of data.
fn no_header_problem(schema: &Schema, cells: &[Option<String>]) -> Problem {
    let data_like = cells
        .iter()
        .filter(|c| c.as_deref().is_some_and(|c| looks_like_data(c).is_some()))
        .count();
    let shape = if data_like > 0 {
        format!(
            "; {data_like} of its {} fields look like data (numbers, dates or identifiers)",
            cells.len()
        )
    } else {
        String::new()
    };
    Problem::file(
        1,
        Code::NoHeader,
        format!(
            "line 1 names none of the feed's {} declared columns{shape}: the file may lack its header record",
            schema.data_columns()
        ),
    )
}

/// Says what an undeclared header cell is like, without quoting it.
fn unexpected_column_message(
    schema: &Schema,
    found: &[bool],
    field: usize,
    cell: Option<&str>,
) -> String {
    let position = field + 1;
    let Some(cell) = cell else {
        return format!("header field {position} is not a column the feed declares");
    };
    let loose = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '_')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let loose_cell = loose(cell);
    let near = schema.columns[..schema.data_columns()]
        .iter()
        .enumerate()
        .find(|(index, column)| !found[*index] && loose(&column.name) == loose_cell);
    if let Some((_, column)) = near {
        return format!(
            "header field {position} differs only in case, spaces or underscores from the declared column `{}`",
            column.name
        );
    }
    match looks_like_data(cell) {
        Some(kind) => format!(
            "header field {position} is not a declared column and looks like data ({kind}): the file may lack its header"
        ),
        None => format!(
            "header field {position} ({} characters) is not a column the feed declares",
            cell.chars().count()
        ),
    }
}

/// What kind of value a header cell looks like, if it looks like a value
/// rather than a column name.
fn looks_like_data(cell: &str) -> Option<&'static str> {
    let digits = cell.chars().filter(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    if digits >= 6
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return Some("digits, like an identifier");
    }
    if chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d").is_ok()
        || chrono::NaiveDate::parse_from_str(cell, "%d/%m/%Y").is_ok()
        || chrono::DateTime::parse_from_rfc3339(cell).is_ok()
    {
        return Some("a date");
    }
    if cell.parse::<f64>().is_ok() {
        return Some("a number");
    }
    Some("text with digits")
}

/// Checks one record against the schema: typed values, or every problem in
/// it. `field_columns` says which column each field fills; `line` is where
/// the record starts.
pub fn check_record<'a, F: RawField<'a>>(
    schema: &Schema,
    field_columns: &[Option<usize>],
    decoder: &mut Decoder,
    line: u64,
    fields: impl ExactSizeIterator<Item = F> + Clone,
) -> Result<Outcome, ReadError> {
    check_record_in_file(
        schema,
        field_columns,
        decoder,
        line,
        fields,
        &[],
        Vec::new(),
    )
}

/// As [`check_record`], with the values the file gives every record (a
/// header record's fields, by column), there before the rules are checked.
/// A valid record's values are put in `values`: an earlier row's, given
/// back by the pipeline once mapped, saves allocating a wide row's vector
/// for every record.
pub fn check_record_in_file<'a, F: RawField<'a>>(
    schema: &Schema,
    field_columns: &[Option<usize>],
    decoder: &mut Decoder,
    line: u64,
    fields: impl ExactSizeIterator<Item = F> + Clone,
    file_values: &[(usize, Value)],
    mut values: Vec<Value>,
) -> Result<Outcome, ReadError> {
    if fields.len() != field_columns.len() {
        // A field holding a line break usually means a quote left open
        // that a later quote closed. The first such field starts on the
        // record's first line, since no field before it holds a break.
        let spans_lines = fields.clone().any(|field| field.bytes().contains(&b'\n'));
        let hint = if spans_lines {
            format!(
                "; a quoted field opened on line {line} runs over several lines: a closing quote may be missing"
            )
        } else {
            String::new()
        };
        return Ok(Outcome::Invalid(vec![Problem::file(
            line,
            Code::FieldCount,
            format!(
                "expected {} fields, found {}{hint}",
                field_columns.len(),
                fields.len()
            ),
        )]));
    }
    values.clear();
    values.resize(schema.columns.len(), Value::Empty);
    let mut problems = Vec::new();
    for (i, field) in fields.enumerate() {
        let Some(index) = field_columns[i] else {
            continue;
        };
        let column = &schema.columns[index];
        let problem = |code, message| Problem {
            line,
            column: Some(column.name.clone()),
            field: Some(i + 1),
            code,
            message,
        };
        let raw = field.bytes();
        if raw.len() > schema.max_field_bytes {
            problems.push(problem(
                Code::FieldTooLarge,
                format!(
                    "{} bytes is longer than the feed's limit of {} bytes per field (`max_field_size`)",
                    raw.len(),
                    schema.max_field_bytes
                ),
            ));
            continue;
        }
        let decoded = match field.decoded() {
            Some(text) => Decoded::Text(Cow::Borrowed(text)),
            None => decoder.decode(raw),
        };
        let text = match decoded {
            Decoded::Text(t) => t,
            Decoded::Restart => return Err(ReadError::EncodingChanged),
            Decoded::Invalid => {
                problems.push(problem(Code::Encoding, "not valid UTF-8".into()));
                continue;
            }
        };
        match check_value(column, &text) {
            Ok(v) => values[index] = v,
            Err((code, message)) => problems.push(problem(code, message)),
        }
    }
    for (index, value) in file_values {
        values[*index] = value.clone();
    }
    // Rules read the values the columns' own checks made; a record whose
    // columns failed would only add problems that follow from those.
    if problems.is_empty() {
        rules::check(schema, line, &values, &mut problems);
    }
    Ok(if problems.is_empty() {
        Outcome::Valid(Row { line, values })
    } else {
        Outcome::Invalid(problems)
    })
}

type ValueProblem = (Code, String);

/// Checks one field. Messages quote the value only for non-identifying columns.
pub fn check_value(column: &ColumnSpec, text: &str) -> Result<Value, ValueProblem> {
    let shown = || {
        if column.identifier {
            String::new()
        } else {
            format!(" `{}`", excerpt(text, EXCERPT_CHARS))
        }
    };
    let trimmed = trim(text);
    if trimmed.is_empty() {
        return if column.required {
            Err((Code::Required, "a value is required".into()))
        } else {
            Ok(Value::Empty)
        };
    }
    match &column.kind {
        ColumnKind::String {
            max_length,
            pattern,
        } => {
            // Never more characters than bytes: most values need no count.
            if let Some(max) = max_length
                && text.len() > *max
            {
                let len = text.chars().count();
                if len > *max {
                    return Err((
                        Code::TooLong,
                        format!("{len} characters is longer than the maximum {max}"),
                    ));
                }
            }
            if let Some(p) = pattern
                && !p.is_match(text)
            {
                return Err((
                    Code::Pattern,
                    format!(
                        "value{} does not match the pattern `{}`",
                        shown(),
                        display_pattern(p)
                    ),
                ));
            }
            Ok(Value::Text(text.into()))
        }
        ColumnKind::Integer { min, max } => {
            let n: i64 = trimmed.parse().map_err(|_| {
                (
                    Code::NotInteger,
                    format!("value{} is not a whole number", shown()),
                )
            })?;
            check_range(n as f64, *min, *max, &shown)?;
            Ok(Value::Integer(n))
        }
        ColumnKind::Decimal { min, max, scale } => {
            let n: f64 = trimmed
                .parse()
                .ok()
                .filter(|n: &f64| {
                    n.is_finite() && !trimmed.contains(['e', 'E', 'i', 'I', 'n', 'N'])
                })
                .ok_or_else(|| {
                    (
                        Code::NotDecimal,
                        format!("value{} is not a decimal number", shown()),
                    )
                })?;
            if let Some(scale) = scale {
                let places = trimmed.split_once('.').map_or(0, |(_, f)| f.len());
                if places > *scale as usize {
                    return Err((
                        Code::TooManyDecimals,
                        format!(
                            "value{} has {places} digits after the decimal point; at most {scale} allowed",
                            shown()
                        ),
                    ));
                }
            }
            check_range(n, *min, *max, &shown)?;
            Ok(Value::Decimal(n))
        }
        ColumnKind::Time { format } => {
            let parsed = match format {
                Some(f) => chrono::NaiveTime::parse_from_str(trimmed, f).ok(),
                None => chrono::NaiveTime::parse_from_str(trimmed, "%H:%M:%S")
                    .or_else(|_| chrono::NaiveTime::parse_from_str(trimmed, "%H:%M"))
                    .ok(),
            };
            parsed
                .map(|t| Value::Text(compact_str::format_compact!("{}", t.format("%H:%M:%S"))))
                .ok_or_else(|| {
                    let expected = format.as_deref().unwrap_or("%H:%M:%S` or `%H:%M");
                    (
                        Code::NotTime,
                        format!("value{} is not a time in the form `{expected}`", shown()),
                    )
                })
        }
        ColumnKind::Postcode => contact::postcode(trimmed)
            .map(Value::Text)
            .ok_or_else(|| (Code::NotPostcode, "not a UK postcode".into())),
        ColumnKind::OdsCode => contact::ods_code(trimmed)
            .map(|t| Value::Text(t.into()))
            .ok_or_else(|| {
                (
                    Code::NotOdsCode,
                    format!(
                        "value{} is not an ODS organisation code (3 to 10 letters and digits)",
                        shown()
                    ),
                )
            }),
        ColumnKind::Email => contact::email(trimmed)
            .map(|t| Value::Text(t.into()))
            .ok_or_else(|| (Code::NotEmail, "not an e-mail address".into())),
        ColumnKind::Phone => contact::phone(trimmed)
            .map(|t| Value::Text(t.into()))
            .ok_or_else(|| {
                (
                    Code::NotPhone,
                    "not a UK telephone number, nor `+` and 8 to 15 digits".into(),
                )
            }),
        ColumnKind::Date { format } => {
            parse_date(trimmed, format).map(Value::Date).ok_or_else(|| {
                (
                    Code::NotDate,
                    format!("value{} is not a date in the form `{format}`", shown()),
                )
            })
        }
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
                    Code::NotDatetime,
                    format!("value{} is not a date and time in {expected}", shown()),
                )
            })
        }
        ColumnKind::Code { values } => match values.find(trimmed) {
            Some(code) => Ok(Value::Text(code.into())),
            None => Err((
                Code::NotInCodeList,
                format!(
                    "value{} is not one of {}",
                    shown(),
                    code_list(values.codes())
                ),
            )),
        },
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
                    Code::NotBoolean,
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
                NhsNumberError::Format => Code::NhsNumberFormat,
                NhsNumberError::AllZero => Code::NhsNumberInvalid,
                NhsNumberError::CheckDigitTen | NhsNumberError::CheckDigitMismatch => {
                    Code::NhsNumberCheckDigit
                }
            };
            (code, e.to_string())
        }),
    }
}

/// `text` without white space around it. Most values start and end with a
/// visible ASCII character, and every other white space (a no-break space,
/// say) is a character beyond ASCII: such a value is returned at once.
fn trim(text: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_graphic());
    let bytes = text.as_bytes();
    if visible(bytes.first()) && visible(bytes.last()) {
        text
    } else {
        text.trim()
    }
}

/// The allowed codes for a message: the first few, then how many more.
fn code_list(values: &[String]) -> String {
    let shown: Vec<&str> = values
        .iter()
        .take(CODES_LISTED)
        .map(String::as_str)
        .collect();
    match values.len().saturating_sub(CODES_LISTED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
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
        let range = bounds(min, max);
        return Err((
            Code::OutOfRange,
            format!("value{} is outside {range}", shown()),
        ));
    }
    Ok(())
}

/// `1 to 5`, `at least 1` or `at most 5`: the bounds a value broke.
fn bounds<T: std::fmt::Display>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => "within no bounds".to_string(),
    }
}

#[cfg(test)]
mod tests;

/// A date in a column's format. The commonest formats are read by hand when
/// the value has exactly their shape, which gives chrono's answer without
/// interpreting the format again for every value; anything else, chrono reads.
pub(crate) fn parse_date(value: &str, format: &str) -> Option<chrono::NaiveDate> {
    let b = value.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let ymd = match (format, b.len()) {
        ("%Y-%m-%d", 10) if b[4] == b'-' && b[7] == b'-' => {
            (number(0..4), number(5..7), number(8..10))
        }
        ("%d/%m/%Y", 10) if b[2] == b'/' && b[5] == b'/' => {
            (number(6..10), number(3..5), number(0..2))
        }
        ("%Y%m%d", 8) => (number(0..4), number(4..6), number(6..8)),
        _ => (None, None, None),
    };
    if let (Some(year), Some(month), Some(day)) = ymd {
        return chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
    }
    chrono::NaiveDate::parse_from_str(value, format).ok()
}
