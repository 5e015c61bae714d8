//! One logged-in partner's SFTP session: its `inbox/` (write-only) and, for
//! partners that have one, its read-only `outbox/`.

mod handler;
mod staged;

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use russh_sftp::protocol::{
    Attrs, Data, File as SftpFile, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use sha2::{Digest, Sha256};

use super::paths::{INBOX, Place, Shelf, resolve};
use super::uploads::{Landing, Opened, Refusal};
use super::{FileSlot, SOURCE, Shared};
use crate::digest::hex;
use crate::land::{Arrival, Handover, Landed};
use crate::ledger::AuditEvent;
use staged::{HeldSlot, Staged};

/// Most bytes sent in one read reply: what fits in the 256 KiB packet
/// clients accept, with room for the reply's own fields.
const MAX_READ_BYTES: u64 = 255 * 1024;
/// Refusals of one session written to the audit trail; the rest are counted
/// and the count audited when the session ends, so a client cannot flood it.
const REFUSALS_AUDITED: u32 = 16;
/// Uploads of this session a later STAT still answers for.
const RECENTLY_RECEIVED: usize = 64;
/// The rename that may replace its target (OpenSSH's extension).
const POSIX_RENAME: &str = "posix-rename@openssh.com";

enum Open {
    Upload {
        /// dropgate's id of the upload (its staging file's name).
        id: String,
        staged: Staged,
        /// SHA-256 of what was written, while writes have come in order
        /// from the start; saves reading the file again to land it.
        digest: Option<(Sha256, u64)>,
        /// A write was refused: the upload is incomplete and is not landed.
        refused: bool,
        _slot: FileSlot,
    },
    Download {
        name: String,
        file: File,
        sent: u64,
        _slot: FileSlot,
    },
    Listing(Option<Vec<SftpFile>>),
}

/// The SFTP session of one logged-in partner.
pub(super) struct Inbox {
    shared: Arc<Shared>,
    partner: String,
    peer: String,
    /// The partner's read-only folders (outbox, receipts) that it has.
    shelves: Vec<(Shelf, PathBuf)>,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Uploads of this session already taken by dropgate, by name: clients
    /// that check an upload's size afterwards (paramiko's `put`) still see it.
    received: VecDeque<(String, FileAttributes)>,
    refusals: u32,
}

impl Inbox {
    pub(super) fn new(
        shared: Arc<Shared>,
        partner: String,
        peer: String,
        shelves: Vec<(Shelf, PathBuf)>,
    ) -> Result<Inbox, std::io::Error> {
        fs::create_dir_all(shared.uploads.path(&partner, ""))?;
        for (_, folder) in &shelves {
            fs::create_dir_all(folder)?;
        }
        Ok(Inbox {
            shelves,
            shared,
            partner,
            peer,
            handles: HashMap::new(),
            next_handle: 0,
            received: VecDeque::new(),
            refusals: 0,
        })
    }

    fn audit(&self, action: &str, file_id: Option<i64>, detail: Option<serde_json::Value>) {
        self.shared.audit(AuditEvent {
            partner: Some(&self.partner),
            remote: Some(&self.peer),
            action,
            file_id,
            detail,
        });
    }

    /// Resolves a client path, auditing any attempt to leave the root.
    fn resolve(&mut self, operation: &str, path: &str) -> Result<Place, StatusReply> {
        let shelves: Vec<Shelf> = self.shelves.iter().map(|(s, _)| *s).collect();
        resolve(path, &shelves).map_err(|e| self.refuse(operation, e))
    }

    /// Audits a refused operation (permission denied) and returns the reply.
    fn refuse(&mut self, operation: &str, reply: StatusReply) -> StatusReply {
        if reply.status_code == StatusCode::PermissionDenied {
            self.refusals += 1;
            if self.refusals <= REFUSALS_AUDITED {
                tracing::warn!(partner = %self.partner, remote = %self.peer, operation, "SFTP operation refused");
                let reason = reply.error_message.clone().unwrap_or_default();
                self.audit(
                    "refused",
                    None,
                    Some(serde_json::json!({ "operation": operation, "reason": reason })),
                );
            }
        }
        reply
    }

    /// A cap was reached: refused with a status, audited once per session
    /// and limit.
    fn refuse_limit(
        &mut self,
        operation: &str,
        limit: &'static str,
        message: String,
    ) -> StatusReply {
        self.refusals += 1;
        if self.refusals <= REFUSALS_AUDITED {
            tracing::warn!(partner = %self.partner, remote = %self.peer, operation, limit, "SFTP operation refused: limit reached");
            self.audit(
                "refused_limit",
                None,
                Some(serde_json::json!({ "operation": operation, "limit": limit })),
            );
        }
        StatusCode::Failure.with_message(message)
    }

    fn refusal(&mut self, operation: &str, refusal: Refusal) -> StatusReply {
        match refusal.limit() {
            Some(limit) => self.refuse_limit(operation, limit, refusal.message()),
            None if refusal == Refusal::NotFound => {
                StatusCode::NoSuchFile.with_message(refusal.message())
            }
            None => StatusCode::Failure.with_message(refusal.message()),
        }
    }

    /// A handle for `open`, within the session's and the process's caps.
    fn handle(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        handle
    }

    /// Room for one more handle, and an open file when it needs one.
    fn room_for_handle(
        &mut self,
        operation: &str,
        file: bool,
    ) -> Result<Option<FileSlot>, StatusReply> {
        let max = self.shared.limits.max_handles_per_session;
        if self.handles.len() >= max {
            return Err(self.refuse_limit(
                operation,
                "max_handles_per_session",
                format!("too many open handles ({max}): close some first"),
            ));
        }
        if !file {
            return Ok(None);
        }
        match self.shared.open_file(&self.partner) {
            Ok(slot) => Ok(Some(slot)),
            Err(limit) => Err(self.refuse_limit(
                operation,
                limit,
                "too many files open; close some or try again shortly".into(),
            )),
        }
    }

    /// The folder behind a shelf the partner has (resolved only then).
    fn shelf(&self, shelf: Shelf) -> &std::path::Path {
        self.shelves
            .iter()
            .find(|(s, _)| *s == shelf)
            .map(|(_, folder)| folder.as_path())
            .expect("resolved only for the partner's shelves")
    }

    /// A file or folder on a shelf; never one still being written (those
    /// are hidden behind a leading dot until complete).
    fn shelved(&self, shelf: Shelf, name: &str) -> Result<fs::Metadata, StatusReply> {
        if name.split('/').any(|part| part.starts_with('.')) {
            return Err(StatusCode::NoSuchFile.with_message("no such file"));
        }
        let meta = fs::symlink_metadata(self.shelf(shelf).join(name)).map_err(io_failure)?;
        let nested = name.contains('/');
        if !(meta.is_file() || meta.is_dir() && !nested) {
            return Err(StatusCode::NoSuchFile.with_message("no such file"));
        }
        Ok(meta)
    }

    /// An unfinished upload's attributes: its staging file's, or what has
    /// been written of it while it is held in memory.
    fn unfinished_attrs(&self, upload: &str) -> Option<FileAttributes> {
        let uploads = &self.shared.uploads;
        match fs::metadata(uploads.path(&self.partner, upload)) {
            Ok(meta) => Some(file_attrs(&meta)),
            Err(_) => uploads
                .size(&self.partner, upload)
                .map(|size| upload_attrs(size, None)),
        }
    }

    fn recently_received(&self, name: &str) -> Option<FileAttributes> {
        self.received
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, attrs)| attrs.clone())
    }

    /// Lands a finished upload (taken out of the registry as `name`), from
    /// its staging file or, when `held`, from memory; answers only once it
    /// is durable and recorded. Should landing fail, the upload is put back
    /// as `retry_as` (with its staging file) for the client to try again.
    async fn complete(
        &mut self,
        name: &str,
        landing: Landing,
        retry_as: &str,
        held: Option<Vec<u8>>,
    ) -> Result<(), StatusReply> {
        let uploads = &self.shared.uploads;
        let path = uploads.path(&self.partner, &landing.id);
        let (handover, attrs) = match held {
            Some(body) => {
                let attrs = upload_attrs(body.len() as u64, Some(SystemTime::now()));
                (Handover::Held { body }, Some(attrs))
            }
            // The upload is dropgate's own file: moved into the spool, not copied.
            None => (
                Handover::Move {
                    sha256: landing.sha256.clone(),
                },
                fs::metadata(&path).ok().map(|meta| file_attrs(&meta)),
            ),
        };
        let arrival = Arrival {
            path: path.clone(),
            name: name.to_string(),
            handover,
            taken_from: None,
        };
        let intake = self.shared.intake.clone();
        let partner = self.partner.clone();
        let remote = self.peer.clone();
        let landed = tokio::task::spawn_blocking(move || {
            let result = intake.land_upload(SOURCE, &partner, &remote, &arrival);
            (result, arrival)
        })
        .await;
        let (result, arrival) = match landed {
            Ok((result, arrival)) => (result, Some(arrival)),
            Err(_) => (
                Err(crate::land::LandError::Io(std::io::Error::other(
                    "landing stopped",
                ))),
                None,
            ),
        };
        match result {
            Ok(landed) => {
                tracing::info!(partner = %self.partner, remote = %self.peer, file_id = landed.id(), "SFTP upload received");
                if let Some(attrs) = attrs {
                    if self.received.len() == RECENTLY_RECEIVED {
                        self.received.pop_front();
                    }
                    self.received.push_back((name.to_string(), attrs));
                }
                if let Landed::AlreadyReceived(id) = landed {
                    // Not new, so not audited with the landing.
                    self.audit("upload", Some(id), None);
                }
                Ok(())
            }
            Err(e) => {
                // The staging file is back in place (written now, if the
                // upload was held): the client may try again, unless the
                // name has been reused meanwhile.
                let staged = match arrival.map(|a| a.handover) {
                    Some(Handover::Held { body, .. }) => fs::write(&path, body).is_ok(),
                    _ => path.exists(),
                };
                let landing = Landing {
                    size: attrs.and_then(|a| a.size).unwrap_or(landing.size),
                    ..landing
                };
                if !staged || !uploads.put_back(&self.partner, retry_as, landing) {
                    let _ = fs::remove_file(&path);
                }
                // No room is logged by the intake, once for all uploads.
                if !matches!(e, crate::land::LandError::NoRoom) {
                    tracing::warn!(partner = %self.partner, error = %e, "SFTP upload could not be landed");
                }
                Err(StatusCode::Failure.with_message(format!("not received: {e}")))
            }
        }
    }

    /// Starts or resumes writing an upload.
    fn open_upload(&mut self, name: String, pflags: OpenFlags) -> Result<String, StatusReply> {
        if !self.shared.intake.has_room(0) {
            return Err(self.refuse_limit(
                "open",
                "min_free_space",
                "the spool has no room; try again later".into(),
            ));
        }
        let slot_for_file = self.room_for_handle("open", true)?.expect("a file slot");
        let shared = self.shared.clone();
        let opened = shared
            .uploads
            .open(&self.partner, &name, || shared.intake.new_upload_id())
            .map_err(|r| self.refusal("open", r))?;
        let Opened { id, path, resumed } = opened;
        // A new upload starts in memory; its staging file is written only
        // if it needs one.
        if !resumed && let Some(slot) = HeldSlot::take(&shared.held_uploads) {
            return Ok(self.handle(Open::Upload {
                id,
                staged: Staged::held(slot),
                digest: None,
                refused: false,
                _slot: slot_for_file,
            }));
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create(!resumed)
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .open(&path);
        let refuse_exclusive = resumed && pflags.contains(OpenFlags::EXCLUDE);
        let file = match file {
            Ok(file) if !refuse_exclusive => file,
            result => {
                if let Some(gone) = shared.uploads.abandoned(&self.partner, &id) {
                    let _ = fs::remove_file(shared.uploads.path(&self.partner, &gone.id));
                }
                return Err(match result {
                    Ok(_) => {
                        StatusCode::Failure.with_message("a file of that name is already waiting")
                    }
                    Err(e) => io_failure(e),
                });
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if pflags.contains(OpenFlags::TRUNCATE) {
            let _ = shared.uploads.resize(&self.partner, &id, 0, true);
        }
        let digest = (size == 0).then(|| (Sha256::new(), 0));
        Ok(self.handle(Open::Upload {
            id,
            staged: Staged::File(file),
            digest,
            refused: false,
            _slot: slot_for_file,
        }))
    }
}

/// Regular files in a folder, as SFTP directory entries.
fn listing(dir: &std::path::Path) -> Result<Vec<SftpFile>, StatusReply> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_failure)?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if meta.is_file() {
            entries.push(SftpFile::new(&name, file_attrs(&meta)));
        } else if meta.is_dir() {
            entries.push(SftpFile::new(&name, directory_attrs()));
        }
    }
    Ok(entries)
}

fn directory_attrs() -> FileAttributes {
    FileAttributes {
        permissions: Some(0o040_700),
        ..FileAttributes::empty()
    }
}

fn file_attrs(meta: &fs::Metadata) -> FileAttributes {
    upload_attrs(meta.len(), meta.modified().ok())
}

fn upload_attrs(size: u64, modified: Option<SystemTime>) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        permissions: Some(0o100_600),
        mtime: modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as u32),
        ..FileAttributes::empty()
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn io_failure(e: std::io::Error) -> StatusReply {
    match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile.with_message("no such file"),
        std::io::ErrorKind::StorageFull => {
            StatusCode::Failure.with_message("the server's disk is full; try again later")
        }
        _ => StatusCode::Failure.with_message("the server could not do this"),
    }
}

/// Reads one SSH string (u32 length, bytes) from `data`.
fn ssh_string(data: &mut &[u8]) -> Option<String> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    *data = rest;
    String::from_utf8(text.to_vec()).ok()
}

impl Inbox {
    /// RENAME: a temporary name to its final one, or any unfinished upload
    /// to another name. A name taken by another unfinished upload is refused
    /// (SFTP v3) unless the client asked to overwrite it.
    async fn rename_upload(
        &mut self,
        id: u32,
        oldpath: &str,
        newpath: &str,
        overwrite: bool,
    ) -> Result<Status, StatusReply> {
        let (Place::InboxFile(from), Place::InboxFile(to)) = (
            self.resolve("rename", oldpath)?,
            self.resolve("rename", newpath)?,
        ) else {
            return Err(self.refuse(
                "rename",
                StatusCode::PermissionDenied.with_message("only files in inbox/ can be renamed"),
            ));
        };
        let renamed = self
            .shared
            .uploads
            .rename(&self.partner, &from, &to, overwrite)
            .map_err(|r| self.refusal("rename", r))?;
        if let Some(replaced) = renamed.replaced {
            let _ = fs::remove_file(self.shared.uploads.path(&self.partner, &replaced));
        }
        // Still open: the handle's CLOSE lands it.
        if let Some(landing) = renamed.land {
            self.complete(&to, landing, &from, None).await?;
        }
        Ok(ok(id))
    }

    /// SETSTAT/FSETSTAT: a size truncates or extends an unfinished upload
    /// for real, within the caps; times and modes are accepted and ignored,
    /// so clients that preserve them (`put -p`) still work.
    fn set_size(
        &mut self,
        upload: &str,
        attrs: &FileAttributes,
        by_handle: bool,
    ) -> Result<(), StatusReply> {
        let Some(size) = attrs.size else {
            return Ok(());
        };
        self.shared
            .uploads
            .resize(&self.partner, upload, size, by_handle)
            .map_err(|r| self.refusal("setstat", r))?;
        let path = self.shared.uploads.path(&self.partner, upload);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_failure)?;
        file.set_len(size).map_err(io_failure)?;
        for open in self.handles.values_mut() {
            if let Open::Upload { id, digest, .. } = open
                && id == upload
            {
                *digest = None;
            }
        }
        Ok(())
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Uploads still open are kept for the client to resume or remove
        // (until they expire); nothing of them enters the pipeline. One
        // never written to is discarded at once.
        let shared = self.shared.clone();
        let uploads = &shared.uploads;
        for (_, open) in std::mem::take(&mut self.handles) {
            if let Open::Upload { id, mut staged, .. } = open {
                let bytes = staged.len().unwrap_or(0);
                let discarded = uploads.abandoned(&self.partner, &id).is_some();
                let path = uploads.path(&self.partner, &id);
                if discarded {
                    let _ = fs::remove_file(path);
                } else if let Err(e) = staged.file(&path) {
                    // Held in memory: kept for resuming only if it can be written.
                    tracing::warn!(partner = %self.partner, upload = %id, error = %e, "could not keep an incomplete SFTP upload");
                }
                tracing::warn!(partner = %self.partner, remote = %self.peer, upload = %id, bytes, discarded, "SFTP upload incomplete: connection closed during upload");
                self.audit(
                    "upload_incomplete",
                    None,
                    Some(
                        serde_json::json!({ "upload": id, "bytes": bytes, "discarded": discarded }),
                    ),
                );
            }
        }
        if self.refusals > REFUSALS_AUDITED {
            self.audit(
                "refusals_not_listed",
                None,
                Some(serde_json::json!({ "count": self.refusals - REFUSALS_AUDITED })),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_rename_arguments_are_two_ssh_strings() {
        let mut data = Vec::new();
        for s in ["inbox/a.part", "inbox/a"] {
            data.extend((s.len() as u32).to_be_bytes());
            data.extend(s.as_bytes());
        }
        let mut rest = data.as_slice();
        assert_eq!(ssh_string(&mut rest).as_deref(), Some("inbox/a.part"));
        assert_eq!(ssh_string(&mut rest).as_deref(), Some("inbox/a"));
        assert_eq!(ssh_string(&mut &[0, 0, 0, 9, b'x'][..]), None);
    }
}
