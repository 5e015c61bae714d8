//! `[[feeds.NAME.columns]]`: each column's type and its options, and code
//! lists kept in files next to the config.

use super::*;

/// The largest code-list file read for a `code` column.
const MAX_CODE_LIST_BYTES: u64 = 8 << 20;

impl Checker<'_> {
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
                    values: CodeList::new(values, c.ignore_case.unwrap_or(false)),
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

    /// Reads a code list kept in a file next to the config: one code per
    /// line, or CSV whose first field is the code (`code,label`; a first
    /// line `code,label` is a header). Blank lines and lines starting `#`
    /// are skipped.
    fn code_list_file(&mut self, column: &str, file: &Spanned<String>, base: &Path) -> Vec<String> {
        let what = format!("column `{column}`");
        let Some(text) = self.small_text_file(&what, file, base) else {
            return Vec::new();
        };
        let path = join(base, file.get_ref());
        let mut codes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = csv_fields(line);
            let labelled = fields.len() > 1;
            let code = fields.swap_remove(0);
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

    /// A small UTF-8 file next to the config (a code list, a translation).
    pub(super) fn small_text_file(
        &mut self,
        what: &str,
        file: &Spanned<String>,
        base: &Path,
    ) -> Option<String> {
        let path = join(base, file.get_ref());
        let bytes = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_CODE_LIST_BYTES => {
                self.at(
                    file,
                    format!(
                        "{what}: {} is larger than {MAX_CODE_LIST_BYTES} bytes",
                        path.display()
                    ),
                );
                return None;
            }
            _ => match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.at(file, format!("{what}: cannot read {}: {e}", path.display()));
                    return None;
                }
            },
        };
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(_) => {
                self.at(
                    file,
                    format!("{what}: {} is not UTF-8 text", path.display()),
                );
                None
            }
        }
    }

    /// `source,target` pairs from a translation file.
    pub(super) fn translation_pairs(
        &mut self,
        what: &str,
        file: &Spanned<String>,
        base: &Path,
    ) -> Option<Vec<(String, String)>> {
        let text = self.small_text_file(what, file, base)?;
        let mut pairs = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = csv_fields(line);
            match fields.as_slice() {
                [source, target] if index == 0 && source == "source" && target == "target" => {}
                [source, target] if !source.is_empty() && !target.is_empty() => {
                    pairs.push((source.clone(), target.clone()))
                }
                _ => {
                    self.at(
                        file,
                        format!(
                            "{what}: line {} of {} is not `source,target`",
                            index + 1,
                            file.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
        if pairs.is_empty() {
            self.at(file, format!("{what}: {} holds no pairs", file.get_ref()));
            return None;
        }
        Some(pairs)
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

/// The first field of a `code,label` line (quoted as CSV quotes, or not),
/// and whether more fields follow.
/// The fields of one line of a small CSV file next to the config, unquoted
/// and trimmed.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_string()),
            _ => field.push(c),
        }
    }
    fields.push(field.trim().to_string());
    fields
}
