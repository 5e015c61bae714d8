//! The manifest of an export, in the FHIR Bulk Data shape plus each file's
//! SHA-256 and size, and its SSH signature (SSHSIG). Consumers check both
//! with stock tools:
//!
//! ```text
//! ssh-keygen -Y verify -f allowed_signers -I dropgate -n dropgate-export -s manifest.json.sig < manifest.json
//! sha256sum -c SHA256SUMS
//! ```
//!
//! `SHA256SUMS` is signed too, so that `sha256sum -c` checks against a list
//! the consumer has verified.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use serde::{Deserialize, Serialize};

use super::OutputFile;

/// The SSHSIG namespace of export signatures.
pub const NAMESPACE: &str = "dropgate-export";
/// The principal consumers name in their `allowed_signers` file.
pub const IDENTITY: &str = "dropgate";
pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// When the records were read (RFC 3339).
    pub transaction_time: String,
    /// What made the export: `dropgate export SCHEDULE` or the schedule's timetable.
    pub request: String,
    pub requires_access_token: bool,
    pub output: Vec<Entry>,
    pub error: Vec<Entry>,
    pub export_id: String,
    pub schedule: String,
    pub consumer: String,
    pub mode: String,
    /// The grants that allowed it.
    pub grants: Vec<String>,
    pub watermark: Watermark,
}

/// One file of the export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// FHIR resource type or record kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// The file's name, relative to the manifest.
    pub url: String,
    pub count: u64,
    pub sha256: String,
    pub bytes: u64,
}

/// The range of the ledger's loads the export covers, `(from, to]`, and of
/// its observation sets, `(sets_from, sets_to]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Watermark {
    pub from: i64,
    pub to: i64,
    pub sets_from: i64,
    pub sets_to: i64,
}

impl Watermark {
    pub fn new(from: crate::ledger::Watermark, to: crate::ledger::Watermark) -> Watermark {
        Watermark {
            from: from.loads,
            to: to.loads,
            sets_from: from.sets,
            sets_to: to.sets,
        }
    }

    /// Where the next export starts.
    pub fn to(&self) -> crate::ledger::Watermark {
        crate::ledger::Watermark {
            loads: self.to,
            sets: self.sets_to,
        }
    }
}

/// Describes `files`, which are in one folder.
pub fn entries(files: &[OutputFile]) -> Vec<Entry> {
    files
        .iter()
        .map(|f| Entry {
            kind: f.kind.clone(),
            url: file_name(&f.path),
            count: f.count,
            sha256: f.sha256.clone(),
            bytes: f.bytes,
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sign(key: &PrivateKey, bytes: &[u8]) -> io::Result<String> {
    key.sign(NAMESPACE, HashAlg::Sha512, bytes)
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(|e| io::Error::other(format!("cannot sign: {e}")))
}

/// Writes `manifest.json`, `SHA256SUMS` and their signatures into
/// `folder`; returns the manifest's SHA-256.
pub fn write_signed(folder: &Path, manifest: &Manifest, key: &PrivateKey) -> io::Result<String> {
    let mut json = serde_json::to_vec_pretty(manifest)?;
    json.push(b'\n');
    let mut sums = String::new();
    for entry in &manifest.output {
        sums.push_str(&format!("{}  {}\n", entry.sha256, entry.url));
    }
    let manifest_sha = crate::digest::sha256_hex(&json);
    sums.push_str(&format!("{manifest_sha}  {MANIFEST}\n"));
    write_synced(&folder.join(MANIFEST), &json)?;
    write_synced(
        &folder.join(format!("{MANIFEST}.sig")),
        sign(key, &json)?.as_bytes(),
    )?;
    write_synced(&folder.join(SUMS), sums.as_bytes())?;
    write_synced(
        &folder.join(format!("{SUMS}.sig")),
        sign(key, sums.as_bytes())?.as_bytes(),
    )?;
    Ok(manifest_sha)
}

/// The `allowed_signers` line consumers add for dropgate's signing key:
/// it signs exports and the audit trail's checkpoints.
pub fn allowed_signers_line(key: &PublicKey) -> Result<String, String> {
    let key = key.to_openssh().map_err(|e| e.to_string())?;
    Ok(format!(
        "{IDENTITY} namespaces=\"{NAMESPACE},{}\" {key}",
        crate::audit::NAMESPACE
    ))
}

/// Reads the keys of an OpenSSH `allowed_signers` file that may sign
/// exports: lines whose principals include `dropgate` and whose namespaces,
/// if restricted, include `dropgate-export`.
pub fn read_allowed_signers(text: &str) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(principals) = words.next() else {
            continue;
        };
        if !principals.split(',').any(|p| p == IDENTITY || p == "*") {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        let key_at = rest
            .iter()
            .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"));
        let Some(key_at) = key_at else { continue };
        let options = rest[..key_at].join(" ");
        if let Some(namespaces) = options
            .split(',')
            .find_map(|o| o.trim().strip_prefix("namespaces="))
            && !namespaces
                .trim_matches('"')
                .split(',')
                .any(|n| n == NAMESPACE)
        {
            continue;
        }
        if let Ok(key) = PublicKey::from_openssh(&rest[key_at..].join(" ")) {
            keys.push(key);
        }
    }
    keys
}

/// Why an export folder does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{file}: the signature is not a valid SSH signature: {reason}")]
    BadSignature { file: String, reason: String },
    #[error("{file}: the signature is not by any allowed signer (namespace {NAMESPACE})")]
    NotSigned { file: String },
    #[error("{MANIFEST} is not a dropgate manifest: {0}")]
    BadManifest(String),
    #[error("{file}: SHA-256 is {found}, the manifest says {expected}")]
    Digest {
        file: String,
        found: String,
        expected: String,
    },
    #[error("{file}: {found} bytes, the manifest says {expected}")]
    Size {
        file: String,
        found: u64,
        expected: u64,
    },
    #[error("{file} is in the folder but not in the manifest")]
    Unlisted { file: String },
    #[error("{SUMS} does not list exactly the files of the manifest")]
    Sums,
}

/// Checks what the stock tools check: both signatures by one of `signers`,
/// every file's digest and size, and that nothing is missing or extra.
pub fn verify(folder: &Path, signers: &[PublicKey]) -> Result<Manifest, VerifyError> {
    let read = |name: &str| {
        let path = folder.join(name);
        fs::read(&path).map_err(|source| VerifyError::Io { path, source })
    };
    let check_signature = |name: &str, bytes: &[u8]| -> Result<(), VerifyError> {
        let sig_name = format!("{name}.sig");
        let pem = read(&sig_name)?;
        let sig = SshSig::from_pem(&pem).map_err(|e| VerifyError::BadSignature {
            file: sig_name.clone(),
            reason: e.to_string(),
        })?;
        if signers
            .iter()
            .any(|k| k.verify(NAMESPACE, bytes, &sig).is_ok())
        {
            Ok(())
        } else {
            Err(VerifyError::NotSigned { file: sig_name })
        }
    };
    let json = read(MANIFEST)?;
    check_signature(MANIFEST, &json)?;
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| VerifyError::BadManifest(e.to_string()))?;
    let sums = read(SUMS)?;
    check_signature(SUMS, &sums)?;
    for entry in &manifest.output {
        if entry.url.contains('/') || entry.url.starts_with('.') {
            return Err(VerifyError::BadManifest(format!(
                "file name `{}` leaves the folder",
                crate::text::escaped(&entry.url)
            )));
        }
        let path = folder.join(&entry.url);
        let (sha256, bytes) =
            crate::digest::sha256_file(&path).map_err(|source| VerifyError::Io { path, source })?;
        if bytes != entry.bytes {
            return Err(VerifyError::Size {
                file: entry.url.clone(),
                found: bytes,
                expected: entry.bytes,
            });
        }
        if sha256 != entry.sha256 {
            return Err(VerifyError::Digest {
                file: entry.url.clone(),
                found: sha256,
                expected: entry.sha256.clone(),
            });
        }
    }
    let mut expected: Vec<String> = manifest
        .output
        .iter()
        .map(|e| format!("{}  {}", e.sha256, e.url))
        .collect();
    expected.push(format!("{}  {MANIFEST}", crate::digest::sha256_hex(&json)));
    let listed: Vec<String> = String::from_utf8_lossy(&sums)
        .lines()
        .map(str::to_string)
        .collect();
    if listed != expected {
        return Err(VerifyError::Sums);
    }
    let known: Vec<String> = manifest
        .output
        .iter()
        .map(|e| e.url.clone())
        .chain(
            [MANIFEST, SUMS]
                .iter()
                .flat_map(|n| [n.to_string(), format!("{n}.sig")]),
        )
        .collect();
    let listing = fs::read_dir(folder).map_err(|source| VerifyError::Io {
        path: folder.to_path_buf(),
        source,
    })?;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !known.contains(&name) {
            return Err(VerifyError::Unlisted {
                file: crate::text::escaped(&name).into_owned(),
            });
        }
    }
    Ok(manifest)
}
