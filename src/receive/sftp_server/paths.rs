//! Client paths inside a partner's virtual root: `inbox/`, and the
//! read-only `outbox/` and `receipts/` of partners that have them; anything
//! that could leave it is refused.

use russh_sftp::protocol::StatusCode;
use russh_sftp::server::StatusReply;

pub(super) const INBOX: &str = "inbox";

/// A read-only folder dropgate fills for the partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shelf {
    /// Exports addressed to the partner, each a folder.
    Outbox,
    /// A receipt for each file the partner sent.
    Receipts,
}

impl Shelf {
    pub(super) fn name(self) -> &'static str {
        match self {
            Shelf::Outbox => "outbox",
            Shelf::Receipts => "receipts",
        }
    }
}

/// Longest file name accepted (as most file systems).
const MAX_NAME_BYTES: usize = 255;

const MAX_PATH_BYTES: usize = 4096;

/// Where a client path points inside a partner's virtual root.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    Root,
    Inbox,
    InboxFile(String),
    Shelf(Shelf),
    /// A file or folder on a shelf, or a file in such a folder: `name` or
    /// `folder/name`.
    ShelfEntry(Shelf, String),
}

/// Resolves a client path against the virtual root; anything that could
/// leave it is refused.
pub(super) fn resolve(path: &str, shelves: &[Shelf]) -> Result<Place, StatusReply> {
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
        [first, rest @ ..] if rest.len() <= 2 => {
            let Some(shelf) = shelves.iter().copied().find(|s| s.name() == *first) else {
                return Err(StatusCode::NoSuchFile.with_message("no such file"));
            };
            Ok(match rest {
                [] => Place::Shelf(shelf),
                [name] => Place::ShelfEntry(shelf, (*name).to_string()),
                [folder, name] => Place::ShelfEntry(shelf, format!("{folder}/{name}")),
                _ => unreachable!("at most two parts"),
            })
        }
        _ => Err(StatusCode::NoSuchFile.with_message("no such file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_virtual_root() {
        assert_eq!(resolve("/", &[]).unwrap(), Place::Root);
        assert_eq!(resolve(".", &[]).unwrap(), Place::Root);
        assert_eq!(resolve("inbox", &[]).unwrap(), Place::Inbox);
        assert_eq!(resolve("/inbox/./", &[]).unwrap(), Place::Inbox);
        assert_eq!(
            resolve("//inbox//a.csv", &[]).unwrap(),
            Place::InboxFile("a.csv".into())
        );
        for bad in [
            "/inbox/../etc/passwd",
            "..",
            "/inbox/a\0b",
            &"x".repeat(5000),
        ] {
            assert_eq!(
                resolve(bad, &[]).unwrap_err().status_code,
                StatusCode::PermissionDenied,
                "{bad:?}"
            );
        }
        assert_eq!(
            resolve(&format!("/inbox/{}", "n".repeat(300)), &[])
                .unwrap_err()
                .status_code,
            StatusCode::PermissionDenied
        );
        assert_eq!(
            resolve("/outbox/x.csv", &[Shelf::Outbox]).unwrap(),
            Place::ShelfEntry(Shelf::Outbox, "x.csv".into())
        );
        assert_eq!(
            resolve("/outbox/export-1/manifest.json", &[Shelf::Outbox]).unwrap(),
            Place::ShelfEntry(Shelf::Outbox, "export-1/manifest.json".into())
        );
        assert_eq!(
            resolve("/receipts", &[Shelf::Outbox, Shelf::Receipts]).unwrap(),
            Place::Shelf(Shelf::Receipts)
        );
        for elsewhere in ["/etc/passwd", "/inbox/sub/a.csv", "/outbox", "/receipts/a"] {
            assert_eq!(
                resolve(elsewhere, &[]).unwrap_err().status_code,
                StatusCode::NoSuchFile,
                "{elsewhere}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, a path resolves inside the virtual
        /// root: every name it keeps is one plain name, never `..`, never
        /// empty, never with a NUL, within the length caps.
        #[test]
        fn no_client_path_leaves_the_virtual_root(
            path in "(/|\\.\\.|\\.|inbox|outbox|receipts|[a-z]{1,3}|\\x00|%2e|\\\\|[^/]{250,260}){0,8}",
        ) {
            let shelves = [Shelf::Outbox, Shelf::Receipts];
            let plain = |name: &str| {
                !name.is_empty()
                    && name != "."
                    && name != ".."
                    && !name.contains('/')
                    && !name.contains('\0')
                    && name.len() <= MAX_NAME_BYTES
            };
            match resolve(&path, &shelves) {
                Err(_) => {}
                Ok(Place::Root | Place::Inbox | Place::Shelf(_)) => {}
                Ok(Place::InboxFile(name)) => proptest::prop_assert!(plain(&name), "{name:?}"),
                Ok(Place::ShelfEntry(_, entry)) => {
                    proptest::prop_assert!(entry.split('/').count() <= 2);
                    for name in entry.split('/') {
                        proptest::prop_assert!(plain(name), "{entry:?}");
                    }
                }
            }
        }
    }
}
