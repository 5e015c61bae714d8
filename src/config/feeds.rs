//! `[feeds.*]`: globs, encryption, and the schema with its columns.

use super::*;

/// The highest field position a column of a file without a header may have.
pub(super) const MAX_POSITION: i64 = 4096;

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
        #[derive(PartialEq)]
        enum Format {
            Csv,
            Fixed,
            Xml,
        }
        let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("csv") => Format::Csv,
            Some("fixed") => Format::Fixed,
            Some("xml") => Format::Xml,
            Some(other) => {
                let at = raw.format.as_ref().expect("given");
                self.at(
                    at,
                    format!("unknown format `{other}`, expected `csv`, `fixed` or `xml`"),
                );
                Format::Csv
            }
        };
        if format != Format::Fixed
            && let Some(section) = &raw.fixed
        {
            self.at(section, "`[feeds.NAME.fixed]` needs `format = \"fixed\"`");
        }
        if format != Format::Xml
            && let Some(section) = &raw.xml
        {
            self.at(section, "`[feeds.NAME.xml]` needs `format = \"xml\"`");
        }
        if format != Format::Csv && raw.csv.is_some() {
            let at = raw.format.as_ref().expect("given");
            self.at(at, "only a CSV feed has a `[feeds.NAME.csv]` section");
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
        let mut schema = match format {
            Format::Fixed => {
                let section = raw.fixed.map(Spanned::into_inner).unwrap_or_default();
                self.fixed_schema(section, raw.columns, base)
            }
            Format::Xml => self.xml_schema(raw.xml, raw.columns, base),
            Format::Csv => self.schema(raw.csv.unwrap_or_default(), raw.columns, base),
        };
        // `@received` is a column of every record once a rule names it.
        let names_received = |rule: &raw::Rule| {
            rule.on
                .as_ref()
                .is_some_and(|on| on.get_ref() == RECEIVED_COLUMN)
                || rule
                    .check
                    .as_ref()
                    .is_some_and(|c| c.get_ref().split_whitespace().any(|w| w == RECEIVED_COLUMN))
        };
        if raw.rules.iter().any(|r| names_received(r.get_ref()))
            && !schema.columns.iter().any(|c| c.name == RECEIVED_COLUMN)
        {
            schema.received_column = Some(schema.columns.len());
            schema.columns.push(ColumnSpec {
                name: RECEIVED_COLUMN.to_string(),
                required: false,
                identifier: false,
                kind: ColumnKind::Date {
                    format: "%Y-%m-%d".to_string(),
                },
            });
        }
        schema.rules = raw
            .rules
            .into_iter()
            .filter_map(|rule| self.rule(rule, &schema.columns))
            .collect();
        schema.unique = raw
            .unique
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|set| self.unique_set(&set, &schema.columns))
            .collect();
        schema.max_record_bytes = max_record_bytes;
        schema.max_field_bytes = max_field_bytes.min(max_record_bytes);
        let mut mapping = self.mapping(raw.map.unwrap_or_default(), &schema, base);
        for kind in &mut mapping.care {
            kind.key_scope = name.to_string();
        }
        if let Some(observations) = &mut mapping.observations {
            observations.key_scope = name.to_string();
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let expect = raw.expect.map(|e| self.expect(name, e)).unwrap_or_default();
        Some(Feed {
            name: name.to_string(),
            partner: raw.partner.into_inner(),
            patterns: patterns?,
            encryption,
            on_error,
            schema,
            mapping,
            expect,
            retention_days: self.days(raw.retention_days.as_ref(), "retention_days"),
            record_retention_days: self
                .days(raw.record_retention_days.as_ref(), "record_retention_days"),
        })
    }

    pub(super) fn encoding(&mut self, given: Option<&Spanned<String>>) -> Encoding {
        match given.map(|s| s.get_ref().as_str()) {
            None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("windows-1252") | Some("cp1252") => Encoding::Windows1252,
            Some("iso-8859-1") | Some("latin1") => Encoding::Latin1,
            Some("auto") => Encoding::Auto,
            Some(other) => {
                let span = given.map(|s| s.span()).unwrap_or(0..0);
                self.error(
                    span,
                    format!(
                        "unknown encoding `{other}`, expected `utf-8`, `windows-1252`, `iso-8859-1` or `auto`"
                    ),
                );
                Encoding::Utf8
            }
        }
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
        let encoding = self.encoding(csv.encoding.as_ref());
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
            for (option, given) in [
                ("start", column.start.as_ref().map(|v| v.span())),
                ("length", column.length.as_ref().map(|v| v.span())),
                ("end", column.end.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = given {
                    self.error(
                        span,
                        format!("`{option}` applies only to `format = \"fixed\"`"),
                    );
                }
            }
            if let Some(path) = &column.path {
                self.at(path, "`path` applies only to `format = \"xml\"`");
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
        let trailer_record = csv
            .trailer_record
            .and_then(|t| self.trailer_record(t.into_inner(), &specs));
        let header_record = csv.header_record.map(|h| {
            let span = h.span();
            let mut header = self.header_record(h.into_inner(), base);
            // Its fields become columns of every record, named as declared.
            header.first_column = specs.len();
            for (_, field) in &header.fields {
                if !declared.insert(names.key(&field.name).into_owned()) {
                    self.error(
                        span.clone(),
                        format!(
                            "header record field `{}` has the name of a column",
                            field.name
                        ),
                    );
                }
                specs.push(field.clone());
            }
            header
        });
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
            unique: Vec::new(),
            received_column: None,
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
