//! Which keys and passwords may log in as which partner.

use super::*;

/// Which keys may log in as which partner.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    pub(super) keys: HashMap<String, Vec<PublicKey>>,
    /// Partners that see a read-only `outbox/`.
    pub(super) outboxes: Vec<String>,
    /// Partners that see a read-only `receipts/`.
    pub(super) receipts: Vec<String>,
    /// Argon2 hashes of partners that may also log in with a password.
    pub(super) passwords: HashMap<String, String>,
}

impl Accounts {
    pub(super) fn load(config: &Config) -> Result<Accounts, ServerError> {
        let mut accounts = Accounts::default();
        for (partner, p) in &config.partners {
            let Some(sftp) = &p.sftp else { continue };
            if sftp.outbox {
                accounts.outboxes.push(partner.clone());
            }
            if p.receipts.is_some() {
                accounts.receipts.push(partner.clone());
            }
            if let Some(hash) = &sftp.password_hash {
                accounts.passwords.insert(partner.clone(), hash.clone());
            }
            let keys = accounts.keys.entry(partner.clone()).or_default();
            for source in &sftp.authorized_keys {
                let (path, text) = match source {
                    AuthorizedKeys::Line(line) => (PathBuf::from("(inline)"), line.clone()),
                    AuthorizedKeys::File(path) => (path.clone(), fs::read_to_string(path)?),
                };
                for line in text.lines() {
                    match parse_authorized_line(line) {
                        Ok(Some(key)) => keys.push(key),
                        Ok(None) => {}
                        Err(message) => {
                            return Err(ServerError::Keys {
                                partner: partner.clone(),
                                path,
                                message,
                            });
                        }
                    }
                }
            }
        }
        Ok(accounts)
    }

    /// Checks a password against the partner's argon2 hash (slow on purpose).
    pub(super) fn allows_password(&self, user: &str, password: &str) -> bool {
        use argon2::PasswordVerifier;
        self.passwords.get(user).is_some_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
    }

    pub(super) fn allows(&self, user: &str, key: &PublicKey) -> bool {
        self.keys
            .get(user)
            .is_some_and(|keys| keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    pub(super) fn knows(&self, user: &str) -> bool {
        self.keys.contains_key(user)
    }
}
