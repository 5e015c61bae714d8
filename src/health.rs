//! The optional HTTP listener (`[http]`): `/healthz` (the daemon answers),
//! `/readyz` (it has started, is not stopping and processing is not stuck)
//! and `/metrics` (Prometheus, from [`crate::metrics`]).
//!
//! Only a request line and headers are ever read: at most
//! [`MAX_REQUEST_BYTES`], within [`REQUEST_TIME`], on at most
//! [`MAX_CONNECTIONS`] connections at once. Each answer closes its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::metrics::METRICS;
use crate::pipeline::Progress;

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIME: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;

/// What `/readyz` answers from.
pub struct Readiness {
    started: AtomicBool,
    stopping: AtomicBool,
    progress: Progress,
    /// Processing quiet for this long counts as stuck.
    stalled_after: Duration,
}

impl Readiness {
    pub fn new(progress: Progress, stalled_after: Duration) -> Arc<Readiness> {
        Arc::new(Readiness {
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            progress,
            stalled_after,
        })
    }

    pub fn started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// `Err` says why not.
    fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("stopping".into());
        }
        if !self.started.load(Ordering::SeqCst) {
            return Err("starting".into());
        }
        let quiet = self.progress.quiet_for();
        if quiet >= self.stalled_after {
            return Err(format!(
                "processing has shown no progress for {}s",
                quiet.as_secs()
            ));
        }
        Ok(())
    }
}

pub struct HealthServer {
    listener: TcpListener,
    readiness: Arc<Readiness>,
}

#[derive(Debug, thiserror::Error)]
#[error("HTTP listener on {address}: {source}")]
pub struct BindError {
    address: SocketAddr,
    source: std::io::Error,
}

impl HealthServer {
    pub async fn bind(
        address: SocketAddr,
        readiness: Arc<Readiness>,
    ) -> Result<HealthServer, BindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BindError { address, source })?;
        Ok(HealthServer {
            listener,
            readiness,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (socket, _) = tokio::select! {
                _ = shutdown.changed() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP listener could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Over the cap, a connection is closed at once.
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let readiness = self.readiness.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIME, answer(socket, &readiness)).await;
                drop(permit);
            });
        }
    }
}

async fn answer(mut socket: TcpStream, readiness: &Readiness) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= MAX_REQUEST_BYTES {
            let status = "431 Request Header Fields Too Large";
            return respond(&mut socket, status, "text/plain", "", true).await;
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let head = method == b"HEAD";
    if method != b"GET" && !head {
        return respond(
            &mut socket,
            "405 Method Not Allowed",
            "text/plain",
            "",
            true,
        )
        .await;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match path {
        b"/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        b"/readyz" => match readiness.check() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        b"/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            METRICS.encode(),
        ),
        _ => ("404 Not Found", "text/plain", String::new()),
    };
    respond(&mut socket, status, content_type, &body, !head).await
}

async fn respond(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    send_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    if send_body {
        socket.write_all(body.as_bytes()).await?;
    }
    socket.shutdown().await
}
