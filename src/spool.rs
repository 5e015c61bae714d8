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

/// Whether the spool's file system has room for new files: its free space
/// against `[daemon] min_free_space`. Free space is read at most every
/// [`Room::RECHECK`]; a write that found the disk full counts as no room
/// until it is read again. No room is logged when it begins and once a
/// minute while it lasts, and room returning once, so a full disk does not
/// flood the log with one line per file.
#[derive(Debug)]
pub struct Room {
    root: PathBuf,
    min_free: AtomicU64,
    state: std::sync::Mutex<RoomState>,
}

#[derive(Debug, Default)]
struct RoomState {
    read_at: Option<std::time::Instant>,
    free: u64,
    /// Since when there has been no room, and when that was last logged.
    full: Option<(std::time::Instant, std::time::Instant)>,
}

impl Room {
    const RECHECK: std::time::Duration = std::time::Duration::from_millis(250);
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn new(spool: &Spool, min_free: u64) -> Room {
        Room {
            root: spool.root.clone(),
            min_free: AtomicU64::new(min_free),
            state: std::sync::Mutex::new(RoomState::default()),
        }
    }

    /// The free space to keep from now on (a reloaded configuration's).
    pub fn keep_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// Whether `bytes` more fit above the free space kept.
    pub fn admits(&self, bytes: u64) -> bool {
        let min_free = self.min_free.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut state = self.state.lock().expect("room lock");
        if state
            .read_at
            .is_none_or(|at| now.duration_since(at) >= Self::RECHECK)
        {
            // Unreadable (the spool's folder gone): taken as no room.
            state.free = space(&self.root).map_or(0, |(free, _)| free);
            state.read_at = Some(now);
        }
        let fits = state.free >= min_free.saturating_add(bytes);
        match (fits, state.full) {
            (true, Some(_)) => {
                tracing::info!(
                    free_bytes = state.free,
                    "the spool has room again; taking new files"
                );
                state.full = None;
            }
            (false, None) => {
                tracing::warn!(
                    free_bytes = state.free,
                    min_free_space = min_free,
                    needed_bytes = bytes,
                    "the spool has no room: new files wait where they are, SFTP uploads are refused and polls paused until there is"
                );
                state.full = Some((now, now));
            }
            (false, Some((since, logged))) if now.duration_since(logged) >= Self::LOG_EVERY => {
                tracing::warn!(
                    free_bytes = state.free,
                    min_free_space = min_free,
                    waiting_for = ?now.duration_since(since),
                    "the spool still has no room"
                );
                state.full = Some((since, now));
            }
            _ => {}
        }
        crate::metrics::METRICS
            .spool_full
            .set(i64::from(state.full.is_some()));
        fits
    }

    /// A write found the file system full: no room until free space is read again.
    pub fn exhausted(&self) {
        let mut state = self.state.lock().expect("room lock");
        state.free = 0;
        state.read_at = Some(std::time::Instant::now());
    }

    /// Whether the last reading found no room.
    pub fn is_full(&self) -> bool {
        self.state.lock().expect("room lock").full.is_some()
    }
}

/// The file system of `dir`: bytes an unprivileged writer may still use, and its size.
pub fn space(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // The field types are 32-bit on some targets.
    #[allow(clippy::unnecessary_cast)]
    let block = stat.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    let (available, blocks) = (stat.f_bavail as u64, stat.f_blocks as u64);
    Ok((
        available.saturating_mul(block),
        blocks.saturating_mul(block),
    ))
}

/// Whether an error says the disk is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC) || error.raw_os_error() == Some(libc::EDQUOT)
}
