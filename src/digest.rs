//! SHA-256 digests as the ledger, reports and manifests write them.

use sha2::{Digest, Sha256};

/// Lower-case hexadecimal, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The SHA-256 of `bytes`, in hexadecimal.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 (in hexadecimal) and length of a file, read in chunks.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    sha256_reader(std::fs::File::open(path)?)
}

/// SHA-256 and length of everything `reader` yields.
pub fn sha256_reader(mut reader: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}
