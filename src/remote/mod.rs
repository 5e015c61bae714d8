//! Remote file servers that dropgate logs in to: partners' servers it pulls
//! from (sources) and pushes to (destinations). SFTP and FTP(S) are two
//! transports behind the same few operations.

pub mod ftp;
pub mod sftp;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// A remote server and folder, reached by one of the transports.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Sftp(sftp::Endpoint),
    Ftp(ftp::Endpoint),
}

impl Endpoint {
    pub fn folder(&self) -> &str {
        match self {
            Endpoint::Sftp(e) => &e.folder,
            Endpoint::Ftp(e) => &e.folder,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, user, host, port, folder) = match self {
            Endpoint::Sftp(e) => ("sftp", &e.user, &e.host, e.port, &e.folder),
            Endpoint::Ftp(e) => {
                let scheme = match &e.tls {
                    None => "ftp",
                    Some(tls) if tls.implicit => "ftps-implicit",
                    Some(_) => "ftps",
                };
                (scheme, &e.user, &e.host, e.port, &e.folder)
            }
        };
        write!(
            f,
            "{scheme}://{user}@{host}:{port}/{}",
            folder.trim_start_matches('/')
        )
    }
}

/// A file as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
}

/// A logged-in session on either transport.
pub enum Connection {
    Sftp(sftp::Connection),
    Ftp(ftp::Connection),
}

impl Connection {
    pub async fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Connection, RemoteError> {
        Ok(match endpoint {
            Endpoint::Sftp(e) => Connection::Sftp(sftp::Connection::connect(e, timeout).await?),
            Endpoint::Ftp(e) => Connection::Ftp(ftp::Connection::connect(e, timeout).await?),
        })
    }

    /// Regular files in the endpoint's folder whose names are plain and
    /// `wanted`. Asking only for those spares a round trip per unwanted file
    /// where a server needs one for precise times (FTP's `MDTM`).
    pub async fn list<F>(&mut self, wanted: F) -> Result<Vec<RemoteFile>, RemoteError>
    where
        F: Fn(&str) -> bool + Send + Sync,
    {
        let mut unsafe_names = 0;
        let wanted = |name: &str| {
            if is_plain_name(name) {
                wanted(name)
            } else {
                unsafe_names += 1;
                false
            }
        };
        let files = match self {
            Connection::Sftp(c) => {
                let mut files = c.list().await?;
                let mut wanted = wanted;
                files.retain(|f| wanted(&f.name));
                files
            }
            Connection::Ftp(c) => c.list(wanted).await?,
        };
        if unsafe_names > 0 {
            tracing::warn!(
                entries = unsafe_names,
                "the server listed names with path separators or `..`; they are ignored"
            );
        }
        Ok(files)
    }

    /// Downloads `name` into `local` (created, fsynced); returns its size.
    /// A partial download is an error. A server that sends
    /// more than `at_most` bytes (the size it listed) is cut off once it has:
    /// no more than one byte over reaches the disk.
    pub async fn download(
        &mut self,
        name: &str,
        local: &Path,
        at_most: u64,
    ) -> Result<u64, RemoteError> {
        match self {
            Connection::Sftp(c) => c.download(name, local, at_most).await,
            Connection::Ftp(c) => c.download(name, local, at_most).await,
        }
    }

    pub async fn remove(&mut self, name: &str) -> Result<(), RemoteError> {
        match self {
            Connection::Sftp(c) => c.remove(name).await,
            Connection::Ftp(c) => c.remove(name).await,
        }
    }

    /// Moves `name` into `folder` (relative to the endpoint's folder unless absolute).
    pub async fn move_to(&mut self, name: &str, folder: &str) -> Result<(), RemoteError> {
        match self {
            Connection::Sftp(c) => c.move_to(name, folder).await,
            Connection::Ftp(c) => c.move_to(name, folder).await,
        }
    }

    /// Uploads under a temporary name, checks the size, then renames to
    /// `name`, so the receiver never sees a partial file. Returns the size.
    pub async fn put(&mut self, upload: Upload<'_>, name: &str) -> Result<u64, RemoteError> {
        let chunks = Chunks::open(upload).await?;
        match self {
            Connection::Sftp(c) => c.put(chunks, name).await,
            Connection::Ftp(c) => c.put(chunks, name).await,
        }
    }

    /// Creates `name` (a folder, relative to the endpoint's folder) unless it exists.
    pub async fn make_folder(&mut self, name: &str) -> Result<(), RemoteError> {
        match self {
            Connection::Sftp(c) => c.make_folder(name).await,
            Connection::Ftp(c) => c.make_folder(name).await,
        }
    }

    /// Ends the session politely.
    pub async fn close(self) {
        match self {
            Connection::Sftp(_) => {}
            Connection::Ftp(c) => c.close().await,
        }
    }
}

/// Of `read` bytes just received, how many a download keeps when `total`
/// are kept already and at most `at_most` may be: one past the cap at most,
/// which is how the caller learns the server sent more than it may.
pub(crate) fn within_cap(read: usize, total: u64, at_most: u64) -> usize {
    let room = at_most.saturating_sub(total).saturating_add(1);
    read.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// A download's local copy. Writeback to disk is started every
/// [`Self::FLUSH_EVERY`] bytes while the transfer goes on, so the fsync at
/// the end, which a download must have before it is landed, finds little
/// left to write.
pub(crate) struct LocalCopy {
    file: tokio::fs::File,
    unflushed: u64,
    flushing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalCopy {
    const FLUSH_EVERY: u64 = 32 << 20;

    pub async fn create(path: &Path) -> std::io::Result<LocalCopy> {
        Ok(LocalCopy {
            file: tokio::fs::File::create(path).await?,
            unflushed: 0,
            flushing: None,
        })
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.write_all(bytes).await?;
        self.unflushed += bytes.len() as u64;
        if self.unflushed >= Self::FLUSH_EVERY
            && self.flushing.as_ref().is_none_or(|f| f.is_finished())
        {
            if let Some(previous) = self.flushing.take() {
                previous.await.map_err(std::io::Error::other)??;
            }
            self.file.flush().await?;
            let clone = self.file.try_clone().await?.into_std().await;
            self.flushing = Some(tokio::task::spawn_blocking(move || clone.sync_data()));
            self.unflushed = 0;
        }
        Ok(())
    }

    /// Durable on disk: only then may the copy be landed.
    pub async fn finish(mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if let Some(previous) = self.flushing.take() {
            previous.await.map_err(std::io::Error::other)??;
        }
        self.file.flush().await?;
        self.file.sync_all().await
    }
}

/// A password or other secret: never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why talking to a remote server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error(
        "host key of {address} does not match the pinned key: the server presented {seen}, the config pins {pinned}; if the server's key really changed, update `host_key`"
    )]
    HostKeyMismatch {
        address: String,
        seen: String,
        pinned: String,
    },
    #[error("{address} refused the login of `{user}` with the configured {with}")]
    Auth {
        address: String,
        user: String,
        /// `key` or `password`.
        with: &'static str,
    },
    #[error(
        "TLS certificate of {address} refused ({message}); the server presented SHA-256 fingerprint {seen}; trust its authority with `ca_file`, or pin exactly that certificate with `certificate_fingerprint` if you have checked it with the server's owner"
    )]
    Certificate {
        address: String,
        seen: String,
        message: String,
    },
    #[error("key {path}: {message}")]
    Key { path: String, message: String },
    // File names never appear in these messages: they are logged and kept
    // as a source's last error, and names may carry patient identifiers.
    #[error("{operation} failed: {message}")]
    Transfer {
        operation: &'static str,
        message: String,
    },
    /// The server refused an operation on one file; others may still work.
    #[error("the server refused to {operation}: {message}")]
    Refused {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: the file has {local} bytes here but {remote} on the server")]
    SizeMismatch {
        operation: &'static str,
        local: u64,
        remote: u64,
    },
    #[error("local disk: {0}")]
    Local(#[from] std::io::Error),
}

impl RemoteError {
    /// About one file only: the poll goes on with the others.
    pub fn is_about_one_file(&self) -> bool {
        matches!(
            self,
            RemoteError::Refused { .. } | RemoteError::SizeMismatch { .. }
        )
    }
}

/// A server's message with a file's name taken out.
pub(crate) fn without_name(message: String, name: &str) -> String {
    if name.is_empty() {
        message
    } else {
        message.replace(name, "<file>")
    }
}

/// Whether a listed name can only mean a file in the listed folder: no
/// separators, no `.`/`..`, no NUL. A server offering any other is not
/// followed (a name such as `/etc/passwd` or `../x` would lead a download
/// out of its staging folder).
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Exponential backoff with jitter between attempts, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `n` (1-based; the first retry is attempt 2).
    pub fn delay(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let exponent = attempt.saturating_sub(2).min(20);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        // Up to a quarter either way, so many clients do not retry in step.
        let spread = base.as_millis() as u64 / 4;
        if spread == 0 {
            return base;
        }
        let offset = splitmix(jitter_seed ^ u64::from(attempt)) % (2 * spread + 1);
        (base + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where an upload of `name` (which may be `folder/file`) is written before
/// it is renamed: beside it, hidden behind a dot and marked `.part`.
pub(crate) fn temporary_name(name: &str) -> String {
    match name.rsplit_once('/') {
        Some((folder, file)) => format!("{folder}/.{file}.part"),
        None => format!(".{name}.part"),
    }
}

/// What an upload sends: a file, or bytes made as they are sent (a
/// decrypted payload, which must never be written to disk first).
pub enum Upload<'a> {
    File(&'a Path),
    Stream(Box<dyn Read + Send>),
}

/// Bytes read on the way to the server.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// An upload's bytes, chunk by chunk. A stream is read on a blocking
/// thread, at most a few chunks ahead of the network.
pub(crate) struct Chunks {
    source: ChunkSource,
    /// The chunk last handed out. A file is read into the same one each
    /// time: a fresh 256 KiB per chunk cost its pages faulted in anew.
    chunk: Vec<u8>,
}

enum ChunkSource {
    File(tokio::fs::File),
    Stream(tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>),
}

impl Chunks {
    pub(crate) async fn open(upload: Upload<'_>) -> std::io::Result<Chunks> {
        let source = match upload {
            Upload::File(path) => ChunkSource::File(tokio::fs::File::open(path).await?),
            Upload::Stream(mut reader) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::task::spawn_blocking(move || {
                    loop {
                        let mut chunk = vec![0u8; UPLOAD_CHUNK];
                        let read = match reader.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(n) => {
                                chunk.truncate(n);
                                Ok(chunk)
                            }
                            Err(e) => Err(e),
                        };
                        let failed = read.is_err();
                        // The upload stopped listening: stop reading.
                        if tx.blocking_send(read).is_err() || failed {
                            return;
                        }
                    }
                });
                ChunkSource::Stream(rx)
            }
        };
        Ok(Chunks {
            source,
            chunk: Vec::new(),
        })
    }

    /// The next chunk; `None` at the end.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        match &mut self.source {
            ChunkSource::File(file) => {
                self.chunk.resize(UPLOAD_CHUNK, 0);
                let n = file.read(&mut self.chunk).await?;
                Ok((n > 0).then(|| &self.chunk[..n]))
            }
            ChunkSource::Stream(rx) => match rx.recv().await.transpose()? {
                Some(chunk) => {
                    self.chunk = chunk;
                    Ok(Some(&self.chunk))
                }
                None => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_keeps_what_its_cap_allows_and_one_byte_more() {
        assert_eq!(within_cap(4096, 0, u64::MAX), 4096, "no cap");
        assert_eq!(within_cap(4096, u64::MAX - 10, u64::MAX), 11);
        assert_eq!(within_cap(4096, 0, 100), 101);
        assert_eq!(within_cap(4096, 100, 100), 1);
        assert_eq!(within_cap(50, 0, 100), 50);
        assert_eq!(within_cap(4096, 0, 0), 1);
    }

    #[test]
    fn only_plain_names_are_followed() {
        for name in ["news2_a.csv", "name with spaces.csv", ".hidden", "a..b"] {
            assert!(is_plain_name(name), "{name}");
        }
        for name in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0b"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
    }

    #[test]
    fn server_messages_lose_the_file_name() {
        let message = "550 news2_9434765919.csv: Permission denied".to_string();
        assert_eq!(
            without_name(message, "news2_9434765919.csv"),
            "550 <file>: Permission denied"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        for seed in 0..50 {
            let d2 = b.delay(2, seed).as_millis();
            assert!((750..=1250).contains(&d2), "{d2}");
            let d4 = b.delay(4, seed).as_millis();
            assert!((3000..=5000).contains(&d4), "{d4}");
            let d20 = b.delay(20, seed).as_millis();
            assert!((22_500..=37_500).contains(&d20), "{d20}");
        }
    }

    #[test]
    fn an_upload_waits_hidden_beside_its_final_name() {
        assert_eq!(temporary_name("a.csv"), ".a.csv.part");
        assert_eq!(
            temporary_name("export-1/manifest.json"),
            "export-1/.manifest.json.part"
        );
    }
}
