//! `[feeds.NAME.csv.header_record]` and `[feeds.NAME.csv.trailer_record]`:
//! the records that frame an extract's data.

use super::feeds::MAX_POSITION;
use super::*;

impl Checker<'_> {
    /// A header or trailer record's tag: what its first field holds.
    pub(super) fn record_tag(&mut self, tag: &Spanned<String>) -> Option<String> {
        let text = tag.get_ref().trim();
        if text.is_empty() || text.len() > 32 {
            self.at(tag, "a record tag is 1 to 32 characters");
            return None;
        }
        Some(text.to_string())
    }

    pub(super) fn trailer_record(
        &mut self,
        raw: raw::TrailerRecord,
        columns: &[ColumnSpec],
    ) -> Option<TrailerRecord> {
        let tag = self.record_tag(&raw.tag)?;
        let mut field = |f: &Option<Spanned<i64>>| match f {
            Some(n) if (2..=MAX_POSITION).contains(n.get_ref()) => Some(*n.get_ref() as usize - 1),
            Some(n) => {
                self.at(
                    n,
                    format!("a trailer field is 2 to {MAX_POSITION} (field 1 is the tag)"),
                );
                None
            }
            None => None,
        };
        let count_field = field(&raw.count_field);
        let total_field = field(&raw.total_field);
        let total = match (total_field, &raw.total_of) {
            (Some(at), Some(column)) => {
                let found = columns.iter().position(|c| &c.name == column.get_ref());
                match found.map(|i| (i, &columns[i].kind)) {
                    Some((i, ColumnKind::Integer { .. } | ColumnKind::Decimal { .. })) => {
                        Some((at, i))
                    }
                    Some(_) => {
                        self.at(
                            column,
                            format!("`total_of`: column `{}` is not a number", column.get_ref()),
                        );
                        None
                    }
                    None => {
                        self.at(
                            column,
                            format!("`total_of`: no column `{}`", column.get_ref()),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
            _ => {
                let span = raw
                    .total_of
                    .as_ref()
                    .map(|c| c.span())
                    .or(raw.total_field.as_ref().map(|f| f.span()))
                    .unwrap_or(0..0);
                self.error(span, "give `total_field` and `total_of` together");
                None
            }
        };
        Some(TrailerRecord {
            tag,
            count_field,
            total,
        })
    }
}
