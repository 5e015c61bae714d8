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

mod accounts;
mod connection;
mod defender;
mod paths;
mod session;
mod uploads;

use accounts::Accounts;
use connection::Connection;
use defender::{Cuttable, FileSlot, Guard, REPORT_EVERY, open_file_limit};

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

/// Whether a client path resolves inside a partner's virtual root (with
/// an outbox and receipts): the resolver, for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn resolves(path: &str) -> bool {
    paths::resolve(path, &[paths::Shelf::Outbox, paths::Shelf::Receipts]).is_ok()
}

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

/// What every connection shares.
struct Shared {
    /// Replaced whole when the configuration is reloaded; a session keeps
    /// the partner it logged in as.
    accounts: std::sync::RwLock<Arc<Accounts>>,
    intake: Arc<Intake>,
    uploads: Uploads,
    /// `spool/outbox/`: one folder of exports per partner.
    outboxes: PathBuf,
    /// `spool/receipts/`: one folder of receipts per partner.
    receipts: PathBuf,
    limits: SftpServer,
    guard: Mutex<Guard>,
    /// Files open for SFTP handles, against `file_budget`.
    open_files: AtomicUsize,
    file_budget: usize,
    /// Uploads held in memory while written (`session::staged`).
    held_uploads: Arc<AtomicUsize>,
}

impl Shared {
    fn accounts(&self) -> Arc<Accounts> {
        self.accounts.read().expect("accounts lock").clone()
    }

    /// Queues an audit event; never waits for the ledger.
    fn audit(&self, event: AuditEvent<'_>) {
        self.intake.audit(&event);
    }
}

/// The SSH settings each new connection starts with: replaced when the
/// configuration is reloaded.
type SshConfig = Arc<std::sync::RwLock<Arc<russh::server::Config>>>;

/// The server, bound to its address but not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    ssh_config: SshConfig,
    shared: Arc<Shared>,
}

/// Applies a reloaded configuration to a running server: accounts, keys
/// and passwords for new logins, the host key for new connections. Open
/// sessions go on as they are.
pub struct Reconfigure {
    ssh_config: SshConfig,
    shared: Arc<Shared>,
}

impl Reconfigure {
    /// Reads the new accounts and host key; on any error nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), ServerError> {
        let accounts = Accounts::load(config)?;
        let host_key = read_host_key(config)?;
        for partner in &accounts.outboxes {
            fs::create_dir_all(self.shared.outboxes.join(partner))?;
        }
        let ssh = ssh_config(config, host_key, &self.shared.limits);
        *self.shared.accounts.write().expect("accounts lock") = Arc::new(accounts);
        *self.ssh_config.write().expect("ssh config lock") = Arc::new(ssh);
        Ok(())
    }
}

fn read_host_key(config: &Config) -> Result<PrivateKey, ServerError> {
    PrivateKey::read_openssh_file(&config.keys.ssh_host_key).map_err(|e| ServerError::HostKey {
        path: config.keys.ssh_host_key.clone(),
        message: e.to_string(),
    })
}

fn ssh_config(config: &Config, host_key: PrivateKey, limits: &SftpServer) -> russh::server::Config {
    russh::server::Config {
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
    }
}

/// Loads the host key and accounts and binds the listening socket, so that
/// a bad key or a port in use stops `dropgate run` at once. `None` when no
/// partner has an SFTP account.
pub async fn bind(config: &Config, intake: Arc<Intake>) -> Result<Option<Bound>, ServerError> {
    let Some(limits) = config.sftp_server.clone() else {
        return Ok(None);
    };
    let host_key = read_host_key(config)?;
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
        accounts: std::sync::RwLock::new(Arc::new(Accounts::load(config)?)),
        intake,
        uploads,
        outboxes: spool.outboxes(),
        receipts: spool.receipts(),
        limits: limits.clone(),
        guard: Mutex::new(guard),
        open_files: AtomicUsize::new(0),
        file_budget: open_file_limit().saturating_sub(FILES_KEPT_BACK).max(16),
        held_uploads: Arc::new(AtomicUsize::new(0)),
    });
    // Made now, so exports can be placed before the partner first logs in.
    for partner in &shared.accounts().outboxes {
        fs::create_dir_all(shared.outboxes.join(partner))?;
    }
    let ssh_config = Arc::new(std::sync::RwLock::new(Arc::new(ssh_config(
        config, host_key, &limits,
    ))));
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

    /// What applies a reloaded configuration while this serves.
    pub fn reconfigure(&self) -> Reconfigure {
        Reconfigure {
            ssh_config: self.ssh_config.clone(),
            shared: self.shared.clone(),
        }
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
            crate::metrics::METRICS
                .sftp_sessions
                .set(sessions.len() as i64);
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
        let config = self.ssh_config.read().expect("ssh config lock").clone();
        let login_timeout = self.shared.limits.login_timeout;
        Some(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            let (stream, cut) = Cuttable::new(socket, logged_in.clone());
            let deadline = tokio::time::sleep(login_timeout);
            tokio::pin!(deadline);
            // The version exchange happens here: a peer that sends nothing
            // is dropped at the login deadline.
            let session = tokio::select! {
                started = russh::server::run_stream(config, stream, handler) => match started {
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
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            handle.disconnect(Disconnect::ByApplication, "dropgate is stopping".into(), String::new()),
                        )
                        .await;
                        cut.cut();
                        return;
                    }
                    _ = &mut deadline, if !deadline_passed => {
                        deadline_passed = true;
                        if !logged_in.load(Ordering::SeqCst) {
                            // Said if the peer is listening; then the
                            // connection goes whatever state it is in (a
                            // peer stalled mid-handshake never lets the
                            // session end by itself).
                            let _ = tokio::time::timeout(
                                Duration::from_millis(200),
                                handle.disconnect(Disconnect::ByApplication, "login took too long".into(), String::new()),
                            )
                            .await;
                            cut.cut();
                            return;
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
