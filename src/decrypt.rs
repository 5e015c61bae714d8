//! Decrypt: age (X25519) files become a plaintext stream, never held whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

use crate::config::Encryption;

const BINARY_HEADER: &[u8] = b"age-encryption.org/v1";
const ARMOR_HEADER: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

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
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
}

impl DecryptError {
    /// Stable problem code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            DecryptError::NotEncrypted => "not_encrypted",
            DecryptError::WrongKey => "wrong_key",
            DecryptError::Passphrase => "passphrase_encrypted",
            DecryptError::InvalidHeader(_) => "invalid_age_header",
            DecryptError::Io(_) => "read_failed",
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
    file: File,
    encryption: Encryption,
    identity: &age::x25519::Identity,
) -> Result<Plaintext, DecryptError> {
    let mut input = BufReader::with_capacity(64 * 1024, file);
    let is_age = looks_like_age(input.fill_buf()?);
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
    let armored = age::armor::ArmoredReader::new(input);
    let decryptor = age::Decryptor::new(armored).map_err(from_age)?;
    if decryptor.is_scrypt() {
        return Err(DecryptError::Passphrase);
    }
    let reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(from_age)?;
    Ok(Plaintext {
        reader: Box::new(reader),
        encrypted: true,
    })
}

fn from_age(e: age::DecryptError) -> DecryptError {
    match e {
        age::DecryptError::NoMatchingKeys => DecryptError::WrongKey,
        age::DecryptError::Io(io) => DecryptError::Io(io),
        other => DecryptError::InvalidHeader(other.to_string()),
    }
}
