//! FTP and FTPS client (suppaftp over tokio, rustls with ring).
//!
//! Transfers are always binary (`TYPE I`): the crate's default is ASCII,
//! which rewrites line ends. Every command and every read of a data
//! connection has the endpoint's timeout, since the crate sets none beyond
//! the TCP connect; after a timeout the connection is dropped, not reused.

mod listing;
mod tls;

use listing::{Listed, parse_list_line, remote_file, seconds};
pub use tls::{Tls, Verifier, fingerprint, parse_fingerprint};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use regex::Regex;
use suppaftp::list::{File as ListedFile, ListParser};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::WebPkiServerVerifier,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{RemoteError, RemoteFile, Secret};

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// `None` only where the config said `insecure_plaintext = true`.
    pub tls: Option<Tls>,
    pub data: DataMode,
    pub listing: Listing,
    /// Remote folder files are taken from or put into.
    pub folder: String,
}

/// How data connections are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// `PASV`, connecting to the control connection's address whatever the
    /// reply says (servers behind NAT often announce a private address).
    Passive,
    /// `EPSV`.
    ExtendedPassive,
    /// `PORT`/`EPRT`: the server connects back.
    Active,
}

/// How folders are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `MLSD` where `FEAT` offers it, else `LIST`.
    Auto,
    Mlsd,
    /// `LIST`, in Unix (`ls -l`) or DOS/IIS style; times from `MDTM` where offered.
    List,
}

/// A logged-in FTP session in binary mode, in the endpoint's folder.
pub struct Connection {
    endpoint: Endpoint,
    ftp: AsyncRustlsFtpStream,
    timeout: Duration,
    mlsd: bool,
    mdtm: bool,
    /// A step timed out: its reply may still come and would be read as the
    /// answer to the next command, so nothing more is sent.
    abandoned: bool,
}

/// Runs one step of an open session within the timeout; after a timeout
/// the session is abandoned.
async fn step<T>(
    timeout: Duration,
    abandoned: &mut bool,
    future: impl Future<Output = Result<T, FtpError>>,
) -> Result<T, FtpError> {
    if *abandoned {
        return Err(FtpError::ConnectionError(std::io::Error::other(
            "the session was abandoned after a timeout",
        )));
    }
    let result = within(timeout, future).await;
    if let Err(FtpError::ConnectionError(e)) = &result
        && e.kind() == std::io::ErrorKind::TimedOut
    {
        *abandoned = true;
    }
    result
}

/// Runs one FTP step within the timeout.
/// Tries each address a name resolves to in turn, as OpenSSH does, so a
/// name whose first address the server does not listen on (IPv6 before
/// IPv4, say) still connects. The last failure is returned.
async fn first_that_connects<T, E, Step>(
    addresses: &[SocketAddr],
    mut connect: impl FnMut(SocketAddr) -> Step,
) -> Result<T, E>
where
    Step: Future<Output = Result<T, E>>,
{
    let mut failure = None;
    for &address in addresses {
        match connect(address).await {
            Ok(connected) => return Ok(connected),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.expect("at least one address"))
}

async fn within<T>(
    timeout: Duration,
    step: impl Future<Output = Result<T, FtpError>>,
) -> Result<T, FtpError> {
    match tokio::time::timeout(timeout, step).await {
        Ok(result) => result,
        Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))),
    }
}

/// Maps an FTP error: a reply refusing the operation is about this file
/// only; anything else is the connection's. `name` is taken out of the
/// server's words.
fn transfer(operation: &'static str, name: &str) -> impl FnOnce(FtpError) -> RemoteError {
    let name = name.to_string();
    move |e| {
        let message = super::without_name(describe(&e), &name);
        match e {
            FtpError::UnexpectedResponse(_) => RemoteError::Refused { operation, message },
            _ => RemoteError::Transfer { operation, message },
        }
    }
}

/// The server's own words where it gave some.
fn describe(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(response) => {
            let body = String::from_utf8_lossy(&response.body);
            format!("server replied {}", body.trim())
        }
        other => other.to_string(),
    }
}

fn refused_as(e: &FtpError, status: Status) -> bool {
    matches!(e, FtpError::UnexpectedResponse(r) if r.status == status)
}

impl Connection {
    pub async fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Connection, RemoteError> {
        let address = format!("{}:{}", endpoint.host, endpoint.port);
        let connect_error = |message: String| RemoteError::Connect {
            address: address.clone(),
            message,
        };
        let addresses: Vec<SocketAddr> = within(timeout, async {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                    .await
                    .map_err(FtpError::ConnectionError)?
                    .collect();
            if found.is_empty() {
                return Err(FtpError::ConnectionError(std::io::Error::other(
                    "the name has no address",
                )));
            }
            Ok(found)
        })
        .await
        .map_err(|e| connect_error(describe(&e)))?;
        // One per attempt: a connector is used up by its connection.
        let connector = || {
            endpoint.tls.as_ref().map(|tls| {
                // A refusal remembered from an earlier session is not this one's.
                tls.verifier.take_refused();
                let config = ClientConfig::builder_with_provider(tls.verifier.provider.clone())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .dangerous()
                    .with_custom_certificate_verifier(tls.verifier.clone())
                    .with_no_client_auth();
                AsyncRustlsConnector::from(TlsConnector::from(Arc::new(config)))
            })
        };
        let tls_error = |e: FtpError| match endpoint
            .tls
            .as_ref()
            .and_then(|t| t.verifier.take_refused())
        {
            Some(seen) => RemoteError::Certificate {
                address: address.clone(),
                seen,
                message: describe(&e),
            },
            None => connect_error(describe(&e)),
        };
        let mut ftp = match &endpoint.tls {
            Some(tls) if tls.implicit => {
                let mut ftp = first_that_connects(&addresses, |socket| {
                    within(
                        timeout,
                        AsyncRustlsFtpStream::connect_secure_implicit(
                            socket,
                            connector().expect("TLS settings"),
                            &endpoint.host,
                        ),
                    )
                })
                .await
                .map_err(tls_error)?;
                // suppaftp sends these only after AUTH TLS; an implicit
                // server starts with clear data connections until told.
                for command in ["PBSZ 0", "PROT P"] {
                    let reply =
                        within(timeout, ftp.custom_command(command, &[Status::CommandOk])).await;
                    reply.map_err(|e| {
                        connect_error(format!("{command} refused: {}", describe(&e)))
                    })?;
                }
                ftp
            }
            _ => {
                let plain = first_that_connects(&addresses, |socket| {
                    within(
                        timeout,
                        AsyncRustlsFtpStream::connect_timeout(socket, timeout),
                    )
                })
                .await
                .map_err(|e| connect_error(describe(&e)))?;
                match connector() {
                    Some(connector) => {
                        within(timeout, plain.into_secure(connector, &endpoint.host))
                            .await
                            .map_err(tls_error)?
                    }
                    None => plain,
                }
            }
        };
        match within(
            timeout,
            ftp.login(endpoint.user.as_str(), endpoint.password.expose()),
        )
        .await
        {
            Ok(()) => {}
            Err(e) if refused_as(&e, Status::NotLoggedIn) => {
                return Err(RemoteError::Auth {
                    address,
                    user: endpoint.user.clone(),
                    with: "password",
                });
            }
            Err(FtpError::ConnectionError(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                // Many servers hold back a refusal for seconds to slow guessing.
                return Err(connect_error(format!(
                    "no answer to the login within {timeout:?}; a server delays refused logins, so check `user` and the password, or allow a longer `timeout`"
                )));
            }
            Err(e) => return Err(connect_error(describe(&e))),
        }
        within(timeout, ftp.transfer_type(FileType::Binary))
            .await
            .map_err(|e| connect_error(format!("binary mode refused: {}", describe(&e))))?;
        ftp = match endpoint.data {
            DataMode::Passive => {
                ftp.set_mode(Mode::Passive);
                ftp.set_passive_nat_workaround(true);
                ftp
            }
            DataMode::ExtendedPassive => {
                ftp.set_mode(Mode::ExtendedPassive);
                ftp
            }
            DataMode::Active => ftp.active_mode(timeout),
        };
        // Servers that predate FEAT refuse it: they have neither MLSD nor MDTM.
        let features = match within(timeout, ftp.feat()).await {
            Ok(features) => features,
            Err(FtpError::UnexpectedResponse(_)) => Default::default(),
            Err(e) => return Err(connect_error(format!("FEAT: {}", describe(&e)))),
        };
        let offers = |name: &str| features.keys().any(|k| k.eq_ignore_ascii_case(name));
        let mlsd = match endpoint.listing {
            Listing::Auto => offers("MLST") || offers("MLSD"),
            Listing::Mlsd => true,
            Listing::List => false,
        };
        let mdtm = offers("MDTM");
        if !endpoint.folder.is_empty() && endpoint.folder != "." {
            within(timeout, ftp.cwd(endpoint.folder.as_str()))
                .await
                .map_err(transfer("change to the configured folder", ""))?;
        }
        Ok(Connection {
            endpoint: endpoint.clone(),
            ftp,
            timeout,
            mlsd,
            mdtm,
            abandoned: false,
        })
    }

    /// Regular files in the endpoint's folder whose names are `wanted`.
    pub async fn list(
        &mut self,
        mut wanted: impl FnMut(&str) -> bool + Send,
    ) -> Result<Vec<RemoteFile>, RemoteError> {
        let timeout = self.timeout;
        let mut unreadable = 0;
        let mut files = Vec::new();
        if self.mlsd {
            let lines = step(timeout, &mut self.abandoned, self.ftp.mlsd(None))
                .await
                .map_err(transfer("list the folder (MLSD)", ""))?;
            for line in &lines {
                match ListParser::parse_mlsd(line) {
                    Ok(file) if file.is_file() && wanted(file.name()) => {
                        files.push(remote_file(&file))
                    }
                    Ok(_) => {}
                    Err(_) => unreadable += 1,
                }
            }
        } else {
            let lines = step(timeout, &mut self.abandoned, self.ftp.list(None))
                .await
                .map_err(transfer("list the folder (LIST)", ""))?;
            for line in &lines {
                match parse_list_line(line) {
                    Some(Listed::File(file)) if wanted(&file.name) => files.push(file),
                    Some(_) => {}
                    None => unreadable += 1,
                }
            }
            if self.mdtm {
                // LIST times are to the minute at best, and change form after
                // six months; MDTM gives seconds. A file whose MDTM fails is
                // left out this time rather than given a time of another kind.
                let mut timed = Vec::with_capacity(files.len());
                for mut file in files {
                    let asked = self.ftp.mdtm(file.name.as_str());
                    match step(timeout, &mut self.abandoned, asked).await {
                        Ok(time) => {
                            file.mtime = seconds(time);
                            timed.push(file);
                        }
                        Err(FtpError::UnexpectedResponse(_)) => {}
                        Err(e) => return Err(transfer("read modification times", &file.name)(e)),
                    }
                }
                files = timed;
            }
        }
        if unreadable > 0 {
            // Names are not logged: they may carry patient identifiers.
            tracing::warn!(host = %self.endpoint.host, lines = unreadable, "listing lines that could not be read were skipped");
        }
        Ok(files)
    }

    /// Downloads `name` into `local` (created, fsynced); returns the bytes written.
    pub async fn download(
        &mut self,
        name: &str,
        local: &Path,
        at_most: u64,
    ) -> Result<u64, RemoteError> {
        let timeout = self.timeout;
        let mut stream = step(timeout, &mut self.abandoned, self.ftp.retr_as_stream(name))
            .await
            .map_err(transfer("download", name))?;
        let mut output = super::LocalCopy::create(local).await?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let read = async {
                stream
                    .read(&mut buffer)
                    .await
                    .map_err(FtpError::ConnectionError)
            };
            let n = step(timeout, &mut self.abandoned, read)
                .await
                .map_err(transfer("download", name))?;
            if n == 0 {
                break;
            }
            let n = super::within_cap(n, total, at_most);
            output.write_all(&buffer[..n]).await?;
            total += n as u64;
            if total > at_most {
                // The transfer is cut off mid-stream: the session's state
                // is no longer known, so it is not used again.
                self.abandoned = true;
                return Err(RemoteError::SizeMismatch {
                    operation: "download",
                    local: total,
                    remote: at_most,
                });
            }
        }
        // The data connection closing is not proof of a whole file: only
        // the server's 226 is.
        step(timeout, &mut self.abandoned, stream.finish())
            .await
            .map_err(transfer("finish a download", name))?;
        output.finish().await?;
        Ok(total)
    }

    pub async fn remove(&mut self, name: &str) -> Result<(), RemoteError> {
        step(self.timeout, &mut self.abandoned, self.ftp.rm(name))
            .await
            .map_err(transfer("remove a file", name))
    }

    /// Creates `name` (a folder, relative to the endpoint's folder) unless it exists.
    pub async fn make_folder(&mut self, name: &str) -> Result<(), RemoteError> {
        let timeout = self.timeout;
        let made = step(timeout, &mut self.abandoned, self.ftp.mkdir(name)).await;
        match made {
            Ok(()) => Ok(()),
            // Most servers refuse MKD of a folder that exists: one we can enter is there.
            Err(FtpError::UnexpectedResponse(response)) => {
                if step(timeout, &mut self.abandoned, self.ftp.cwd(name))
                    .await
                    .is_ok()
                {
                    step(timeout, &mut self.abandoned, self.ftp.cdup())
                        .await
                        .map_err(transfer("leave a folder", name))?;
                    Ok(())
                } else {
                    Err(transfer("create a folder", name)(
                        FtpError::UnexpectedResponse(response),
                    ))
                }
            }
            Err(e) => Err(transfer("create a folder", name)(e)),
        }
    }

    /// Moves `name` into `folder` (relative to the endpoint's folder unless absolute).
    pub async fn move_to(&mut self, name: &str, folder: &str) -> Result<(), RemoteError> {
        let to = format!("{}/{name}", folder.trim_end_matches('/'));
        step(
            self.timeout,
            &mut self.abandoned,
            self.ftp.rename(name, to.as_str()),
        )
        .await
        .map_err(transfer("move a file aside", name))
    }

    /// Uploads under a temporary name, checks the size, then renames to
    /// `name`, so the receiver never sees a partial file. Returns the size.
    pub(super) async fn put(
        &mut self,
        mut chunks: super::Chunks,
        name: &str,
    ) -> Result<u64, RemoteError> {
        let timeout = self.timeout;
        let temporary = super::temporary_name(name);
        let mut stream = step(
            timeout,
            &mut self.abandoned,
            self.ftp.put_with_stream(temporary.as_str()),
        )
        .await
        .map_err(transfer("upload", name))?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await? {
            let write = async {
                stream
                    .write_all(chunk)
                    .await
                    .map_err(FtpError::ConnectionError)
            };
            step(timeout, &mut self.abandoned, write)
                .await
                .map_err(transfer("upload", name))?;
            size += chunk.len() as u64;
        }
        step(timeout, &mut self.abandoned, stream.finish())
            .await
            .map_err(transfer("finish an upload", name))?;
        let held = self.size_of(&temporary).await?;
        if held != size {
            let _ = step(
                timeout,
                &mut self.abandoned,
                self.ftp.rm(temporary.as_str()),
            )
            .await;
            return Err(RemoteError::SizeMismatch {
                operation: "upload",
                local: size,
                remote: held,
            });
        }
        let renamed = step(
            timeout,
            &mut self.abandoned,
            self.ftp.rename(temporary.as_str(), name),
        )
        .await;
        if let Err(e) = renamed {
            // Some servers (IIS among them) will not rename over an existing
            // file. Only then is the old one removed: a delivery replaces it.
            let target_exists = refused_as(&e, Status::FileUnavailable)
                && step(timeout, &mut self.abandoned, self.ftp.size(name))
                    .await
                    .is_ok();
            if !target_exists {
                return Err(transfer("rename an upload to its final name", name)(e));
            }
            step(timeout, &mut self.abandoned, self.ftp.rm(name))
                .await
                .map_err(transfer("replace an earlier delivery", name))?;
            step(
                timeout,
                &mut self.abandoned,
                self.ftp.rename(temporary.as_str(), name),
            )
            .await
            .map_err(transfer("rename an upload to its final name", name))?;
        }
        Ok(size)
    }

    /// A file's size by `SIZE`, or from a listing of just that file where
    /// the server lacks it (named, so a dot-file is listed too).
    async fn size_of(&mut self, name: &str) -> Result<u64, RemoteError> {
        let timeout = self.timeout;
        match step(timeout, &mut self.abandoned, self.ftp.size(name)).await {
            Ok(size) => Ok(size as u64),
            Err(FtpError::UnexpectedResponse(_)) => {
                let lines = step(timeout, &mut self.abandoned, self.ftp.list(Some(name)))
                    .await
                    .map_err(transfer("check the size of an upload", name))?;
                lines
                    .iter()
                    .find_map(|line| match parse_list_line(line) {
                        Some(Listed::File(file)) => Some(file.size),
                        _ => None,
                    })
                    .ok_or(RemoteError::Refused {
                        operation: "check the size of an upload",
                        message: "the server answers neither SIZE nor a readable LIST".into(),
                    })
            }
            Err(e) => Err(transfer("check the size of an upload", name)(e)),
        }
    }

    /// Says goodbye, unless the session was abandoned.
    pub async fn close(mut self) {
        let _ = step(self.timeout, &mut self.abandoned, self.ftp.quit()).await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_address_of_a_name_is_tried_in_turn() {
        let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = {
            let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            spare.local_addr().unwrap()
        };
        let open = listening.local_addr().unwrap();
        let tried = std::sync::Mutex::new(Vec::new());
        let stream = super::first_that_connects(&[closed, open], |address| {
            tried.lock().unwrap().push(address);
            tokio::net::TcpStream::connect(address)
        })
        .await
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
        assert_eq!(*tried.lock().unwrap(), [closed, open]);
        let failed = super::first_that_connects(&[closed], tokio::net::TcpStream::connect).await;
        assert_eq!(
            failed.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    }
}
