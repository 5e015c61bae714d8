//! The caps on what clients may hold, and the defender: failed logins, bans,
//! sessions, connections and open files, like SFTPGo's.

use super::*;

/// Failed logins, bans, open connections and sessions, like SFTPGo's defender.
#[derive(Default)]
pub(super) struct Guard {
    pub(super) failures: HashMap<IpAddr, Vec<Instant>>,
    pub(super) banned: HashMap<IpAddr, DateTime<Utc>>,
    /// Last time a refusal from an address was logged and audited.
    pub(super) reported: HashMap<IpAddr, Instant>,
    pub(super) sessions: HashMap<String, usize>,
    pub(super) connections: HashMap<IpAddr, usize>,
    pub(super) all_connections: usize,
    /// Files open for each partner's handles.
    pub(super) partner_files: HashMap<String, usize>,
}

/// Refusals from one address are logged at most this often.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A connection's place in the connection caps.
pub(super) struct ConnectionSlot {
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
pub(super) struct FileSlot {
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
pub(super) fn open_file_limit() -> usize {
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

impl Shared {
    pub(super) fn is_banned(&self, ip: IpAddr) -> bool {
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
    pub(super) fn should_report(&self, ip: IpAddr) -> bool {
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
    pub(super) fn failed_login(&self, ip: IpAddr) -> Option<(u32, DateTime<Utc>)> {
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
    pub(super) fn prune(&self) {
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
    pub(super) fn open_session(&self, partner: &str) -> bool {
        let mut guard = self.guard.lock().expect("guard lock");
        let open = guard.sessions.entry(partner.to_string()).or_default();
        if *open >= self.limits.max_sessions_per_partner {
            return false;
        }
        *open += 1;
        true
    }

    pub(super) fn close_session(&self, partner: &str) {
        let mut guard = self.guard.lock().expect("guard lock");
        if let Some(open) = guard.sessions.get_mut(partner) {
            *open = open.saturating_sub(1);
        }
    }

    /// Takes a connection slot for an address, if the caps allow; the slot
    /// is given back when the returned guard is dropped.
    pub(super) fn open_connection(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<ConnectionSlot, &'static str> {
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
    pub(super) fn open_file(self: &Arc<Self>, partner: &str) -> Result<FileSlot, &'static str> {
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

/// A connection's stream that can be cut from outside. russh runs each
/// session in a task of its own that owns the stream, and a peer stalled
/// in the handshake never lets that task end: cutting makes its next read
/// or write fail, so it ends and the socket closes.
pub(super) struct Cuttable<S> {
    inner: S,
    cut: Arc<Cut>,
}

pub(super) struct Cut {
    done: AtomicBool,
    /// Once logged in, the session's own idle timeout applies and reads
    /// skip the bookkeeping.
    logged_in: Arc<AtomicBool>,
    /// The session task's latest read, woken when the stream is cut.
    reader: Mutex<Option<std::task::Waker>>,
}

impl Cut {
    pub(super) fn cut(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(waker) = self.reader.lock().expect("waker lock").take() {
            waker.wake();
        }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.done.load(Ordering::SeqCst) {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        Ok(())
    }
}

impl<S> Cuttable<S> {
    pub(super) fn new(inner: S, logged_in: Arc<AtomicBool>) -> (Cuttable<S>, Arc<Cut>) {
        let cut = Arc::new(Cut {
            done: AtomicBool::new(false),
            logged_in,
            reader: Mutex::new(None),
        });
        (
            Cuttable {
                inner,
                cut: cut.clone(),
            },
            cut,
        )
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Cuttable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.cut.logged_in.load(Ordering::Relaxed) {
            self.cut.check()?;
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        self.cut.check()?;
        {
            let mut reader = self.cut.reader.lock().expect("waker lock");
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
        }
        // Cut between the check and the waker's registration.
        self.cut.check()?;
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Cuttable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.cut.check()?;
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
