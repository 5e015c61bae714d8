//! Public keys in OpenSSH `authorized_keys` form, as partners' SFTP
//! accounts list them.

use std::str::FromStr;

use russh::keys::ssh_key::{self, PublicKey};

/// Reads one `authorized_keys` line; `None` for blank lines and comments.
pub fn parse_authorized_line(line: &str) -> Result<Option<PublicKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    ssh_key::authorized_keys::Entry::from_str(line)
        .map(|entry| Some(entry.public_key().clone()))
        .map_err(|e| format!("not an authorized_keys line: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_lines_with_options_and_comments() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl care@example";
        assert!(parse_authorized_line(key).unwrap().is_some());
        assert!(
            parse_authorized_line(&format!("from=\"127.0.0.1\" {key}"))
                .unwrap()
                .is_some()
        );
        assert!(parse_authorized_line("# comment").unwrap().is_none());
        assert!(parse_authorized_line("").unwrap().is_none());
        assert!(parse_authorized_line("ssh-ed25519 notbase64").is_err());
    }
}
