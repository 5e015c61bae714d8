//! The embedded SFTP server: partners log in with their keys and drop files
//! into their `inbox/`.
//!
//! Each partner sees a virtual root holding `inbox/`; nothing else of the
//! machine is reachable. `..`, NUL and over-long names are refused, and no
//! symbolic link can be made or followed. Every open for writing has a
//! staging file of its own in `spool/uploads/<partner>/`, named by dropgate
//! ([`uploads`]); an upload is complete when the client closes its handle
//! under a final name, or renames a temporary name (`.part`, `.filepart`,
//! `.tmp`, leading dot) to a final one. Only then is it landed, and the
//! client's CLOSE or RENAME is answered only once the file is durable and
//! `received`, so a success reply means dropgate has exactly those bytes.
//!
//! Everything a partner controls is capped: connections (in all and per
//! address), time to log in, sessions per partner, open handles per session,
//! unfinished uploads per partner (count, total size, age), and the open
//! files of the whole process, so one partner can never stop the server for
//! the others.

mod session;
mod uploads;

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use russh::keys::ssh_key::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{AuthorizedKeys, Config, SftpServer, parse_authorized_line};
use crate::intake::Intake;
use crate::ledger::AuditEvent;
use crate::spool::Spool;
use session::Inbox;
use uploads::Uploads;

/// The source name uploads are recorded under in the ledger.
pub const SOURCE: &str = "sftp-server";
/// Open files kept back from SFTP handles for the rest of dropgate
/// (ledger, spool, sockets, other sources).
const FILES_KEPT_BACK: usize = 256;
/// How often unfinished uploads are checked for expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);
/// Channels one connection may have open: an SFTP client needs one; each
/// may buffer up to the SSH window in memory.
const MAX_CHANNELS_PER_CONNECTION: usize = 2;

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

    fn knows(&self, user: &str) -> bool {
        self.keys.contains_key(user)
    }
}

/// What every connection shares.
struct Shared {
    accounts: Accounts,
    intake: Arc<Intake>,
    uploads: Uploads,
    /// `spool/outbox/`: one folder of exports per partner.
    outboxes: PathBuf,
    limits: SftpServer,
    guard: Mutex<Guard>,
    /// Files open for SFTP handles, against `file_budget`.
    open_files: AtomicUsize,
    file_budget: usize,
}

/// Failed logins, bans, open connections and sessions, like SFTPGo's defender.
#[derive(Default)]
struct Guard {
    failures: HashMap<IpAddr, Vec<Instant>>,
    banned: HashMap<IpAddr, DateTime<Utc>>,
    /// Last time a refusal from an address was logged and audited.
    reported: HashMap<IpAddr, Instant>,
    sessions: HashMap<String, usize>,
    connections: HashMap<IpAddr, usize>,
    all_connections: usize,
    /// Files open for each partner's handles.
    partner_files: HashMap<String, usize>,
}

/// Refusals from one address are logged at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Shared {
    /// Queues an audit event; never waits for the ledger.
    fn audit(&self, event: AuditEvent<'_>) {
        self.intake.audit(&event);
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

    /// Forgets failed logins and report times too old to matter, so the
    /// maps do not grow with every address ever seen.
    fn prune(&self) {
        let mut guard = self.guard.lock().expect("guard lock");
        let now = Instant::now();
        let window = self.limits.ban_window;
        guard.failures.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < window);
            !times.is_empty()
        });
        guard
            .reported
            .retain(|_, last| now.duration_since(*last) < REPORT_EVERY);
        let today = Utc::now();
        guard.banned.retain(|_, until| *until > today);
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

    /// Takes a connection slot for an address, if the caps allow; the slot
    /// is given back when the returned guard is dropped.
    fn open_connection(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, &'static str> {
        let mut guard = self.guard.lock().expect("guard lock");
        if guard.all_connections >= self.limits.max_connections {
            return Err("max_connections");
        }
        let from_ip = guard.connections.entry(ip).or_default();
        if *from_ip >= self.limits.max_connections_per_address {
            return Err("max_connections_per_address");
        }
        *from_ip += 1;
        guard.all_connections += 1;
        Ok(ConnectionSlot {
            shared: self.clone(),
            ip,
        })
    }

    /// Takes one of the process's open files for a partner's SFTP handle;
    /// `Err` names the limit reached.
    fn open_file(self: &Arc<Self>, partner: &str) -> Result<FileSlot, &'static str> {
        let mut guard = self.guard.lock().expect("guard lock");
        let mine = guard.partner_files.entry(partner.to_string()).or_default();
        if *mine >= self.limits.max_open_files_per_partner {
            return Err("max_open_files_per_partner");
        }
        let taken = self.open_files.fetch_add(1, Ordering::SeqCst);
        if taken >= self.file_budget {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
            return Err("open_files");
        }
        *mine += 1;
        Ok(FileSlot {
            shared: self.clone(),
            partner: partner.to_string(),
        })
    }
}

/// A connection's place in the connection caps.
struct ConnectionSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut guard = self.shared.guard.lock().expect("guard lock");
        guard.all_connections = guard.all_connections.saturating_sub(1);
        if let Some(n) = guard.connections.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                guard.connections.remove(&self.ip);
            }
        }
    }
}

/// An open file counted against the process's budget and its partner's.
struct FileSlot {
    shared: Arc<Shared>,
    partner: String,
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.shared.open_files.fetch_sub(1, Ordering::SeqCst);
        let mut guard = self.shared.guard.lock().expect("guard lock");
        if let Some(n) = guard.partner_files.get_mut(&self.partner) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime
/// and OpenSSH's sshd do) and returns it.
fn open_file_limit() -> usize {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
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
pub async fn bind(config: &Config, intake: Arc<Intake>) -> Result<Option<Bound>, ServerError> {
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
        let intake = intake.clone();
        tokio::task::spawn_blocking(move || intake.bans())
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
    let spool = Spool::new(&config.daemon.spool);
    let staging = spool.uploads();
    fs::create_dir_all(&staging)?;
    discard_leftovers(&staging, &intake);
    let uploads = Uploads::new(
        &staging,
        uploads::Limits {
            max_file_size: limits.max_file_size,
            max_unfinished: limits.max_unfinished_uploads,
            max_unfinished_bytes: limits.max_unfinished_bytes,
            time_to_live: limits.unfinished_upload_ttl,
        },
    );
    let shared = Arc::new(Shared {
        accounts: Accounts::load(config)?,
        intake,
        uploads,
        outboxes: spool.outboxes(),
        limits: limits.clone(),
        guard: Mutex::new(guard),
        open_files: AtomicUsize::new(0),
        file_budget: open_file_limit().saturating_sub(FILES_KEPT_BACK).max(16),
    });
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

/// Staging files left by a previous run: no client was told they were
/// received, and their names are not known any more, so they go. Audited
/// per partner with their count and size.
fn discard_leftovers(staging: &Path, intake: &Intake) {
    let Ok(partners) = fs::read_dir(staging) else {
        return;
    };
    for partner in partners.flatten() {
        let Ok(files) = fs::read_dir(partner.path()) else {
            continue;
        };
        let (mut count, mut bytes) = (0u64, 0u64);
        for file in files.flatten() {
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(file.path()).is_ok() {
                count += 1;
                bytes += size;
            }
        }
        if count > 0 {
            let partner = partner.file_name().to_string_lossy().into_owned();
            tracing::info!(partner = %partner, uploads = count, bytes, "unfinished uploads from before the restart discarded");
            intake.audit(&AuditEvent {
                partner: Some(&partner),
                action: "uploads_discarded_at_start",
                detail: Some(serde_json::json!({ "uploads": count, "bytes": bytes })),
                ..AuditEvent::default()
            });
        }
    }
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then disconnects every session.
    /// A failed accept (out of file descriptors, say) is logged and waited
    /// out; it never stops the server.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
        let mut sessions = JoinSet::new();
        let ttl = self.shared.limits.unfinished_upload_ttl;
        let mut expiry =
            tokio::time::interval((ttl / 2).clamp(Duration::from_millis(100), EXPIRY_CHECK));
        let mut last_accept_error: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                _ = expiry.tick() => self.expire_uploads().await,
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        if let Some(session) = self.connect(socket, peer, shutdown.clone()) {
                            sessions.spawn(session);
                        }
                    }
                    Err(e) => {
                        if last_accept_error.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                            tracing::error!(error = %e, "SFTP server could not accept a connection; waiting");
                            last_accept_error = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Every session saw `shutdown` and is disconnecting.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }

    /// A new connection, within the caps: the future that serves it.
    fn connect(
        &self,
        socket: tokio::net::TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let slot = match self.shared.open_connection(peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                if self.shared.should_report(peer.ip()) {
                    let remote = peer.ip().to_string();
                    tracing::warn!(remote = %remote, limit, "SFTP connection refused: too many connections");
                    self.shared.audit(AuditEvent {
                        remote: Some(&remote),
                        action: "connection_refused",
                        detail: Some(serde_json::json!({ "limit": limit })),
                        ..AuditEvent::default()
                    });
                }
                return None;
            }
        };
        let logged_in = Arc::new(AtomicBool::new(false));
        let handler = Connection {
            shared: self.shared.clone(),
            peer: Some(peer),
            partner: None,
            channels: HashMap::new(),
            subsystems: 0,
            logged_in: logged_in.clone(),
        };
        let (config, login_timeout) = (self.ssh_config.clone(), self.shared.limits.login_timeout);
        Some(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            let deadline = tokio::time::sleep(login_timeout);
            tokio::pin!(deadline);
            // The version exchange happens here: a peer that sends nothing
            // is dropped at the login deadline.
            let session = tokio::select! {
                started = russh::server::run_stream(config, socket, handler) => match started {
                    Ok(session) => session,
                    Err(_) => return,
                },
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
            };
            let handle = session.handle();
            tokio::pin!(session);
            let mut deadline_passed = false;
            loop {
                tokio::select! {
                    _ = &mut session => return,
                    _ = shutdown.changed() => {
                        let _ = handle
                            .disconnect(Disconnect::ByApplication, "dropgate is stopping".into(), String::new())
                            .await;
                        return;
                    }
                    _ = &mut deadline, if !deadline_passed => {
                        deadline_passed = true;
                        if !logged_in.load(Ordering::SeqCst) {
                            let _ = handle
                                .disconnect(Disconnect::ByApplication, "login took too long".into(), String::new())
                                .await;
                        }
                    }
                }
            }
        })
    }

    async fn expire_uploads(&self) {
        self.shared.prune();
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for gone in shared.uploads.expire(Instant::now()) {
                let _ = fs::remove_file(shared.uploads.path(&gone.partner, &gone.id));
                tracing::info!(partner = %gone.partner, upload = %gone.id, bytes = gone.bytes, "unfinished upload expired");
                shared.audit(AuditEvent {
                    partner: Some(&gone.partner),
                    action: "upload_expired",
                    detail: Some(serde_json::json!({ "upload": gone.id, "bytes": gone.bytes })),
                    ..AuditEvent::default()
                });
            }
        })
        .await;
    }
}

/// One SSH connection.
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    partner: Option<String>,
    /// Session channels opened and not yet given to a subsystem.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels serving SFTP.
    subsystems: usize,
    logged_in: Arc<AtomicBool>,
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
    fn accept(&mut self, user: &str, remote: &str, method: &str) -> Auth {
        if !self.shared.open_session(user) {
            tracing::warn!(partner = user, remote = %remote, "SFTP login refused: too many sessions");
            self.shared.audit(AuditEvent {
                partner: Some(user),
                remote: Some(remote),
                action: "login_refused_session_limit",
                ..AuditEvent::default()
            });
            return Auth::reject();
        }
        tracing::info!(partner = user, remote = %remote, method, "SFTP login");
        self.partner = Some(user.to_string());
        self.logged_in.store(true, Ordering::SeqCst);
        self.shared.audit(AuditEvent {
            partner: Some(user),
            remote: Some(remote),
            action: "login",
            detail: Some(serde_json::json!({ "method": method })),
            ..AuditEvent::default()
        });
        Auth::Accept
    }

    /// Unknown users and wrong keys get the same answer; failures count
    /// towards a ban of the address. The user name a client sent is not
    /// recorded unless it is a partner's: it is the client's own text.
    async fn refuse_login(&mut self, user: &str) {
        let (ip, remote) = (self.ip(), self.peer());
        let partner = self.shared.accounts.knows(user).then_some(user);
        if self.shared.should_report(ip) {
            tracing::warn!(remote = %remote, known_user = partner.is_some(), "SFTP login refused");
            self.shared.audit(AuditEvent {
                partner,
                remote: Some(&remote),
                action: "login_refused",
                detail: Some(serde_json::json!({ "known_user": partner.is_some() })),
                ..AuditEvent::default()
            });
        }
        if let Some((failures, until)) = self.shared.failed_login(ip) {
            tracing::warn!(remote = %remote, failures, until = %until, "address banned after failed logins");
            let intake = self.shared.intake.clone();
            let address = ip.to_string();
            let _ =
                tokio::task::spawn_blocking(move || intake.ban(&address, until, failures)).await;
            self.shared.audit(AuditEvent {
                remote: Some(&remote),
                action: "address_banned",
                detail: Some(
                    serde_json::json!({ "failures": failures, "until": until.to_rfc3339() }),
                ),
                ..AuditEvent::default()
            });
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
                self.shared.audit(AuditEvent {
                    remote: Some(&remote),
                    action: "login_refused_banned",
                    ..AuditEvent::default()
                });
            }
            return Ok(Auth::reject());
        }
        if self.shared.accounts.allows(user, key.public_key) {
            return Ok(self.accept(user, &remote, "publickey"));
        }
        self.refuse_login(user).await;
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let (ip, remote) = (self.ip(), self.peer());
        if !self.shared.is_banned(ip) && self.shared.accounts.allows_password(user, password) {
            return Ok(self.accept(user, &remote, "password"));
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
        if self.channels.len() + self.subsystems >= MAX_CHANNELS_PER_CONNECTION {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let id = channel.id();
        reply.accept().await;
        self.channels.insert(id, channel);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.remove(&channel).is_none() {
            self.subsystems = self.subsystems.saturating_sub(1);
        }
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
        self.subsystems += 1;
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
