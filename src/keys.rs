//! Keys: the age identity that decrypts incoming files, the key that signs
//! exports and the embedded SFTP server's host key. Created when missing,
//! private files mode 0600, never overwritten unless forced.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no AGE-SECRET-KEY-1 line found")]
    NoIdentity { path: PathBuf },
    #[error("{path}: invalid age identity: {message}")]
    BadIdentity { path: PathBuf, message: String },
    #[error("{path}: cannot create an SSH key: {message}")]
    Ssh { path: PathBuf, message: String },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: not an OpenSSH private key dropgate can use: {message}")]
    BadSshKey { path: PathBuf, message: String },
    #[error(
        "{path} is an RSA key, and dropgate does not make RSA signatures (its RSA code is not constant-time: RUSTSEC-2023-0071); make an Ed25519 key with `ssh-keygen -t ed25519 -f {path}`"
    )]
    Rsa { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a key file holds, so how it is made and checked.
#[derive(Clone, Copy)]
enum KeyKind {
    AgeIdentity,
    /// A partner's demonstration identity, with its recipient beside it.
    DemoAgeIdentity,
    /// An OpenSSH key dropgate signs with.
    Ssh,
}

impl KeyKind {
    fn create(self, path: &Path) -> Result<(), KeyError> {
        match self {
            KeyKind::AgeIdentity => write_age_identity(path),
            KeyKind::DemoAgeIdentity => write_demo_age_identity(path),
            KeyKind::Ssh => write_ssh_key(path),
        }
    }
}

/// What `ensure` did with one key.
#[derive(Debug)]
pub struct KeyStatus {
    pub what: &'static str,
    pub path: PathBuf,
    pub created: bool,
}

/// Creates every key the configuration names that does not exist yet
/// (or all of them, with `force`).
pub fn ensure(config: &Config, force: bool) -> Result<Vec<KeyStatus>, KeyError> {
    let keys = &config.keys;
    let mut done = Vec::new();
    let wanted: [(&'static str, &Path, KeyKind); 3] = [
        ("age identity", &keys.age_identity, KeyKind::AgeIdentity),
        ("signing key", &keys.signing_key, KeyKind::Ssh),
        ("SSH host key", &keys.ssh_host_key, KeyKind::Ssh),
    ];
    let demo_keys = config
        .partners
        .values()
        .filter_map(|p| p.sftp.as_ref()?.demo_key.as_deref())
        .map(|path| ("partner demo key", path, KeyKind::Ssh));
    let demo_identities = config
        .partners
        .values()
        .filter_map(|p| p.age.as_ref()?.demo_identity.as_deref())
        .map(|path| ("partner demo age identity", path, KeyKind::DemoAgeIdentity));
    for (what, path, kind) in wanted.into_iter().chain(demo_keys).chain(demo_identities) {
        let exists = path.exists();
        if force && exists && path == keys.signing_key {
            retire_signing_key(path)?;
        }
        if force || !exists {
            kind.create(path)?;
        }
        // Refused, as OpenSSH refuses a private key others can read.
        private_only(path)?;
        if let KeyKind::Ssh = kind {
            ssh_private_key(path)?;
        }
        done.push(KeyStatus {
            what,
            path: path.to_path_buf(),
            created: force || !exists,
        });
    }
    Ok(done)
}

/// The private keys dropgate logs in to remote SFTP servers with (polled
/// sources and destinations): each present, its owner's alone and usable,
/// so a bad one stops `dropgate run` at once rather than failing every poll.
pub fn check_login_keys(config: &Config) -> Result<(), KeyError> {
    let remote_sources = config.sources.values().filter_map(|s| match &s.kind {
        crate::config::SourceKind::Remote(settings) => Some(&settings.endpoint),
        crate::config::SourceKind::Local(_) => None,
    });
    let destinations = config.destinations.values().map(|d| &d.endpoint);
    for endpoint in remote_sources.chain(destinations) {
        if let crate::remote::Endpoint::Sftp(sftp) = endpoint {
            private_only(&sftp.private_key)?;
            ssh_private_key(&sftp.private_key)?;
        }
    }
    Ok(())
}

/// Reads an OpenSSH private key dropgate signs with; RSA is refused.
pub fn ssh_private_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let key = PrivateKey::read_openssh_file(path).map_err(|e| KeyError::BadSshKey {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
        return Err(KeyError::Rsa {
            path: path.to_path_buf(),
        });
    }
    Ok(key)
}

/// A private file must be readable by its owner alone.
fn private_only(path: &Path) -> Result<(), KeyError> {
    let mode = fs::metadata(path)
        .map_err(io_error(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Where the public halves of replaced signing keys are kept, one OpenSSH
/// line each: an export signed before a `keygen --force` is still the
/// daemon's own when it looks at it again after a stop.
pub fn retired_signing_keys(signing_key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.retired", signing_key.display()))
}

fn retire_signing_key(path: &Path) -> Result<(), KeyError> {
    let ssh = |message: String| KeyError::Ssh {
        path: path.to_path_buf(),
        message,
    };
    let key = PrivateKey::read_openssh_file(path).map_err(|e| ssh(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| ssh(e.to_string()))?;
    let retired = retired_signing_keys(path);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&retired)
        .map_err(io_error(&retired))?;
    let when = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    std::io::Write::write_all(&mut file, format!("{public} retired-{when}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&retired))
}

fn private_file(path: &Path) -> Result<fs::File, KeyError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
    }
    // Written beside and renamed, so a half-written key never replaces a good one.
    let _ = fs::remove_file(path.with_extension("new"));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path.with_extension("new"))
        .map_err(io_error(path))
}

fn commit(path: &Path, mut file: fs::File, bytes: &[u8]) -> Result<(), KeyError> {
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    fs::rename(path.with_extension("new"), path).map_err(io_error(path))
}

fn write_age_identity(path: &Path) -> Result<(), KeyError> {
    let identity = age::x25519::Identity::generate();
    let text = format!(
        "# created: {}\n# public key: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    let file = private_file(path)?;
    commit(path, file, text.as_bytes())
}

/// A partner's demonstration identity, with its recipient beside it in `.pub`.
fn write_demo_age_identity(path: &Path) -> Result<(), KeyError> {
    write_age_identity(path)?;
    let identity = load_identity(path)?;
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    fs::write(&pub_path, format!("{}\n", identity.to_public())).map_err(io_error(&pub_path))
}

fn write_ssh_key(path: &Path) -> Result<(), KeyError> {
    let ssh = |message: String| KeyError::Ssh {
        path: path.to_path_buf(),
        message,
    };
    let key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| ssh(e.to_string()))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| ssh(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| ssh(e.to_string()))?;
    let file = private_file(path)?;
    commit(path, file, private.as_bytes())?;
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    fs::write(&pub_path, format!("{public} dropgate\n")).map_err(io_error(&pub_path))
}

/// Reads an age identity file as written by `age-keygen` or `dropgate keygen`.
pub fn load_identity(path: &Path) -> Result<age::x25519::Identity, KeyError> {
    private_only(path)?;
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or_else(|| KeyError::NoIdentity {
            path: path.to_path_buf(),
        })?;
    age::x25519::Identity::from_str(line).map_err(|message| KeyError::BadIdentity {
        path: path.to_path_buf(),
        message: message.to_string(),
    })
}
