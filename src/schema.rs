//! A feed's schema as the config declares it: the layout of its files, their
//! encoding, and the columns with their types and checks. Formats read by the
//! layout; validation checks by the columns.

/// Largest record read by default: a 1 MiB line is not a care record.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest field by default (a long free-text note fits).
pub const DEFAULT_MAX_FIELD_BYTES: usize = 256 << 10;
/// How bytes in a file become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    Windows1252,
    /// ISO-8859-1: each byte the character of the same number (so bytes
    /// 0x80–0x9F are control characters, where Windows-1252 has `€`, `“`, …).
    Latin1,
    /// UTF-8 when the whole file is valid UTF-8, Windows-1252 otherwise.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraColumns {
    Error,
    Ignore,
}

/// Code lists this short are searched in order, not by their index.
const SHORT_CODE_LIST: usize = 8;

/// A column's allowed codes, in the order declared, with an index: a list
/// read from a file may hold many thousands, and every value is looked up.
#[derive(Debug, Clone)]
pub struct CodeList {
    codes: Vec<String>,
    ignore_case: bool,
    /// Each code (in ASCII lower case when case is ignored) and its place;
    /// the first of codes that differ only in case. Hashed quickly rather
    /// than against flooding: the keys are the config's, never a partner's.
    index: std::collections::HashMap<String, usize, foldhash::fast::RandomState>,
}

impl CodeList {
    pub fn new(codes: Vec<String>, ignore_case: bool) -> CodeList {
        let mut index = std::collections::HashMap::with_capacity_and_hasher(
            codes.len(),
            foldhash::fast::RandomState::default(),
        );
        for (place, code) in codes.iter().enumerate() {
            let key = if ignore_case {
                code.to_ascii_lowercase()
            } else {
                code.clone()
            };
            index.entry(key).or_insert(place);
        }
        CodeList {
            codes,
            ignore_case,
            index,
        }
    }

    /// The code `text` is, as declared.
    pub fn find(&self, text: &str) -> Option<&str> {
        // A short list is read faster in order than through its index.
        if self.codes.len() <= SHORT_CODE_LIST {
            return self
                .codes
                .iter()
                .find(|code| {
                    // Compared in place: a call to `memcmp` costs more than
                    // a short code's bytes.
                    code.len() == text.len()
                        && code.bytes().zip(text.bytes()).all(|(a, b)| {
                            a == b || (self.ignore_case && a.eq_ignore_ascii_case(&b))
                        })
                })
                .map(String::as_str);
        }
        let place = if self.ignore_case {
            // Inline, not allocated, for a code of up to 24 bytes.
            let mut lower = compact_str::CompactString::from(text);
            lower.make_ascii_lowercase();
            self.index.get(lower.as_str())
        } else {
            self.index.get(text)
        };
        place.map(|&p| self.codes[p].as_str())
    }

    pub fn codes(&self) -> &[String] {
        &self.codes
    }

    pub fn ignores_case(&self) -> bool {
        self.ignore_case
    }
}

/// How header names are matched to declared column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    Exact,
    /// Case-insensitive, and blind to spaces: `Event Start Date` matches
    /// `event start date` and `EventStartDate`.
    Loose,
}

impl NameMatch {
    /// The form in which names are compared.
    pub fn key(self, name: &str) -> std::borrow::Cow<'_, str> {
        match self {
            NameMatch::Exact => name.into(),
            NameMatch::Loose => name
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect::<String>()
                .into(),
        }
    }
}

/// Declared columns the header lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingColumns {
    Error,
    /// An optional column may be absent; its values are empty. A required
    /// column is still an error.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateTimeFormat {
    /// ISO 8601 / RFC 3339 with a `Z` or numeric offset.
    Iso8601,
    /// A chrono format; must include an offset (`%z`) unless read as UTC.
    Chrono(String),
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    String {
        max_length: Option<usize>,
        pattern: Option<regex::Regex>,
    },
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Decimal {
        min: Option<f64>,
        max: Option<f64>,
        /// Most digits allowed after the decimal point.
        scale: Option<u32>,
    },
    Date {
        format: String,
    },
    /// A time of day; without a format `HH:MM:SS` or `HH:MM`.
    Time {
        format: Option<String>,
    },
    DateTime {
        format: DateTimeFormat,
    },
    Code {
        values: CodeList,
    },
    Boolean {
        true_values: Vec<String>,
        false_values: Vec<String>,
    },
    NhsNumber,
    /// A UK postcode, stored as `SW1A 1AA`.
    Postcode,
    /// An ODS organisation code, stored in upper case.
    OdsCode,
    Email,
    /// A telephone number, stored as national digits (`01234567890`) or `+` and digits.
    Phone,
}

impl ColumnKind {
    /// Kinds whose values always identify a person, whatever the column says.
    pub fn always_identifies(&self) -> bool {
        matches!(
            self,
            ColumnKind::NhsNumber | ColumnKind::Postcode | ColumnKind::Email | ColumnKind::Phone
        )
    }

    pub fn describe(&self) -> &'static str {
        match self {
            ColumnKind::String { .. } => "string",
            ColumnKind::Integer { .. } => "integer",
            ColumnKind::Decimal { .. } => "decimal",
            ColumnKind::Date { .. } => "date",
            ColumnKind::DateTime { .. } => "datetime",
            ColumnKind::Code { .. } => "code",
            ColumnKind::Boolean { .. } => "boolean",
            ColumnKind::NhsNumber => "nhs_number",
            ColumnKind::Time { .. } => "time",
            ColumnKind::Postcode => "postcode",
            ColumnKind::OdsCode => "ods_code",
            ColumnKind::Email => "email",
            ColumnKind::Phone => "phone",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub required: bool,
    /// Values identify a person and are never copied into a problem report.
    pub identifier: bool,
    pub kind: ColumnKind,
}

impl ColumnSpec {
    /// Codes of this column compare without regard to case.
    pub fn ignores_case(&self) -> bool {
        matches!(&self.kind, ColumnKind::Code { values } if values.ignores_case())
    }
}

#[cfg(test)]
impl ColumnSpec {
    /// An optional, non-identifying column, for tests.
    pub(crate) fn optional(name: &str, kind: ColumnKind) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            required: false,
            identifier: false,
            kind,
        }
    }
}

impl Schema {
    /// How many of `columns` a record's own fields fill: all but those a
    /// header record's fields fill for the whole file, and `@received`.
    pub fn data_columns(&self) -> usize {
        let framed = match &self.layout {
            Layout::Csv(CsvLayout {
                header_record: Some(header),
                ..
            }) => header.first_column,
            Layout::Fixed(FixedLayout {
                header_record: Some(header),
                ..
            }) => header.record.first_column,
            _ => self.columns.len(),
        };
        framed.min(self.received_column.unwrap_or(usize::MAX))
    }

    /// Comma-separated with a header, UTF-8, the default caps, no rules:
    /// the shape a header record's checked fields are read with, and tests'.
    pub fn plain(columns: Vec<ColumnSpec>) -> Schema {
        Schema {
            layout: Layout::Csv(CsvLayout {
                delimiter: b',',
                quote: b'"',
                positions: None,
                header_record: None,
                trailer_record: None,
            }),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            encoding: Encoding::Utf8,
            extra_columns: ExtraColumns::Error,
            missing_columns: MissingColumns::Error,
            names: NameMatch::Exact,
            columns,
            rules: Vec::new(),
            unique: Vec::new(),
            received_column: None,
        }
    }
}

/// The declared shape of a feed's files: how records are laid out, how
/// bytes become text, and the columns with their checks.
#[derive(Debug, Clone)]
pub struct Schema {
    pub layout: Layout,
    pub encoding: Encoding,
    /// Longer records are problems, and never held in memory whole.
    pub max_record_bytes: usize,
    pub max_field_bytes: usize,
    pub extra_columns: ExtraColumns,
    pub missing_columns: MissingColumns,
    pub names: NameMatch,
    pub columns: Vec<ColumnSpec>,
    /// Checks across the columns of one record, after each column's own.
    pub rules: Vec<Rule>,
    /// Sets of columns whose values together must not repeat within a file.
    pub unique: Vec<Vec<usize>>,
    /// The column `@received`, the day the file was received (in the
    /// daemon's time zone), when a rule reckons with it: the last column,
    /// the same in every record of a file.
    pub received_column: Option<usize>,
}

/// The name rules give the day a file was received.
pub const RECEIVED_COLUMN: &str = "@received";

/// A check across columns, by column index.
#[derive(Debug, Clone)]
pub enum Rule {
    /// `column` must have a value (`required`), or must be empty, when
    /// `condition` holds.
    Presence {
        column: usize,
        required: bool,
        condition: Condition,
    },
    /// `left op right`, checked when both have values.
    Compare {
        left: usize,
        op: Comparison,
        right: usize,
    },
    /// The age in whole years from the date in `born` to the date in `on`
    /// lies within `min..=max`; checked when both have values.
    Age {
        born: usize,
        on: usize,
        min: Option<u32>,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub column: usize,
    pub test: Test,
}

#[derive(Debug, Clone)]
pub enum Test {
    OneOf(Vec<String>),
    NoneOf(Vec<String>),
    Empty,
    NotEmpty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Equal,
    NotEqual,
    GreaterOrEqual,
    Greater,
}

impl Comparison {
    /// The operators, longest first so `>=` is not read as `>`.
    pub const ALL: [(&'static str, Comparison); 6] = [
        (">=", Comparison::GreaterOrEqual),
        ("<=", Comparison::LessOrEqual),
        ("!=", Comparison::NotEqual),
        (">", Comparison::Greater),
        ("<", Comparison::Less),
        ("=", Comparison::Equal),
    ];

    pub fn symbol(self) -> &'static str {
        Comparison::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(s, _)| *s)
            .expect("every comparison has a symbol")
    }

    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Comparison::Less => ordering == Less,
            Comparison::LessOrEqual => ordering != Greater,
            Comparison::Equal => ordering == Equal,
            Comparison::NotEqual => ordering != Equal,
            Comparison::GreaterOrEqual => ordering != Less,
            Comparison::Greater => ordering == Greater,
        }
    }
}

/// How a file's bytes are split into records and fields: one variant a
/// format, each read by its module under `formats/`.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Delimited text with a header record naming the columns.
    Csv(CsvLayout),
    /// One record a line, each column at fixed characters.
    Fixed(FixedLayout),
    /// An XML document: each record an element at one path, each column a
    /// child element's text or an attribute within it.
    Xml(XmlLayout),
}

/// An element or attribute name: its namespace (`None` for none) and local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlName {
    pub namespace: Option<String>,
    pub local: String,
}

/// Where a column's value is, from the record element: the elements down to
/// it (none for the record element itself), then its text or an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlPath {
    pub elements: Vec<XmlName>,
    pub attribute: Option<XmlName>,
}

#[derive(Debug, Clone)]
pub struct XmlLayout {
    /// The record element's path from the root element (the root first).
    pub record: Vec<XmlName>,
    /// A repeating group's path from the record element (empty: none): each
    /// of its elements is a record of its own, with the record element's
    /// other columns repeated in each.
    pub repeat: Vec<XmlName>,
    /// For each column, where its value is: from the repeating group's
    /// element when `in_repeat`, else from the record element.
    pub paths: Vec<XmlPath>,
    pub in_repeat: Vec<bool>,
    /// Deepest element nesting a file may have.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) one element may have.
    pub max_attributes: usize,
}

#[derive(Debug, Clone)]
pub struct FixedLayout {
    /// For each column: its first character (from 0) and its length.
    pub spans: Vec<(usize, usize)>,
    /// Spaces around a value are padding, not data.
    pub trim: bool,
    /// A first line that describes the file; its fields' positions index `spans`.
    pub header_record: Option<Framed<HeaderRecord>>,
    /// A last line that counts the data lines: its count is field 0 and its
    /// total field 1 of `spans`.
    pub trailer_record: Option<Framed<TrailerRecord>>,
}

/// A fixed-width header or trailer record: what it is, and where its fields
/// sit on its line.
#[derive(Debug, Clone)]
pub struct Framed<T> {
    pub record: T,
    /// Each field's first character (from 0) and length.
    pub spans: Vec<(usize, usize)>,
}

impl FixedLayout {
    /// The characters a record must have to hold every column.
    pub fn width(&self) -> usize {
        self.spans.iter().map(|(s, l)| s + l).max().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct CsvLayout {
    pub delimiter: u8,
    pub quote: u8,
    /// Files without a header record: for each field, the column it fills,
    /// from the columns' positions. `None` when the first record names them.
    pub positions: Option<Vec<Option<usize>>>,
    /// A record before everything else that describes the file (`HDR~…`).
    pub header_record: Option<HeaderRecord>,
    /// A last record that counts the data rows (`TRL~…`).
    pub trailer_record: Option<TrailerRecord>,
}

#[derive(Debug, Clone)]
pub struct HeaderRecord {
    /// What its first field holds; without one, the first record is it.
    pub tag: Option<String>,
    /// Its fields that are checked (an extract date, a sender's code): each
    /// field's position (from 0) and its check.
    pub fields: Vec<(usize, ColumnSpec)>,
    /// Where these fields sit among the schema's columns, in order: after
    /// the data columns, each record carrying the file's values, so rules,
    /// uniqueness and mapping name them as any column.
    pub first_column: usize,
}

#[derive(Debug, Clone)]
pub struct TrailerRecord {
    /// What its first field holds; `None`: the file's last record is it.
    pub tag: Option<String>,
    /// The field (0-based) holding the number of data records.
    pub count_field: Option<usize>,
    /// The field (0-based) holding the sum of a numeric column over the
    /// data records, and that column's index.
    pub total: Option<(usize, usize)>,
}
