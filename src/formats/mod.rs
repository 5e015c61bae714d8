//! Formats: how a file's bytes become records of fields, and which column
//! each field fills. One module per layout of [`crate::schema::Layout`];
//! the pipeline sees only [`RecordSource`]. A new format is a new module
//! here, a variant of `Layout`, and its config section.

mod csv;
mod csv_reader;
mod fixed;
mod framing;
pub mod infer;
mod xml;

use std::io::Read;

use crate::problem::Problem;
use crate::schema::{Encoding, Layout, Schema};
use crate::validate::{Outcome, ReadError, Value};

/// The records of one file, each checked against the feed's columns.
pub trait RecordSource {
    /// The next record, checked; `None` after the last.
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError>;

    /// Data records read so far (header and trailer records are not counted).
    fn records(&self) -> u64;

    /// Takes back a valid record's values once they are mapped, to fill
    /// with a later record's.
    fn reuse(&mut self, values: Vec<Value>);

    /// Checks that need the whole file (a trailer's row count, say), made
    /// once the last record has been read.
    fn finish(&mut self) -> Vec<Problem> {
        Vec::new()
    }
}

/// Opens a file's plaintext in its feed's layout; `received` is the day
/// the file was received, for rules that reckon with it (`@received`).
/// Problems that leave nothing readable (a header naming none of the
/// columns, say) come back in the `Err`.
pub fn open<'s, R: Read + 's>(
    schema: &'s Schema,
    input: R,
    encoding: Encoding,
    received: chrono::NaiveDate,
) -> Result<Result<Box<dyn RecordSource + 's>, Vec<Problem>>, ReadError> {
    // The day the file was received, when a rule reckons with it.
    let received = schema
        .received_column
        .map(|column| (column, crate::validate::Value::Date(received)));
    match &schema.layout {
        Layout::Csv(layout) => Ok(
            csv::CsvSource::open(schema, layout, input, encoding, received)?
                .map(|source| Box::new(source) as Box<dyn RecordSource + 's>),
        ),
        Layout::Fixed(layout) => Ok(fixed::FixedSource::open(
            schema, layout, input, encoding, received,
        )?
        .map(|source| Box::new(source) as Box<dyn RecordSource + 's>)),
        Layout::Xml(layout) => Ok(Ok(Box::new(xml::XmlSource::open(
            schema, layout, input, encoding, received,
        )))),
    }
}

#[cfg(test)]
mod tests;
