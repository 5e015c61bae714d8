//! An upload's bytes while its handle is open: in memory while the upload
//! is small and memory allows, in its staging file otherwise.
//!
//! A small upload closed under its final name never touches the disk before
//! it is landed: its bytes go into the ledger with its `received` row (see
//! `land`), so the client's answer waits for one flush instead of three.
//! Anything else (a temporary name, a resumed upload, a session that ends
//! mid-upload, a landing that fails) gets its staging file, written from
//! memory when it is needed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest upload kept in memory while it is written: the largest the
/// ledger keeps.
pub(super) const HELD_MAX: u64 = crate::land::HELD_MAX_BYTES;
/// Uploads kept in memory at once, across every session: at most 32 MiB.
/// Beyond it uploads are written to their staging files, as large ones are.
pub(super) const HELD_UPLOADS: usize = 512;

/// A place among the [`HELD_UPLOADS`], given back when dropped.
pub(super) struct HeldSlot(Arc<AtomicUsize>);

impl HeldSlot {
    /// A place, if one is free.
    pub(super) fn take(held: &Arc<AtomicUsize>) -> Option<HeldSlot> {
        held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < HELD_UPLOADS).then_some(n + 1)
        })
        .ok()
        .map(|_| HeldSlot(held.clone()))
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) enum Staged {
    Held { bytes: Vec<u8>, _slot: HeldSlot },
    File(File),
}

impl Staged {
    pub(super) fn held(slot: HeldSlot) -> Staged {
        Staged::Held {
            bytes: Vec::new(),
            _slot: slot,
        }
    }

    /// Writes at `offset`; past [`HELD_MAX`] the upload moves to its
    /// staging file at `path`.
    pub(super) fn write_at(&mut self, data: &[u8], offset: u64, path: &Path) -> io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if let Staged::Held { bytes, .. } = self
            && end <= HELD_MAX
        {
            let (start, end) = (offset as usize, end as usize);
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
            return Ok(());
        }
        self.file(path)?.write_all_at(data, offset)
    }

    /// The upload's size.
    pub(super) fn len(&self) -> io::Result<u64> {
        match self {
            Staged::Held { bytes, .. } => Ok(bytes.len() as u64),
            Staged::File(file) => file.metadata().map(|m| m.len()),
        }
    }

    /// The staging file at `path`, written from memory first if the
    /// upload was held.
    pub(super) fn file(&mut self, path: &Path) -> io::Result<&File> {
        if let Staged::Held { bytes, .. } = self {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            file.write_all(bytes)?;
            *self = Staged::File(file);
        }
        match self {
            Staged::File(file) => Ok(file),
            Staged::Held { .. } => unreachable!("written out above"),
        }
    }

    /// The bytes, if the upload is held in memory.
    pub(super) fn take_held(&mut self) -> Option<Vec<u8>> {
        match self {
            Staged::Held { bytes, .. } => Some(std::mem::take(bytes)),
            Staged::File(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_upload_stays_in_memory_and_a_large_one_moves_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u1");
        let held = Arc::new(AtomicUsize::new(0));
        let mut staged = Staged::held(HeldSlot::take(&held).unwrap());
        staged.write_at(b"world", 6, &path).unwrap();
        staged.write_at(b"hello ", 0, &path).unwrap();
        assert_eq!(staged.len().unwrap(), 11);
        assert!(!path.exists());
        staged.write_at(b"!", HELD_MAX, &path).unwrap();
        assert!(staged.take_held().is_none());
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, HELD_MAX + 1);
        assert_eq!(&on_disk[..11], b"hello world");
        assert_eq!(on_disk[HELD_MAX as usize], b'!');
        drop(staged);
        assert_eq!(held.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn memory_holds_a_bounded_number_of_uploads() {
        let held = Arc::new(AtomicUsize::new(0));
        let slots: Vec<HeldSlot> = (0..HELD_UPLOADS)
            .map(|_| HeldSlot::take(&held).unwrap())
            .collect();
        assert!(HeldSlot::take(&held).is_none());
        drop(slots);
        assert!(HeldSlot::take(&held).is_some());
    }
}
