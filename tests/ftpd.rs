//! A real pure-ftpd (Debian's `pure-ftpd`), standing in for a partner's FTP
//! or FTPS server that dropgate pulls files from and pushes files to.
//!
//! One virtual user (no system account) chrooted to [`Ftpd::home`]. pure-ftpd
//! maps virtual users to a non-root uid, so files the tests place there are
//! handed to that uid. For TLS a test CA and a server certificate for
//! 127.0.0.1 are made with `openssl` at run time.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::{command_output, free_port, signal_tree};

const PURE_FTPD: &str = "/usr/sbin/pure-ftpd";
/// `nobody` / `nogroup`: pure-ftpd refuses virtual users with uid 0.
const FTP_UID: u32 = 65534;
const START_TIMEOUT: Duration = Duration::from_secs(10);
pub const USER: &str = "carehome";
const PASSWORD: &str = "correct horse battery staple";

pub struct Ftpd {
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
    /// Download bandwidth limit in KB/s, to catch a transfer midway.
    throttle: Option<u32>,
    child: Option<Child>,
}

impl Ftpd {
    /// Plain FTP.
    pub fn plain() -> Ftpd {
        Self::start(false, None)
    }

    /// FTPS: `AUTH TLS` required for the control and data connections.
    pub fn tls() -> Ftpd {
        Self::start(true, None)
    }

    /// FTPS serving downloads at `kbytes_per_s`.
    pub fn tls_throttled(kbytes_per_s: u32) -> Ftpd {
        Self::start(true, Some(kbytes_per_s))
    }

    fn start(tls: bool, throttle: Option<u32>) -> Ftpd {
        assert!(
            Path::new(PURE_FTPD).is_file(),
            "{PURE_FTPD} is missing: the tests need Debian's pure-ftpd (scripts/test installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        give_to_ftp_user(&home);
        // A fast sha512-crypt hash: pure-pw's own (argon2) takes seconds per login.
        let hash = command_output(Command::new("openssl").args([
            "passwd",
            "-6",
            "-salt",
            "dropgatetests",
            PASSWORD,
        ]));
        fs::write(
            dir.path().join("passwd"),
            format!(
                "{USER}:{hash}:{FTP_UID}:{FTP_UID}::{}/./::::::::::::\n",
                home.display()
            ),
        )
        .unwrap();
        command_output(
            Command::new("pure-pw")
                .arg("mkdb")
                .arg(dir.path().join("passwd.pdb"))
                .arg("-f")
                .arg(dir.path().join("passwd")),
        );
        fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        fs::set_permissions(
            dir.path().join("password"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if tls {
            make_certificates(dir.path());
        }
        let mut ftpd = Ftpd {
            dir,
            port: 0,
            tls,
            throttle,
            child: None,
        };
        for _ in 0..5 {
            ftpd.port = free_port();
            if ftpd.spawn() {
                return ftpd;
            }
        }
        panic!("pure-ftpd did not start on any of five ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user's folder, `/` to the client.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A file holding the user's password (mode 0600).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing this server presents.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The server certificate's SHA-256 fingerprint, `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        let out = command_output(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(self.dir.path().join("server.crt")),
        );
        out.split_once('=')
            .expect("openssl prints name=value")
            .1
            .to_string()
    }

    /// A folder in the user's home, created for the user.
    pub fn folder(&self, name: &str) -> PathBuf {
        let path = self.home().join(name);
        fs::create_dir_all(&path).unwrap();
        give_to_ftp_user(&path);
        path
    }

    /// Places a file in the user's home as if the partner had put it there.
    pub fn place(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.home().join(relative);
        fs::write(&path, bytes).unwrap();
        give_to_ftp_user(&path);
        path
    }

    /// SIGKILL to the listener and every session: a server that dies mid-transfer.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_tree(child.id(), "KILL");
            let _ = child.wait();
        }
    }

    /// Starts again after [`Ftpd::kill`], on the same port, without any throttle.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "pure-ftpd is already running");
        self.throttle = None;
        let start = Instant::now();
        while !self.spawn() {
            assert!(
                start.elapsed() < START_TIMEOUT,
                "pure-ftpd did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts pure-ftpd in the foreground and waits until it accepts
    /// connections; false when it exits at once (the port was taken).
    fn spawn(&mut self) -> bool {
        let dir = self.dir.path();
        let mut command = Command::new(PURE_FTPD);
        command
            .arg("-S")
            .arg(format!("127.0.0.1,{}", self.port))
            .arg("-l")
            .arg(format!("puredb:{}", dir.join("passwd.pdb").display()))
            // No anonymous logins, chroot everyone, no DNS lookups, no syslog.
            .args(["-E", "-A", "-H", "-f", "none"]);
        if self.tls {
            // TLS required on the control and the data connections.
            command
                .args(["-Y", "3", "-2"])
                .arg(dir.join("combined.pem"));
        }
        if let Some(kbytes) = self.throttle {
            command.arg("-T").arg(format!("{kbytes}:{kbytes}"));
        }
        // Its own process group, so the sessions it forks die with it.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = command.spawn().expect("start pure-ftpd");
        match wait_listening(&mut child, self.port, "pure-ftpd") {
            Ok(()) => {
                self.child = Some(child);
                true
            }
            Err(status) => {
                assert!(
                    status.code() != Some(252),
                    "pure-ftpd refused its configuration (exit 252)"
                );
                false
            }
        }
    }
}

/// Waits until `child` accepts connections on `port`; its exit status if it
/// exits first (the port was taken, or it refused to start).
fn wait_listening(child: &mut Child, port: u16, what: &str) -> Result<(), ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(status);
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not listen on port {port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Ftpd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn give_to_ftp_user(path: &Path) {
    std::os::unix::fs::chown(path, Some(FTP_UID), Some(FTP_UID)).unwrap();
}

/// A test CA, a server certificate it signs for 127.0.0.1, and a second,
/// unrelated CA; pure-ftpd reads key and certificate from one PEM file.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (name, subject) in [
        ("ca", "/CN=dropgate test CA"),
        ("other-ca", "/CN=unrelated CA"),
    ] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let combined = fs::read_to_string(dir.join("server.key")).unwrap()
        + &fs::read_to_string(dir.join("server.crt")).unwrap();
    fs::write(dir.join("combined.pem"), combined).unwrap();
    fs::set_permissions(dir.join("combined.pem"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// Implicit FTPS (TLS from the first byte, as on port 990), which Debian's
/// pure-ftpd cannot serve: pyftpdlib's TLS handler (PyPI), made to start TLS
/// at once.
pub struct ImplicitFtps {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

const IMPLICIT_SERVER: &str = r#"
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer

root, certfile, keyfile, port, password = sys.argv[1:6]
authorizer = DummyAuthorizer()
authorizer.add_user("carehome", password, root, perm="elradfmwMT")

class Implicit(TLS_FTPHandler):
    # TLS from the first byte; data connections stay clear until the client
    # sends PBSZ 0 and PROT P, as RFC 4217 has it.
    def handle(self):
        self.secure_connection(self.ssl_context)
        super().handle()

Implicit.certfile = certfile
Implicit.keyfile = keyfile
Implicit.authorizer = authorizer
FTPServer(("127.0.0.1", int(port)), Implicit).serve_forever()
"#;

impl ImplicitFtps {
    pub fn start() -> ImplicitFtps {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("home")).unwrap();
        make_certificates(dir.path());
        fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        fs::set_permissions(
            dir.path().join("password"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::write(dir.path().join("server.py"), IMPLICIT_SERVER).unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("python3")
                .arg(dir.path().join("server.py"))
                .arg(dir.path().join("home"))
                .arg(dir.path().join("server.crt"))
                .arg(dir.path().join("server.key"))
                .arg(port.to_string())
                .arg(PASSWORD)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 with pyftpdlib and pyopenssl (scripts/test installs them)");
            // An exit means the port was taken, or pyftpdlib is missing.
            if wait_listening(&mut child, port, "pyftpdlib").is_ok() {
                return ImplicitFtps { dir, port, child };
            }
        }
        panic!("the implicit FTPS server did not start (are pyftpdlib and pyopenssl installed?)");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for ImplicitFtps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
