//! XML: each record an element found by its path from the root, each column
//! a child element's text or an attribute within the record, namespaces by
//! the prefixes the feed declares. Streamed with quick-xml. A document type
//! declaration is refused outright, so nothing is ever expanded (no entity
//! bombs, no external entities); an entity reference other than XML's five
//! is a problem; nesting, attributes and any single item's size are capped.
//! Every problem gives the line (and, for the document's structure, the
//! column) where it is.

mod input;
mod tree;

use std::collections::VecDeque;
use std::io::{self, BufReader, Read};

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::RecordSource;
use crate::problem::{Code, Problem};
use crate::schema::{Encoding, Schema, XmlLayout};
use crate::validate::{Decoder, Outcome, ReadError, Value, check_record_in_file};
use input::{Counted, Transcoded};
use tree::{DOCUMENT, NodeId, Tree};

/// Problems of one record's structure kept, at most.
const MAX_RECORD_PROBLEMS: usize = 64;
/// Bytes of the input read ahead at a time.
const READ_AHEAD: usize = 64 << 10;
/// A value's buffer larger than this is freed after its record, not kept
/// for the next one.
const KEPT_VALUE_BYTES: usize = 4 << 10;
/// Value buffers, and records' sets of slots, kept for the next records.
const SPARE_VALUES: usize = 1024;
const SPARE_SLOTS: usize = 64;

/// A name's namespace as resolved; a prefix the document never declared
/// makes it malformed.
fn namespace_of(resolved: ResolveResult<'_>) -> Result<Option<&[u8]>, quick_xml::Error> {
    match resolved {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(ns.0)),
        ResolveResult::Unknown(_) => Err(quick_xml::Error::Io(
            io::Error::other("a namespace prefix the document never declared").into(),
        )),
    }
}

pub struct XmlSource<'s, R: Read> {
    schema: &'s Schema,
    layout: &'s XmlLayout,
    tree: Tree<'s>,
    reader: NsReader<BufReader<Counted<Transcoded<R>>>>,
    buf: Vec<u8>,
    /// The text of the last [`Item::Text`].
    text: Vec<u8>,
    /// The attributes of the last [`Item::Start`] that columns read: each
    /// column, and its value's place in `attribute_text` (`Err`: a
    /// reference other than XML's five).
    attributes: Vec<(usize, Result<std::ops::Range<usize>, ()>)>,
    attribute_text: Vec<u8>,
    /// Buffers of values of records checked, for the next records' values.
    spare_values: Vec<Vec<u8>>,
    /// Checked records' sets of column slots, for the next records.
    spare_slots: Vec<Vec<Option<Vec<u8>>>>,
    /// The open elements' nodes, the root first.
    open: Vec<NodeId>,
    /// The record being read, when the reader is inside one: boxed, since
    /// it is taken out and put back for each item within it.
    record: Option<Box<Record>>,
    field_columns: Vec<Option<usize>>,
    decoder: Decoder,
    records: u64,
    /// Records of the last record element still to hand out (one per
    /// element of its repeating group).
    pending: VecDeque<Outcome>,
    /// Problems that ended the reading of the file.
    fatal: Vec<Problem>,
    /// What the file gives every record (the day it was received).
    file_values: Vec<(usize, Value)>,
    /// A mapped row's values, given back to fill with the next record's.
    spare_row: Option<Vec<Value>>,
    done: bool,
}

struct Record {
    line: u64,
    /// Each column's value; `None` while not met. Columns of the repeating
    /// group have theirs in `repeats`.
    values: Vec<Option<Vec<u8>>>,
    /// Each element of the repeating group met: its line and values.
    repeats: Vec<(u64, Vec<Option<Vec<u8>>>)>,
    /// Inside an element of the repeating group.
    in_repeat: bool,
    /// The column whose element is open, its text being read.
    reading: Option<usize>,
    /// What the values and repeats hold, against the record's limit.
    bytes: usize,
    problems: Vec<Problem>,
}

impl Record {
    /// Where a column's value goes: its group element's, or the record's.
    fn slot(&mut self, layout: &XmlLayout, column: usize) -> Option<&mut Option<Vec<u8>>> {
        if layout.in_repeat[column] {
            if !self.in_repeat {
                return None;
            }
            self.repeats
                .last_mut()
                .map(|(_, values)| &mut values[column])
        } else {
            Some(&mut self.values[column])
        }
    }

    /// Counts bytes held against the record's limit; false once over it.
    fn hold(&mut self, bytes: usize, max: usize) -> bool {
        self.bytes += bytes;
        if self.bytes <= max {
            return true;
        }
        self.note(Problem::file(
            self.line,
            Code::RecordTooLarge,
            format!(
                "the record holds more than the feed's limit of {max} bytes (`max_record_size`)"
            ),
        ));
        false
    }

    /// Keeps a problem of the record's structure, unless the same one is
    /// kept already or [`MAX_RECORD_PROBLEMS`] are: a record repeating an
    /// element or a bad reference a million times holds no more.
    fn note(&mut self, problem: Problem) {
        let known = self
            .problems
            .iter()
            .any(|p| p.code == problem.code && p.message == problem.message);
        if !known && self.problems.len() < MAX_RECORD_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

/// What an event came to, held apart from the reader's buffer, so the
/// reader can be asked about positions before it is acted on.
enum Item {
    /// An element opened; the attributes a column may read are in
    /// `XmlSource::attributes`.
    Start {
        node: NodeId,
        attribute_count: usize,
    },
    End,
    /// Text a column is reading, in `XmlSource::text`.
    Text,
    /// A character or entity reference; `None` for an entity other than
    /// XML's five, or a malformed one.
    Reference(Option<char>),
    DocType,
    Other,
    Eof,
}

impl<'s, R: Read> XmlSource<'s, R> {
    pub fn open(
        schema: &'s Schema,
        layout: &'s XmlLayout,
        input: R,
        encoding: Encoding,
        received: Option<(usize, Value)>,
    ) -> XmlSource<'s, R> {
        let (input, unreadable) = Transcoded::new(input, encoding);
        // Any one tag, text, comment or CDATA section is held whole while it
        // is read: beyond a record's limit (and what is read ahead) the
        // input fails instead.
        let cap = schema.max_record_bytes as u64 + READ_AHEAD as u64;
        let counted = Counted::new(input, cap);
        let mut reader = NsReader::from_reader(BufReader::with_capacity(READ_AHEAD, counted));
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        let mut source = XmlSource {
            schema,
            layout,
            tree: Tree::new(layout),
            reader,
            buf: Vec::new(),
            text: Vec::new(),
            attributes: Vec::new(),
            attribute_text: Vec::new(),
            spare_values: Vec::new(),
            spare_slots: Vec::new(),
            open: Vec::new(),
            record: None,
            field_columns: (0..schema.columns.len()).map(Some).collect(),
            decoder: Decoder::new(Encoding::Utf8),
            records: 0,
            pending: VecDeque::new(),
            fatal: Vec::new(),
            done: false,
            file_values: received.into_iter().collect(),
            spare_row: None,
        };
        if let Some(why) = unreadable {
            source.stop(0, Code::XmlEncoding, why);
        }
        source
    }

    /// The line and column (in bytes, from 1) of a byte offset of the input.
    fn position(&mut self, offset: u64) -> (u64, u64) {
        self.reader.get_mut().get_mut().position(offset)
    }

    /// Ends the reading of the file with a problem at `offset`.
    fn stop(&mut self, offset: u64, code: Code, message: &str) {
        let (line, column) = self.position(offset);
        self.fatal.push(Problem::file(
            line,
            code,
            format!("line {line}, column {column}: {message}"),
        ));
        self.done = true;
    }

    fn next_item(&mut self) -> Result<Item, quick_xml::Error> {
        self.buf.clear();
        let reading = self.record.as_ref().is_some_and(|r| r.reading.is_some());
        // Only an element's start is resolved: its end closes what is open.
        let event = self.reader.read_event_into(&mut self.buf)?;
        Ok(match event {
            Event::Start(start) => {
                let resolver = self.reader.resolver();
                let (namespace, local) = resolver.resolve_element(start.name());
                let parent = self.open.last().copied().unwrap_or(DOCUMENT);
                let node = self
                    .tree
                    .child(parent, namespace_of(namespace)?, local.as_ref());
                self.attributes.clear();
                self.attribute_text.clear();
                let mut attribute_count = 0;
                for attribute in start.attributes() {
                    attribute_count += 1;
                    if attribute_count > self.layout.max_attributes {
                        break;
                    }
                    let attribute = attribute.map_err(quick_xml::Error::InvalidAttr)?;
                    if attribute.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (namespace, local) = resolver.resolve_attribute(attribute.key);
                    let namespace = namespace_of(namespace)?;
                    let Some(column) = self.tree.attribute(node, namespace, local.as_ref()) else {
                        continue;
                    };
                    let value = match attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    {
                        Ok(value) => {
                            let from = self.attribute_text.len();
                            self.attribute_text.extend_from_slice(value.as_bytes());
                            Ok(from..self.attribute_text.len())
                        }
                        Err(_) => Err(()),
                    };
                    self.attributes.push((column, value));
                }
                Item::Start {
                    node,
                    attribute_count,
                }
            }
            Event::End(_) => Item::End,
            Event::Text(text) if reading => {
                self.text.clear();
                self.text.extend_from_slice(&text);
                Item::Text
            }
            Event::CData(data) if reading => {
                self.text.clear();
                self.text.extend_from_slice(&data);
                Item::Text
            }
            Event::GeneralRef(reference) => Item::Reference(match reference.resolve_char_ref() {
                Ok(Some(c)) => Some(c),
                Ok(None) => match &*reference {
                    b"lt" => Some('<'),
                    b"gt" => Some('>'),
                    b"amp" => Some('&'),
                    b"apos" => Some('\''),
                    b"quot" => Some('"'),
                    _ => None,
                },
                Err(_) => None,
            }),
            Event::DocType(_) => Item::DocType,
            Event::Eof => Item::Eof,
            _ => Item::Other,
        })
    }

    /// Empty slots for a record's (or a group element's) values.
    fn slots(&mut self) -> Vec<Option<Vec<u8>>> {
        self.spare_slots
            .pop()
            .unwrap_or_else(|| vec![None; self.schema.columns.len()])
    }

    /// Keeps a checked record's buffers for the records after it, a bounded
    /// number of bounded size.
    fn recycle(&mut self, record: Record) {
        let groups = record.repeats.into_iter().map(|(_, values)| values);
        for mut slots in std::iter::once(record.values).chain(groups) {
            for slot in &mut slots {
                if let Some(mut value) = slot.take()
                    && value.capacity() <= KEPT_VALUE_BYTES
                    && self.spare_values.len() < SPARE_VALUES
                {
                    value.clear();
                    self.spare_values.push(value);
                }
            }
            if self.spare_slots.len() < SPARE_SLOTS {
                self.spare_slots.push(slots);
            }
        }
    }

    /// Sets a column's value; false (and a problem) when it has one already.
    fn set(&mut self, record: &mut Record, column: usize, value: &[u8]) -> bool {
        if !record.hold(value.len(), self.schema.max_record_bytes) {
            return false;
        }
        let Some(slot) = record.slot(self.layout, column) else {
            return false;
        };
        if slot.is_some() {
            let name = &self.schema.columns[column].name;
            record.note(Problem::file(
                record.line,
                Code::XmlRepeated,
                format!("column `{name}` appears more than once in the record"),
            ));
            return false;
        }
        let mut buffer = self.spare_values.pop().unwrap_or_default();
        buffer.extend_from_slice(value);
        *slot = Some(buffer);
        true
    }

    /// Adds text to a column's value (text may come in pieces around entity
    /// references), up to the field limit.
    fn append(&self, record: &mut Record, column: usize, text: &[u8]) {
        let max = self.schema.max_field_bytes;
        if !record.hold(text.len(), self.schema.max_record_bytes) {
            return;
        }
        let line = record.line;
        let Some(value) = record.slot(self.layout, column) else {
            return;
        };
        let value = value.get_or_insert_with(Vec::new);
        if value.len() + text.len() > max {
            record.note(Problem::file(
                line,
                Code::FieldTooLarge,
                format!(
                    "a field is longer than the feed's limit of {max} bytes (`max_field_size`)"
                ),
            ));
            return;
        }
        value.extend_from_slice(text);
    }

    /// The record element just closed, checked: one record, or one for
    /// each element of its repeating group, queued in `pending`.
    fn finish_record(&mut self, mut record: Record) -> Result<(), ReadError> {
        if !record.problems.is_empty() {
            self.records += 1;
            let problems = std::mem::take(&mut record.problems);
            self.pending.push_back(Outcome::Invalid(problems));
            self.recycle(record);
            return Ok(());
        }
        let whole = [(record.line, Vec::new())];
        let groups = if record.repeats.is_empty() {
            &whole[..]
        } else {
            &record.repeats[..]
        };
        let in_repeat = &self.layout.in_repeat;
        for (line, repeated) in groups {
            let fields = (0..record.values.len()).map(|c| {
                let value = if in_repeat[c] {
                    repeated.get(c).and_then(Option::as_deref)
                } else {
                    record.values[c].as_deref()
                };
                value.unwrap_or(b"")
            });
            self.records += 1;
            let outcome = check_record_in_file(
                self.schema,
                &self.field_columns,
                &mut self.decoder,
                *line,
                fields,
                &self.file_values,
                self.spare_row.take().unwrap_or_default(),
            )?;
            self.pending.push_back(outcome);
        }
        self.recycle(record);
        Ok(())
    }
}

impl<R: Read> RecordSource for XmlSource<'_, R> {
    fn next_outcome(&mut self) -> Result<Option<Outcome>, ReadError> {
        while !self.done || !self.pending.is_empty() {
            if let Some(outcome) = self.pending.pop_front() {
                return Ok(Some(outcome));
            }
            let offset = self.reader.buffer_position();
            // Also keeps the line breaks remembered to those read ahead.
            self.position(offset);
            self.reader.get_mut().get_mut().new_item();
            let item = match self.next_item() {
                Ok(item) => item,
                Err(quick_xml::Error::Io(e)) if e.kind() != io::ErrorKind::Other => {
                    return Err(ReadError::Io(io::Error::new(e.kind(), e.to_string())));
                }
                Err(e) => {
                    let message = malformed(&e);
                    let at = self.reader.error_position().max(offset);
                    self.stop(at, Code::XmlMalformed, &message);
                    break;
                }
            };
            match item {
                Item::DocType => {
                    self.stop(
                        offset,
                        Code::XmlDtd,
                        "a document type declaration; DTDs and entities are refused",
                    );
                }
                Item::Start {
                    node,
                    attribute_count,
                } => {
                    if self.open.len() == self.layout.max_depth {
                        let max = self.layout.max_depth;
                        self.stop(
                            offset,
                            Code::XmlTooDeep,
                            &format!("elements nested deeper than {max} (`max_depth`)"),
                        );
                        continue;
                    }
                    if attribute_count > self.layout.max_attributes {
                        let max = self.layout.max_attributes;
                        self.stop(
                            offset,
                            Code::XmlTooManyAttributes,
                            &format!(
                                "an element with more than {max} attributes (`max_attributes`)"
                            ),
                        );
                        continue;
                    }
                    self.open.push(node);
                    let mut record = match self.record.take() {
                        Some(record) => record,
                        None if node == self.tree.record => {
                            let (line, _) = self.position(offset);
                            Box::new(Record {
                                line,
                                values: self.slots(),
                                repeats: Vec::new(),
                                in_repeat: false,
                                reading: None,
                                bytes: 0,
                                problems: Vec::new(),
                            })
                        }
                        None => continue,
                    };
                    if Some(node) == self.tree.group {
                        let (line, _) = self.position(offset);
                        let columns = self.schema.columns.len();
                        // Each group element counts against the record's limit.
                        if record.hold(columns * 24, self.schema.max_record_bytes) {
                            let slots = self.slots();
                            record.repeats.push((line, slots));
                            record.in_repeat = true;
                        }
                    }
                    record.reading = self.tree.column(node);
                    if let Some(column) = record.reading {
                        // Met now, so a second element of the column is told apart
                        // from text coming in pieces.
                        if !self.set(&mut record, column, b"") {
                            record.reading = None;
                        }
                    }
                    let attributes = std::mem::take(&mut self.attributes);
                    let attribute_text = std::mem::take(&mut self.attribute_text);
                    for &(column, ref value) in &attributes {
                        match value {
                            Ok(value) => {
                                self.set(&mut record, column, &attribute_text[value.clone()]);
                            }
                            Err(()) => {
                                let name = &self.schema.columns[column].name;
                                record.note(Problem::file(
                                    record.line,
                                    Code::XmlEntity,
                                    format!(
                                        "column `{name}`: an entity reference other than XML's five"
                                    ),
                                ));
                            }
                        }
                    }
                    self.attributes = attributes;
                    self.attribute_text = attribute_text;
                    self.record = Some(record);
                }
                Item::End => {
                    let closing = self.open.pop();
                    let closing_group = closing.is_some_and(|c| Some(c) == self.tree.group);
                    if closing == Some(self.tree.record) && self.record.is_some() {
                        let record = self.record.take().expect("inside a record");
                        self.finish_record(*record)?;
                        continue;
                    }
                    if let Some(record) = &mut self.record {
                        record.reading = None;
                        if closing_group {
                            record.in_repeat = false;
                        }
                    }
                }
                Item::Text => {
                    let Some(mut record) = self.record.take() else {
                        continue;
                    };
                    if let Some(column) = record.reading {
                        let text = std::mem::take(&mut self.text);
                        self.append(&mut record, column, &text);
                        self.text = text;
                    }
                    self.record = Some(record);
                }
                Item::Reference(value) => {
                    let Some(mut record) = self.record.take() else {
                        if value.is_none() {
                            self.stop(
                                offset,
                                Code::XmlEntity,
                                "an entity reference other than XML's five",
                            );
                        }
                        continue;
                    };
                    match (value, record.reading) {
                        (Some(value), Some(column)) => {
                            let mut utf8 = [0; 4];
                            let text = value.encode_utf8(&mut utf8);
                            self.append(&mut record, column, text.as_bytes());
                        }
                        (Some(_), None) => {}
                        (None, _) => {
                            let (line, column) = self.position(offset);
                            record.note(Problem::file(
                                line,
                                Code::XmlEntity,
                                format!("line {line}, column {column}: an entity reference other than XML's five"),
                            ));
                        }
                    }
                    self.record = Some(record);
                }
                Item::Eof => {
                    if !self.open.is_empty() {
                        self.stop(
                            offset,
                            Code::XmlMalformed,
                            "the document ends inside an element",
                        );
                    }
                    self.done = true;
                }
                Item::Other => {}
            }
        }
        Ok(None)
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn reuse(&mut self, values: Vec<Value>) {
        self.spare_row = Some(values);
    }

    fn finish(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.fatal)
    }
}

/// What is wrong with the document, in words of our own: quick-xml's own
/// messages quote the document's names and references, which a partner
/// controls (and which may be long), so they are never passed on.
fn malformed(error: &quick_xml::Error) -> String {
    use quick_xml::errors::{Error, IllFormedError};
    let what = match error {
        // Ours (the size cap, an undeclared prefix) or the reader's: no document text.
        Error::Io(e) => return e.to_string(),
        // Fixed texts, naming no part of the document.
        Error::Syntax(syntax) => return format!("not well-formed XML: {syntax}"),
        Error::IllFormed(IllFormedError::MissingDeclVersion(_)) => {
            "the XML declaration lacks its version"
        }
        Error::IllFormed(IllFormedError::MissingDoctypeName) => "a document type without a name",
        Error::IllFormed(IllFormedError::MissingEndTag(_)) => "an element is never closed",
        Error::IllFormed(IllFormedError::UnmatchedEndTag(_)) => {
            "an end tag with no element open to close"
        }
        Error::IllFormed(IllFormedError::MismatchedEndTag { .. }) => {
            "an end tag that does not close the element open there"
        }
        Error::IllFormed(_) => "malformed markup",
        Error::InvalidAttr(_) => "a malformed attribute",
        Error::Encoding(_) => "text that is not UTF-8",
        Error::Escape(_) => "a malformed character or entity reference",
        Error::Namespace(_) => "a malformed namespace declaration",
    };
    format!("not well-formed XML: {what}")
}
