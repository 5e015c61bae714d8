//! The embedded SFTP server: partners log in with their keys and drop files
//! into their `inbox/`.
//!
//! Each partner sees a virtual root holding `inbox/`; nothing else of the
//! machine is reachable. `..`, NUL and over-long names are refused, and no
//! symbolic link can be made or followed. Uploads are written to
//! `spool/uploads/<partner>/`; an upload is complete when the client closes
//! its handle under a final name, or renames a temporary name (`.part`,
//! `.filepart`, `.tmp`, leading dot) to a final one. Only then is it landed,
//! and the client's CLOSE or RENAME is answered only once the file is durable
//! and `received`, so a success reply means dropgate has the file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use russh::keys::ssh_key::{self, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use russh_sftp::protocol::{
    Attrs, Data, File as SftpFile, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
    Version,
};
use russh_sftp::server::StatusReply;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::is_temporary_name;
use crate::config::{AuthorizedKeys, Config, SftpServer};
use crate::daemon::Lander;
use crate::land::{Arrival, Handover, Landed, hex};
use crate::ledger::AuditEvent;

/// Most bytes sent in one read reply: what fits in the 256 KiB packet
/// clients accept, with room for the reply's own fields.
const MAX_READ_BYTES: u64 = 255 * 1024;

/// The source name uploads are recorded under in the ledger.
pub const SOURCE: &str = "sftp-server";
const INBOX: &str = "inbox";
const OUTBOX: &str = "outbox";
/// Longest file name accepted (as most file systems).
const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("SFTP host key {path}: {message}")]
    HostKey { path: PathBuf, message: String },
    #[error("partner `{partner}`: authorized keys {path}: {message}")]
    Keys {
        partner: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SFTP server: {0}")]
    Io(#[from] std::io::Error),
}

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

/// Which keys may log in as which partner.
#[derive(Debug, Default)]
struct Accounts {
    keys: HashMap<String, Vec<PublicKey>>,
    /// Partners that see a read-only `outbox/`.
    outboxes: Vec<String>,
    /// Argon2 hashes of partners that may also log in with a password.
    passwords: HashMap<String, String>,
}

impl Accounts {
    fn load(config: &Config) -> Result<Accounts, ServerError> {
        let mut accounts = Accounts::default();
        for (partner, p) in &config.partners {
            let Some(sftp) = &p.sftp else { continue };
            if sftp.outbox {
                accounts.outboxes.push(partner.clone());
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
    fn allows_password(&self, user: &str, password: &str) -> bool {
        use argon2::PasswordVerifier;
        self.passwords.get(user).is_some_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
    }

    fn allows(&self, user: &str, key: &PublicKey) -> bool {
        self.keys
            .get(user)
            .is_some_and(|keys| keys.iter().any(|k| k.key_data() == key.key_data()))
    }
}

/// What every connection shares.
struct Shared {
    accounts: Accounts,
    lander: Arc<Lander>,
    staging: PathBuf,
    /// `spool/outbox/`: one folder of exports per partner.
    outboxes: PathBuf,
    limits: SftpServer,
    guard: Mutex<Guard>,
}

/// Failed logins, bans and open sessions, like SFTPGo's defender.
#[derive(Default)]
struct Guard {
    failures: HashMap<IpAddr, Vec<Instant>>,
    banned: HashMap<IpAddr, DateTime<Utc>>,
    /// Last time a refusal from an address was logged and audited.
    reported: HashMap<IpAddr, Instant>,
    sessions: HashMap<String, usize>,
}

/// Refusals from one address are logged at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Shared {
    /// Appends an audit event without holding up the caller's runtime thread.
    async fn audit(&self, event: AuditEvent<'_>) {
        let lander = self.lander.clone();
        let owned = (
            event.partner.map(str::to_string),
            event.remote.map(str::to_string),
            event.action.to_string(),
            event.file_id,
            event.detail,
        );
        let _ = tokio::task::spawn_blocking(move || {
            let (partner, remote, action, file_id, detail) = owned;
            lander.audit(&AuditEvent {
                partner: partner.as_deref(),
                remote: remote.as_deref(),
                action: &action,
                file_id,
                detail,
            });
        })
        .await;
    }

    fn is_banned(&self, ip: IpAddr) -> bool {
        let mut guard = self.guard.lock().expect("guard lock");
        match guard.banned.get(&ip) {
            Some(until) if *until > Utc::now() => true,
            Some(_) => {
                guard.banned.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Whether a refusal from `ip` should be logged now (rate limit).
    fn should_report(&self, ip: IpAddr) -> bool {
        let mut guard = self.guard.lock().expect("guard lock");
        let now = Instant::now();
        match guard.reported.get(&ip) {
            Some(last) if now.duration_since(*last) < REPORT_EVERY => false,
            _ => {
                guard.reported.insert(ip, now);
                true
            }
        }
    }

    /// Counts a failed login; returns the failure count when it bans the address.
    fn failed_login(&self, ip: IpAddr) -> Option<(u32, DateTime<Utc>)> {
        let mut guard = self.guard.lock().expect("guard lock");
        let now = Instant::now();
        let window = self.limits.ban_window;
        let failures = guard.failures.entry(ip).or_default();
        failures.retain(|t| now.duration_since(*t) < window);
        failures.push(now);
        let count = failures.len() as u32;
        if count < self.limits.ban_after_failures {
            return None;
        }
        guard.failures.remove(&ip);
        let until = Utc::now() + self.limits.ban_time;
        guard.banned.insert(ip, until);
        Some((count, until))
    }

    /// Takes a session slot for the partner, if one is free.
    fn open_session(&self, partner: &str) -> bool {
        let mut guard = self.guard.lock().expect("guard lock");
        let open = guard.sessions.entry(partner.to_string()).or_default();
        if *open >= self.limits.max_sessions_per_partner {
            return false;
        }
        *open += 1;
        true
    }

    fn close_session(&self, partner: &str) {
        let mut guard = self.guard.lock().expect("guard lock");
        if let Some(open) = guard.sessions.get_mut(partner) {
            *open = open.saturating_sub(1);
        }
    }
}

/// The server, bound to its address but not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    ssh_config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
}

/// Loads the host key and accounts and binds the listening socket, so that
/// a bad key or a port in use stops `dropgate run` at once. `None` when no
/// partner has an SFTP account.
pub async fn bind(config: &Config, lander: Arc<Lander>) -> Result<Option<Bound>, ServerError> {
    let Some(limits) = config.sftp_server.clone() else {
        return Ok(None);
    };
    let host_key = PrivateKey::read_openssh_file(&config.keys.ssh_host_key).map_err(|e| {
        ServerError::HostKey {
            path: config.keys.ssh_host_key.clone(),
            message: e.to_string(),
        }
    })?;
    // Bans survive restarts: they are in the ledger.
    let banned = {
        let lander = lander.clone();
        tokio::task::spawn_blocking(move || lander.bans())
            .await
            .unwrap_or_default()
    };
    let guard = Guard {
        banned: banned
            .into_iter()
            .filter_map(|(address, until)| Some((address.parse().ok()?, until)))
            .collect(),
        ..Guard::default()
    };
    let shared = Arc::new(Shared {
        accounts: Accounts::load(config)?,
        lander,
        staging: config.daemon.spool.join("uploads"),
        outboxes: config.daemon.spool.join("outbox"),
        limits: limits.clone(),
        guard: Mutex::new(guard),
    });
    fs::create_dir_all(&shared.staging)?;
    // Made now, so exports can be placed before the partner first logs in.
    for partner in &shared.accounts.outboxes {
        fs::create_dir_all(shared.outboxes.join(partner))?;
    }
    let ssh_config = Arc::new(russh::server::Config {
        // Passwords are offered only when some partner has a password hash.
        methods: if config
            .partners
            .values()
            .any(|p| p.sftp.as_ref().is_some_and(|s| s.password_hash.is_some()))
        {
            MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
        } else {
            MethodSet::from(&[MethodKind::PublicKey][..])
        },
        keys: vec![host_key],
        inactivity_timeout: Some(limits.idle_timeout),
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Flow-control settings that roughly double upload speed over the defaults.
        window_size: 16 << 20,
        channel_buffer_size: 1000,
        nodelay: true,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(limits.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: limits.listen,
            source,
        })?;
    Ok(Some(Bound {
        listener,
        ssh_config,
        shared,
    }))
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then disconnects every session.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
        let mut server = Listener {
            shared: self.shared,
        };
        let running = server.run_on_socket(self.ssh_config, &self.listener);
        let handle = running.handle();
        tokio::select! {
            result = running => result?,
            _ = shutdown.changed() => handle.shutdown("dropgate is stopping".into()),
        }
        Ok(())
    }
}

struct Listener {
    shared: Arc<Shared>,
}

impl russh::server::Server for Listener {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            shared: self.shared.clone(),
            peer,
            partner: None,
            channels: HashMap::new(),
        }
    }
}

/// One SSH connection.
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    partner: Option<String>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    fn peer(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_default()
    }

    fn ip(&self) -> IpAddr {
        self.peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(partner) = &self.partner {
            self.shared.close_session(partner);
        }
    }
}

impl Connection {
    /// A partner proved who it is: it gets a session if one is free.
    async fn accept(
        &mut self,
        user: &str,
        remote: &str,
        method: &str,
    ) -> Result<Auth, russh::Error> {
        if !self.shared.open_session(user) {
            tracing::warn!(partner = user, remote = %remote, "SFTP login refused: too many sessions");
            self.shared
                .audit(AuditEvent {
                    partner: Some(user),
                    remote: Some(remote),
                    action: "login_refused_session_limit",
                    ..AuditEvent::default()
                })
                .await;
            return Ok(Auth::reject());
        }
        tracing::info!(partner = user, remote = %remote, method, "SFTP login");
        self.partner = Some(user.to_string());
        self.shared
            .audit(AuditEvent {
                partner: Some(user),
                remote: Some(remote),
                action: "login",
                detail: Some(serde_json::json!({ "method": method })),
                ..AuditEvent::default()
            })
            .await;
        Ok(Auth::Accept)
    }

    /// Unknown users and wrong keys get the same answer; failures count
    /// towards a ban of the address.
    async fn refuse_login(&mut self, user: &str) {
        let (ip, remote) = (self.ip(), self.peer());
        let detail = serde_json::json!({ "user": user });
        if self.shared.should_report(ip) {
            tracing::warn!(remote = %remote, "SFTP login refused");
            self.shared
                .audit(AuditEvent {
                    remote: Some(&remote),
                    action: "login_refused",
                    detail: Some(detail),
                    ..AuditEvent::default()
                })
                .await;
        }
        if let Some((failures, until)) = self.shared.failed_login(ip) {
            tracing::warn!(remote = %remote, failures, until = %until, "address banned after failed logins");
            let lander = self.shared.lander.clone();
            let address = ip.to_string();
            let _ =
                tokio::task::spawn_blocking(move || lander.ban(&address, until, failures)).await;
            self.shared
                .audit(AuditEvent {
                    remote: Some(&remote),
                    action: "address_banned",
                    detail: Some(
                        serde_json::json!({ "failures": failures, "until": until.to_rfc3339() }),
                    ),
                    ..AuditEvent::default()
                })
                .await;
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let (ip, remote) = (self.ip(), self.peer());
        if self.shared.is_banned(ip) {
            if self.shared.should_report(ip) {
                tracing::warn!(remote = %remote, "SFTP login from a banned address refused");
                self.shared
                    .audit(AuditEvent {
                        remote: Some(&remote),
                        action: "login_refused_banned",
                        ..AuditEvent::default()
                    })
                    .await;
            }
            return Ok(Auth::reject());
        }
        if self.shared.accounts.allows(user, key.public_key) {
            return self.accept(user, &remote, "publickey").await;
        }
        self.refuse_login(user).await;
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let (ip, remote) = (self.ip(), self.peer());
        if !self.shared.is_banned(ip) && self.shared.accounts.allows_password(user, password) {
            return self.accept(user, &remote, "password").await;
        }
        self.refuse_login(user).await;
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        reply.accept().await;
        self.channels.insert(id, channel);
        Ok(())
    }

    /// The client has finished its SFTP session: report success, as OpenSSH's
    /// server does, so clients that check the exit status (scp) succeed.
    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(partner), "sftp") = (self.partner.clone(), name) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let outbox = self
            .shared
            .accounts
            .outboxes
            .contains(&partner)
            .then(|| self.shared.outboxes.join(&partner));
        let inbox = Inbox::new(self.shared.clone(), partner, self.peer(), outbox)?;
        russh_sftp::server::run(channel.into_stream(), inbox).await;
        Ok(())
    }
}

/// Where a client path points inside a partner's virtual root.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Root,
    Inbox,
    InboxFile(String),
    Outbox,
    OutboxFile(String),
}

/// Resolves a client path against the virtual root; anything that could
/// leave it is refused.
fn resolve(path: &str, outbox: bool) -> Result<Place, StatusReply> {
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
        [OUTBOX, name] if outbox => Ok(Place::OutboxFile((*name).to_string())),
        _ => Err(StatusCode::NoSuchFile.with_message("no such file")),
    }
}

enum Open {
    Upload {
        name: String,
        file: File,
        /// SHA-256 of what was written, while writes have come in order
        /// from the start; saves reading the file again to land it.
        digest: Option<(Sha256, u64)>,
        /// A write was refused: the upload is incomplete and is not landed.
        refused: bool,
    },
    Download {
        name: String,
        file: File,
        sent: u64,
    },
    Listing(Option<Vec<SftpFile>>),
}

/// The SFTP session of one logged-in partner.
struct Inbox {
    shared: Arc<Shared>,
    partner: String,
    peer: String,
    dir: PathBuf,
    /// The partner's read-only outbox, when it has one.
    outbox: Option<PathBuf>,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Hashes of closed uploads still waiting under a temporary name.
    digests: HashMap<String, String>,
    /// Uploads of this session already taken by dropgate, by name: clients
    /// that check an upload's size afterwards (paramiko's `put`) still see it.
    received: HashMap<String, FileAttributes>,
}

impl Inbox {
    fn new(
        shared: Arc<Shared>,
        partner: String,
        peer: String,
        outbox: Option<PathBuf>,
    ) -> Result<Inbox, std::io::Error> {
        let dir = shared.staging.join(&partner);
        fs::create_dir_all(&dir)?;
        if let Some(outbox) = &outbox {
            fs::create_dir_all(outbox)?;
        }
        Ok(Inbox {
            outbox,
            shared,
            partner,
            peer,
            dir,
            handles: HashMap::new(),
            next_handle: 0,
            digests: HashMap::new(),
            received: HashMap::new(),
        })
    }

    /// Resolves a client path, auditing any attempt to leave the root.
    fn resolve(&self, operation: &str, path: &str) -> Result<Place, StatusReply> {
        resolve(path, self.outbox.is_some()).map_err(|e| self.refuse(operation, e))
    }

    /// Audits a refused operation (permission denied) and returns the reply.
    fn refuse(&self, operation: &str, reply: StatusReply) -> StatusReply {
        if reply.status_code == StatusCode::PermissionDenied {
            tracing::warn!(partner = %self.partner, remote = %self.peer, operation, "SFTP operation refused");
            let lander = self.shared.lander.clone();
            let (partner, remote) = (self.partner.clone(), self.peer.clone());
            let detail = serde_json::json!({
                "operation": operation,
                "reason": reply.error_message.clone().unwrap_or_default(),
            });
            // Written off the session's task: a refusal is answered at once.
            std::thread::spawn(move || {
                lander.audit(&AuditEvent {
                    partner: Some(&partner),
                    remote: Some(&remote),
                    action: "refused",
                    detail: Some(detail),
                    ..AuditEvent::default()
                })
            });
        }
        reply
    }

    fn handle(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        handle
    }

    fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An export in the outbox: a regular file, not one still being written.
    fn exported(&self, name: &str) -> Result<fs::Metadata, StatusReply> {
        let outbox = self.outbox.as_ref().expect("resolved only with an outbox");
        let meta = fs::symlink_metadata(outbox.join(name)).map_err(io_failure)?;
        if name.starts_with('.') || !meta.is_file() {
            return Err(StatusCode::NoSuchFile.with_message("no such file"));
        }
        Ok(meta)
    }

    fn is_open_for_upload(&self, name: &str) -> bool {
        self.handles
            .values()
            .any(|h| matches!(h, Open::Upload { name: n, .. } if n == name))
    }

    /// Lands a finished upload; answers only once it is durable and recorded.
    async fn complete(&mut self, name: &str) -> Result<(), StatusReply> {
        if let Ok(meta) = fs::metadata(self.staged(name)) {
            self.received.insert(name.to_string(), file_attrs(&meta));
        }
        let lander = self.shared.lander.clone();
        let partner = self.partner.clone();
        // The upload is dropgate's own file: moved into the spool, not copied.
        let arrival = Arrival {
            path: self.staged(name),
            name: name.to_string(),
            handover: Handover::Move {
                sha256: self.digests.remove(name),
            },
            taken_from: None,
        };
        let remote = self.peer.clone();
        let result = tokio::task::spawn_blocking(move || {
            lander.land_upload(SOURCE, &partner, &remote, arrival)
        })
        .await
        .map_err(|_| StatusCode::Failure.with_message("landing failed"))?;
        match result {
            Ok(landed) => {
                tracing::info!(partner = %self.partner, remote = %self.peer, file_id = landed.id(), "SFTP upload received");
                if let Landed::AlreadyReceived(id) = landed {
                    // Not new, so not audited with the landing.
                    self.shared
                        .audit(AuditEvent {
                            partner: Some(&self.partner),
                            remote: Some(&self.peer),
                            action: "upload",
                            file_id: Some(id),
                            ..AuditEvent::default()
                        })
                        .await;
                }
                Ok(())
            }
            Err(e) => {
                self.received.remove(name);
                tracing::warn!(partner = %self.partner, error = %e, "SFTP upload could not be landed");
                Err(StatusCode::Failure.with_message(format!("not received: {e}")))
            }
        }
    }
}

/// Regular files in a folder, as SFTP directory entries.
fn listing(dir: &std::path::Path) -> Result<Vec<SftpFile>, StatusReply> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_failure)?.flatten() {
        if let (Ok(meta), Some(name)) = (entry.metadata(), entry.file_name().to_str())
            && meta.is_file()
        {
            entries.push(SftpFile::new(name, file_attrs(&meta)));
        }
    }
    Ok(entries)
}

fn directory_attrs() -> FileAttributes {
    FileAttributes {
        permissions: Some(0o040_700),
        ..FileAttributes::empty()
    }
}

fn file_attrs(meta: &fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.len()),
        permissions: Some(0o100_600),
        mtime: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as u32),
        ..FileAttributes::empty()
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn io_failure(e: std::io::Error) -> StatusReply {
    match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile.with_message("no such file"),
        _ => StatusCode::Failure.with_message(e.to_string()),
    }
}

impl russh_sftp::server::Handler for Inbox {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.with_message("not supported by dropgate")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        // `limits@openssh.com` is not offered: with its 255 KiB writes,
        // OpenSSH's client spent twice the CPU and uploads ran slower here.
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let canonical = match self.resolve("realpath", &path)? {
            Place::Root => "/".to_string(),
            Place::Inbox => format!("/{INBOX}"),
            Place::InboxFile(name) => format!("/{INBOX}/{name}"),
            Place::Outbox => format!("/{OUTBOX}"),
            Place::OutboxFile(name) => format!("/{OUTBOX}/{name}"),
        };
        Ok(Name {
            id,
            files: vec![SftpFile::dummy(canonical)],
        })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let entries = match self.resolve("opendir", &path)? {
            Place::Root => {
                let mut entries = vec![SftpFile::new(INBOX, directory_attrs())];
                if self.outbox.is_some() {
                    entries.push(SftpFile::new(OUTBOX, directory_attrs()));
                }
                entries
            }
            // The partner's own uploads not yet taken by dropgate.
            Place::Inbox => listing(&self.dir)?,
            // Exports addressed to the partner; files being written start with a dot.
            Place::Outbox => listing(
                self.outbox
                    .as_deref()
                    .expect("resolved only with an outbox"),
            )?
            .into_iter()
            .filter(|f| !f.filename.starts_with('.'))
            .collect(),
            Place::InboxFile(_) | Place::OutboxFile(_) => {
                return Err(StatusCode::Failure.with_message("not a directory"));
            }
        };
        let handle = self.handle(Open::Listing(Some(entries)));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Listing(entries)) => match entries.take() {
                Some(files) => Ok(Name { id, files }),
                None => Err(StatusCode::Eof.into()),
            },
            _ => Err(StatusCode::Failure.with_message("not a directory handle")),
        }
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let attrs = match self.resolve("stat", &path)? {
            Place::Root | Place::Inbox | Place::Outbox => directory_attrs(),
            Place::InboxFile(name) => match fs::symlink_metadata(self.staged(&name)) {
                Ok(meta) => file_attrs(&meta),
                Err(e) => match self.received.get(&name) {
                    Some(attrs) => attrs.clone(),
                    None => return Err(io_failure(e)),
                },
            },
            Place::OutboxFile(name) => file_attrs(&self.exported(&name)?),
        };
        Ok(Attrs { id, attrs })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::Upload { file, .. } | Open::Download { file, .. }) => Ok(Attrs {
                id,
                attrs: file_attrs(&file.metadata().map_err(io_failure)?),
            }),
            Some(Open::Listing(_)) => Ok(Attrs {
                id,
                attrs: directory_attrs(),
            }),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let name = match self.resolve("open", &filename)? {
            Place::InboxFile(name) => name,
            Place::OutboxFile(name) => {
                if pflags.intersects(
                    OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                ) {
                    return Err(self.refuse(
                        "open",
                        StatusCode::PermissionDenied.with_message("outbox/ is read-only"),
                    ));
                }
                self.exported(&name)?;
                let path = self
                    .outbox
                    .as_ref()
                    .expect("resolved only with an outbox")
                    .join(&name);
                let file = File::open(path).map_err(io_failure)?;
                let handle = self.handle(Open::Download {
                    name,
                    file,
                    sent: 0,
                });
                return Ok(Handle { id, handle });
            }
            _ => {
                return Err(self.refuse(
                    "open",
                    StatusCode::PermissionDenied
                        .with_message("files can only be written into inbox/"),
                ));
            }
        };
        if pflags.contains(OpenFlags::READ) || !pflags.contains(OpenFlags::WRITE) {
            return Err(self.refuse(
                "open",
                StatusCode::PermissionDenied.with_message("inbox/ is write-only"),
            ));
        }
        let path = self.staged(&name);
        if let Ok(meta) = fs::symlink_metadata(&path)
            && !meta.is_file()
        {
            return Err(StatusCode::PermissionDenied.with_message("not a regular file"));
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create(pflags.contains(OpenFlags::CREATE))
            .create_new(pflags.contains(OpenFlags::CREATE) && pflags.contains(OpenFlags::EXCLUDE))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .open(&path)
            .map_err(io_failure)?;
        self.digests.remove(&name);
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(false);
        let digest = empty.then(|| (Sha256::new(), 0));
        let handle = self.handle(Open::Upload {
            name,
            file,
            digest,
            refused: false,
        });
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let max = self.shared.limits.max_file_size;
        let Some(Open::Upload {
            file,
            digest,
            refused,
            ..
        }) = self.handles.get_mut(&handle)
        else {
            return Err(StatusCode::Failure.with_message("not an upload handle"));
        };
        if offset.saturating_add(data.len() as u64) > max {
            *refused = true;
            return Err(
                StatusCode::Failure.with_message(format!("files may not exceed {max} bytes"))
            );
        }
        file.write_all_at(&data, offset).map_err(io_failure)?;
        match digest {
            Some((hasher, next)) if *next == offset => {
                hasher.update(&data);
                *next += data.len() as u64;
            }
            // Out of order (or a rewrite): hashed from the file when landed.
            _ => *digest = None,
        }
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::Upload {
                name,
                file,
                digest,
                refused,
            }) => {
                if refused {
                    drop(file);
                    let _ = fs::remove_file(self.staged(&name));
                    return Err(StatusCode::Failure
                        .with_message("the upload was refused and has been discarded"));
                }
                // fsync can take milliseconds: off the async workers, which
                // serve every other session meanwhile.
                let size = tokio::task::spawn_blocking(move || {
                    file.sync_all()?;
                    file.metadata().map(|m| m.len())
                })
                .await
                .map_err(|_| StatusCode::Failure.with_message("could not finish the upload"))?
                .map_err(io_failure)?;
                match digest {
                    Some((hasher, written)) if written == size => {
                        self.digests.insert(name.clone(), hex(&hasher.finalize()));
                    }
                    _ => {
                        self.digests.remove(&name);
                    }
                }
                if !is_temporary_name(&name) && !self.is_open_for_upload(&name) {
                    self.complete(&name).await?;
                }
                Ok(ok(id))
            }
            Some(Open::Download { name, sent, .. }) => {
                tracing::info!(partner = %self.partner, remote = %self.peer, "SFTP download");
                self.shared
                    .audit(AuditEvent {
                        partner: Some(&self.partner),
                        remote: Some(&self.peer),
                        action: "download",
                        detail: Some(serde_json::json!({ "name": name, "bytes": sent })),
                        ..AuditEvent::default()
                    })
                    .await;
                Ok(ok(id))
            }
            Some(Open::Listing(_)) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (Place::InboxFile(from), Place::InboxFile(to)) = (
            self.resolve("rename", &oldpath)?,
            self.resolve("rename", &newpath)?,
        ) else {
            return Err(self.refuse(
                "rename",
                StatusCode::PermissionDenied.with_message("only files in inbox/ can be renamed"),
            ));
        };
        let (from_path, to_path) = (self.staged(&from), self.staged(&to));
        if to_path.exists() {
            return Err(StatusCode::Failure.with_message("a file of that name is already waiting"));
        }
        fs::rename(&from_path, &to_path).map_err(io_failure)?;
        if let Some(digest) = self.digests.remove(&from) {
            self.digests.insert(to.clone(), digest);
        }
        for open in self.handles.values_mut() {
            if let Open::Upload { name, .. } = open
                && *name == from
            {
                *name = to.clone();
            }
        }
        if !is_temporary_name(&to) && !self.is_open_for_upload(&to) {
            self.complete(&to).await?;
        }
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let Place::InboxFile(name) = self.resolve("remove", &filename)? else {
            return Err(self.refuse(
                "remove",
                StatusCode::PermissionDenied
                    .with_message("only your own unfinished uploads can be removed"),
            ));
        };
        fs::remove_file(self.staged(&name)).map_err(io_failure)?;
        self.digests.remove(&name);
        Ok(ok(id))
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // Times and modes of uploads are dropgate's own: accepted and ignored,
        // so clients that preserve them (`put -p`) still work.
        match self.resolve("setstat", &path)? {
            Place::InboxFile(name) if self.staged(&name).exists() => Ok(ok(id)),
            Place::InboxFile(_) => Err(StatusCode::NoSuchFile.with_message("no such file")),
            _ => Err(StatusCode::PermissionDenied.with_message("not allowed")),
        }
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        _path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "mkdir",
            StatusCode::PermissionDenied.with_message("folders cannot be made here"),
        ))
    }

    async fn rmdir(&mut self, _id: u32, _path: String) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "rmdir",
            StatusCode::PermissionDenied.with_message("folders cannot be removed"),
        ))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        Err(self.refuse(
            "symlink",
            StatusCode::PermissionDenied.with_message("links are not allowed"),
        ))
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Result<Name, Self::Error> {
        Err(StatusCode::PermissionDenied.with_message("links are not allowed"))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Open::Download { file, sent, .. }) = self.handles.get_mut(&handle) else {
            return Err(self.refuse(
                "read",
                StatusCode::PermissionDenied.with_message("inbox/ is write-only"),
            ));
        };
        let mut data = vec![0u8; u64::from(len).min(MAX_READ_BYTES) as usize];
        let n = file.read_at(&mut data, offset).map_err(io_failure)?;
        if n == 0 {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(n);
        *sent += n as u64;
        Ok(Data { id, data })
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Left in the staging folder for the client to resume or remove;
        // nothing of it enters the pipeline.
        for open in self.handles.values() {
            if let Open::Upload { name, file, .. } = open {
                tracing::warn!(partner = %self.partner, remote = %self.peer, "SFTP upload incomplete: connection closed during upload");
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                let lander = self.shared.lander.clone();
                let (partner, remote) = (self.partner.clone(), self.peer.clone());
                let detail = serde_json::json!({ "name": name, "bytes": size });
                std::thread::spawn(move || {
                    lander.audit(&AuditEvent {
                        partner: Some(&partner),
                        remote: Some(&remote),
                        action: "upload_incomplete",
                        detail: Some(detail),
                        ..AuditEvent::default()
                    })
                });
            }
        }
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
            Place::OutboxFile("x.csv".into())
        );
        for elsewhere in ["/etc/passwd", "/inbox/sub/a.csv", "/outbox"] {
            assert_eq!(
                resolve(elsewhere, false).unwrap_err().status_code,
                StatusCode::NoSuchFile,
                "{elsewhere}"
            );
        }
    }

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
