//! SFTP client: log in with a key to a server whose host key is pinned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::ssh_key::{HashAlg, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{RemoteError, RemoteFile};

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub private_key: PathBuf,
    /// The server's public key as in `known_hosts` (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// Remote folder files are taken from or put into.
    pub folder: String,
}

impl Endpoint {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn path(&self, name: &str) -> String {
        if self.folder.is_empty() || self.folder == "." {
            name.to_string()
        } else {
            format!("{}/{name}", self.folder.trim_end_matches('/'))
        }
    }
}

/// Accepts the server only if it presents the pinned key.
struct Pinned {
    pinned: PublicKey,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.seen.lock().expect("seen lock") = Some("a certificate".into());
            return Ok(false);
        };
        if key.key_data() == self.pinned.key_data() {
            return Ok(true);
        }
        *self.seen.lock().expect("seen lock") = Some(key.fingerprint(HashAlg::Sha256).to_string());
        Ok(false)
    }
}

/// A logged-in SFTP session.
pub struct Connection {
    endpoint: Endpoint,
    _ssh: client::Handle<Pinned>,
    sftp: SftpSession,
}

/// Maps an SFTP error; `name` (a file name, or a folder from the config)
/// is taken out of the server's message.
fn transfer(
    operation: &'static str,
    name: &str,
) -> impl FnOnce(russh_sftp::client::error::Error) -> RemoteError {
    let name = name.to_string();
    move |e| {
        let refused = matches!(e, russh_sftp::client::error::Error::Status(_));
        let message = super::without_name(e.to_string(), &name);
        if refused {
            RemoteError::Refused { operation, message }
        } else {
            RemoteError::Transfer { operation, message }
        }
    }
}

/// An I/O error on an open remote file: the connection, not the file.
fn io_failure(operation: &'static str, name: &str) -> impl FnOnce(std::io::Error) -> RemoteError {
    let name = name.to_string();
    move |e| RemoteError::Transfer {
        operation,
        message: super::without_name(e.to_string(), &name),
    }
}

impl Connection {
    pub async fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Connection, RemoteError> {
        let address = endpoint.address();
        let pinned =
            PublicKey::from_openssh(endpoint.host_key.trim()).map_err(|e| RemoteError::Key {
                path: "host_key".into(),
                message: e.to_string(),
            })?;
        let key = russh::keys::load_secret_key(&endpoint.private_key, None).map_err(|e| {
            RemoteError::Key {
                path: endpoint.private_key.display().to_string(),
                message: e.to_string(),
            }
        })?;
        // Refused at start too (`keys::check_login_keys`); the file may have
        // been replaced since.
        if matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. }) {
            return Err(RemoteError::Key {
                path: endpoint.private_key.display().to_string(),
                message: "an RSA key: dropgate does not make RSA signatures".into(),
            });
        }
        let seen = Arc::new(Mutex::new(None));
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(timeout),
            nodelay: true,
            window_size: 16 << 20,
            ..Default::default()
        });
        let handler = Pinned {
            pinned: pinned.clone(),
            seen: seen.clone(),
        };
        let connecting = client::connect(config, (endpoint.host.as_str(), endpoint.port), handler);
        let mut ssh = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(ssh)) => ssh,
            Ok(Err(e)) => {
                if let Some(seen) = seen.lock().expect("seen lock").take() {
                    return Err(RemoteError::HostKeyMismatch {
                        address,
                        seen,
                        pinned: pinned.fingerprint(HashAlg::Sha256).to_string(),
                    });
                }
                return Err(RemoteError::Connect {
                    address,
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(RemoteError::Connect {
                    address,
                    message: format!("no answer within {timeout:?}"),
                });
            }
        };
        let connect_error = |e: russh::Error| RemoteError::Connect {
            address: endpoint.address(),
            message: e.to_string(),
        };
        let hash = ssh
            .best_supported_rsa_hash()
            .await
            .map_err(connect_error)?
            .flatten();
        let auth = ssh
            .authenticate_publickey(
                &endpoint.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(connect_error)?;
        if !auth.success() {
            return Err(RemoteError::Auth {
                address: endpoint.address(),
                user: endpoint.user.clone(),
                with: "key",
            });
        }
        let channel = ssh.channel_open_session().await.map_err(connect_error)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(connect_error)?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(transfer("start SFTP", ""))?;
        // Every request, not just the connect, within the configured time.
        sftp.set_timeout(timeout.as_secs().max(1));
        Ok(Connection {
            endpoint: endpoint.clone(),
            _ssh: ssh,
            sftp,
        })
    }

    /// Regular files in the endpoint's folder.
    pub async fn list(&self) -> Result<Vec<RemoteFile>, RemoteError> {
        let folder = if self.endpoint.folder.is_empty() {
            ".".to_string()
        } else {
            self.endpoint.folder.clone()
        };
        let entries = self
            .sftp
            .read_dir(folder.clone())
            .await
            .map_err(transfer("list", &folder))?;
        Ok(entries
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let meta = e.metadata();
                RemoteFile {
                    name: e.file_name(),
                    size: meta.size.unwrap_or(0),
                    mtime: meta.mtime.unwrap_or(0),
                }
            })
            .collect())
    }

    /// Downloads `name` into `local` (created, fsynced); returns the bytes written.
    pub async fn download(
        &self,
        name: &str,
        local: &Path,
        at_most: u64,
    ) -> Result<u64, RemoteError> {
        let path = self.endpoint.path(name);
        let mut remote = self
            .sftp
            .open(path.clone())
            .await
            .map_err(transfer("open", &path))?;
        let mut output = super::LocalCopy::create(local).await?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = remote
                .read(&mut buffer)
                .await
                .map_err(io_failure("read", &path))?;
            if n == 0 {
                break;
            }
            let n = super::within_cap(n, total, at_most);
            output.write_all(&buffer[..n]).await?;
            total += n as u64;
            if total > at_most {
                return Err(RemoteError::SizeMismatch {
                    operation: "download",
                    local: total,
                    remote: at_most,
                });
            }
        }
        output.finish().await?;
        Ok(total)
    }

    pub async fn remove(&self, name: &str) -> Result<(), RemoteError> {
        let path = self.endpoint.path(name);
        self.sftp
            .remove_file(path.clone())
            .await
            .map_err(transfer("remove", &path))
    }

    /// Moves `name` into `folder` (relative to the endpoint's folder unless absolute).
    pub async fn move_to(&self, name: &str, folder: &str) -> Result<(), RemoteError> {
        let from = self.endpoint.path(name);
        let to = if folder.starts_with('/') {
            format!("{}/{name}", folder.trim_end_matches('/'))
        } else {
            self.endpoint
                .path(&format!("{}/{name}", folder.trim_end_matches('/')))
        };
        self.sftp
            .rename(from, to.clone())
            .await
            .map_err(transfer("move to", &to))
    }

    /// Creates `name` (a folder, relative to the endpoint's folder) unless it exists.
    pub async fn make_folder(&self, name: &str) -> Result<(), RemoteError> {
        let path = self.endpoint.path(name);
        if self.sftp.try_exists(path.clone()).await.unwrap_or(false) {
            return Ok(());
        }
        self.sftp
            .create_dir(path.clone())
            .await
            .map_err(transfer("create folder", &path))
    }

    /// Uploads under a temporary name, checks the size, then renames to
    /// `name`, so the receiver never sees a partial file. Returns the size.
    pub(super) async fn put(
        &self,
        mut chunks: super::Chunks,
        name: &str,
    ) -> Result<u64, RemoteError> {
        let temporary = self.endpoint.path(&super::temporary_name(name));
        let target = self.endpoint.path(name);
        let mut remote = self
            .sftp
            .create(temporary.clone())
            .await
            .map_err(transfer("create", &temporary))?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await? {
            remote
                .write_all(chunk)
                .await
                .map_err(io_failure("write", &temporary))?;
            size += chunk.len() as u64;
        }
        remote
            .shutdown()
            .await
            .map_err(io_failure("close", &temporary))?;
        let held = self
            .sftp
            .metadata(temporary.clone())
            .await
            .map_err(transfer("stat", &temporary))?
            .size
            .unwrap_or(0);
        if held != size {
            let _ = self.sftp.remove_file(temporary.clone()).await;
            return Err(RemoteError::SizeMismatch {
                operation: "upload",
                local: size,
                remote: held,
            });
        }
        // SFTP v3 rename fails when the target exists; a delivery replaces it.
        if self.sftp.try_exists(target.clone()).await.unwrap_or(false) {
            self.sftp
                .remove_file(target.clone())
                .await
                .map_err(transfer("replace", &target))?;
        }
        self.sftp
            .rename(temporary, target.clone())
            .await
            .map_err(transfer("rename to", &target))?;
        Ok(size)
    }
}
