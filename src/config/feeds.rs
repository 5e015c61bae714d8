//! `[feeds.*]`: globs, encryption, and the schema with its columns.

use super::*;

/// The highest field position a column of a file without a header may have.
const MAX_POSITION: i64 = 4096;

/// The largest code-list file read for a `code` column.
const MAX_CODE_LIST_BYTES: u64 = 8 << 20;

impl Checker<'_> {
    pub(super) fn feed(
        &mut self,
        name: &str,
        raw: raw::Feed,
        partners: &BTreeMap<String, Partner>,
        seen_patterns: &mut HashSet<(String, String)>,
        base: &Path,
    ) -> Option<Feed> {
        let errors_before = self.errors.len();
        self.broken_columns.clear();
        self.partner_ref(&raw.partner, partners);

        let mut globs = GlobSetBuilder::new();
        if raw.patterns.get_ref().is_empty() {
            self.at(
                &raw.patterns,
                format!("feed `{name}`: `match` needs at least one glob"),
            );
        }
        for pattern in raw.patterns.get_ref() {
            let text = pattern.get_ref();
            if let Some(why) = never_matches(text) {
                self.at(pattern, format!("glob `{text}` can never match: {why}"));
                continue;
            }
            if !seen_patterns.insert((raw.partner.get_ref().clone(), text.clone())) {
                self.at(
                    pattern,
                    format!(
                        "glob `{text}` is already used by another feed of partner `{}`",
                        raw.partner.get_ref()
                    ),
                );
            }
            match Glob::new(text) {
                Ok(g) => {
                    globs.add(g);
                }
                Err(e) => self.at(pattern, format!("invalid glob `{text}`: {}", e.kind())),
            }
        }
        let patterns = globs.build().ok();

        let encryption = match raw.encryption.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("age") => Encryption::Age,
            Some("none") => Encryption::None,
            Some("optional") => Encryption::Optional,
            Some(other) => {
                let span = raw.encryption.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown encryption `{other}`, expected `age`, `none` or `optional`"),
                );
                Encryption::Age
            }
        };
        if let Some(format) = &raw.format
            && format.get_ref() != "csv"
        {
            self.at(
                format,
                format!("unknown format `{}`, expected `csv`", format.get_ref()),
            );
        }
        let on_error = match raw.on_error.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("reject_file") => OnError::RejectFile,
            Some("skip_invalid_rows") => OnError::SkipInvalidRows,
            Some(other) => {
                let span = raw.on_error.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!(
                        "unknown on_error `{other}`, expected `reject_file` or `skip_invalid_rows`"
                    ),
                );
                OnError::RejectFile
            }
        };
        let max_record_bytes = self.size(
            raw.max_record_size,
            crate::schema::DEFAULT_MAX_RECORD_BYTES as u64,
            1 << 30,
            "max_record_size",
        ) as usize;
        let max_field_bytes = self.size(
            raw.max_field_size,
            crate::schema::DEFAULT_MAX_FIELD_BYTES as u64,
            1 << 30,
            "max_field_size",
        ) as usize;
        let mut schema = self.schema(raw.csv.unwrap_or_default(), raw.columns, base);
        schema.rules = raw
            .rules
            .into_iter()
            .filter_map(|rule| self.rule(rule, &schema.columns))
            .collect();
        schema.max_record_bytes = max_record_bytes;
        schema.max_field_bytes = max_field_bytes.min(max_record_bytes);
        let mapping = self.mapping(raw.map.unwrap_or_default(), &schema);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Feed {
            name: name.to_string(),
            partner: raw.partner.into_inner(),
            patterns: patterns?,
            encryption,
            on_error,
            schema,
            mapping,
        })
    }

    pub(super) fn schema(
        &mut self,
        csv: raw::Csv,
        columns: Spanned<Vec<Spanned<raw::Column>>>,
        base: &Path,
    ) -> Schema {
        let delimiter = self.single_byte(csv.delimiter, b',', "delimiter");
        let quote = self.single_byte(csv.quote, b'"', "quote");
        let has_header = csv.header.as_ref().is_none_or(|h| *h.get_ref());
        let names = match csv.header_match.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("exact") => NameMatch::Exact,
            Some("loose") => NameMatch::Loose,
            Some(other) => {
                let span = csv.header_match.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown header_match `{other}`, expected `exact` or `loose`"),
                );
                NameMatch::Exact
            }
        };
        let missing_columns = match csv.missing_columns.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("error") => MissingColumns::Error,
            Some("allow") => MissingColumns::Allow,
            Some(other) => {
                let span = csv
                    .missing_columns
                    .as_ref()
                    .map(|s| s.span())
                    .unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown missing_columns `{other}`, expected `error` or `allow`"),
                );
                MissingColumns::Error
            }
        };
        if !has_header {
            for (option, given) in [
                ("header_match", csv.header_match.as_ref().map(|s| s.span())),
                (
                    "missing_columns",
                    csv.missing_columns.as_ref().map(|s| s.span()),
                ),
            ] {
                if let Some(span) = given {
                    self.error(
                        span,
                        format!("`{option}` applies only to files with a header"),
                    );
                }
            }
        }
        let encoding = match csv.encoding.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("windows-1252") | Some("cp1252") => Encoding::Windows1252,
            Some("auto") => Encoding::Auto,
            Some(other) => {
                let span = csv.encoding.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!(
                        "unknown encoding `{other}`, expected `utf-8`, `windows-1252` or `auto`"
                    ),
                );
                Encoding::Utf8
            }
        };
        let extra_columns = match csv.extra_columns.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("error") => ExtraColumns::Error,
            Some("ignore") => ExtraColumns::Ignore,
            Some(other) => {
                let span = csv.extra_columns.as_ref().map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!("unknown extra_columns `{other}`, expected `error` or `ignore`"),
                );
                ExtraColumns::Error
            }
        };
        if columns.get_ref().is_empty() {
            self.at(&columns, "a feed needs at least one column");
        }
        let mut declared = HashSet::new();
        let mut specs = Vec::new();
        let mut positions: Vec<Option<usize>> = Vec::new();
        let mut positioned = 0;
        let count = columns.get_ref().len();
        for (order, column) in columns.into_inner().into_iter().enumerate() {
            let column = column.into_inner();
            if !declared.insert(names.key(column.name.get_ref()).into_owned()) {
                let how = if names == NameMatch::Loose {
                    " (ignoring case and spaces)"
                } else {
                    ""
                };
                self.at(
                    &column.name,
                    format!("column `{}` is declared twice{how}", column.name.get_ref()),
                );
            }
            let position = match &column.position {
                Some(p) if has_header => {
                    self.at(
                        p,
                        "`position` applies only to files without a header (`header = false`)",
                    );
                    None
                }
                Some(p) if (1..=MAX_POSITION).contains(p.get_ref()) => {
                    positioned += 1;
                    Some(*p.get_ref() as usize - 1)
                }
                Some(p) => {
                    self.at(p, format!("position must be 1 to {MAX_POSITION}"));
                    None
                }
                None => (!has_header).then_some(order),
            };
            if let Some(field) = position {
                if positions.len() <= field {
                    positions.resize(field + 1, None);
                }
                if positions[field].is_some() {
                    self.at(
                        &column.name,
                        format!(
                            "column `{}`: field {} is already another column's",
                            column.name.get_ref(),
                            field + 1
                        ),
                    );
                }
                // The column's index among those that check out (a broken
                // one fails the whole config, so the gap never matters).
                positions[field] = Some(specs.len());
            }
            let name = column.name.get_ref().clone();
            match self.column(column, base) {
                Some(spec) => specs.push(spec),
                None => {
                    self.broken_columns.insert(name);
                }
            }
        }
        if !has_header && positioned > 0 && positioned < count {
            if let Some(header) = &csv.header {
                self.at(
                    header,
                    "without a header, give every column a `position`, or none (declared order)",
                );
            }
        }
        let header_record = csv.header_record.map(|h| HeaderRecord {
            tag: h.into_inner().tag.and_then(|t| self.record_tag(&t)),
        });
        let trailer_record = csv
            .trailer_record
            .and_then(|t| self.trailer_record(t.into_inner(), &specs));
        Schema {
            layout: Layout::Csv(CsvLayout {
                delimiter,
                quote,
                positions: (!has_header).then_some(positions),
                header_record,
                trailer_record,
            }),
            max_record_bytes: crate::schema::DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: crate::schema::DEFAULT_MAX_FIELD_BYTES,
            encoding,
            extra_columns,
            missing_columns,
            names,
            columns: specs,
            rules: Vec::new(),
        }
    }

    pub(super) fn column(&mut self, c: raw::Column, base: &Path) -> Option<ColumnSpec> {
        let name = c.name.get_ref().clone();
        let kind_name = c.kind.get_ref().as_str();
        let mut allowed: &[&str] = &[];
        let kind = match kind_name {
            "string" => {
                allowed = &["max_length", "pattern"];
                let max_length = match &c.max_length {
                    Some(n) if *n.get_ref() >= 1 => Some(*n.get_ref() as usize),
                    Some(n) => {
                        self.at(n, "max_length must be at least 1");
                        None
                    }
                    None => None,
                };
                let pattern = match &c.pattern {
                    Some(p) => match regex::Regex::new(&format!("^(?:{})$", p.get_ref())) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.at(p, format!("invalid pattern: {e}"));
                            None
                        }
                    },
                    None => None,
                };
                ColumnKind::String {
                    max_length,
                    pattern,
                }
            }
            "integer" | "decimal" => {
                allowed = if kind_name == "decimal" {
                    &["min", "max", "scale"]
                } else {
                    &["min", "max"]
                };
                let min = c.min.as_ref().map(|v| *v.get_ref());
                let max = c.max.as_ref().map(|v| *v.get_ref());
                if let (Some(lo), Some(hi), Some(at)) = (min, max, c.max.as_ref())
                    && lo > hi
                {
                    self.at(at, format!("column `{name}`: max {hi} is below min {lo}"));
                }
                let scale = match &c.scale {
                    Some(n) if (0..=18).contains(n.get_ref()) => Some(*n.get_ref() as u32),
                    Some(n) => {
                        self.at(n, "scale must be 0 to 18 digits");
                        None
                    }
                    None => None,
                };
                if kind_name == "integer" {
                    ColumnKind::Integer { min, max }
                } else {
                    ColumnKind::Decimal { min, max, scale }
                }
            }
            "date" => {
                allowed = &["format"];
                let format = c
                    .format
                    .as_ref()
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_else(|| "%Y-%m-%d".into());
                if let Some(f) = &c.format {
                    self.check_chrono_format(f);
                }
                ColumnKind::Date { format }
            }
            "datetime" => {
                allowed = &["format"];
                let format = match &c.format {
                    None => DateTimeFormat::Iso8601,
                    Some(f) if f.get_ref() == "iso8601" || f.get_ref() == "rfc3339" => {
                        DateTimeFormat::Iso8601
                    }
                    Some(f) => {
                        self.check_chrono_format(f);
                        DateTimeFormat::Chrono(f.get_ref().clone())
                    }
                };
                ColumnKind::DateTime { format }
            }
            "time" => {
                allowed = &["format"];
                if let Some(f) = &c.format {
                    self.check_chrono_format(f);
                }
                ColumnKind::Time {
                    format: c.format.as_ref().map(|f| f.get_ref().clone()),
                }
            }
            "code" => {
                allowed = &["values", "values_file", "ignore_case"];
                let values = match (&c.values, &c.values_file) {
                    (Some(v), Some(file)) => {
                        self.at(
                            file,
                            format!("column `{name}`: give `values` or `values_file`, not both"),
                        );
                        v.get_ref().clone()
                    }
                    (Some(v), None) if !v.get_ref().is_empty() => v.get_ref().clone(),
                    (Some(v), None) => {
                        self.at(v, format!("column `{name}`: `values` is empty"));
                        Vec::new()
                    }
                    (None, Some(file)) => self.code_list_file(&name, file, base),
                    (None, None) => {
                        self.at(
                            &c.kind,
                            format!(
                                "column `{name}`: a `code` column needs `values` or `values_file`"
                            ),
                        );
                        Vec::new()
                    }
                };
                ColumnKind::Code {
                    values,
                    ignore_case: c.ignore_case.unwrap_or(false),
                }
            }
            "boolean" => {
                allowed = &["true_values", "false_values"];
                let words = |v: &Option<Spanned<Vec<String>>>, d: [&str; 3]| {
                    v.as_ref()
                        .map(|v| v.get_ref().clone())
                        .unwrap_or_else(|| d.iter().map(|s| s.to_string()).collect())
                };
                let true_values = words(&c.true_values, ["true", "Y", "1"]);
                let false_values = words(&c.false_values, ["false", "N", "0"]);
                if let Some(both) = true_values.iter().find(|t| false_values.contains(t)) {
                    let at = c
                        .true_values
                        .as_ref()
                        .map(|v| v.span())
                        .unwrap_or(c.kind.span());
                    self.error(
                        at,
                        format!("column `{name}`: `{both}` is both true and false"),
                    );
                }
                ColumnKind::Boolean {
                    true_values,
                    false_values,
                }
            }
            "nhs_number" => ColumnKind::NhsNumber,
            "postcode" => ColumnKind::Postcode,
            "ods_code" => ColumnKind::OdsCode,
            "email" => ColumnKind::Email,
            "phone" => ColumnKind::Phone,
            other => {
                self.at(
                    &c.kind,
                    format!(
                        "column `{name}`: unknown type `{other}`, expected string, integer, decimal, date, datetime, time, code, boolean, nhs_number, postcode, ods_code, email or phone"
                    ),
                );
                return None;
            }
        };
        let given: [(&str, Option<Range<usize>>); 10] = [
            ("max_length", c.max_length.as_ref().map(|v| v.span())),
            ("pattern", c.pattern.as_ref().map(|v| v.span())),
            ("min", c.min.as_ref().map(|v| v.span())),
            ("max", c.max.as_ref().map(|v| v.span())),
            ("scale", c.scale.as_ref().map(|v| v.span())),
            ("format", c.format.as_ref().map(|v| v.span())),
            ("values", c.values.as_ref().map(|v| v.span())),
            ("values_file", c.values_file.as_ref().map(|v| v.span())),
            ("true_values", c.true_values.as_ref().map(|v| v.span())),
            ("false_values", c.false_values.as_ref().map(|v| v.span())),
        ];
        for (option, span) in given {
            if let Some(span) = span
                && !allowed.contains(&option)
            {
                self.error(
                    span,
                    format!("column `{name}`: `{option}` does not apply to type `{kind_name}`"),
                );
            }
        }
        Some(ColumnSpec {
            name,
            required: c.required.unwrap_or(false),
            identifier: c.identifier.unwrap_or(false) || kind.always_identifies(),
            kind,
        })
    }

    /// A header or trailer record's tag: what its first field holds.
    fn record_tag(&mut self, tag: &Spanned<String>) -> Option<String> {
        let text = tag.get_ref().trim();
        if text.is_empty() || text.len() > 32 {
            self.at(tag, "a record tag is 1 to 32 characters");
            return None;
        }
        Some(text.to_string())
    }

    fn trailer_record(
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

    /// Reads a code list kept in a file next to the config: one code per
    /// line, or CSV whose first field is the code (`code,label`; a first
    /// line `code,label` is a header). Blank lines and lines starting `#`
    /// are skipped.
    fn code_list_file(&mut self, column: &str, file: &Spanned<String>, base: &Path) -> Vec<String> {
        let path = join(base, file.get_ref());
        let text = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_CODE_LIST_BYTES => {
                self.at(
                    file,
                    format!(
                        "column `{column}`: {} is larger than {MAX_CODE_LIST_BYTES} bytes",
                        path.display()
                    ),
                );
                return Vec::new();
            }
            _ => match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.at(
                        file,
                        format!("column `{column}`: cannot read {}: {e}", path.display()),
                    );
                    return Vec::new();
                }
            },
        };
        let Ok(text) = String::from_utf8(text) else {
            self.at(
                file,
                format!("column `{column}`: {} is not UTF-8 text", path.display()),
            );
            return Vec::new();
        };
        let mut codes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (code, labelled) = first_field(line);
            if code.is_empty() || (index == 0 && labelled && code == "code") {
                continue;
            }
            codes.push(code);
        }
        if codes.is_empty() {
            self.at(
                file,
                format!("column `{column}`: {} holds no codes", path.display()),
            );
        }
        codes
    }

    pub(super) fn check_chrono_format(&mut self, format: &Spanned<String>) {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format.get_ref()).any(|i| matches!(i, Item::Error)) {
            self.at(
                format,
                format!("invalid date format `{}`", format.get_ref()),
            );
        }
    }
}

/// Why a file-name glob could never select a file a source would take.
pub(super) fn never_matches(glob: &str) -> Option<&'static str> {
    if glob.is_empty() {
        return Some("it is empty");
    }
    if glob.contains('/') || glob.contains('\\') {
        return Some("feeds match file names, which never contain a path separator");
    }
    if glob.starts_with('.') {
        return Some("names starting with `.` are temporary uploads and are never taken");
    }
    if TEMPORARY_SUFFIXES.iter().any(|s| glob.ends_with(s)) {
        return Some(
            "names ending `.part`, `.tmp` or `.filepart` are temporary uploads and are never taken",
        );
    }
    None
}

/// The first field of a `code,label` line (quoted as CSV quotes, or not),
/// and whether more fields follow.
fn first_field(line: &str) -> (String, bool) {
    if let Some(quoted) = line.strip_prefix('"') {
        let mut code = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    code.push('"');
                }
                '"' => {
                    let rest: String = chars.collect();
                    return (code, rest.trim_start().starts_with(','));
                }
                _ => code.push(c),
            }
        }
        return (code, false);
    }
    match line.split_once(',') {
        Some((code, _)) => (code.trim().to_string(), true),
        None => (line.to_string(), false),
    }
}
