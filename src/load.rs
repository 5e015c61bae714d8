//! Load: records reach the ledger inside the file's savepoint, so they and the
//! file's new state commit together or not at all.

use crate::ledger::Result;
use crate::records::{Records, Writer};

/// What a load wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub rows: u64,
    pub records: u64,
}

/// Writes every batch until there are no more (the reader has finished).
pub fn load(
    batches: impl IntoIterator<Item = Vec<Records>>,
    mut writer: Writer<'_>,
) -> Result<Loaded> {
    let mut rows = 0;
    for batch in batches {
        for records in &batch {
            writer.write(records)?;
        }
        rows += batch.len() as u64;
    }
    Ok(Loaded {
        rows,
        records: writer.finish()?,
    })
}
