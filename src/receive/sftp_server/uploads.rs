//! Every partner's unfinished uploads, shared by all of its sessions.
//!
//! Each open for writing gets a staging file of its own, named by dropgate
//! (`spool/uploads/<partner>/<upload id>`), so two uploads never share bytes
//! whatever names the clients use. The name a client gave lives only here:
//! it is how an upload is resumed, renamed, listed or removed, and it never
//! reaches a log or the audit trail (uploads are named there by their id).
//!
//! The caps on a partner's unfinished uploads (how many, how large in all)
//! and on their age are kept here, so one runaway client cannot fill the
//! disk or lock its own partner out for longer than the time to live.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::receive::is_temporary_name;

/// What an upload may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another handle is writing this name.
    InUse,
    /// The partner already has the most unfinished uploads it may leave.
    TooMany(usize),
    /// A file may not be this large.
    TooLarge(u64),
    /// The partner's unfinished uploads would exceed their total size.
    PartnerFull(u64),
    /// The target name is taken by another unfinished upload.
    Exists,
    NotFound,
}

impl Refusal {
    /// The config key of the limit, for refusals that are limits.
    pub fn limit(self) -> Option<&'static str> {
        match self {
            Refusal::TooMany(_) => Some("max_unfinished_uploads"),
            Refusal::TooLarge(_) => Some("max_file_size"),
            Refusal::PartnerFull(_) => Some("max_unfinished_size"),
            _ => None,
        }
    }

    pub fn message(self) -> String {
        match self {
            Refusal::InUse => "another upload of this name is in progress".into(),
            Refusal::TooMany(n) => {
                format!("too many unfinished uploads ({n}): finish, rename or remove some first")
            }
            Refusal::TooLarge(max) => format!("files may not exceed {max} bytes"),
            Refusal::PartnerFull(max) => format!(
                "your unfinished uploads would exceed {max} bytes in all: finish or remove some first"
            ),
            Refusal::Exists => "a file of that name is already waiting".into(),
            Refusal::NotFound => "no such file".into(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_size: u64,
    pub max_unfinished: usize,
    pub max_unfinished_bytes: u64,
    pub time_to_live: Duration,
}

#[derive(Debug)]
struct Upload {
    id: String,
    /// Bytes accounted for: the furthest point written (or the size set).
    size: u64,
    /// A handle is writing it.
    open: bool,
    /// SHA-256 of its bytes when they were written in order by one handle.
    sha256: Option<String>,
    touched: Instant,
}

#[derive(Debug, Default)]
struct PartnerUploads {
    by_name: HashMap<String, Upload>,
    bytes: u64,
}

impl PartnerUploads {
    fn name_of(&self, id: &str) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, u)| u.id == id)
            .map(|(name, _)| name.as_str())
    }
}

/// An upload being written, as `open` hands it out.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub path: PathBuf,
    /// It continues an unfinished upload (its staging file exists).
    pub resumed: bool,
}

/// A finished upload taken out of the registry to be landed.
#[derive(Debug, Clone)]
pub struct Landing {
    pub id: String,
    /// Known when its bytes were written in order by one handle.
    pub sha256: Option<String>,
    pub size: u64,
}

/// What closing an upload's handle left.
#[derive(Debug)]
pub struct Closed {
    /// The upload's name now (it may have been renamed while open).
    pub name: String,
    /// Under a final name: taken out, in the same step, to be landed.
    pub land: Option<Landing>,
}

/// What a rename did.
#[derive(Debug)]
pub struct Renamed {
    /// The unfinished upload it replaced (`posix-rename`), for its file to go.
    pub replaced: Option<String>,
    /// Renamed to a final name and not open: taken out to be landed.
    pub land: Option<Landing>,
}

/// An unfinished upload that was discarded or expired.
#[derive(Debug, Clone)]
pub struct Discarded {
    pub partner: String,
    pub id: String,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    limits: Limits,
    partners: Mutex<HashMap<String, PartnerUploads>>,
}

impl Uploads {
    pub fn new(dir: &Path, limits: Limits) -> Uploads {
        Uploads {
            dir: dir.to_path_buf(),
            limits,
            partners: Mutex::new(HashMap::new()),
        }
    }

    /// The staging file of an upload.
    pub fn path(&self, partner: &str, id: &str) -> PathBuf {
        self.dir.join(partner).join(id)
    }

    fn with<T>(&self, partner: &str, f: impl FnOnce(&mut PartnerUploads) -> T) -> T {
        let mut partners = self.partners.lock().expect("uploads lock");
        f(partners.entry(partner.to_string()).or_default())
    }

    /// Starts writing `name`, or resumes the unfinished upload of that name.
    pub fn open(
        &self,
        partner: &str,
        name: &str,
        new_id: impl FnOnce() -> String,
    ) -> Result<Opened, Refusal> {
        let max = self.limits.max_unfinished;
        let opened = self.with(partner, |p| {
            if let Some(upload) = p.by_name.get_mut(name) {
                if upload.open {
                    return Err(Refusal::InUse);
                }
                upload.open = true;
                upload.sha256 = None;
                upload.touched = Instant::now();
                return Ok((upload.id.clone(), true));
            }
            if p.by_name.len() >= max {
                return Err(Refusal::TooMany(max));
            }
            let id = new_id();
            p.by_name.insert(
                name.to_string(),
                Upload {
                    id: id.clone(),
                    size: 0,
                    open: true,
                    sha256: None,
                    touched: Instant::now(),
                },
            );
            Ok((id, false))
        })?;
        let (id, resumed) = opened;
        Ok(Opened {
            path: self.path(partner, &id),
            id,
            resumed,
        })
    }

    /// Accounts for bytes written up to `end`, or refuses them.
    pub fn grow(&self, partner: &str, id: &str, end: u64) -> Result<(), Refusal> {
        if end > self.limits.max_file_size {
            return Err(Refusal::TooLarge(self.limits.max_file_size));
        }
        let max_total = self.limits.max_unfinished_bytes;
        self.with(partner, |p| {
            let total = p.bytes;
            let Some(upload) = p.by_name.values_mut().find(|u| u.id == id) else {
                return Err(Refusal::NotFound);
            };
            upload.touched = Instant::now();
            if end <= upload.size {
                return Ok(());
            }
            let more = end - upload.size;
            if total + more > max_total {
                return Err(Refusal::PartnerFull(max_total));
            }
            upload.size = end;
            p.bytes += more;
            Ok(())
        })
    }

    /// Sets an upload's size (a client truncating or extending it). By path
    /// (not by the handle writing it), an upload open elsewhere is refused:
    /// its writer's running hash would no longer match its bytes.
    pub fn resize(
        &self,
        partner: &str,
        id: &str,
        size: u64,
        by_handle: bool,
    ) -> Result<(), Refusal> {
        if size > self.limits.max_file_size {
            return Err(Refusal::TooLarge(self.limits.max_file_size));
        }
        let max_total = self.limits.max_unfinished_bytes;
        self.with(partner, |p| {
            let others = p.bytes;
            let Some(upload) = p.by_name.values_mut().find(|u| u.id == id) else {
                return Err(Refusal::NotFound);
            };
            if upload.open && !by_handle {
                return Err(Refusal::InUse);
            }
            let others = others - upload.size;
            if others + size > max_total {
                return Err(Refusal::PartnerFull(max_total));
            }
            upload.size = size;
            upload.sha256 = None;
            upload.touched = Instant::now();
            p.bytes = others + size;
            Ok(())
        })
    }

    /// The handle writing an upload was closed. Under a final name the
    /// upload is taken out to be landed in the same step, so no other
    /// session can reopen it in between.
    pub fn closed(&self, partner: &str, id: &str, sha256: Option<String>) -> Option<Closed> {
        self.with(partner, |p| {
            let name = p.name_of(id)?.to_string();
            let upload = p.by_name.get_mut(&name).expect("named");
            upload.open = false;
            upload.sha256 = sha256;
            upload.touched = Instant::now();
            let land = (!is_temporary_name(&name)).then(|| take(p, &name));
            Some(Closed { name, land })
        })
    }

    /// Puts back an upload whose landing failed, under `name`, for the
    /// client to try again. False when the name has been taken meanwhile:
    /// the caller removes the staging file (the client was told it failed).
    pub fn put_back(&self, partner: &str, name: &str, landing: Landing) -> bool {
        let max_total = self.limits.max_unfinished_bytes;
        self.with(partner, |p| {
            if p.by_name.contains_key(name) || p.bytes + landing.size > max_total {
                return false;
            }
            p.bytes += landing.size;
            p.by_name.insert(
                name.to_string(),
                Upload {
                    id: landing.id,
                    size: landing.size,
                    open: false,
                    sha256: None,
                    touched: Instant::now(),
                },
            );
            true
        })
    }

    /// Renames an unfinished upload. A name taken by another unfinished
    /// upload is refused unless `overwrite`, which replaces it: the
    /// replaced upload's id is returned, for its staging file to go.
    pub fn rename(
        &self,
        partner: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Renamed, Refusal> {
        self.with(partner, |p| {
            if !p.by_name.contains_key(from) {
                return Err(Refusal::NotFound);
            }
            if from == to {
                return Ok(Renamed {
                    replaced: None,
                    land: None,
                });
            }
            let replaced = match p.by_name.get(to) {
                None => None,
                Some(_) if !overwrite => return Err(Refusal::Exists),
                Some(target) if target.open => return Err(Refusal::InUse),
                Some(_) => {
                    let target = p.by_name.remove(to).expect("present");
                    p.bytes -= target.size;
                    Some(target.id)
                }
            };
            let mut upload = p.by_name.remove(from).expect("present");
            upload.touched = Instant::now();
            let ready = !upload.open && !is_temporary_name(to);
            p.by_name.insert(to.to_string(), upload);
            let land = ready.then(|| take(p, to));
            Ok(Renamed { replaced, land })
        })
    }

    /// Forgets an unfinished upload the client removes; returns its id.
    pub fn remove(&self, partner: &str, name: &str) -> Result<String, Refusal> {
        self.with(partner, |p| {
            match p.by_name.get(name) {
                None => return Err(Refusal::NotFound),
                Some(u) if u.open => return Err(Refusal::InUse),
                Some(_) => {}
            }
            let upload = p.by_name.remove(name).expect("present");
            p.bytes -= upload.size;
            Ok(upload.id)
        })
    }

    /// Whether the upload is under a final name (not a temporary one).
    pub fn is_final(&self, partner: &str, id: &str) -> bool {
        self.with(partner, |p| {
            p.name_of(id).is_some_and(|n| !is_temporary_name(n))
        })
    }

    /// The size of an upload, as far as it has been written.
    pub fn size(&self, partner: &str, id: &str) -> Option<u64> {
        self.with(partner, |p| {
            p.by_name.values().find(|u| u.id == id).map(|u| u.size)
        })
    }

    /// The id of the unfinished upload of this name, if any.
    pub fn find(&self, partner: &str, name: &str) -> Option<String> {
        self.with(partner, |p| p.by_name.get(name).map(|u| u.id.clone()))
    }

    /// The partner's unfinished uploads: (name, id).
    pub fn list(&self, partner: &str) -> Vec<(String, String)> {
        self.with(partner, |p| {
            p.by_name
                .iter()
                .map(|(name, u)| (name.clone(), u.id.clone()))
                .collect()
        })
    }

    /// The session writing an upload ended before closing it. One never
    /// written to is forgotten (`Some`, for its staging file to go); the
    /// rest stay, for the client to resume, until they expire.
    pub fn abandoned(&self, partner: &str, id: &str) -> Option<Discarded> {
        self.with(partner, |p| {
            let name = p.name_of(id)?.to_string();
            let upload = p.by_name.get_mut(&name).expect("named");
            upload.open = false;
            upload.touched = Instant::now();
            if upload.size > 0 {
                return None;
            }
            p.by_name.remove(&name);
            Some(Discarded {
                partner: partner.to_string(),
                id: id.to_string(),
                bytes: 0,
            })
        })
    }

    /// Forgets unfinished uploads untouched for longer than their time to
    /// live (and not open), returning them for their staging files to go.
    pub fn expire(&self, now: Instant) -> Vec<Discarded> {
        let ttl = self.limits.time_to_live;
        let mut partners = self.partners.lock().expect("uploads lock");
        let mut gone = Vec::new();
        for (partner, p) in partners.iter_mut() {
            let old: Vec<String> = p
                .by_name
                .iter()
                .filter(|(_, u)| !u.open && now.duration_since(u.touched) >= ttl)
                .map(|(name, _)| name.clone())
                .collect();
            for name in old {
                let upload = p.by_name.remove(&name).expect("present");
                p.bytes -= upload.size;
                gone.push(Discarded {
                    partner: partner.clone(),
                    id: upload.id,
                    bytes: upload.size,
                });
            }
        }
        gone
    }
}

/// Takes an upload out of the registry to be landed.
fn take(p: &mut PartnerUploads, name: &str) -> Landing {
    let upload = p.by_name.remove(name).expect("present");
    p.bytes -= upload.size;
    Landing {
        id: upload.id,
        sha256: upload.sha256,
        size: upload.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads(max_unfinished: usize, max_total: u64) -> Uploads {
        Uploads::new(
            Path::new("/spool/uploads"),
            Limits {
                max_file_size: 1000,
                max_unfinished,
                max_unfinished_bytes: max_total,
                time_to_live: Duration::from_secs(60),
            },
        )
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("u{n}")
        }
    }

    #[test]
    fn two_opens_of_one_name_never_share_a_file() {
        let u = uploads(10, 10_000);
        let mut id = ids();
        let first = u.open("p", "x.csv", &mut id).unwrap();
        assert_eq!(first.path, Path::new("/spool/uploads/p/u1"));
        assert_eq!(u.open("p", "x.csv", &mut id).unwrap_err(), Refusal::InUse);
        // Another partner's name is its own.
        assert!(!u.open("q", "x.csv", &mut id).unwrap().resumed);
        let closed = u.closed("p", &first.id, None).unwrap();
        assert_eq!(closed.name, "x.csv");
        // A final name is taken out to be landed in the same step.
        assert_eq!(closed.land.unwrap().id, first.id);
        let part = u.open("p", "y.part", &mut id).unwrap();
        assert!(u.closed("p", &part.id, None).unwrap().land.is_none());
        let again = u.open("p", "y.part", &mut id).unwrap();
        assert!(again.resumed);
        assert_eq!(again.id, part.id);
        assert_eq!(u.resize("p", &part.id, 1, false), Err(Refusal::InUse));
        assert_eq!(u.resize("p", &part.id, 1, true), Ok(()));
    }

    #[test]
    fn counts_and_sizes_are_capped_per_partner() {
        let u = uploads(2, 1500);
        let mut id = ids();
        let a = u.open("p", "a", &mut id).unwrap();
        let b = u.open("p", "b", &mut id).unwrap();
        assert_eq!(u.open("p", "c", &mut id).unwrap_err(), Refusal::TooMany(2));
        assert_eq!(
            u.grow("p", &a.id, 1001).unwrap_err(),
            Refusal::TooLarge(1000)
        );
        u.grow("p", &a.id, 1000).unwrap();
        assert_eq!(
            u.grow("p", &b.id, 501).unwrap_err(),
            Refusal::PartnerFull(1500)
        );
        u.grow("p", &b.id, 500).unwrap();
        // Taking one out for landing frees its share.
        let landing = u.closed("p", &a.id, None).unwrap().land.unwrap();
        assert_eq!(landing.size, 1000);
        u.grow("p", &b.id, 1000).unwrap();
        // A failed landing puts it back only while there is room for it.
        assert!(!u.put_back("p", "a", landing.clone()));
        u.resize("p", &b.id, 10, true).unwrap();
        assert!(u.put_back("p", "a", landing));
        assert_eq!(u.open("p", "c", &mut id).unwrap_err(), Refusal::TooMany(2));
    }

    #[test]
    fn rename_refuses_a_waiting_name_unless_told_to_overwrite() {
        let u = uploads(10, 10_000);
        let mut id = ids();
        let a = u.open("p", "a.part", &mut id).unwrap();
        let b = u.open("p", "b.part", &mut id).unwrap();
        u.closed("p", &a.id, None);
        u.closed("p", &b.id, None);
        assert_eq!(
            u.rename("p", "a.part", "b.part", false).unwrap_err(),
            Refusal::Exists
        );
        let renamed = u.rename("p", "a.part", "b.part", true).unwrap();
        assert_eq!(renamed.replaced, Some(b.id));
        assert!(renamed.land.is_none());
        assert_eq!(u.find("p", "b.part"), Some(a.id.clone()));
        let renamed = u.rename("p", "b.part", "b.csv", false).unwrap();
        assert_eq!(renamed.land.unwrap().id, a.id);
        assert_eq!(u.find("p", "b.csv"), None);
        assert_eq!(
            u.rename("p", "nope", "c", false).unwrap_err(),
            Refusal::NotFound
        );
    }

    #[test]
    fn empty_abandoned_uploads_go_and_old_ones_expire() {
        let u = uploads(10, 10_000);
        let mut id = ids();
        let empty = u.open("p", "empty", &mut id).unwrap();
        let half = u.open("p", "half", &mut id).unwrap();
        u.grow("p", &half.id, 10).unwrap();
        assert!(u.abandoned("p", &empty.id).is_some());
        assert!(u.abandoned("p", &half.id).is_none());
        assert_eq!(u.list("p").len(), 1);
        assert!(u.expire(Instant::now()).is_empty());
        let gone = u.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].bytes, 10);
        assert!(u.list("p").is_empty());
    }
}
