//! The audit trail's proof of itself: signed checkpoints of its hash chain,
//! and the walk that verifies both.
//!
//! The chain (`ledger::audit`) shows a row edited or removed in the middle,
//! but anyone who can write the ledger could rebuild the chain after an
//! edit, or cut off the newest rows. A checkpoint is an audit row holding
//! the chain's head (a row's id and hash) signed with the signing key
//! (SSHSIG, namespace [`NAMESPACE`]): rebuilding the chain would need the
//! key. The latest checkpoint is also written outside the ledger, to
//! `spool/audit-head.json`, so a ledger whose newest rows were cut off is
//! shorter than what that file names.

use std::cell::Cell;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use serde::{Deserialize, Serialize};

use crate::ledger::{AuditEvent, AuditRow, Ledger, LedgerError};

/// The SSHSIG namespace of checkpoint signatures.
pub const NAMESPACE: &str = "dropgate-audit";
/// Audit rows between two checkpoints at most, while the daemon runs.
pub const CHECKPOINT_EVERY: i64 = 1000;
/// The action of a checkpoint row.
const CHECKPOINT: &str = "checkpoint";
/// The latest checkpoint, outside the ledger, in the spool.
const HEAD_FILE: &str = "audit-head.json";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot sign the checkpoint: {0}")]
    Sign(String),
}

/// What a checkpoint signs: a row and its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signed {
    /// The newest row when it was signed.
    pub row: i64,
    /// That row's hash.
    pub hash: String,
    /// SSHSIG over [`Signed::message`], PEM.
    pub signature: String,
}

impl Signed {
    /// The text signed: `ssh-keygen -Y verify -n dropgate-audit` checks it.
    pub fn message(row: i64, hash: &str) -> String {
        format!("dropgate audit checkpoint\nrow {row}\nhash {hash}\n")
    }

    fn signed_by(&self, keys: &[PublicKey]) -> bool {
        let Ok(signature) = self.signature.parse::<SshSig>() else {
            return false;
        };
        let message = Self::message(self.row, &self.hash);
        keys.iter().any(|key| {
            key.verify(NAMESPACE, message.as_bytes(), &signature)
                .is_ok()
        })
    }
}

/// `spool/audit-head.json`: the latest checkpoint and its own row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    /// The checkpoint's own row.
    pub checkpoint: i64,
    #[serde(flatten)]
    pub signed: Signed,
}

/// Writes checkpoints with the signing key.
pub struct Checkpointer {
    key: PrivateKey,
    head_file: PathBuf,
    /// The newest checkpoint's row (0 for none), once looked up: how many
    /// rows are unsigned is then the head's id less it, as ids are dense in
    /// an append-only table. A checkpoint another process wrote meanwhile
    /// only makes the next one come early.
    last: Cell<Option<i64>>,
}

impl Checkpointer {
    pub fn new(key: PrivateKey, spool: &Path) -> Checkpointer {
        Checkpointer {
            key,
            head_file: head_file(spool),
            last: Cell::new(None),
        }
    }

    fn last_checkpoint(&self, ledger: &Ledger) -> Result<i64, AuditError> {
        if let Some(last) = self.last.get() {
            return Ok(last);
        }
        let last = ledger.newest_audit_row_of(CHECKPOINT)?.unwrap_or(0);
        self.last.set(Some(last));
        Ok(last)
    }

    /// A checkpoint, unless the newest row already is one.
    pub fn checkpoint(&self, ledger: &mut Ledger) -> Result<(), AuditError> {
        let Some((row, hash)) = ledger.audit_head()? else {
            return Ok(());
        };
        if row == self.last_checkpoint(ledger)? {
            return Ok(());
        }
        let message = Signed::message(row, &hash);
        let signature = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, message.as_bytes())
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(|e| AuditError::Sign(e.to_string()))?;
        let signed = Signed {
            row,
            hash,
            signature,
        };
        let detail = serde_json::to_value(&signed).expect("a checkpoint serialises");
        let checkpoint = ledger.audit(&AuditEvent {
            action: CHECKPOINT,
            detail: Some(detail),
            ..AuditEvent::default()
        })?;
        self.last.set(Some(checkpoint));
        write_head(&self.head_file, &Head { checkpoint, signed })
    }

    /// A checkpoint when [`CHECKPOINT_EVERY`] rows have been written since the last.
    pub fn checkpoint_if_due(&self, ledger: &mut Ledger) -> Result<(), AuditError> {
        let head = ledger.audit_head()?.map_or(0, |(id, _)| id);
        if head - self.last_checkpoint(ledger)? >= CHECKPOINT_EVERY {
            self.checkpoint(ledger)?;
        }
        Ok(())
    }
}

pub fn head_file(spool: &Path) -> PathBuf {
    spool.join(HEAD_FILE)
}

fn write_head(path: &Path, head: &Head) -> Result<(), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let mut json = serde_json::to_vec_pretty(head).expect("a head serialises");
    json.push(b'\n');
    file.write_all(&json).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        crate::spool::sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

/// The head file, if there is one.
pub fn read_head(spool: &Path) -> Result<Option<Head>, AuditError> {
    let path = head_file(spool);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Io {
                path,
                source: io::Error::other(e),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

/// What `audit verify` found.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub rows: u64,
    pub checkpoints: u64,
    /// The newest row a valid checkpoint covers.
    pub signed_up_to: Option<i64>,
    /// Rows after it, not yet covered by any checkpoint.
    pub unsigned_rows: u64,
    /// The first row found broken, and why; `None` when intact.
    pub broken: Option<Broken>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Broken {
    pub row: i64,
    pub reason: String,
}

/// Walks the chain and its checkpoints (each signature checked against
/// `keys`), then compares the newest row with `head`. `walked` is told
/// each row's id as it is checked.
pub fn verify(
    ledger: &Ledger,
    keys: &[PublicKey],
    head: Option<&Head>,
    mut walked: impl FnMut(i64),
) -> Result<Verified, AuditError> {
    let mut found = Verified {
        rows: 0,
        checkpoints: 0,
        signed_up_to: None,
        unsigned_rows: 0,
        broken: None,
    };
    let mut prev = (0i64, "0".repeat(64));
    ledger.walk_audit(|row| {
        if let Some(broken) = check_row(ledger, keys, &prev, &row, &mut found)? {
            found.broken = Some(broken);
            return Ok::<_, AuditError>(false);
        }
        found.rows += 1;
        walked(row.id);
        if found.signed_up_to == Some(row.id) {
            found.unsigned_rows = 0;
        } else {
            found.unsigned_rows += 1;
        }
        prev = (row.id, row.hash);
        Ok(true)
    })?;
    let last = prev.0;
    if found.broken.is_none()
        && let Some(head) = head
    {
        if last < head.checkpoint {
            found.broken = Some(Broken {
                row: last + 1,
                reason: format!(
                    "rows after {last} were removed: the last checkpoint written outside the ledger ({HEAD_FILE}) is row {}",
                    head.checkpoint
                ),
            });
        } else if ledger.audit_hash_of(head.signed.row)?.as_deref() != Some(&head.signed.hash) {
            found.broken = Some(Broken {
                row: head.signed.row,
                reason: format!("it is not the row the checkpoint in {HEAD_FILE} signed"),
            });
        }
    }
    Ok(found)
}

fn check_row(
    ledger: &Ledger,
    keys: &[PublicKey],
    prev: &(i64, String),
    row: &AuditRow,
    found: &mut Verified,
) -> Result<Option<Broken>, LedgerError> {
    let broken = |reason: String| {
        Ok(Some(Broken {
            row: row.id,
            reason,
        }))
    };
    if row.prev_hash != prev.1 {
        return if row.id > prev.0 + 1 {
            broken(format!(
                "it does not follow row {}: rows {} to {} were removed",
                prev.0,
                prev.0 + 1,
                row.id - 1
            ))
        } else {
            broken(format!(
                "it does not follow row {}: that row, or this one's link to it, was changed",
                prev.0
            ))
        };
    }
    if !row.verifies_after(&prev.1) {
        return broken("its content does not match its hash: it was changed".into());
    }
    if row.action != CHECKPOINT {
        return Ok(None);
    }
    let signed: Option<Signed> = row
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    let Some(signed) = signed else {
        return broken("a checkpoint without a readable signature".into());
    };
    if !signed.signed_by(keys) {
        return broken("a checkpoint whose signature is not by dropgate's signing key".into());
    }
    if ledger.audit_hash_of(signed.row)?.as_deref() != Some(&signed.hash) {
        // The chain was rebuilt after an edit: which row was edited is
        // not known, only that it lies after the last good checkpoint.
        let after = found.signed_up_to.unwrap_or(0);
        return Ok(Some(Broken {
            row: signed.row,
            reason: format!(
                "checkpoint row {} signed a different hash for it: it or a row before it (after row {after}) was changed and the chain rebuilt",
                row.id
            ),
        }));
    }
    found.checkpoints += 1;
    found.signed_up_to = Some(row.id);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use russh::keys::ssh_key::Algorithm;

    use super::*;
    use crate::ledger::SystemClock;

    #[test]
    fn checkpoints_come_when_due_and_never_twice_in_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let public = key.public_key().clone();
        let checkpointer = Checkpointer::new(key, dir.path());
        let mut ledger = Ledger::open_in_memory(Arc::new(SystemClock)).unwrap();
        for _ in 0..3 {
            ledger
                .audit(&AuditEvent {
                    action: "login",
                    ..AuditEvent::default()
                })
                .unwrap();
        }
        checkpointer.checkpoint_if_due(&mut ledger).unwrap();
        assert_eq!(ledger.audit_head().unwrap().unwrap().0, 3, "not due");
        checkpointer.checkpoint(&mut ledger).unwrap();
        checkpointer.checkpoint(&mut ledger).unwrap();
        assert_eq!(ledger.audit_head().unwrap().unwrap().0, 4, "one checkpoint");
        let head = read_head(dir.path()).unwrap().unwrap();
        assert_eq!((head.checkpoint, head.signed.row), (4, 3));
        let found = verify(&ledger, std::slice::from_ref(&public), Some(&head), |_| {}).unwrap();
        assert_eq!(
            (found.rows, found.checkpoints, found.unsigned_rows),
            (4, 1, 0)
        );
        assert_eq!(found.broken, None);
        // Another key did not sign it.
        let other = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let found = verify(&ledger, &[other.public_key().clone()], Some(&head), |_| {}).unwrap();
        assert_eq!(found.broken.unwrap().row, 4);
    }
}
