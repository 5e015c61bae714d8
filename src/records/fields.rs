//! How one record field is filled from a row: from a column (its code
//! translated, or a default when empty), a fixed value, or several columns
//! joined. Written in the config as a column name, or as a table:
//!
//! ```toml
//! type = { column = "Event Type", translate = { Request = "referral" }, default = "visit" }
//! provider = { value = "Riverside Care Home" }
//! name = { concat = ["Forename", "Surname"], separator = " " }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::SecondsFormat;
use compact_str::{CompactString, ToCompactString};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::{Expect, MappingChecker};
use crate::validate::{Row, Value};

/// A field's setting as written: a column name, or a table.
#[derive(Debug)]
pub enum RawField {
    Column(String),
    Table(RawFieldTable),
    /// A list of column names: only a section's `key`.
    Columns(Vec<String>),
}

/// The table form of a field's setting; exactly one of `column`, `value`
/// and `concat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldTable {
    /// The column whose value fills the field.
    pub column: Option<String>,
    /// The same value for every row.
    pub value: Option<String>,
    /// Columns joined in order by `separator`, empty ones left out.
    pub concat: Option<Vec<String>>,
    /// Between the parts of `concat`; one space by default.
    pub separator: Option<String>,
    /// The column's codes as the record's: `source code = "record code"`.
    pub translate: Option<BTreeMap<String, String>>,
    /// As `translate`, from a file next to the config: a `source,target`
    /// pair a line (`#` comments and a `source,target` header skipped).
    pub translate_file: Option<String>,
    /// When the column is empty, or holds a code the translation lacks
    /// (without one, such a code is kept as it is).
    pub default: Option<String>,
}

impl<'de> Deserialize<'de> for RawField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawField, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = RawField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name, or a table with `column`, `value` or `concat`")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<RawField, E> {
                Ok(RawField::Column(name.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawField, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RawField::Columns)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawField, A::Error> {
                RawFieldTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawField::Table)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// A kind's section: record field name -> its setting.
#[derive(Debug, Deserialize, Default)]
#[serde(transparent)]
pub struct RawFields(pub BTreeMap<Spanned<String>, Spanned<RawField>>);

/// What a record field holds, to check what fills it.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// The name the config uses.
    pub key: &'static str,
    pub expect: Expect,
    /// A record is made from a row only when each of these has a value.
    pub required: bool,
    /// The only values the field takes (dropgate's codes), when it is coded.
    pub vocabulary: Option<&'static [&'static str]>,
}

impl FieldSpec {
    pub const fn text(key: &'static str) -> FieldSpec {
        FieldSpec {
            key,
            expect: Expect::Text,
            required: false,
            vocabulary: None,
        }
    }

    pub const fn of(key: &'static str, expect: Expect) -> FieldSpec {
        FieldSpec {
            key,
            expect,
            required: false,
            vocabulary: None,
        }
    }

    pub const fn coded(key: &'static str, vocabulary: &'static [&'static str]) -> FieldSpec {
        FieldSpec {
            key,
            expect: Expect::Text,
            required: false,
            vocabulary: Some(vocabulary),
        }
    }

    pub const fn required(self) -> FieldSpec {
        FieldSpec {
            required: true,
            ..self
        }
    }
}

/// A field's setting, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Column {
        index: usize,
        /// Looked up for every value: hashed quickly, as the keys are the
        /// config's, never a partner's.
        translate: Option<HashMap<String, String, foldhash::fast::RandomState>>,
        default: Option<CompactString>,
        /// A coded field's codes: any other value becomes the default.
        vocabulary: Option<&'static [&'static str]>,
    },
    Fixed(CompactString),
    Concat {
        columns: Vec<usize>,
        separator: String,
        default: Option<CompactString>,
    },
}

impl Field {
    /// The field's value for `row`, as the ledger stores it; `None` when empty.
    pub fn value(&self, row: &Row) -> Option<CompactString> {
        match self {
            Field::Fixed(value) => Some(value.clone()),
            Field::Column {
                index,
                translate,
                default,
                vocabulary,
            } => {
                let text = stored_text(&row.values[*index]);
                // A code the table lacks is the default, or else kept as it is
                // (a coded field's table was checked to lack none).
                let text = match (text, translate) {
                    (Some(text), Some(table)) => match table.get(text.as_str()) {
                        Some(translated) => Some(translated.as_str().into()),
                        None if default.is_some() => default.clone(),
                        None => Some(text),
                    },
                    (text, _) => text,
                };
                match (text, vocabulary) {
                    (Some(text), Some(codes)) if !codes.contains(&text.as_str()) => default.clone(),
                    (None, _) => default.clone(),
                    (text, _) => text,
                }
            }
            Field::Concat {
                columns,
                separator,
                default,
            } => {
                let parts: Vec<CompactString> = columns
                    .iter()
                    .filter_map(|&c| stored_text(&row.values[c]))
                    .collect();
                if parts.is_empty() {
                    default.clone()
                } else {
                    Some(parts.join(separator).into())
                }
            }
        }
    }
}

impl Field {
    /// As [`Field::value`], but a column's text taken as it is is moved out
    /// of the row rather than copied: for a field whose column fills no other.
    pub fn take(&self, row: &mut Row) -> Option<CompactString> {
        if let Field::Column {
            index,
            translate: None,
            default: None,
            vocabulary: None,
        } = self
            && let Value::Text(_) = &row.values[*index]
            && let Value::Text(text) = std::mem::replace(&mut row.values[*index], Value::Empty)
        {
            return Some(text);
        }
        self.value(row)
    }
}

/// A value as the ledger keeps it: dates `YYYY-MM-DD`, times RFC 3339 in
/// UTC. Short text (most values) is held without an allocation.
pub fn stored_text(value: &Value) -> Option<CompactString> {
    match value {
        Value::Empty => None,
        Value::Text(s) => Some(s.clone()),
        Value::Integer(n) => Some(n.to_compact_string()),
        // As `Display` writes it (`1`, never `1.0` or an exponent), as it
        // always has been stored: keys and translations match on it.
        Value::Decimal(n) => Some(compact_str::format_compact!("{n}")),
        Value::Date(d) => Some(iso_date(*d)),
        Value::DateTime(t) => Some(
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
                .into(),
        ),
        Value::Bool(b) => Some(b.to_compact_string()),
        Value::Nhs(n) => Some(n.digits().into()),
    }
}

/// `YYYY-MM-DD`, without interpreting a format string (or formatting at
/// all) for every value.
pub fn iso_date(date: chrono::NaiveDate) -> CompactString {
    use chrono::Datelike;
    let Ok(year @ 0..=9999) = u32::try_from(date.year()) else {
        return date.format("%Y-%m-%d").to_compact_string();
    };
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let (month, day) = (date.month(), date.day());
    let text = [
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
    ];
    CompactString::from_utf8(text).expect("ASCII digits")
}

/// Checks one field's setting for `kind`; `None` when it is unusable
/// (reported through `checker`).
pub fn check(
    kind: &str,
    spec: &FieldSpec,
    raw: Spanned<RawField>,
    checker: &mut dyn MappingChecker,
) -> Option<Field> {
    let span = raw.span();
    let what = format!("{kind}.{}", spec.key);
    let report = |checker: &mut dyn MappingChecker, message: String| {
        checker.error_at(span.clone(), &message);
        None
    };
    let table = match raw.into_inner() {
        RawField::Column(name) => {
            let index = checker.column(
                kind,
                spec.key,
                &Spanned::new(span.clone(), name),
                spec.expect,
            )?;
            return coded_column(&what, spec, index, None, None, span, checker);
        }
        RawField::Table(table) => table,
        RawField::Columns(_) => {
            return report(
                checker,
                format!("{what} takes a column name or a table, not a list"),
            );
        }
    };
    let text_only = matches!(spec.expect, Expect::Text);
    let sources = [
        table.column.is_some(),
        table.value.is_some(),
        table.concat.is_some(),
    ];
    if sources.iter().filter(|&&given| given).count() != 1 {
        return report(
            checker,
            format!("{what}: give exactly one of `column`, `value` and `concat`"),
        );
    }
    let translating = table.translate.is_some() || table.translate_file.is_some();
    if table.column.is_none() && translating {
        return report(
            checker,
            format!("{what}: `translate` and `translate_file` translate a `column`"),
        );
    }
    if table.separator.is_some() && table.concat.is_none() {
        return report(checker, format!("{what}: `separator` goes with `concat`"));
    }
    if !text_only && (table.default.is_some() || translating || table.concat.is_some()) {
        return report(
            checker,
            format!(
                "{what} takes a {} column as it is: no `value`, `concat`, `translate` or `default`",
                spec.expect.describe()
            ),
        );
    }
    if let Some(default) = &table.default
        && let Some(message) = outside(&what, spec, "default", default)
    {
        return report(checker, message);
    }
    if let Some(value) = table.value {
        if !text_only {
            return report(
                checker,
                format!(
                    "{what} takes a {} column, not a fixed `value`",
                    spec.expect.describe()
                ),
            );
        }
        if let Some(message) = outside(&what, spec, "value", &value) {
            return report(checker, message);
        }
        return Some(Field::Fixed(value.into()));
    }
    if let Some(parts) = table.concat {
        if spec.vocabulary.is_some() {
            return report(
                checker,
                format!("{what} is a code: map one column and `translate` it, not `concat`"),
            );
        }
        if parts.is_empty() {
            return report(checker, format!("{what}: `concat` names no column"));
        }
        let mut columns = Vec::new();
        for name in parts {
            columns.push(checker.column(
                kind,
                spec.key,
                &Spanned::new(span.clone(), name),
                Expect::Text,
            )?);
        }
        return Some(Field::Concat {
            columns,
            separator: table.separator.unwrap_or_else(|| " ".to_string()),
            default: table.default.map(Into::into),
        });
    }
    let name = table
        .column
        .expect("exactly one source, and not the others");
    let index = checker.column(
        kind,
        spec.key,
        &Spanned::new(span.clone(), name),
        spec.expect,
    )?;
    let translate = match (table.translate, table.translate_file) {
        (Some(_), Some(_)) => {
            return report(
                checker,
                format!("{what}: give `translate` or `translate_file`, not both"),
            );
        }
        (Some(pairs), None) => Some(pairs),
        (None, Some(file)) => Some(
            checker
                .translation_file(&Spanned::new(span.clone(), file))?
                .into_iter()
                .collect(),
        ),
        (None, None) => None,
    };
    if let Some(pairs) = &translate {
        for target in pairs.values() {
            if let Some(message) = outside(&what, spec, "translation", target) {
                return report(checker, message);
            }
        }
    }
    coded_column(&what, spec, index, translate, table.default, span, checker)
}

/// `Some(message)` when `value` is not one of a coded field's codes.
fn outside(what: &str, spec: &FieldSpec, setting: &str, value: &str) -> Option<String> {
    let vocabulary = spec.vocabulary?;
    (!vocabulary.contains(&value)).then(|| {
        format!(
            "{what}: {setting} `{value}` is not one of {}",
            list(vocabulary.iter())
        )
    })
}

fn list<'a>(items: impl Iterator<Item = &'a &'a str>) -> String {
    items
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column field, checked to give only the field's codes when it is coded:
/// a code column whose every code is one (or is translated to one, or has
/// a default); any other column only with a default.
fn coded_column(
    what: &str,
    spec: &FieldSpec,
    index: usize,
    translate: Option<BTreeMap<String, String>>,
    default: Option<String>,
    span: std::ops::Range<usize>,
    checker: &mut dyn MappingChecker,
) -> Option<Field> {
    if let Some(vocabulary) = spec.vocabulary
        && default.is_none()
    {
        let Some(codes) = checker.codes(index) else {
            checker.error_at(
                span,
                &format!(
                    "{what} takes one of {}: map a `code` column, `translate` it, or give a `default`",
                    list(vocabulary.iter())
                ),
            );
            return None;
        };
        let becomes_a_code = |code: &String| {
            let becomes = match &translate {
                Some(table) => table.get(code),
                None => Some(code),
            };
            becomes.is_some_and(|c| vocabulary.contains(&c.as_str()))
        };
        if let Some(code) = codes.iter().find(|code| !becomes_a_code(code)) {
            let how = if translate.is_some() {
                "the translation does not give it one"
            } else {
                "translate the column's codes"
            };
            checker.error_at(
                span,
                &format!(
                    "{what} takes one of {}, but the column's code `{code}` is none of them: {how}, or give a `default`",
                    list(vocabulary.iter())
                ),
            );
            return None;
        }
    }
    Some(Field::Column {
        index,
        translate: translate.map(|t| t.into_iter().collect()),
        default: default.map(Into::into),
        vocabulary: spec.vocabulary,
    })
}

/// The column a setting names, which any declared column may be.
pub fn one_column(
    kind: &str,
    setting: &str,
    raw: Spanned<RawField>,
    checker: &mut dyn MappingChecker,
) -> Option<usize> {
    let span = raw.span();
    match raw.into_inner() {
        RawField::Column(name) => checker.declared(kind, setting, &Spanned::new(span, name)),
        _ => {
            checker.error_at(span, &format!("map.{kind}: `{setting}` names one column"));
            None
        }
    }
}
