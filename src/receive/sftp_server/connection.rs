//! One SSH connection: logins, channels, and the SFTP subsystem.

use super::paths::Shelf;
use super::*;

/// One SSH connection.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) partner: Option<String>,
    /// Session channels opened and not yet given to a subsystem.
    pub(super) channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels serving SFTP.
    pub(super) subsystems: usize,
    pub(super) logged_in: Arc<AtomicBool>,
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
        let partner = self.shared.accounts().knows(user).then_some(user);
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
        if self.shared.accounts().allows(user, key.public_key) {
            return Ok(self.accept(user, &remote, "publickey"));
        }
        self.refuse_login(user).await;
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let (ip, remote) = (self.ip(), self.peer());
        if !self.shared.is_banned(ip) && self.shared.accounts().allows_password(user, password) {
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
        let accounts = self.shared.accounts();
        let mut shelves = Vec::new();
        if accounts.outboxes.contains(&partner) {
            shelves.push((Shelf::Outbox, self.shared.outboxes.join(&partner)));
        }
        if accounts.receipts.contains(&partner) {
            shelves.push((Shelf::Receipts, self.shared.receipts.join(&partner)));
        }
        let inbox = Inbox::new(self.shared.clone(), partner, self.peer(), shelves)?;
        russh_sftp::server::run(channel.into_stream(), inbox).await;
        Ok(())
    }
}
