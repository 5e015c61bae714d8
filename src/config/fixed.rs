//! `format = "fixed"`: each column at its own characters of a line.

use super::*;
use crate::schema::Framed;

/// The widest record a fixed-width layout may describe, in characters.
const MAX_WIDTH: i64 = 1 << 20;

impl Checker<'_> {
    pub(super) fn fixed_schema(
        &mut self,
        section: raw::Fixed,
        columns: Spanned<Vec<Spanned<raw::Column>>>,
        base: &Path,
    ) -> Schema {
        let encoding = self.encoding(section.encoding.as_ref());
        if columns.get_ref().is_empty() {
            self.at(&columns, "a feed needs at least one column");
        }
        let mut specs = Vec::new();
        let mut spans: Vec<(usize, usize, String, Range<usize>)> = Vec::new();
        for column in columns.into_inner() {
            let column = column.into_inner();
            let name = column.name.get_ref().clone();
            let at = column.name.span();
            if let Some(position) = &column.position {
                self.at(position, "`position` applies to CSV files without a header; a fixed-width column has `start` and `length`");
            }
            if let Some(path) = &column.path {
                self.at(path, "`path` applies only to `format = \"xml\"`");
            }
            let span = self.fixed_span(&column);
            if specs.iter().any(|s: &ColumnSpec| s.name == name) {
                self.at(&column.name, format!("column `{name}` is declared twice"));
            }
            match self.column(column, base) {
                Some(spec) => {
                    specs.push(spec);
                    spans.push(
                        span.map_or((0, 0, name.clone(), at.clone()), |(s, l)| (s, l, name, at)),
                    );
                }
                None => {
                    self.broken_columns.insert(name);
                }
            }
        }
        let mut sorted: Vec<&(usize, usize, String, Range<usize>)> = spans.iter().collect();
        sorted.sort_by_key(|(start, length, ..)| (*start, *length));
        for pair in sorted.windows(2) {
            let ((a_start, a_len, a, _), (b_start, _, b, b_at)) = (pair[0], pair[1]);
            if a_start + a_len > *b_start && *a_len > 0 {
                self.error(
                    b_at.clone(),
                    format!("fixed-width columns `{a}` and `{b}` overlap"),
                );
            }
        }
        let trailer_record = section
            .trailer_record
            .and_then(|t| self.fixed_trailer(t.into_inner(), &specs));
        let header_record = section.header_record.map(|h| {
            let span = h.span();
            let header = h.into_inner();
            let tag = header.tag.and_then(|t| self.record_tag(&t));
            let mut fields = Vec::new();
            let mut field_spans = Vec::new();
            for field in header.fields {
                let field = field.into_inner();
                let name = field.name.get_ref().clone();
                if fields
                    .iter()
                    .any(|(_, f): &(usize, ColumnSpec)| f.name == name)
                {
                    self.error(
                        span.clone(),
                        format!("header record field `{name}` is declared twice"),
                    );
                }
                if specs.iter().any(|s| s.name == name) {
                    self.error(
                        span.clone(),
                        format!("header record field `{name}` has the name of a column"),
                    );
                }
                let at = self.fixed_span(&field);
                if let (Some(at), Some(spec)) = (at, self.column(field, base)) {
                    fields.push((field_spans.len(), spec));
                    field_spans.push(at);
                }
            }
            // Its fields become columns of every record, named as declared.
            let first_column = specs.len();
            specs.extend(fields.iter().map(|(_, spec)| spec.clone()));
            Framed {
                record: HeaderRecord {
                    tag,
                    fields,
                    first_column,
                },
                spans: field_spans,
            }
        });
        Schema {
            layout: Layout::Fixed(FixedLayout {
                spans: spans.into_iter().map(|(s, l, ..)| (s, l)).collect(),
                trim: section.trim.unwrap_or(true),
                header_record,
                trailer_record,
            }),
            max_record_bytes: crate::schema::DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: crate::schema::DEFAULT_MAX_FIELD_BYTES,
            encoding,
            extra_columns: ExtraColumns::Ignore,
            missing_columns: MissingColumns::Error,
            names: NameMatch::Exact,
            columns: specs,
            rules: Vec::new(),
            unique: Vec::new(),
            received_column: None,
        }
    }

    /// A fixed-width trailer record: its count and total as fields 0 and 1
    /// of its spans.
    fn fixed_trailer(
        &mut self,
        raw: raw::FixedTrailerRecord,
        columns: &[ColumnSpec],
    ) -> Option<Framed<TrailerRecord>> {
        let tag = match &raw.tag {
            Some(tag) => Some(self.record_tag(tag)?),
            None => None,
        };
        let mut spans = Vec::new();
        let mut span = |this: &mut Self, raw: &Option<Spanned<raw::FixedSpan>>| -> Option<usize> {
            let at = raw.as_ref()?;
            let found = this.span_of(
                at.get_ref().start.clone(),
                &at.get_ref().length,
                &at.get_ref().end,
                "trailer field",
            )?;
            spans.push(found);
            Some(spans.len() - 1)
        };
        let count_field = span(self, &raw.count);
        let total_field = span(self, &raw.total);
        let total = self.trailer_total(
            total_field,
            raw.total.as_ref().map(|t| t.span()),
            "total",
            raw.total_of.as_ref(),
            columns,
        );
        Some(Framed {
            record: TrailerRecord {
                tag,
                count_field,
                total,
            },
            spans,
        })
    }

    /// Characters from `start` (from 1) with `length` or `end`, as (first
    /// from 0, length).
    fn span_of(
        &mut self,
        start: Spanned<i64>,
        length: &Option<Spanned<i64>>,
        end: &Option<Spanned<i64>>,
        what: &str,
    ) -> Option<(usize, usize)> {
        let in_range = |n: &Spanned<i64>| (1..=MAX_WIDTH).contains(n.get_ref());
        if !in_range(&start) {
            self.at(&start, format!("`start` is 1 to {MAX_WIDTH}"));
            return None;
        }
        let length = match (length, end) {
            (Some(length), None) if in_range(length) => *length.get_ref(),
            (None, Some(end)) if in_range(end) && end.get_ref() >= start.get_ref() => {
                end.get_ref() - start.get_ref() + 1
            }
            (Some(length), None) => {
                self.at(length, format!("`length` is 1 to {MAX_WIDTH}"));
                return None;
            }
            (None, Some(end)) => {
                self.at(end, "`end` is at or after `start`");
                return None;
            }
            _ => {
                self.at(
                    &start,
                    format!("{what}: give `length` or `end`, one of them"),
                );
                return None;
            }
        };
        Some((*start.get_ref() as usize - 1, length as usize))
    }

    /// A column's first character (from 0) and length, from `start` with
    /// `length` or `end`.
    fn fixed_span(&mut self, column: &raw::Column) -> Option<(usize, usize)> {
        let name = column.name.get_ref();
        let Some(start) = &column.start else {
            self.at(
                &column.name,
                format!(
                    "column `{name}`: a fixed-width column needs `start` and `length` (or `end`)"
                ),
            );
            return None;
        };
        self.span_of(
            start.clone(),
            &column.length,
            &column.end,
            &format!("column `{name}`"),
        )
    }
}
