//! `[sftp_server]` and partners' `sftp` accounts.

use super::*;

impl Checker<'_> {
    pub(super) fn partner_sftp(
        &mut self,
        partner: &str,
        raw: raw::PartnerSftp,
        base: &Path,
    ) -> PartnerSftp {
        let demo_key = raw.demo_key.as_deref().map(|p| join(base, p));
        let demo_public = demo_key
            .as_ref()
            .map(|p| PathBuf::from(format!("{}.pub", p.display())));
        if raw.authorized_keys.get_ref().is_empty() && raw.password_hash.is_none() {
            self.at(
                &raw.authorized_keys,
                format!("partner `{partner}`: `authorized_keys` needs at least one key"),
            );
        }
        let mut keys = Vec::new();
        for entry in raw.authorized_keys.get_ref() {
            let text = entry.get_ref().trim();
            let looks_like_key =
                text.starts_with("ssh-") || text.starts_with("ecdsa-") || text.starts_with("sk-");
            if looks_like_key {
                if let Err(e) = russh::keys::ssh_key::PublicKey::from_openssh(text) {
                    self.at(entry, format!("not an OpenSSH public key: {e}"));
                }
                keys.push(AuthorizedKeys::Line(text.to_string()));
                continue;
            }
            let path = join(base, text);
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    for (n, line) in content.lines().enumerate() {
                        if let Err(e) = parse_authorized_line(line) {
                            self.at(entry, format!("{}:{}: {e}", path.display(), n + 1));
                        }
                    }
                }
                // The demo key's public half is created on first run.
                Err(_) if demo_public.as_ref() == Some(&path) => {}
                Err(e) => self.at(entry, format!("cannot read {}: {e}", path.display())),
            }
            keys.push(AuthorizedKeys::File(path));
        }
        if let Some(hash) = &raw.password_hash
            && !hash.get_ref().starts_with("$argon2")
        {
            self.at(
                hash,
                "password_hash must be an argon2 hash (`$argon2id$...`); make one with `dropgate hash-password`",
            );
        }
        PartnerSftp {
            authorized_keys: keys,
            demo_key,
            outbox: raw.outbox.unwrap_or(false),
            password_hash: raw.password_hash.map(Spanned::into_inner),
        }
    }

    pub(super) fn sftp_server(&mut self, raw: raw::SftpServer) -> SftpServer {
        let listen = match raw.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 2222)),
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    self.at(
                        &l,
                        format!("`{}` is not an address like `127.0.0.1:2222`", l.get_ref()),
                    );
                    std::net::SocketAddr::from(([127, 0, 0, 1], 2222))
                }
            },
        };
        let max_file_size = match raw.max_file_size {
            None => DEFAULT_MAX_FILE_SIZE,
            Some(v) => match parse_bytes(v.get_ref()) {
                Some(n) if n > 0 => n,
                _ => {
                    self.at(
                        &v,
                        format!("`{}` is not a size like `10GiB` or `500MiB`", v.get_ref()),
                    );
                    DEFAULT_MAX_FILE_SIZE
                }
            },
        };
        let count = |checker: &mut Self, v: Option<Spanned<i64>>, default: i64, what: &str| match v
        {
            None => default,
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                checker.at(&n, format!("{what} must be between 1 and 1000000"));
                default
            }
        };
        let max_sessions_per_partner = count(
            self,
            raw.max_sessions_per_partner,
            8,
            "max_sessions_per_partner",
        ) as usize;
        let ban_after_failures =
            count(self, raw.ban_after_failures, 5, "ban_after_failures") as u32;
        let max_connections = count(self, raw.max_connections, 256, "max_connections") as usize;
        let max_connections_per_address = count(
            self,
            raw.max_connections_per_address,
            32,
            "max_connections_per_address",
        ) as usize;
        let max_handles_per_session = count(
            self,
            raw.max_handles_per_session,
            64,
            "max_handles_per_session",
        ) as usize;
        let max_open_files_per_partner = count(
            self,
            raw.max_open_files_per_partner,
            256,
            "max_open_files_per_partner",
        ) as usize;
        let max_unfinished_uploads = count(
            self,
            raw.max_unfinished_uploads,
            256,
            "max_unfinished_uploads",
        ) as usize;
        let unfinished_span = raw.max_unfinished_size.as_ref().map(Spanned::span);
        let max_unfinished_bytes = self.size(
            raw.max_unfinished_size,
            (20u64 << 30).max(max_file_size),
            1 << 50,
            "max_unfinished_size",
        );
        if let Some(span) = unfinished_span
            && max_unfinished_bytes < max_file_size
        {
            self.error(
                span,
                format!(
                    "max_unfinished_size must be at least max_file_size ({}), or no upload of the largest size could finish",
                    show_bytes(max_file_size)
                ),
            );
        }
        SftpServer {
            listen,
            max_file_size,
            max_sessions_per_partner,
            idle_timeout: self.duration(raw.idle_timeout, Duration::from_secs(600)),
            ban_after_failures,
            ban_window: self.duration(raw.ban_window, Duration::from_secs(600)),
            ban_time: self.duration(raw.ban_time, Duration::from_secs(3600)),
            max_connections,
            max_connections_per_address,
            login_timeout: self.positive_duration(
                raw.login_timeout,
                Duration::from_secs(60),
                "login_timeout",
            ),
            max_handles_per_session,
            max_open_files_per_partner,
            max_unfinished_uploads,
            max_unfinished_bytes,
            unfinished_upload_ttl: self.positive_duration(
                raw.unfinished_upload_ttl,
                Duration::from_secs(24 * 3600),
                "unfinished_upload_ttl",
            ),
        }
    }
}
