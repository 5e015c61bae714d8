//! `dropgate schema infer`: a feed section drafted from a sample CSV or XML
//! file.
//! Each column's type is the narrowest that every value in the sample fits;
//! code lists are offered, when asked for, only for short values that repeat
//! often (no value is printed otherwise), and every
//! column is drafted as an identifier (its values never quoted in problems)
//! until an admin says otherwise. Every guess is marked `REVIEW`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};

use super::csv_reader::{Dialect, Next, Record, RecordReader};
use crate::domain::{contact, nhs_number::NhsNumber};

/// What to draft, and how much of the sample to read.
pub struct InferOptions<'a> {
    pub feed: &'a str,
    pub partner: &'a str,
    /// Data rows read at most.
    pub max_rows: u64,
    /// Print the values of columns that look like code lists. Off by default:
    /// a column of surnames in a sample of a few residents looks the same.
    pub code_lists: bool,
}

/// A drafted feed section.
#[derive(Debug)]
pub struct Draft {
    pub toml: String,
    pub rows: u64,
    pub columns: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("reading the sample: {0}")]
    Io(#[from] io::Error),
    #[error("the sample has no header line")]
    Empty,
    #[error("the sample is age-encrypted; decrypt it first (age -d -i KEY FILE)")]
    Encrypted,
    #[error("line {0}: a record longer than 1 MiB")]
    TooLarge(u64),
    #[error("line {0}: a quoted field is never closed")]
    UnclosedQuote(u64),
    #[error("the sample has more than {MAX_COLUMNS} columns (or element paths)")]
    TooManyColumns,
    #[error("the sample has a DTD (`<!DOCTYPE`), which dropgate refuses in every XML file")]
    Dtd,
    #[error("the sample nests elements more than {MAX_XML_DEPTH} deep")]
    TooDeep,
    #[error("the sample is not well-formed XML near byte {0}: {1}")]
    Xml(u64, String),
}

/// Columns drafted at most: each keeps its own statistics.
const MAX_COLUMNS: usize = 4096;

/// Distinct values kept per column to offer a code list.
const MAX_CODES: usize = 12;
const MAX_CODE_CHARS: usize = 20;

/// The value shapes a column may still be: each is dropped at the first value that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    NhsNumber,
    DateCompact,
    DateIso,
    DateSlashed,
    DateTimeIso,
    DateTimeSpaced,
    Time,
    Integer,
    Decimal,
    YesNo,
    TrueFalse,
    Postcode,
    Email,
}

impl Shape {
    /// In order of preference when several fit every value.
    const ALL: [Shape; 13] = [
        Shape::NhsNumber,
        Shape::DateCompact,
        Shape::DateIso,
        Shape::DateSlashed,
        Shape::DateTimeIso,
        Shape::DateTimeSpaced,
        Shape::Time,
        Shape::Integer,
        Shape::Decimal,
        Shape::YesNo,
        Shape::TrueFalse,
        Shape::Postcode,
        Shape::Email,
    ];

    fn fits(self, v: &str) -> bool {
        let date = |format| chrono::NaiveDate::parse_from_str(v, format).is_ok();
        let datetime = |format| chrono::NaiveDateTime::parse_from_str(v, format).is_ok();
        match self {
            Shape::NhsNumber => NhsNumber::parse(v).is_ok(),
            Shape::DateCompact => v.len() == 8 && date("%Y%m%d"),
            Shape::DateIso => date("%Y-%m-%d"),
            Shape::DateSlashed => date("%d/%m/%Y"),
            Shape::DateTimeIso => chrono::DateTime::parse_from_rfc3339(v).is_ok(),
            Shape::DateTimeSpaced => datetime("%Y-%m-%d %H:%M:%S"),
            Shape::Time => {
                chrono::NaiveTime::parse_from_str(v, "%H:%M:%S").is_ok()
                    || chrono::NaiveTime::parse_from_str(v, "%H:%M").is_ok()
            }
            Shape::Integer => v.parse::<i64>().is_ok(),
            Shape::Decimal => v.parse::<f64>().is_ok_and(f64::is_finite),
            Shape::YesNo => matches!(v, "Y" | "N"),
            Shape::TrueFalse => matches!(v, "true" | "false"),
            Shape::Postcode => contact::postcode(v).is_some(),
            Shape::Email => contact::email(v).is_some(),
        }
    }

    /// The column's `type` and its options, as config lines.
    fn lines(self) -> Vec<String> {
        let typed = |t: &str| format!("type = \"{t}\"");
        match self {
            Shape::NhsNumber => vec![typed("nhs_number")],
            Shape::DateCompact => vec![typed("date"), "format = \"%Y%m%d\"".into()],
            Shape::DateIso => vec![typed("date"), "format = \"%Y-%m-%d\"".into()],
            Shape::DateSlashed => vec![typed("date"), "format = \"%d/%m/%Y\"".into()],
            Shape::DateTimeIso => vec![typed("datetime"), "format = \"iso8601\"".into()],
            Shape::DateTimeSpaced => {
                vec![typed("datetime"), "format = \"%Y-%m-%d %H:%M:%S\"".into()]
            }
            Shape::Time => vec![typed("time")],
            Shape::Integer => vec![typed("integer")],
            Shape::Decimal => vec![typed("decimal")],
            Shape::YesNo => vec![
                typed("boolean"),
                "true_values = [\"Y\"]".into(),
                "false_values = [\"N\"]".into(),
            ],
            Shape::TrueFalse => vec![
                typed("boolean"),
                "true_values = [\"true\"]".into(),
                "false_values = [\"false\"]".into(),
            ],
            Shape::Postcode => vec![typed("postcode")],
            Shape::Email => vec![typed("email")],
        }
    }
}

/// What the sample showed of one column.
struct Column {
    name: String,
    filled: u64,
    empty: u64,
    shapes: Vec<Shape>,
    max_chars: usize,
    /// `None` once more than [`MAX_CODES`] distinct values, or a long one, were seen.
    codes: Option<BTreeMap<String, u64>>,
    /// An XML column met more than once within one record.
    repeats: bool,
}

impl Column {
    fn new(name: String) -> Column {
        Column {
            name,
            filled: 0,
            empty: 0,
            shapes: Shape::ALL.to_vec(),
            max_chars: 0,
            codes: Some(BTreeMap::new()),
            repeats: false,
        }
    }

    fn see(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            self.empty += 1;
            return;
        }
        self.filled += 1;
        self.max_chars = self.max_chars.max(value.chars().count());
        self.shapes.retain(|s| s.fits(value));
        if let Some(codes) = &mut self.codes {
            *codes.entry(value.to_string()).or_default() += 1;
            if codes.len() > MAX_CODES || value.chars().count() > MAX_CODE_CHARS {
                self.codes = None;
            }
        }
    }

    fn draft(&self, feed: &str, code_lists: bool, out: &mut String) {
        let _ = writeln!(out, "[[feeds.{feed}.columns]]");
        let _ = writeln!(out, "name = {}", toml_string(&self.name));
        let shape = self.shapes.first().copied().filter(|_| self.filled > 0);
        // A code list only for short values that each come back several times.
        let codes = self
            .codes
            .as_ref()
            .filter(|codes| shape.is_none() && !codes.is_empty())
            .filter(|codes| self.filled >= 5 * codes.len() as u64);
        match (shape, codes) {
            (Some(shape), _) => {
                for line in shape.lines() {
                    let _ = writeln!(out, "{line}");
                }
                if matches!(shape, Shape::Integer | Shape::Decimal) {
                    let _ = writeln!(out, "# REVIEW: add `min` and `max`");
                }
            }
            (None, Some(codes)) if !code_lists => {
                let _ = writeln!(out, "type = \"string\"");
                let _ = writeln!(
                    out,
                    "# REVIEW: {} distinct short values: a `code` column? (values not shown; `--code-lists` shows them)",
                    codes.len()
                );
            }
            (None, Some(codes)) => {
                let values: Vec<String> = codes.keys().map(|c| toml_string(c)).collect();
                let _ = writeln!(out, "type = \"code\"");
                let _ = writeln!(
                    out,
                    "values = [{}]    # REVIEW: the {} values in the sample; the full list may be longer",
                    values.join(", "),
                    codes.len()
                );
            }
            (None, None) => {
                let _ = writeln!(out, "type = \"string\"");
                let room = self.max_chars.max(1).next_power_of_two().max(16);
                let _ = writeln!(
                    out,
                    "max_length = {room}    # REVIEW: the longest value in the sample had {} characters",
                    self.max_chars
                );
            }
        }
        // Values of an identifier column are never quoted in problems: every
        // drafted column is one until an admin knows better (nhs_number,
        // postcode and email always are).
        if !matches!(
            shape,
            Some(Shape::NhsNumber | Shape::Postcode | Shape::Email)
        ) {
            let _ = writeln!(
                out,
                "identifier = true    # REVIEW: false only if it never holds personal details (names, dates of birth, ids)"
            );
        }
        if self.empty == 0 && self.filled > 0 {
            let _ = writeln!(out, "required = true    # REVIEW: every row had a value");
        }
        out.push('\n');
    }
}

/// The start of a drafted feed: its section, whatever the format.
fn draft_head(options: &InferOptions<'_>, read: u64, what: &str, format: &str) -> String {
    let feed = options.feed;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Drafted by `dropgate schema infer` from {read} {what}; every line marked REVIEW is a guess."
    );
    let _ = writeln!(out, "[feeds.{feed}]");
    let _ = writeln!(out, "partner = {}", toml_string(options.partner));
    let _ = writeln!(
        out,
        "match = [\"{feed}_*.{format}.age\", \"{feed}_*.{format}\"]    # REVIEW: the names the partner's files have"
    );
    let _ = writeln!(
        out,
        "encryption = \"optional\"    # REVIEW: `age` once the partner encrypts"
    );
    let _ = writeln!(out, "format = \"{format}\"");
    let _ = writeln!(out, "on_error = \"reject_file\"");
    out.push('\n');
    out
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The delimiter the header line uses most: comma, tab, semicolon, pipe or tilde.
fn sniff_delimiter(first_line: &[u8]) -> u8 {
    [b',', b'\t', b';', b'|', b'~']
        .into_iter()
        .max_by_key(|d| first_line.iter().filter(|b| *b == d).count())
        .unwrap_or(b',')
}

/// Drafts a `[feeds.NAME]` section, with its columns, from a sample.
pub fn infer_csv(mut input: impl BufRead, options: &InferOptions<'_>) -> Result<Draft, InferError> {
    let head = input.fill_buf()?;
    if crate::decrypt::looks_like_age(head) {
        return Err(InferError::Encrypted);
    }
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let delimiter = sniff_delimiter(first_line);
    let mut reader = RecordReader::new(
        input,
        Dialect {
            delimiter,
            quote: b'"',
            max_record_bytes: 1 << 20,
        },
    );
    let mut record = Record::default();
    let mut utf8 = true;
    let mut text = |bytes: &[u8]| -> String {
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => {
                utf8 = false;
                encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned()
            }
        }
    };
    let mut columns: Vec<Column> = match reader.next(&mut record)? {
        Next::Record if record.iter().len() > MAX_COLUMNS => {
            return Err(InferError::TooManyColumns);
        }
        Next::Record => record
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let name = text(cell);
                let name = if i == 0 {
                    name.trim_start_matches('\u{feff}').to_string()
                } else {
                    name
                };
                Column::new(name.trim().to_string())
            })
            .collect(),
        Next::End => return Err(InferError::Empty),
        Next::TooLarge { line } => return Err(InferError::TooLarge(line)),
        Next::UnclosedQuote { line } => return Err(InferError::UnclosedQuote(line)),
    };
    let mut rows = 0;
    while rows < options.max_rows {
        match reader.next(&mut record)? {
            Next::Record => {}
            Next::End => break,
            Next::TooLarge { line } => return Err(InferError::TooLarge(line)),
            Next::UnclosedQuote { line } => return Err(InferError::UnclosedQuote(line)),
        }
        rows += 1;
        for (column, cell) in columns.iter_mut().zip(record.iter()) {
            column.see(&text(cell));
        }
    }
    let feed = options.feed;
    let mut out = draft_head(options, rows, "rows", "csv");
    let _ = writeln!(out, "[feeds.{feed}.csv]");
    let shown = match delimiter {
        b'\t' => "\\t".to_string(),
        d => (d as char).to_string(),
    };
    let _ = writeln!(out, "delimiter = \"{shown}\"");
    let encoding = if utf8 { "utf-8" } else { "windows-1252" };
    let _ = writeln!(out, "encoding = \"{encoding}\"");
    out.push('\n');
    for column in &columns {
        column.draft(feed, options.code_lists, &mut out);
    }
    Ok(Draft {
        toml: out,
        rows,
        columns: columns.len(),
    })
}

/// An XML sample is read this far at most, twice: once for its shape, once
/// for its values.
const MAX_XML_SAMPLE: u64 = 16 << 20;
/// Nesting followed at most.
const MAX_XML_DEPTH: usize = 64;
/// The namespace of `xml:lang` and its like, bound in every document.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// An element's name: its namespace, if any, and its local name.
type XmlStep = (Option<String>, String);

/// Drafts an XML feed from a sample: the repeating record element (the
/// element with children or attributes that occurs most, the shallowest
/// of equals), and as columns the text of the elements within it and their
/// attributes, with the namespaces the sample declares as the feed's
/// prefixes. A DTD is refused, as the daemon refuses it.
pub fn infer_xml(input: impl io::Read, options: &InferOptions<'_>) -> Result<Draft, InferError> {
    use std::io::Read as _;
    let mut sample = Vec::new();
    input.take(MAX_XML_SAMPLE).read_to_end(&mut sample)?;
    if crate::decrypt::looks_like_age(&sample) {
        return Err(InferError::Encrypted);
    }
    let shape = xml_shape(&sample)?;
    let Some(record) = shape.record() else {
        return Err(InferError::Empty);
    };
    let (columns, paths, rows) = xml_values(&sample, &record, options.max_rows)?;
    // Every namespace a path names, of an element or of an attribute.
    let named = record.iter().chain(
        paths
            .iter()
            .flat_map(|(steps, attribute, _)| steps.iter().chain(attribute)),
    );
    let prefixes = shape.prefixes(named);
    let name = |step: &XmlStep| match &step.0 {
        Some(ns) => format!("{}:{}", prefixes[ns], step.1),
        None => step.1.clone(),
    };
    let feed = options.feed;
    let mut out = draft_head(options, rows, "records", "xml");
    let _ = writeln!(out, "[feeds.{feed}.xml]");
    let path: Vec<String> = record.iter().map(name).collect();
    let _ = writeln!(
        out,
        "record = {}    # REVIEW: the element each record is",
        toml_string(&format!("/{}", path.join("/")))
    );
    if !prefixes.is_empty() {
        let declared: Vec<String> = prefixes
            .iter()
            .map(|(uri, prefix)| format!("{prefix} = {}", toml_string(uri)))
            .collect();
        let _ = writeln!(out, "namespaces = {{ {} }}", declared.join(", "));
    }
    out.push('\n');
    for (column, (steps, attribute, repeats)) in columns.iter().zip(&paths) {
        let mut path: Vec<String> = steps.iter().map(name).collect();
        if let Some(attribute) = attribute {
            path.push(format!("@{}", name(attribute)));
        }
        let mut drafted = String::new();
        column.draft(feed, options.code_lists, &mut drafted);
        // The path goes right after the name.
        let (head, rest) = drafted.split_once('\n').expect("a header line");
        let (name_line, rest) = rest.split_once('\n').expect("a name line");
        let _ = writeln!(out, "{head}\n{name_line}");
        let _ = writeln!(out, "path = {}", toml_string(&path.join("/")));
        if *repeats {
            let _ = writeln!(
                out,
                "# REVIEW: repeats within a record; only its first is read unless the group is the feed's `repeat`"
            );
        }
        out.push_str(rest);
    }
    Ok(Draft {
        toml: out,
        rows,
        columns: columns.len(),
    })
}

/// What the first pass saw of the sample's elements.
#[derive(Default)]
struct XmlShape {
    /// Each element path: how often it occurs, and whether it has child
    /// elements or attributes (a leaf holding only text is a value).
    paths: BTreeMap<Vec<XmlStep>, (u64, bool)>,
    /// Namespace URI -> the first prefix the sample declared for it.
    declared: BTreeMap<String, Option<String>>,
}

impl XmlShape {
    fn record(&self) -> Option<Vec<XmlStep>> {
        let containers = self.paths.iter().filter(|(_, (_, container))| *container);
        // The root occurs once: a record element is below it, when there is one.
        let below_root = containers.clone().filter(|(path, _)| path.len() > 1);
        below_root
            .max_by(|(a, (n, _)), (b, (m, _))| n.cmp(m).then(b.len().cmp(&a.len())))
            .or_else(|| containers.max_by_key(|(_, (n, _))| *n))
            .map(|(path, _)| path.clone())
    }

    /// A prefix for each namespace of `named`: the sample's own, or `ns`,
    /// `ns2`... for a default namespace.
    fn prefixes<'a>(&self, named: impl Iterator<Item = &'a XmlStep>) -> BTreeMap<String, String> {
        let mut used: BTreeMap<String, String> = BTreeMap::new();
        let mut taken = std::collections::BTreeSet::new();
        for step in named {
            let Some(ns) = &step.0 else { continue };
            if used.contains_key(ns) {
                continue;
            }
            // `xml:` is bound without being declared.
            let own = if ns == XML_NAMESPACE {
                Some("xml".to_string())
            } else {
                self.declared.get(ns).cloned().flatten()
            };
            let prefix = match own.filter(|p| !taken.contains(p)) {
                Some(p) => p,
                None => (1..)
                    .map(|i| {
                        if i == 1 {
                            "ns".to_string()
                        } else {
                            format!("ns{i}")
                        }
                    })
                    .find(|p| !taken.contains(p))
                    .expect("a free prefix"),
            };
            taken.insert(prefix.clone());
            used.insert(ns.clone(), prefix);
        }
        used
    }
}

fn xml_reader(sample: &[u8]) -> quick_xml::NsReader<&[u8]> {
    let mut reader = quick_xml::NsReader::from_reader(sample);
    reader.config_mut().expand_empty_elements = true;
    reader
}

fn xml_step(resolved: quick_xml::name::ResolveResult<'_>, local: &[u8]) -> XmlStep {
    let namespace = match resolved {
        quick_xml::name::ResolveResult::Bound(ns) => {
            Some(String::from_utf8_lossy(ns.0).into_owned())
        }
        _ => None,
    };
    (namespace, String::from_utf8_lossy(local).into_owned())
}

/// The first pass: every element path, how often, and the namespaces.
fn xml_shape(sample: &[u8]) -> Result<XmlShape, InferError> {
    use quick_xml::events::Event;
    let mut reader = xml_reader(sample);
    let cut = sample.len() as u64 >= MAX_XML_SAMPLE;
    let mut shape = XmlShape::default();
    let mut stack: Vec<XmlStep> = Vec::new();
    loop {
        let at = reader.buffer_position();
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            // A sample cut at the size read is as good as a whole one.
            Err(_) if cut => break,
            Err(e) => return Err(InferError::Xml(at, e.to_string())),
        };
        match event {
            Event::DocType(_) => return Err(InferError::Dtd),
            Event::Start(start) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(InferError::TooDeep);
                }
                if let Some(parent) = shape.paths.get_mut(&stack) {
                    parent.1 = true;
                }
                stack.push(xml_step(resolved, start.local_name().as_ref()));
                let mut attributes = false;
                for attribute in start.attributes().flatten() {
                    match attribute.key.as_namespace_binding() {
                        Some(binding) => {
                            let uri = String::from_utf8_lossy(&attribute.value).into_owned();
                            let prefix = match binding {
                                quick_xml::name::PrefixDeclaration::Named(p) => {
                                    Some(String::from_utf8_lossy(p).into_owned())
                                }
                                quick_xml::name::PrefixDeclaration::Default => None,
                            };
                            let known = shape.declared.entry(uri).or_insert(None);
                            if known.is_none() {
                                *known = prefix;
                            }
                        }
                        None => attributes = true,
                    }
                }
                if shape.paths.len() >= MAX_COLUMNS && !shape.paths.contains_key(&stack) {
                    return Err(InferError::TooManyColumns);
                }
                let seen = shape.paths.entry(stack.clone()).or_default();
                seen.0 += 1;
                seen.1 |= attributes;
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(shape)
}

/// Where a column's value is within the record: child elements, an
/// attribute of the last, and whether it repeated within one record.
type XmlColumnPath = (Vec<XmlStep>, Option<XmlStep>, bool);

/// The second pass: the values within each record element, column by
/// column in the order they first appear.
fn xml_values(
    sample: &[u8],
    record: &[XmlStep],
    max_rows: u64,
) -> Result<(Vec<Column>, Vec<XmlColumnPath>, u64), InferError> {
    use quick_xml::events::Event;
    let mut reader = xml_reader(sample);
    let cut = sample.len() as u64 >= MAX_XML_SAMPLE;
    let mut columns: Vec<Column> = Vec::new();
    let mut paths: Vec<XmlColumnPath> = Vec::new();
    let mut stack: Vec<XmlStep> = Vec::new();
    // The record being read: each column's value, and the text of the element open.
    let mut values: Option<BTreeMap<usize, String>> = None;
    let mut text = String::new();
    let mut rows = 0;
    let mut column_of = |steps: &[XmlStep],
                         attribute: Option<XmlStep>,
                         rows: u64,
                         columns: &mut Vec<Column>|
     -> Result<usize, InferError> {
        if let Some(i) = paths
            .iter()
            .position(|(s, a, _)| s == steps && *a == attribute)
        {
            return Ok(i);
        }
        if columns.len() >= MAX_COLUMNS {
            return Err(InferError::TooManyColumns);
        }
        let last = attribute
            .as_ref()
            .or(steps.last())
            .map_or("value".to_string(), |s| s.1.clone());
        let mut name = last.clone();
        if columns.iter().any(|c| c.name == name) {
            let joined: Vec<&str> = steps.iter().map(|s| s.1.as_str()).collect();
            name = format!("{}_{last}", joined.join("_"));
        }
        while columns.iter().any(|c| c.name == name) {
            name.push('_');
        }
        let mut column = Column::new(name);
        // Absent from the records read before it appeared.
        column.empty = rows;
        columns.push(column);
        paths.push((steps.to_vec(), attribute, false));
        Ok(columns.len() - 1)
    };
    loop {
        let at = reader.buffer_position();
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            Err(_) if cut => break,
            Err(e) => return Err(InferError::Xml(at, e.to_string())),
        };
        match event {
            Event::Start(start) => {
                stack.push(xml_step(resolved, start.local_name().as_ref()));
                text.clear();
                if stack.as_slice() == record {
                    values = Some(BTreeMap::new());
                }
                let Some(found) = values.as_mut() else {
                    continue;
                };
                let relative = stack[record.len()..].to_vec();
                for attribute in start.attributes().flatten() {
                    if attribute.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ns, local) = reader.resolver().resolve_attribute(attribute.key);
                    let step = xml_step(ns, local.as_ref());
                    let value = attribute
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    let i = column_of(&relative, Some(step), rows, &mut columns)?;
                    if found.insert(i, value).is_some() {
                        paths_repeat(&mut columns, i);
                    }
                }
            }
            Event::Text(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    text.push_str(match &*r {
                        b"lt" => "<",
                        b"gt" => ">",
                        b"amp" => "&",
                        b"apos" => "'",
                        b"quot" => "\"",
                        _ => "",
                    });
                }
            }
            Event::End(_) => {
                if let Some(found) = values.as_mut()
                    && stack.len() > record.len()
                    && !text.trim().is_empty()
                {
                    let relative = stack[record.len()..].to_vec();
                    let i = column_of(&relative, None, rows, &mut columns)?;
                    if found.insert(i, std::mem::take(&mut text)).is_some() {
                        paths_repeat(&mut columns, i);
                    }
                }
                text.clear();
                if stack.as_slice() == record
                    && let Some(found) = values.take()
                {
                    for (i, column) in columns.iter_mut().enumerate() {
                        column.see(found.get(&i).map_or("", String::as_str));
                    }
                    rows += 1;
                    if rows >= max_rows {
                        break;
                    }
                }
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let repeats: Vec<bool> = columns.iter().map(|c| c.repeats).collect();
    for (path, repeated) in paths.iter_mut().zip(repeats) {
        path.2 = repeated;
    }
    Ok((columns, paths, rows))
}

fn paths_repeat(columns: &mut [Column], i: usize) {
    columns[i].repeats = true;
}
