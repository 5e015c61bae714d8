//! Client paths inside a partner's virtual root: `inbox/`, `outbox/` and
//! nothing else; anything that could leave it is refused.

use russh_sftp::protocol::StatusCode;
use russh_sftp::server::StatusReply;

pub(super) const INBOX: &str = "inbox";

pub(super) const OUTBOX: &str = "outbox";

/// Longest file name accepted (as most file systems).
const MAX_NAME_BYTES: usize = 255;

const MAX_PATH_BYTES: usize = 4096;

/// Where a client path points inside a partner's virtual root.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    Root,
    Inbox,
    InboxFile(String),
    Outbox,
    /// An export's folder, or a file in the outbox or in such a folder:
    /// `name` or `folder/name`.
    OutboxEntry(String),
}

/// Resolves a client path against the virtual root; anything that could
/// leave it is refused.
pub(super) fn resolve(path: &str, outbox: bool) -> Result<Place, StatusReply> {
    let refuse = |why: &str| StatusCode::PermissionDenied.with_message(why);
    if path.contains('\0') {
        return Err(refuse("NUL in path"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(refuse("path too long"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(refuse("`..` is not allowed")),
            p if p.len() > MAX_NAME_BYTES => return Err(refuse("name too long")),
            p => parts.push(p),
        }
    }
    match parts.as_slice() {
        [] => Ok(Place::Root),
        [INBOX] => Ok(Place::Inbox),
        [INBOX, name] => Ok(Place::InboxFile((*name).to_string())),
        [OUTBOX] if outbox => Ok(Place::Outbox),
        [OUTBOX, name] if outbox => Ok(Place::OutboxEntry((*name).to_string())),
        [OUTBOX, folder, name] if outbox => Ok(Place::OutboxEntry(format!("{folder}/{name}"))),
        _ => Err(StatusCode::NoSuchFile.with_message("no such file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_virtual_root() {
        assert_eq!(resolve("/", false).unwrap(), Place::Root);
        assert_eq!(resolve(".", false).unwrap(), Place::Root);
        assert_eq!(resolve("inbox", false).unwrap(), Place::Inbox);
        assert_eq!(resolve("/inbox/./", false).unwrap(), Place::Inbox);
        assert_eq!(
            resolve("//inbox//a.csv", false).unwrap(),
            Place::InboxFile("a.csv".into())
        );
        for bad in [
            "/inbox/../etc/passwd",
            "..",
            "/inbox/a\0b",
            &"x".repeat(5000),
        ] {
            assert_eq!(
                resolve(bad, false).unwrap_err().status_code,
                StatusCode::PermissionDenied,
                "{bad:?}"
            );
        }
        assert_eq!(
            resolve(&format!("/inbox/{}", "n".repeat(300)), false)
                .unwrap_err()
                .status_code,
            StatusCode::PermissionDenied
        );
        assert_eq!(
            resolve("/outbox/x.csv", true).unwrap(),
            Place::OutboxEntry("x.csv".into())
        );
        assert_eq!(
            resolve("/outbox/export-1/manifest.json", true).unwrap(),
            Place::OutboxEntry("export-1/manifest.json".into())
        );
        for elsewhere in ["/etc/passwd", "/inbox/sub/a.csv", "/outbox", "/outbox/a/b"] {
            assert_eq!(
                resolve(elsewhere, false).unwrap_err().status_code,
                StatusCode::NoSuchFile,
                "{elsewhere}"
            );
        }
    }
}
