//! `format = "xml"`: records are elements at one path, columns are child
//! elements or attributes within them, named with the feed's own prefixes.

use super::*;
use crate::schema::{XmlLayout, XmlName, XmlPath};

const DEFAULT_MAX_DEPTH: i64 = 32;
const DEFAULT_MAX_ATTRIBUTES: i64 = 64;
/// The deepest nesting and most attributes a feed may allow.
const MAX_DEPTH: i64 = 256;
const MAX_ATTRIBUTES: i64 = 1024;

impl Checker<'_> {
    pub(super) fn xml_schema(
        &mut self,
        section: Option<Spanned<raw::Xml>>,
        columns: Spanned<Vec<Spanned<raw::Column>>>,
        base: &Path,
    ) -> Schema {
        let Some(section) = section else {
            self.at(
                &columns,
                "an XML feed needs `[feeds.NAME.xml]` with `record`, the record element's path",
            );
            return self.schema(raw::Csv::default(), columns, base);
        };
        let section = section.into_inner();
        let encoding = match &section.encoding {
            None => Encoding::Auto,
            given => self.encoding(given.as_ref()),
        };
        if columns.get_ref().is_empty() {
            self.at(&columns, "a feed needs at least one column");
        }
        let namespaces = section.namespaces;
        let record = match self.xml_names(&section.record, &namespaces, false) {
            Some((elements, _)) if !elements.is_empty() => elements,
            Some(_) => {
                self.at(&section.record, "`record` names at least the root element");
                Vec::new()
            }
            None => Vec::new(),
        };
        let repeat = match &section.repeat {
            Some(repeat) => match self.xml_names(repeat, &namespaces, false) {
                Some((elements, _)) if !elements.is_empty() => elements,
                Some(_) => {
                    self.at(repeat, "`repeat` names at least one element");
                    Vec::new()
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        let max_depth =
            self.xml_limit(section.max_depth, DEFAULT_MAX_DEPTH, MAX_DEPTH, "max_depth");
        if record.len() + repeat.len() > max_depth {
            self.at(&section.record, "`record` is deeper than `max_depth`");
        }
        let max_attributes = self.xml_limit(
            section.max_attributes,
            DEFAULT_MAX_ATTRIBUTES,
            MAX_ATTRIBUTES,
            "max_attributes",
        );
        let mut specs = Vec::new();
        let mut paths: Vec<XmlPath> = Vec::new();
        let mut in_repeat = Vec::new();
        for column in columns.into_inner() {
            let column = column.into_inner();
            let name = column.name.get_ref().clone();
            for (given, option) in [
                (column.start.as_ref(), "start"),
                (column.length.as_ref(), "length"),
                (column.end.as_ref(), "end"),
                (column.position.as_ref(), "position"),
            ] {
                if let Some(given) = given {
                    self.at(
                        given,
                        format!("`{option}` does not apply to an XML column; give its `path`"),
                    );
                }
            }
            let path = match &column.path {
                Some(path) => self.xml_names(path, &namespaces, true),
                None => self.xml_names(&Spanned::new(0..0, name.clone()), &namespaces, true),
            };
            let mut grouped = false;
            let path = path.map(|(mut elements, attribute)| {
                if !repeat.is_empty() && elements.starts_with(&repeat) {
                    grouped = true;
                    elements.drain(..repeat.len());
                }
                XmlPath {
                    elements,
                    attribute,
                }
            });
            if let Some(path) = &path
                && paths
                    .iter()
                    .zip(&in_repeat)
                    .any(|(p, g)| p == path && *g == grouped)
            {
                self.at(
                    &column.name,
                    format!("column `{name}`: another column has the same `path`"),
                );
            }
            if specs.iter().any(|s: &ColumnSpec| s.name == name) {
                self.at(&column.name, format!("column `{name}` is declared twice"));
            }
            match (self.column(column, base), path) {
                (Some(spec), Some(path)) => {
                    specs.push(spec);
                    paths.push(path);
                    in_repeat.push(grouped);
                }
                _ => {
                    self.broken_columns.insert(name);
                }
            }
        }
        Schema {
            layout: Layout::Xml(XmlLayout {
                record,
                repeat,
                paths,
                in_repeat,
                max_depth,
                max_attributes,
            }),
            max_record_bytes: crate::schema::DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: crate::schema::DEFAULT_MAX_FIELD_BYTES,
            encoding,
            extra_columns: ExtraColumns::Ignore,
            missing_columns: MissingColumns::Allow,
            names: NameMatch::Exact,
            columns: specs,
            rules: Vec::new(),
            unique: Vec::new(),
            received_column: None,
        }
    }

    fn xml_limit(
        &mut self,
        given: Option<Spanned<i64>>,
        default: i64,
        max: i64,
        name: &str,
    ) -> usize {
        match given {
            None => default as usize,
            Some(n) if (1..=max).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.at(&n, format!("`{name}` is 1 to {max}"));
                default as usize
            }
        }
    }

    /// A `/`-separated path of `prefix:local` names, the last one an
    /// `@attribute` when `attribute_allowed`.
    fn xml_names(
        &mut self,
        path: &Spanned<String>,
        namespaces: &std::collections::BTreeMap<String, String>,
        attribute_allowed: bool,
    ) -> Option<(Vec<XmlName>, Option<XmlName>)> {
        let text = path.get_ref().trim_start_matches('/');
        if text.is_empty() {
            return Some((Vec::new(), None));
        }
        let mut elements = Vec::new();
        let mut attribute = None;
        let steps: Vec<&str> = text.split('/').collect();
        for (i, step) in steps.iter().enumerate() {
            let (is_attribute, step) = match step.strip_prefix('@') {
                Some(rest) => (true, rest),
                None => (false, *step),
            };
            if is_attribute && (!attribute_allowed || i + 1 != steps.len()) {
                self.at(
                    path,
                    "`@attribute` comes last in a column's `path`, and only there",
                );
                return None;
            }
            let valid = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
            };
            let (prefix, local) = match step.split_once(':') {
                Some((prefix, local)) => (Some(prefix), local),
                None => (None, step),
            };
            if !valid(local) || prefix.is_some_and(|p| !valid(p)) {
                self.at(
                    path,
                    format!("`{}` is not a path of XML names", path.get_ref()),
                );
                return None;
            }
            let namespace = match prefix {
                None => None,
                Some(prefix) => match namespaces.get(prefix) {
                    Some(uri) => Some(uri.clone()),
                    None => {
                        self.at(
                            path,
                            format!("prefix `{prefix}` is not in `[feeds.NAME.xml] namespaces`"),
                        );
                        return None;
                    }
                },
            };
            let name = XmlName {
                namespace,
                local: local.to_string(),
            };
            if is_attribute {
                attribute = Some(name);
            } else {
                elements.push(name);
            }
        }
        Some((elements, attribute))
    }
}
