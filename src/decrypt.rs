//! Decrypt: age (X25519) files become a plaintext stream, never held whole.
//!
//! The age header is measured before the age library parses it: its parser
//! takes time that grows with the square of the header's length, so a header
//! of a few hundred kilobytes would hold up processing for minutes. A real
//! header (one X25519 recipient) is about 200 bytes.

use std::io::{self, BufRead, BufReader, Cursor, Read};

use crate::config::Encryption;
use crate::problem::Code;

const BINARY_HEADER: &[u8] = b"age-encryption.org/v1";
const ARMOR_HEADER: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// Largest age header accepted.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Most recipient stanzas accepted in a header.
pub const MAX_STANZAS: usize = 64;
/// Longest line of a header (stanza bodies are wrapped at 64 characters).
const MAX_HEADER_LINE: usize = 1024;
/// Longest line of armour: 64 characters, a CR LF, and some slack for spaces.
const MAX_ARMOR_LINE: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("the feed requires age encryption but the file is not age-encrypted")]
    NotEncrypted,
    #[error("the file is not encrypted to this dropgate's age recipient")]
    WrongKey,
    #[error("passphrase-encrypted age files are not accepted; encrypt to the recipient key")]
    Passphrase,
    #[error("invalid age header: {0}")]
    InvalidHeader(String),
    #[error(
        "the age header is larger than dropgate accepts ({0}); a file encrypted to a few recipients has a header of a few hundred bytes"
    )]
    HeaderTooLarge(&'static str),
    #[error("the ASCII armour (-----BEGIN AGE ENCRYPTED FILE-----) is damaged: {0}")]
    InvalidArmor(String),
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
}

impl DecryptError {
    /// Stable problem code for reports.
    pub fn code(&self) -> Code {
        match self {
            DecryptError::NotEncrypted => Code::NotEncrypted,
            DecryptError::WrongKey => Code::WrongKey,
            DecryptError::Passphrase => Code::PassphraseEncrypted,
            DecryptError::InvalidHeader(_) => Code::InvalidAgeHeader,
            DecryptError::HeaderTooLarge(_) => Code::AgeHeaderTooLarge,
            DecryptError::InvalidArmor(_) => Code::InvalidArmor,
            DecryptError::Io(_) => Code::ReadFailed,
        }
    }
}

/// The plaintext of a payload.
pub struct Plaintext {
    pub reader: Box<dyn Read + Send>,
    /// Whether the payload was age-encrypted (read errors then mean a damaged ciphertext).
    pub encrypted: bool,
}

/// True when the bytes start like an age file, binary or armoured.
pub fn looks_like_age(head: &[u8]) -> bool {
    let head = trim_leading_whitespace(head);
    head.starts_with(BINARY_HEADER) || head.starts_with(ARMOR_HEADER)
}

fn trim_leading_whitespace(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

/// Opens a payload for reading as the feed's encryption setting says.
pub fn open(
    file: impl Read + Send + 'static,
    encryption: Encryption,
    identity: &age::x25519::Identity,
) -> Result<Plaintext, DecryptError> {
    let mut input = BufReader::with_capacity(64 * 1024, file);
    let head = input.fill_buf()?;
    let is_age = looks_like_age(head);
    let armored = trim_leading_whitespace(head).starts_with(ARMOR_HEADER);
    let decrypt = match encryption {
        Encryption::Age if !is_age => return Err(DecryptError::NotEncrypted),
        Encryption::Age => true,
        Encryption::None => false,
        Encryption::Optional => is_age,
    };
    if !decrypt {
        return Ok(Plaintext {
            reader: Box::new(input),
            encrypted: false,
        });
    }
    let reader = if armored {
        // Armour is read line by line by the age library, with no limit on a
        // line's length: the lines are capped here first.
        let lines = LineCap::new(input, MAX_ARMOR_LINE);
        let armor = age::armor::ArmoredReader::new(lines);
        let mut armor = BufReader::with_capacity(64 * 1024, armor);
        let header = read_header(&mut armor).map_err(|e| match e {
            DecryptError::Io(io) => DecryptError::InvalidArmor(armor_problem(&io)),
            other => other,
        })?;
        decrypt_after(header, armor, identity).map_err(|e| match e {
            DecryptError::Io(io) => DecryptError::InvalidArmor(armor_problem(&io)),
            other => other,
        })?
    } else {
        let header = read_header(&mut input)?;
        decrypt_after(header, input, identity)?
    };
    Ok(Plaintext {
        reader,
        encrypted: true,
    })
}

/// Hands the measured header and the rest of the input to the age library.
fn decrypt_after<R: BufRead + Send + 'static>(
    header: Vec<u8>,
    rest: R,
    identity: &age::x25519::Identity,
) -> Result<Box<dyn Read + Send>, DecryptError> {
    let input = Cursor::new(header).chain(rest);
    let decryptor = age::Decryptor::new_buffered(input).map_err(from_age)?;
    if decryptor.is_scrypt() {
        return Err(DecryptError::Passphrase);
    }
    let reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(from_age)?;
    Ok(Box::new(reader))
}

/// Reads the header's lines up to and including the MAC line (`--- `),
/// refusing a header over the caps as soon as it passes them.
fn read_header(input: &mut impl BufRead) -> Result<Vec<u8>, DecryptError> {
    let mut header = Vec::with_capacity(512);
    let mut stanzas = 0;
    loop {
        let start = header.len();
        let room = MAX_HEADER_BYTES - start;
        match read_line_capped(input, &mut header, room.min(MAX_HEADER_LINE))? {
            Line::Complete => {}
            Line::End => {
                return Err(DecryptError::InvalidHeader(
                    "the file ends before the header's MAC line".into(),
                ));
            }
            Line::TooLong if room <= MAX_HEADER_LINE => {
                return Err(DecryptError::HeaderTooLarge("over 16 KiB"));
            }
            Line::TooLong => return Err(DecryptError::HeaderTooLarge("a line over 1 KiB")),
        }
        let line = &header[start..];
        if line.starts_with(b"-> ") {
            stanzas += 1;
            if stanzas > MAX_STANZAS {
                return Err(DecryptError::HeaderTooLarge("over 64 recipient stanzas"));
            }
        } else if line.starts_with(b"---") {
            return Ok(header);
        }
    }
}

enum Line {
    Complete,
    TooLong,
    End,
}

/// Appends one line (with its `\n`) of at most `max` bytes to `out`.
fn read_line_capped(input: &mut impl BufRead, out: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    let mut taken = 0;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..=at], true),
            None => (buf, false),
        };
        if taken + chunk.len() > max {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(chunk);
        taken += chunk.len();
        let used = chunk.len();
        input.consume(used);
        if done {
            return Ok(Line::Complete);
        }
    }
}

/// Buffered input that fails once a line grows past `max` bytes.
struct LineCap<R> {
    inner: R,
    max: usize,
    /// Bytes consumed since the last `\n`.
    line: usize,
}

impl<R> LineCap<R> {
    fn new(inner: R, max: usize) -> LineCap<R> {
        LineCap {
            inner,
            max,
            line: 0,
        }
    }
}

impl<R: BufRead> Read for LineCap<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCap<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let (line, max) = (self.line, self.max);
        let buf = self.inner.fill_buf()?;
        let next_break = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        if line + next_break > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than {max} characters"),
            ));
        }
        Ok(buf)
    }

    fn consume(&mut self, amount: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let used = &buf[..amount.min(buf.len())];
            self.line = match used.iter().rposition(|&b| b == b'\n') {
                Some(at) => used.len() - at - 1,
                None => self.line + used.len(),
            };
        }
        self.inner.consume(amount);
    }
}

/// What is wrong with damaged armour, in words.
fn armor_problem(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "it ends early, or its END line is missing".into(),
        _ => crate::text::excerpt(&e.to_string(), 120),
    }
}

fn from_age(e: age::DecryptError) -> DecryptError {
    match e {
        age::DecryptError::NoMatchingKeys => DecryptError::WrongKey,
        age::DecryptError::Io(io) => DecryptError::Io(io),
        other => DecryptError::InvalidHeader(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(input: &[u8]) -> Result<Vec<u8>, DecryptError> {
        read_header(&mut io::BufReader::with_capacity(5, input))
    }

    #[test]
    fn a_real_header_is_read_up_to_its_mac_line() {
        let header = b"age-encryption.org/v1\n-> X25519 abc\nbody\n--- mac\n\x01\x02payload";
        let read = capped(header).unwrap();
        assert!(read.ends_with(b"--- mac\n"));
    }

    #[test]
    fn oversized_headers_are_refused_at_once() {
        let mut many = b"age-encryption.org/v1\n".to_vec();
        for _ in 0..65 {
            many.extend(b"-> X25519 abc\nbody\n");
        }
        assert!(matches!(
            capped(&many),
            Err(DecryptError::HeaderTooLarge(_))
        ));
        let long_line = [b"age-encryption.org/v1\n-> ".as_slice(), &[b'a'; 400_000]].concat();
        assert!(matches!(
            capped(&long_line),
            Err(DecryptError::HeaderTooLarge(_))
        ));
        let mut big = b"age-encryption.org/v1\n".to_vec();
        for _ in 0..1000 {
            big.extend([b'b'; 63]);
            big.push(b'\n');
        }
        assert!(matches!(capped(&big), Err(DecryptError::HeaderTooLarge(_))));
        assert!(matches!(
            capped(b"age-encryption.org/v1\n-> X25519 abc\n"),
            Err(DecryptError::InvalidHeader(_))
        ));
    }

    #[test]
    fn armour_lines_are_capped() {
        let mut input = LineCap::new(io::BufReader::with_capacity(16, &[b'x'; 1000][..]), 128);
        let mut out = Vec::new();
        let err = input.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() <= 128 + 16);
        let text = "a\n".repeat(500);
        let mut input = LineCap::new(io::BufReader::with_capacity(16, text.as_bytes()), 4);
        let mut out = Vec::new();
        input.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1000);
    }
}
