//! `dropgate schema infer`: a feed section drafted from a sample CSV file.
//! Each column's type is the narrowest that every value in the sample fits;
//! code lists are offered, when asked for, only for short values that repeat
//! often (no value is printed otherwise), and every
//! column is drafted as an identifier (its values never quoted in problems)
//! until an admin says otherwise. Every guess is marked `REVIEW`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};

use super::csv_reader::{Dialect, Next, Record, RecordReader};
use crate::domain::{contact, nhs_number::NhsNumber};

/// What to draft, and how much of the sample to read.
pub struct InferOptions<'a> {
    pub feed: &'a str,
    pub partner: &'a str,
    /// Data rows read at most.
    pub max_rows: u64,
    /// Print the values of columns that look like code lists. Off by default:
    /// a column of surnames in a sample of a few residents looks the same.
    pub code_lists: bool,
}

/// A drafted feed section.
#[derive(Debug)]
pub struct Draft {
    pub toml: String,
    pub rows: u64,
    pub columns: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("reading the sample: {0}")]
    Io(#[from] io::Error),
    #[error("the sample has no header line")]
    Empty,
    #[error("the sample is age-encrypted; decrypt it first (age -d -i KEY FILE)")]
    Encrypted,
    #[error("line {0}: a record longer than 1 MiB")]
    TooLarge(u64),
    #[error("line {0}: a quoted field is never closed")]
    UnclosedQuote(u64),
    #[error("the header names more than {MAX_COLUMNS} columns")]
    TooManyColumns,
}

/// Columns drafted at most: each keeps its own statistics.
const MAX_COLUMNS: usize = 4096;

/// Distinct values kept per column to offer a code list.
const MAX_CODES: usize = 12;
const MAX_CODE_CHARS: usize = 20;

/// The value shapes a column may still be: each is dropped at the first value that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    NhsNumber,
    DateCompact,
    DateIso,
    DateSlashed,
    DateTimeIso,
    DateTimeSpaced,
    Time,
    Integer,
    Decimal,
    YesNo,
    TrueFalse,
    Postcode,
    Email,
}

impl Shape {
    /// In order of preference when several fit every value.
    const ALL: [Shape; 13] = [
        Shape::NhsNumber,
        Shape::DateCompact,
        Shape::DateIso,
        Shape::DateSlashed,
        Shape::DateTimeIso,
        Shape::DateTimeSpaced,
        Shape::Time,
        Shape::Integer,
        Shape::Decimal,
        Shape::YesNo,
        Shape::TrueFalse,
        Shape::Postcode,
        Shape::Email,
    ];

    fn fits(self, v: &str) -> bool {
        let date = |format| chrono::NaiveDate::parse_from_str(v, format).is_ok();
        let datetime = |format| chrono::NaiveDateTime::parse_from_str(v, format).is_ok();
        match self {
            Shape::NhsNumber => NhsNumber::parse(v).is_ok(),
            Shape::DateCompact => v.len() == 8 && date("%Y%m%d"),
            Shape::DateIso => date("%Y-%m-%d"),
            Shape::DateSlashed => date("%d/%m/%Y"),
            Shape::DateTimeIso => chrono::DateTime::parse_from_rfc3339(v).is_ok(),
            Shape::DateTimeSpaced => datetime("%Y-%m-%d %H:%M:%S"),
            Shape::Time => {
                chrono::NaiveTime::parse_from_str(v, "%H:%M:%S").is_ok()
                    || chrono::NaiveTime::parse_from_str(v, "%H:%M").is_ok()
            }
            Shape::Integer => v.parse::<i64>().is_ok(),
            Shape::Decimal => v.parse::<f64>().is_ok_and(f64::is_finite),
            Shape::YesNo => matches!(v, "Y" | "N"),
            Shape::TrueFalse => matches!(v, "true" | "false"),
            Shape::Postcode => contact::postcode(v).is_some(),
            Shape::Email => contact::email(v).is_some(),
        }
    }

    /// The column's `type` and its options, as config lines.
    fn lines(self) -> Vec<String> {
        let typed = |t: &str| format!("type = \"{t}\"");
        match self {
            Shape::NhsNumber => vec![typed("nhs_number")],
            Shape::DateCompact => vec![typed("date"), "format = \"%Y%m%d\"".into()],
            Shape::DateIso => vec![typed("date"), "format = \"%Y-%m-%d\"".into()],
            Shape::DateSlashed => vec![typed("date"), "format = \"%d/%m/%Y\"".into()],
            Shape::DateTimeIso => vec![typed("datetime"), "format = \"iso8601\"".into()],
            Shape::DateTimeSpaced => {
                vec![typed("datetime"), "format = \"%Y-%m-%d %H:%M:%S\"".into()]
            }
            Shape::Time => vec![typed("time")],
            Shape::Integer => vec![typed("integer")],
            Shape::Decimal => vec![typed("decimal")],
            Shape::YesNo => vec![
                typed("boolean"),
                "true_values = [\"Y\"]".into(),
                "false_values = [\"N\"]".into(),
            ],
            Shape::TrueFalse => vec![
                typed("boolean"),
                "true_values = [\"true\"]".into(),
                "false_values = [\"false\"]".into(),
            ],
            Shape::Postcode => vec![typed("postcode")],
            Shape::Email => vec![typed("email")],
        }
    }
}

/// What the sample showed of one column.
struct Column {
    name: String,
    filled: u64,
    empty: u64,
    shapes: Vec<Shape>,
    max_chars: usize,
    /// `None` once more than [`MAX_CODES`] distinct values, or a long one, were seen.
    codes: Option<BTreeMap<String, u64>>,
}

impl Column {
    fn new(name: String) -> Column {
        Column {
            name,
            filled: 0,
            empty: 0,
            shapes: Shape::ALL.to_vec(),
            max_chars: 0,
            codes: Some(BTreeMap::new()),
        }
    }

    fn see(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            self.empty += 1;
            return;
        }
        self.filled += 1;
        self.max_chars = self.max_chars.max(value.chars().count());
        self.shapes.retain(|s| s.fits(value));
        if let Some(codes) = &mut self.codes {
            *codes.entry(value.to_string()).or_default() += 1;
            if codes.len() > MAX_CODES || value.chars().count() > MAX_CODE_CHARS {
                self.codes = None;
            }
        }
    }

    fn draft(&self, feed: &str, code_lists: bool, out: &mut String) {
        let _ = writeln!(out, "[[feeds.{feed}.columns]]");
        let _ = writeln!(out, "name = {}", toml_string(&self.name));
        let shape = self.shapes.first().copied().filter(|_| self.filled > 0);
        // A code list only for short values that each come back several times.
        let codes = self
            .codes
            .as_ref()
            .filter(|codes| shape.is_none() && !codes.is_empty())
            .filter(|codes| self.filled >= 5 * codes.len() as u64);
        match (shape, codes) {
            (Some(shape), _) => {
                for line in shape.lines() {
                    let _ = writeln!(out, "{line}");
                }
                if matches!(shape, Shape::Integer | Shape::Decimal) {
                    let _ = writeln!(out, "# REVIEW: add `min` and `max`");
                }
            }
            (None, Some(codes)) if !code_lists => {
                let _ = writeln!(out, "type = \"string\"");
                let _ = writeln!(
                    out,
                    "# REVIEW: {} distinct short values: a `code` column? (values not shown; `--code-lists` shows them)",
                    codes.len()
                );
            }
            (None, Some(codes)) => {
                let values: Vec<String> = codes.keys().map(|c| toml_string(c)).collect();
                let _ = writeln!(out, "type = \"code\"");
                let _ = writeln!(
                    out,
                    "values = [{}]    # REVIEW: the {} values in the sample; the full list may be longer",
                    values.join(", "),
                    codes.len()
                );
            }
            (None, None) => {
                let _ = writeln!(out, "type = \"string\"");
                let room = self.max_chars.max(1).next_power_of_two().max(16);
                let _ = writeln!(
                    out,
                    "max_length = {room}    # REVIEW: the longest value in the sample had {} characters",
                    self.max_chars
                );
            }
        }
        // Values of an identifier column are never quoted in problems: every
        // drafted column is one until an admin knows better (nhs_number,
        // postcode and email always are).
        if !matches!(
            shape,
            Some(Shape::NhsNumber | Shape::Postcode | Shape::Email)
        ) {
            let _ = writeln!(
                out,
                "identifier = true    # REVIEW: false only if it never holds personal details (names, dates of birth, ids)"
            );
        }
        if self.empty == 0 && self.filled > 0 {
            let _ = writeln!(out, "required = true    # REVIEW: every row had a value");
        }
        out.push('\n');
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The delimiter the header line uses most: comma, tab, semicolon, pipe or tilde.
fn sniff_delimiter(first_line: &[u8]) -> u8 {
    [b',', b'\t', b';', b'|', b'~']
        .into_iter()
        .max_by_key(|d| first_line.iter().filter(|b| *b == d).count())
        .unwrap_or(b',')
}

/// Drafts a `[feeds.NAME]` section, with its columns, from a sample.
pub fn infer_csv(mut input: impl BufRead, options: &InferOptions<'_>) -> Result<Draft, InferError> {
    let head = input.fill_buf()?;
    if crate::decrypt::looks_like_age(head) {
        return Err(InferError::Encrypted);
    }
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let delimiter = sniff_delimiter(first_line);
    let mut reader = RecordReader::new(
        input,
        Dialect {
            delimiter,
            quote: b'"',
            max_record_bytes: 1 << 20,
        },
    );
    let mut record = Record::default();
    let mut utf8 = true;
    let mut text = |bytes: &[u8]| -> String {
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => {
                utf8 = false;
                encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned()
            }
        }
    };
    let mut columns: Vec<Column> = match reader.next(&mut record)? {
        Next::Record if record.iter().len() > MAX_COLUMNS => {
            return Err(InferError::TooManyColumns);
        }
        Next::Record => record
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let name = text(cell);
                let name = if i == 0 {
                    name.trim_start_matches('\u{feff}').to_string()
                } else {
                    name
                };
                Column::new(name.trim().to_string())
            })
            .collect(),
        Next::End => return Err(InferError::Empty),
        Next::TooLarge { line } => return Err(InferError::TooLarge(line)),
        Next::UnclosedQuote { line } => return Err(InferError::UnclosedQuote(line)),
    };
    let mut rows = 0;
    while rows < options.max_rows {
        match reader.next(&mut record)? {
            Next::Record => {}
            Next::End => break,
            Next::TooLarge { line } => return Err(InferError::TooLarge(line)),
            Next::UnclosedQuote { line } => return Err(InferError::UnclosedQuote(line)),
        }
        rows += 1;
        for (column, cell) in columns.iter_mut().zip(record.iter()) {
            column.see(&text(cell));
        }
    }
    let feed = options.feed;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Drafted by `dropgate schema infer` from {rows} rows; every line marked REVIEW is a guess."
    );
    let _ = writeln!(out, "[feeds.{feed}]");
    let _ = writeln!(out, "partner = {}", toml_string(options.partner));
    let _ = writeln!(
        out,
        "match = [\"{feed}_*.csv.age\", \"{feed}_*.csv\"]    # REVIEW: the names the partner's files have"
    );
    let _ = writeln!(
        out,
        "encryption = \"optional\"    # REVIEW: `age` once the partner encrypts"
    );
    let _ = writeln!(out, "format = \"csv\"");
    let _ = writeln!(out, "on_error = \"reject_file\"");
    out.push('\n');
    let _ = writeln!(out, "[feeds.{feed}.csv]");
    let shown = match delimiter {
        b'\t' => "\\t".to_string(),
        d => (d as char).to_string(),
    };
    let _ = writeln!(out, "delimiter = \"{shown}\"");
    let encoding = if utf8 { "utf-8" } else { "windows-1252" };
    let _ = writeln!(out, "encoding = \"{encoding}\"");
    out.push('\n');
    for column in &columns {
        column.draft(feed, options.code_lists, &mut out);
    }
    Ok(Draft {
        toml: out,
        rows,
        columns: columns.len(),
    })
}
