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

    pub(super) fn header_record(&mut self, raw: raw::HeaderRecord, base: &Path) -> HeaderRecord {
        let tag = raw.tag.and_then(|t| self.record_tag(&t));
        let mut fields = Vec::new();
        let mut taken: BTreeMap<i64, String> = BTreeMap::new();
        for field in raw.fields {
            let field = field.into_inner();
            if let Some(p) = &field.position
                && let Some(other) = taken.insert(*p.get_ref(), field.name.get_ref().clone())
            {
                self.at(
                    p,
                    format!(
                        "header record fields `{other}` and `{}` are both at position {}",
                        field.name.get_ref(),
                        p.get_ref()
                    ),
                );
            }
            let position = match &field.position {
                Some(p) if (1..=MAX_POSITION).contains(p.get_ref()) => {
                    if tag.is_some() && *p.get_ref() == 1 {
                        self.at(p, "field 1 of a tagged header record is its tag");
                    }
                    Some(*p.get_ref() as usize - 1)
                }
                Some(p) => {
                    self.at(p, format!("position must be 1 to {MAX_POSITION}"));
                    None
                }
                None => {
                    self.at(
                        &field.name,
                        format!(
                            "header record field `{}` needs a `position`",
                            field.name.get_ref()
                        ),
                    );
                    None
                }
            };
            let spec = self.column(field, base);
            if let (Some(position), Some(spec)) = (position, spec) {
                fields.push((position, spec));
            }
        }
        HeaderRecord {
            tag,
            fields,
            first_column: 0,
        }
    }

    pub(super) fn trailer_record(
        &mut self,
        raw: raw::TrailerRecord,
        columns: &[ColumnSpec],
    ) -> Option<TrailerRecord> {
        let tag = match &raw.tag {
            Some(tag) => Some(self.record_tag(tag)?),
            None => None,
        };
        // Field 1 of a tagged trailer is its tag.
        let first = if tag.is_some() { 2 } else { 1 };
        let mut field = |f: &Option<Spanned<i64>>| match f {
            Some(n) if (first..=MAX_POSITION).contains(n.get_ref()) => {
                Some(*n.get_ref() as usize - 1)
            }
            Some(n) if first == 2 => {
                self.at(
                    n,
                    format!("a trailer field is 2 to {MAX_POSITION} (field 1 is the tag)"),
                );
                None
            }
            Some(n) => {
                self.at(n, format!("a trailer field is 1 to {MAX_POSITION}"));
                None
            }
            None => None,
        };
        let count_field = field(&raw.count_field);
        let total_field = field(&raw.total_field);
        let total = self.trailer_total(
            total_field,
            raw.total_field.as_ref().map(|f| f.span()),
            "total_field",
            raw.total_of.as_ref(),
            columns,
        );
        Some(TrailerRecord {
            tag,
            count_field,
            total,
        })
    }

    /// A trailer's control total: the field holding it (`at`, given at
    /// `at_span` by `key`) and the numeric column it sums (`total_of`).
    pub(super) fn trailer_total(
        &mut self,
        at: Option<usize>,
        at_span: Option<Range<usize>>,
        key: &str,
        total_of: Option<&Spanned<String>>,
        columns: &[ColumnSpec],
    ) -> Option<(usize, usize)> {
        match (at, total_of) {
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
            // A field that failed its own check was reported there.
            (None, Some(_)) if at_span.is_some() => None,
            _ => {
                let span = total_of.map(|c| c.span()).or(at_span).unwrap_or(0..0);
                self.error(span, format!("give `{key}` and `total_of` together"));
                None
            }
        }
    }
}
