//! The spool: dropgate's own copies of every file, in folders by state.
//!
//! A payload is named by dropgate (never by the sender) and moves between
//! folders only after the ledger has recorded the state that puts it there;
//! [`Spool::find`] looks in every folder, so a move interrupted by a crash
//! is finished by [`Spool::settle`] on the next start.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::ledger::FileState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Copies being written, not yet in the ledger.
    Tmp,
    /// Received, waiting to be processed.
    Incoming,
    /// Loaded or duplicate originals, kept until retention.
    Archive,
    /// Rejected originals with their reports.
    Quarantine,
}

impl Area {
    const ALL: [Area; 4] = [Area::Incoming, Area::Tmp, Area::Quarantine, Area::Archive];

    fn folder(self) -> &'static str {
        match self {
            Area::Tmp => "tmp",
            Area::Incoming => "incoming",
            Area::Archive => "archive",
            Area::Quarantine => "quarantine",
        }
    }

    pub fn for_state(state: FileState) -> Area {
        match state {
            FileState::Received => Area::Incoming,
            FileState::Loaded | FileState::Duplicate => Area::Archive,
            FileState::Quarantined => Area::Quarantine,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Spool {
    pub fn new(root: &Path) -> Spool {
        Spool {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the folders when missing; the spool itself only its owner
    /// may enter (it holds the ledger and every payload).
    pub fn ensure(&self) -> io::Result<()> {
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)?;
        }
        for area in Area::ALL {
            fs::create_dir_all(self.dir(area))?;
        }
        Ok(())
    }

    pub fn dir(&self, area: Area) -> PathBuf {
        self.root.join(area.folder())
    }

    pub fn path(&self, area: Area, spool_name: &str) -> PathBuf {
        self.dir(area).join(spool_name)
    }

    /// A fresh payload name: time of landing, process and sequence, unique on this host.
    pub fn new_name(&self, now: DateTime<Utc>) -> String {
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{:x}-{:x}",
            now.format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id(),
            seq
        )
    }

    /// Where a payload is now.
    pub fn find(&self, spool_name: &str) -> Option<(Area, PathBuf)> {
        Area::ALL.into_iter().find_map(|area| {
            let path = self.path(area, spool_name);
            path.exists().then_some((area, path))
        })
    }

    /// A received file's payload, normally in `incoming/`. The lander moves it there
    /// from `tmp/` just after the ledger commit, so processing may come
    /// first: then processing moves it, and whichever rename comes second
    /// finds it already gone. Made durable by [`Spool::sync`].
    pub fn received_payload(&self, spool_name: &str) -> Option<PathBuf> {
        let incoming = self.path(Area::Incoming, spool_name);
        if incoming.exists() {
            return Some(incoming);
        }
        match fs::rename(self.path(Area::Tmp, spool_name), &incoming) {
            Ok(()) => Some(incoming),
            // Moved meanwhile, or replayed from quarantine/ where it stays
            // until processed again.
            Err(_) => self.find(spool_name).map(|(_, path)| path),
        }
    }

    /// Moves a payload to the folder for `state`. Returns its path. The move
    /// is made durable by [`Spool::sync`], once for many moves; a move lost
    /// to a crash is only repeated, since the ledger already holds the state.
    pub fn settle(&self, spool_name: &str, state: FileState) -> io::Result<PathBuf> {
        let target = Area::for_state(state);
        let to = self.path(target, spool_name);
        match self.find(spool_name) {
            Some((area, _)) if area == target => Ok(to),
            Some((_, from)) => {
                fs::rename(&from, &to)?;
                Ok(to)
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("payload {spool_name} is in no spool folder"),
            )),
        }
    }

    /// Makes every move and new name in the spool folders durable.
    pub fn sync(&self) -> io::Result<()> {
        for area in Area::ALL {
            sync_dir(&self.dir(area))?;
        }
        Ok(())
    }

    /// Where uploads to the embedded SFTP server are written until complete:
    /// one folder per partner.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Exports addressed to partners, one folder each, served read-only.
    /// Lock files: one per export schedule, held while a run is made.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// `receipts/<partner>/`: a receipt for each file a partner sent.
    pub fn receipts(&self) -> PathBuf {
        self.root.join("receipts")
    }

    /// Where a routed file is decrypted (and encrypted again) before it is sent.
    pub fn routing(&self) -> PathBuf {
        self.root.join("routing")
    }

    pub fn outboxes(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// Where a polled source writes its downloads before they are landed.
    pub fn downloads(&self, source: &str) -> PathBuf {
        self.root.join("pull").join(source)
    }

    pub fn report_path(&self, spool_name: &str) -> PathBuf {
        self.dir(Area::Quarantine)
            .join(format!("{spool_name}.report.json"))
    }
}

/// Makes a folder's entries (new names, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes a small file durably: temporary name, fsync, rename, fsync folder.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("writing");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}
