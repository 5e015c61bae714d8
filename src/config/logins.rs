//! The login settings sources and destinations share: endpoints,
//! passwords, FTP's TLS.

use super::*;

impl Checker<'_> {
    /// Checks a remote login shared by sources and destinations.
    pub(super) fn endpoint(
        &mut self,
        name: &str,
        kind: &Spanned<String>,
        login: raw::Login,
        base: &Path,
    ) -> Option<crate::remote::Endpoint> {
        let kind_name = kind.get_ref().as_str();
        if !matches!(kind_name, "sftp" | "ftp") {
            self.at(
                kind,
                format!("`{name}`: unknown kind `{kind_name}`, expected `sftp` or `ftp`"),
            );
            return None;
        }
        let sftp = kind_name == "sftp";
        let not_for = |checker: &mut Self, option: &str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                checker.error(
                    span,
                    format!("`{name}`: `{option}` does not apply to kind `{kind_name}`"),
                );
            }
        };
        if let Some(password) = &login.password {
            let instead = if sftp {
                "an `sftp` login uses a key (`private_key`)"
            } else {
                "put it in a file readable only by dropgate (`password_file`) or in an environment variable (`password_env`)"
            };
            self.at(
                password,
                format!("`{name}`: passwords are not written in the configuration; {instead}"),
            );
        }
        let spans_of_other_kind: Vec<(&str, Option<Range<usize>>)> = if sftp {
            vec![
                (
                    "password_file",
                    login.password_file.as_ref().map(|v| v.span()),
                ),
                (
                    "password_env",
                    login.password_env.as_ref().map(|v| v.span()),
                ),
                ("tls", login.tls.as_ref().map(|v| v.span())),
                ("ca_file", login.ca_file.as_ref().map(|v| v.span())),
                (
                    "certificate_fingerprint",
                    login.certificate_fingerprint.as_ref().map(|v| v.span()),
                ),
                (
                    "insecure_plaintext",
                    login.insecure_plaintext.as_ref().map(|v| v.span()),
                ),
                ("data_mode", login.data_mode.as_ref().map(|v| v.span())),
                ("listing", login.listing.as_ref().map(|v| v.span())),
            ]
        } else {
            vec![
                ("private_key", login.private_key.as_ref().map(|v| v.span())),
                ("host_key", login.host_key.as_ref().map(|v| v.span())),
            ]
        };
        for (option, span) in spans_of_other_kind {
            not_for(self, option, span);
        }
        let (Some(host), Some(user)) = (login.host, login.user) else {
            self.at(
                kind,
                format!("`{name}`: kind `{kind_name}` needs `host` and `user`"),
            );
            return None;
        };
        let folder = login.folder.unwrap_or_default();
        if sftp {
            let (Some(private_key), Some(host_key)) = (login.private_key, login.host_key) else {
                self.at(
                    kind,
                    format!("`{name}`: kind `sftp` needs `private_key` and `host_key`"),
                );
                return None;
            };
            if let Err(e) = russh::keys::ssh_key::PublicKey::from_openssh(host_key.get_ref().trim())
            {
                self.at(
                    &host_key,
                    format!("`{name}`: host_key is not an OpenSSH public key: {e}"),
                );
            }
            let port = self.port(login.port, 22);
            return Some(crate::remote::Endpoint::Sftp(
                crate::remote::sftp::Endpoint {
                    host: host.into_inner(),
                    port,
                    user: user.into_inner(),
                    private_key: join(base, private_key.get_ref()),
                    host_key: host_key.into_inner(),
                    folder,
                },
            ));
        }
        let password = self.password(name, kind, login.password_file, login.password_env, base);
        let tls = self.ftp_tls(
            name,
            login.tls,
            login.insecure_plaintext,
            login.ca_file,
            login.certificate_fingerprint,
            base,
        );
        let implicit = matches!(&tls, Some(Some(t)) if t.implicit);
        let port = self.port(login.port, if implicit { 990 } else { 21 });
        let data = match login.data_mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("passive") => crate::remote::ftp::DataMode::Passive,
            Some("extended_passive") => crate::remote::ftp::DataMode::ExtendedPassive,
            Some("active") => crate::remote::ftp::DataMode::Active,
            Some(other) => {
                let other = other.to_string();
                self.at(
                    login.data_mode.as_ref().expect("matched Some"),
                    format!("`{name}`: unknown data_mode `{other}`, expected `passive`, `extended_passive` or `active`"),
                );
                crate::remote::ftp::DataMode::Passive
            }
        };
        let listing = match login.listing.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("auto") => crate::remote::ftp::Listing::Auto,
            Some("mlsd") => crate::remote::ftp::Listing::Mlsd,
            Some("list") => crate::remote::ftp::Listing::List,
            Some(other) => {
                let other = other.to_string();
                self.at(
                    login.listing.as_ref().expect("matched Some"),
                    format!(
                        "`{name}`: unknown listing `{other}`, expected `auto`, `mlsd` or `list`"
                    ),
                );
                crate::remote::ftp::Listing::Auto
            }
        };
        Some(crate::remote::Endpoint::Ftp(crate::remote::ftp::Endpoint {
            host: host.into_inner(),
            port,
            user: user.into_inner(),
            password: password?,
            tls: tls?,
            data,
            listing,
            folder,
        }))
    }

    /// Reads an FTP password from its file or environment variable now, so
    /// a missing one is found by `check-config`, not at the first poll.
    pub(super) fn password(
        &mut self,
        name: &str,
        kind: &Spanned<String>,
        file: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
        base: &Path,
    ) -> Option<crate::remote::Secret> {
        match (file, env) {
            (Some(file), Some(_)) => {
                self.at(
                    &file,
                    format!("`{name}`: set `password_file` or `password_env`, not both"),
                );
                None
            }
            (Some(file), None) => {
                let path = join(base, file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let password = text.lines().next().unwrap_or("").to_string();
                        if password.is_empty() {
                            self.at(
                                &file,
                                format!("`{name}`: password file {} is empty", path.display()),
                            );
                            return None;
                        }
                        // Refused, as OpenSSH refuses a private key others can read.
                        use std::os::unix::fs::PermissionsExt;
                        if let Ok(meta) = std::fs::metadata(&path)
                            && meta.permissions().mode() & 0o077 != 0
                        {
                            self.at(
                                &file,
                                format!(
                                    "`{name}`: password file {} can be read by other users (mode {:o}); run `chmod 600 {}`",
                                    path.display(),
                                    meta.permissions().mode() & 0o777,
                                    path.display()
                                ),
                            );
                            return None;
                        }
                        Some(crate::remote::Secret::new(password))
                    }
                    Err(e) => {
                        self.at(
                            &file,
                            format!(
                                "`{name}`: cannot read password file {}: {e}",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some(env)) => match std::env::var(env.get_ref()) {
                Ok(password) if !password.is_empty() => Some(crate::remote::Secret::new(password)),
                _ => {
                    self.at(
                        &env,
                        format!(
                            "`{name}`: environment variable `{}` is not set (it must be set for `dropgate run` too)",
                            env.get_ref()
                        ),
                    );
                    None
                }
            },
            (None, None) => {
                self.at(
                    kind,
                    format!("`{name}`: kind `ftp` needs `password_file` or `password_env`"),
                );
                None
            }
        }
    }

    /// The TLS settings of an FTP login: `Some(None)` is plain FTP, allowed
    /// only with `insecure_plaintext = true`.
    pub(super) fn ftp_tls(
        &mut self,
        name: &str,
        mode: Option<Spanned<String>>,
        insecure_plaintext: Option<Spanned<bool>>,
        ca_file: Option<Spanned<String>>,
        fingerprint: Option<Spanned<String>>,
        base: &Path,
    ) -> Option<Option<crate::remote::ftp::Tls>> {
        use crate::remote::ftp::{Tls, Verifier, parse_fingerprint};
        let implicit = match mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("explicit") => false,
            Some("implicit") => true,
            Some("none") => {
                let mode = mode.as_ref().expect("matched Some");
                for (option, span) in [
                    ("ca_file", ca_file.as_ref().map(|v| v.span())),
                    (
                        "certificate_fingerprint",
                        fingerprint.as_ref().map(|v| v.span()),
                    ),
                ] {
                    if let Some(span) = span {
                        self.error(
                            span,
                            format!("`{name}`: `{option}` does not apply to `tls = \"none\"`"),
                        );
                    }
                }
                return match insecure_plaintext.as_ref().map(|v| *v.get_ref()) {
                    Some(true) => {
                        self.warning(
                            mode.span(),
                            format!("`{name}`: plain FTP: the password and every file cross the network unencrypted, readable and changeable by anyone on the path"),
                        );
                        Some(None)
                    }
                    _ => {
                        self.at(
                            mode,
                            format!("`{name}`: `tls = \"none\"` sends the password and every file unencrypted; if that is really intended, also set `insecure_plaintext = true`"),
                        );
                        None
                    }
                };
            }
            Some(other) => {
                let other = other.to_string();
                self.at(
                    mode.as_ref().expect("matched Some"),
                    format!(
                        "`{name}`: unknown tls `{other}`, expected `explicit`, `implicit` or `none`"
                    ),
                );
                return None;
            }
        };
        if let Some(flag) = &insecure_plaintext {
            self.at(
                flag,
                format!("`{name}`: `insecure_plaintext` applies only to `tls = \"none\"`"),
            );
        }
        let verifier = match (ca_file, fingerprint) {
            (Some(ca), Some(_)) => {
                self.at(
                    &ca,
                    format!("`{name}`: set `ca_file` or `certificate_fingerprint`, not both"),
                );
                return None;
            }
            (Some(ca), None) => {
                let path = join(base, ca.get_ref());
                match Verifier::from_ca_file(&path) {
                    Ok(v) => v,
                    Err(e) => {
                        self.at(&ca, format!("`{name}`: ca_file {}: {e}", path.display()));
                        return None;
                    }
                }
            }
            (None, Some(pin)) => match parse_fingerprint(pin.get_ref()) {
                Some(bytes) => Verifier::pinned(bytes),
                None => {
                    self.at(
                        &pin,
                        format!("`{name}`: certificate_fingerprint must be a SHA-256 fingerprint, 64 hex digits with or without colons (`openssl x509 -noout -fingerprint -sha256 -in cert.pem`)"),
                    );
                    return None;
                }
            },
            (None, None) => match Verifier::system() {
                Ok(v) => v,
                Err(e) => {
                    let span = mode.map(|m| m.span()).unwrap_or(0..0);
                    self.error(span, format!("`{name}`: {e}"));
                    return None;
                }
            },
        };
        Some(Some(Tls {
            implicit,
            verifier: std::sync::Arc::new(verifier),
        }))
    }
}
