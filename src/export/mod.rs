//! Export: the output seam. Records a consumer may receive are handed, one
//! at a time, to each output format the schedule names; each writes its
//! files into a staging folder. The manifest, its signature and the move
//! into place are the same for every format (see `publish`).
//!
//! A new output format is a module here plus its line in [`Format`].

pub mod csv;
pub mod fhir;
mod fhir_care;
pub mod manifest;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

use crate::records::Exported;

/// The output formats, by the name a schedule's `formats` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FHIR R4 resources, one NDJSON file per resource type (Bulk Data style).
    FhirNdjson,
    /// One CSV file per record kind.
    Csv,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::FhirNdjson, Format::Csv];

    pub fn name(self) -> &'static str {
        match self {
            Format::FhirNdjson => "fhir_ndjson",
            Format::Csv => "csv",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// A writer of this format's files into `target`.
    pub fn output(self, target: &Target) -> Box<dyn Output> {
        match self {
            Format::FhirNdjson => Box::new(fhir::Output::new(target)),
            Format::Csv => Box::new(csv::Output::new(target)),
        }
    }
}

/// Where an output's files go, and whether they are encrypted on the way.
#[derive(Clone)]
pub struct Target {
    pub folder: PathBuf,
    /// Each file is age-encrypted to these, and named with `.age`, when set.
    pub recipients: Option<Arc<[age::x25519::Recipient]>>,
}

/// One output format: given every exported record, writes its files.
pub trait Output {
    /// Writes one record.
    fn write(&mut self, record: &Exported<'_>) -> io::Result<()>;

    /// Flushes and syncs every file written; lists them.
    fn finish(self: Box<Self>) -> io::Result<Vec<OutputFile>>;
}

/// A file an output wrote.
#[derive(Debug, Clone)]
pub struct OutputFile {
    pub path: PathBuf,
    /// What it holds: a FHIR resource type, or a record kind.
    pub kind: String,
    /// Resources or rows in it.
    pub count: u64,
    pub sha256: String,
    pub bytes: u64,
}

/// A file an output is writing, counting what goes into it and hashing it
/// on the way, so the manifest never reads a file back.
pub(crate) struct CountedFile {
    path: PathBuf,
    kind: String,
    writer: BufWriter<Sink>,
    count: u64,
}

/// A file that keeps the SHA-256 and length of what is written to it.
pub(crate) struct Hashing {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Where a file's bytes go: straight to the file, or through age first.
pub(crate) enum Sink {
    Plain(Hashing),
    Age(age::stream::StreamWriter<Hashing>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Age(w) => w.flush(),
        }
    }
}

impl CountedFile {
    pub(crate) fn create(target: &Target, name: &str, kind: &str) -> io::Result<CountedFile> {
        let name = match target.recipients {
            Some(_) => format!("{name}.age"),
            None => name.to_string(),
        };
        let path = target.folder.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let hashing = Hashing {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let sink = match &target.recipients {
            None => Sink::Plain(hashing),
            Some(recipients) => {
                let encryptor = age::Encryptor::with_recipients(
                    recipients.iter().map(|r| r as &dyn age::Recipient),
                )
                .map_err(io::Error::other)?;
                Sink::Age(encryptor.wrap_output(hashing)?)
            }
        };
        Ok(CountedFile {
            path,
            kind: kind.to_string(),
            writer: BufWriter::with_capacity(256 * 1024, sink),
            count: 0,
        })
    }

    /// Where the next item goes; counts it.
    pub(crate) fn next(&mut self) -> &mut BufWriter<Sink> {
        self.count += 1;
        &mut self.writer
    }

    /// Where a line that is not an item (a header) goes.
    pub(crate) fn writer(&mut self) -> &mut BufWriter<Sink> {
        &mut self.writer
    }

    pub(crate) fn finish(self) -> io::Result<OutputFile> {
        let hashing = match self.writer.into_inner().map_err(|e| e.into_error())? {
            Sink::Plain(hashing) => hashing,
            // Writes the last chunk and its tag.
            Sink::Age(sealed) => sealed.finish()?,
        };
        hashing.file.sync_all()?;
        Ok(OutputFile {
            path: self.path,
            kind: self.kind,
            count: self.count,
            sha256: crate::digest::hex(&hashing.hasher.finalize()),
            bytes: hashing.bytes,
        })
    }
}

/// A number as people write it: no `.0` on whole numbers.
pub(crate) fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}
