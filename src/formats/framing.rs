//! The records that frame an extract's data, in any layout that has them
//! (delimited, fixed width): a header record whose checked fields every
//! record carries, and a trailer record that counts the data records and
//! may sum a column of them.

use crate::problem::{Code, Problem};
use crate::schema::{HeaderRecord, Schema, TrailerRecord};
use crate::validate::{Decoder, Outcome, ReadError, Value, check_record};

/// Values every record of a file carries, by column (a header record's fields).
pub type FileValues = Vec<(usize, Value)>;

/// Checks the header record's declared fields, as columns are checked:
/// their values by column (`first_column` on), or the problems.
pub fn header_values(
    expected: &HeaderRecord,
    line: u64,
    fields: &[&[u8]],
    decoder: &mut Decoder,
) -> Result<Result<FileValues, Vec<Problem>>, ReadError> {
    if expected.fields.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let width = expected
        .fields
        .iter()
        .map(|(p, _)| p + 1)
        .max()
        .unwrap_or(0);
    if fields.len() < width {
        return Ok(Err(vec![Problem::file(
            line,
            Code::FieldCount,
            format!(
                "the header record has {} fields; its checked fields need {width}",
                fields.len()
            ),
        )]));
    }
    let mut field_columns = vec![None; fields.len()];
    for (index, (position, _)) in expected.fields.iter().enumerate() {
        field_columns[*position] = Some(index);
    }
    let shape = Schema::plain(expected.fields.iter().map(|(_, c)| c.clone()).collect());
    Ok(
        match check_record(
            &shape,
            &field_columns,
            decoder,
            line,
            fields.iter().copied(),
        )? {
            Outcome::Valid(row) => Ok((expected.first_column..).zip(row.values).collect()),
            Outcome::Invalid(problems) => Err(problems),
        },
    )
}

/// What a trailer record says of the file, and what the file turned out to
/// hold: checked once the last record has been read.
pub struct TrailerCheck<'s> {
    expected: &'s TrailerRecord,
    /// The trailer, once read: its line, problems with it, and its claims.
    read: Option<(u64, Vec<Problem>, Claims)>,
    /// The sum of the total column over valid data records, and whether
    /// every data record was valid (otherwise the sum says nothing).
    total: f64,
    all_valid: bool,
}

#[derive(Default)]
struct Claims {
    count: Option<u64>,
    total: Option<f64>,
}

impl<'s> TrailerCheck<'s> {
    pub fn new(expected: &'s TrailerRecord) -> TrailerCheck<'s> {
        TrailerCheck {
            expected,
            read: None,
            total: 0.0,
            all_valid: true,
        }
    }

    /// The line of the trailer, once it has been read.
    pub fn line(&self) -> Option<u64> {
        self.read.as_ref().map(|(line, ..)| *line)
    }

    /// Notes what the trailer record at `line` says; problems with the
    /// record itself are kept for the end of the file.
    pub fn read(&mut self, line: u64, fields: &[&[u8]]) {
        let mut problems = Vec::new();
        let mut field = |field: usize, code: Code, what: &str| -> Option<&str> {
            let text = fields
                .get(field)
                .and_then(|f| std::str::from_utf8(f).ok())
                .map(str::trim);
            if text.is_none() {
                problems.push(Problem {
                    line,
                    column: None,
                    field: Some(field + 1),
                    code,
                    message: format!("the trailer has no {what} (field {})", field + 1),
                });
            }
            text
        };
        let count = self
            .expected
            .count_field
            .map(|f| (f, field(f, Code::TrailerCount, "record count")));
        let total = self
            .expected
            .total
            .map(|(f, _)| (f, field(f, Code::TrailerTotal, "control total")));
        let mut not_a = |f: usize, code: Code, what: &str| {
            problems.push(Problem {
                line,
                column: None,
                field: Some(f + 1),
                code,
                message: format!(
                    "the trailer's {what} (field {}) is not {}",
                    f + 1,
                    match code {
                        Code::TrailerCount => "a whole number",
                        _ => "a number",
                    }
                ),
            });
        };
        // A count is a whole number of records: `3.7`, `1e1` or `-1` is not one.
        let count = match count {
            Some((f, Some(text))) => text.parse::<u64>().ok().or_else(|| {
                not_a(f, Code::TrailerCount, "record count");
                None
            }),
            _ => None,
        };
        let total = match total {
            Some((f, Some(text))) => {
                text.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .or_else(|| {
                        not_a(f, Code::TrailerTotal, "control total");
                        None
                    })
            }
            _ => None,
        };
        self.read = Some((line, problems, Claims { count, total }));
    }

    /// Counts a data record's outcome towards the control total.
    pub fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Valid(row) => {
                if let Some((_, column)) = self.expected.total {
                    self.total += row.values[column].as_number().unwrap_or(0.0);
                }
            }
            Outcome::Invalid(_) => self.all_valid = false,
        }
    }

    /// A record that is not data (too long, after the trailer): the total
    /// then says nothing.
    pub fn spoilt(&mut self) {
        self.all_valid = false;
    }

    /// Whether the trailer says what the file holds: `records` data records,
    /// the last read on `last_line`.
    pub fn finish(&mut self, records: u64, last_line: u64) -> Vec<Problem> {
        let Some((line, mut problems, claims)) = self.read.take() else {
            let what = match &self.expected.tag {
                Some(tag) => format!("a trailer record starting `{tag}`"),
                None => "a trailer record".to_string(),
            };
            return vec![Problem::file(
                last_line,
                Code::TrailerRecordMissing,
                format!("the file does not end with {what}: it may be cut short"),
            )];
        };
        if let Some(count) = claims.count
            && count != records
        {
            problems.push(Problem::file(
                line,
                Code::TrailerCount,
                format!("the trailer counts {count} records; the file holds {records}"),
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
