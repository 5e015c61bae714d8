//! FTP and FTPS transfer throughput of dropgate's client against `lftp`,
//! both talking to the same pure-ftpd on 127.0.0.1, with the same files.
//!
//! ```text
//! cargo bench --bench ftp [-- --size-mib 1024 --small-files 1000]
//! ```
//!
//! Needs `lftp` and `pure-ftpd` (`apt-get install lftp pure-ftpd`). For FTPS
//! (explicit TLS, data connections protected too) and for plain FTP:
//!
//! 1. One large file of random bytes: upload, then download; two runs each,
//!    the two clients alternating.
//! 2. Many ~4 KiB files in one session: upload them all, then download them all.
//!
//! dropgate runs as its sources and destinations do: each upload goes to a
//! temporary name, its size is checked, then it is renamed; each download
//! is fsynced. lftp does neither. Every timing includes the login. Progress
//! goes to stderr, the report to stdout; missed targets are reported, not
//! fatal; a failed or corrupted transfer is.

// The helpers are shared with the integration tests; only part is used here.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/ftpd.rs"]
mod ftpd;
#[allow(dead_code)]
#[path = "../tests/harness.rs"]
mod harness;
#[allow(dead_code, unused_imports)]
#[path = "../tests/sshd.rs"]
mod sshd;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use common::{LargeFile, Options, mb_per_s, progress, scratch, sha256_of, sync, write_random_file};
use dropgate::remote::ftp::{DataMode, Endpoint, Listing, Tls, Verifier};
use dropgate::remote::{Connection, Secret, Upload};
use ftpd::{Ftpd, USER};

const RUNS: usize = 2;
const SMALL_FILE_BYTES: u64 = 4096;
const TARGET_SHARE: f64 = 0.8;

fn main() -> ExitCode {
    common::exit_code(run())
}

fn run() -> Result<()> {
    let options = Options::parse("ftp", std::env::args().skip(1))?;
    let lftp_version = Command::new("lftp")
        .arg("--version")
        .output()
        .context("lftp is needed for the comparison: apt-get install lftp")?;
    let lftp_version = String::from_utf8_lossy(&lftp_version.stdout)
        .lines()
        .next()
        .unwrap_or("lftp")
        .to_string();
    let scratch = scratch("ftp-")?;
    let bytes = options.size_mib << 20;
    progress(format!("writing {} MiB of random bytes", options.size_mib));
    let large = write_random_file(&scratch.path().join("large.bin"), bytes)?;
    let small_dir = scratch.path().join("small");
    fs::create_dir_all(&small_dir)?;
    let small = write_small_files(&small_dir, options.small_files)?;
    let runtime = tokio::runtime::Runtime::new()?;

    println!("dropgate FTP / FTPS transfer benchmark");
    println!("======================================");
    println!(
        "server     pure-ftpd (Debian), 127.0.0.1, passive mode; FTPS = explicit TLS, data protected"
    );
    println!("clients    dropgate's FTP client (suppaftp + rustls/ring)   vs   {lftp_version}");
    println!(
        "           each timing from connect to logout; dropgate puts to a temporary name, checks the"
    );
    println!("           size and renames, and fsyncs downloads; lftp does neither");
    println!(
        "files      large: {} MiB random bytes; small: {} files of {} bytes",
        options.size_mib, options.small_files, SMALL_FILE_BYTES
    );
    println!("machine    2 CPUs shared by client and server; MB = 10^6 bytes");

    let mut summary = Vec::new();
    for tls in [true, false] {
        let label = if tls { "FTPS" } else { "FTP" };
        let server = if tls { Ftpd::tls() } else { Ftpd::plain() };
        let bench = Bench {
            server,
            tls,
            runtime: &runtime,
            downloads: scratch.path().join(format!("downloads-{label}")),
        };
        fs::create_dir_all(&bench.downloads)?;
        println!();
        println!("{label}");
        println!(
            "   {:<28}{:>6}{:>10}{:>12}",
            "transfer", "run", "wall", "MB/s"
        );
        // Best MB/s per client: uploads (dropgate, lftp), downloads (dropgate, lftp, lftp + fsync).
        let mut uploads = [0f64; 2];
        let mut downloads = [0f64; 3];
        for run in 1..=RUNS {
            for (tool, column) in [(Tool::Dropgate, 0), (Tool::Lftp, 1)] {
                progress(format!("{label}: large upload, {}, run {run}", tool.name()));
                let wall = bench.upload_large(tool, &large)?;
                uploads[column] = uploads[column].max(row("upload", tool, run, large.bytes, wall));
            }
            for (tool, column) in [(Tool::Dropgate, 0), (Tool::Lftp, 1), (Tool::LftpFsync, 2)] {
                progress(format!(
                    "{label}: large download, {}, run {run}",
                    tool.name()
                ));
                let wall = bench.download_large(tool, &large)?;
                downloads[column] =
                    downloads[column].max(row("download", tool, run, large.bytes, wall));
            }
        }
        println!(
            "   best upload    dropgate {:.1} MB/s, lftp {:.1} MB/s: {:.1} %",
            uploads[0],
            uploads[1],
            uploads[0] / uploads[1] * 100.0
        );
        println!(
            "   best download  dropgate {:.1} MB/s, lftp {:.1} MB/s: {:.1} %; lftp + fsync {:.1} MB/s: {:.1} %",
            downloads[0],
            downloads[1],
            downloads[0] / downloads[1] * 100.0,
            downloads[2],
            downloads[0] / downloads[2] * 100.0
        );
        summary.push((
            format!("{label} large upload"),
            uploads[0],
            uploads[1],
            "lftp",
        ));
        summary.push((
            format!("{label} large download"),
            downloads[0],
            downloads[1],
            "lftp",
        ));
        summary.push((
            format!("{label} large download"),
            downloads[0],
            downloads[2],
            "lftp + fsync",
        ));
        println!(
            "   {:<28}{:>16}{:>12}",
            "small files, one session", "wall", "files/s"
        );
        for tool in [Tool::Dropgate, Tool::Lftp] {
            progress(format!("{label}: small uploads, {}", tool.name()));
            let wall = bench.upload_small(tool, &small)?;
            println!(
                "   {:<28}{:>15.2}s{:>12.0}",
                format!("upload, {}", tool.name()),
                wall.as_secs_f64(),
                small.len() as f64 / wall.as_secs_f64()
            );
            progress(format!("{label}: small downloads, {}", tool.name()));
            let wall = bench.download_small(tool, &small)?;
            println!(
                "   {:<28}{:>15.2}s{:>12.0}",
                format!("download, {}", tool.name()),
                wall.as_secs_f64(),
                small.len() as f64 / wall.as_secs_f64()
            );
        }
    }

    println!();
    println!("Summary (best of {RUNS} runs, large file)");
    println!(
        "   {:<24}{:<14}{:>34}   RESULT",
        "TARGET: ≥ 80 % of", "", "MEASURED"
    );
    for (what, ours, theirs, against) in summary {
        let share = ours / theirs;
        println!(
            "   {what:<24}{against:<14}{:>34}   {}",
            format!("{:.1} % ({ours:.1} vs {theirs:.1} MB/s)", share * 100.0),
            if share >= TARGET_SHARE {
                "MET"
            } else {
                "NOT MET"
            }
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Tool {
    Dropgate,
    Lftp,
    /// lftp, then an fsync of what it wrote: as durable as dropgate's download.
    LftpFsync,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Dropgate => "dropgate",
            Tool::Lftp => "lftp",
            Tool::LftpFsync => "lftp + fsync",
        }
    }
}

/// Prints one timing; returns its MB/s.
fn row(direction: &str, tool: Tool, run: usize, bytes: u64, wall: Duration) -> f64 {
    let rate = mb_per_s(bytes, wall);
    println!(
        "   {:<28}{run:>6}{:>9.2}s{rate:>12.1}",
        format!("{direction}, {}", tool.name()),
        wall.as_secs_f64()
    );
    rate
}

struct Bench<'r> {
    server: Ftpd,
    tls: bool,
    runtime: &'r tokio::runtime::Runtime,
    downloads: PathBuf,
}

impl Bench<'_> {
    fn password(&self) -> Result<String> {
        Ok(fs::read_to_string(self.server.password_file())?
            .trim_end()
            .to_string())
    }

    fn endpoint(&self, folder: &str) -> Result<Endpoint> {
        let tls = if self.tls {
            let verifier = Verifier::from_ca_file(&self.server.ca_file())
                .map_err(|e| anyhow::anyhow!("test CA: {e}"))?;
            Some(Tls {
                implicit: false,
                verifier: Arc::new(verifier),
            })
        } else {
            None
        };
        Ok(Endpoint {
            host: "127.0.0.1".into(),
            port: self.server.port(),
            user: USER.into(),
            password: Secret::new(self.password()?),
            tls,
            data: DataMode::Passive,
            listing: Listing::Auto,
            folder: folder.into(),
        })
    }

    /// Runs `work` on a fresh dropgate connection to `folder`; times it all.
    fn dropgate<F>(&self, folder: &str, work: F) -> Result<Duration>
    where
        F: AsyncFnOnce(&mut Connection) -> Result<()>,
    {
        let endpoint = dropgate::remote::Endpoint::Ftp(self.endpoint(folder)?);
        let start = Instant::now();
        self.runtime.block_on(async {
            let mut connection = Connection::connect(&endpoint, Duration::from_secs(60)).await?;
            work(&mut connection).await?;
            connection.close().await;
            anyhow::Ok(())
        })?;
        Ok(start.elapsed())
    }

    /// Runs lftp commands in one session in `folder`; times it all.
    fn lftp(&self, folder: &str, commands: &str) -> Result<Duration> {
        let tls = if self.tls {
            format!(
                "set ssl:ca-file {}; set ftp:ssl-force true; set ftp:ssl-protect-data true;",
                self.server.ca_file().display()
            )
        } else {
            "set ftp:ssl-allow false;".to_string()
        };
        let script = format!(
            "set net:max-retries 1; set xfer:clobber on; set cmd:fail-exit true; {tls} open -u \"{USER},{}\" -p {} 127.0.0.1; cd {folder}; {commands}",
            self.password()?,
            self.server.port()
        );
        let start = Instant::now();
        let out = Command::new("lftp")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .output()?;
        let wall = start.elapsed();
        ensure!(
            out.status.success(),
            "lftp failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(wall)
    }

    fn clear(&self, folder: &str) -> Result<PathBuf> {
        let dir = self.server.folder(folder);
        for entry in fs::read_dir(&dir)? {
            fs::remove_file(entry?.path())?;
        }
        for entry in fs::read_dir(&self.downloads)? {
            fs::remove_file(entry?.path())?;
        }
        sync()?;
        Ok(dir)
    }

    fn upload_large(&self, tool: Tool, large: &LargeFile) -> Result<Duration> {
        let dir = self.clear("large")?;
        let wall = match tool {
            Tool::Dropgate => self.dropgate("large", async |c| {
                c.put(Upload::File(&large.path), "large.bin").await?;
                Ok(())
            })?,
            Tool::Lftp | Tool::LftpFsync => self.lftp(
                "large",
                &format!("put {} -o large.bin", large.path.display()),
            )?,
        };
        let landed = dir.join("large.bin");
        ensure!(
            sha256_of(&landed)? == large.sha256,
            "{}: the uploaded copy differs ({} bytes of {})",
            tool.name(),
            fs::metadata(&landed)?.len(),
            fs::metadata(&large.path)?.len()
        );
        Ok(wall)
    }

    fn download_large(&self, tool: Tool, large: &LargeFile) -> Result<Duration> {
        let dir = self.clear("large")?;
        // Readable by the FTP user as copied; no need to hand it over.
        fs::copy(&large.path, dir.join("large.bin"))?;
        sync()?;
        let local = self.downloads.join("large.bin");
        let wall = match tool {
            Tool::Dropgate => self.dropgate("large", async |c| {
                c.download("large.bin", &local, u64::MAX).await?;
                Ok(())
            })?,
            Tool::Lftp => self.lftp("large", &format!("get large.bin -o {}", local.display()))?,
            Tool::LftpFsync => {
                let start = Instant::now();
                self.lftp("large", &format!("get large.bin -o {}", local.display()))?;
                // coreutils `sync FILE` fsyncs just that file.
                ensure!(
                    Command::new("sync").arg(&local).status()?.success(),
                    "sync failed"
                );
                start.elapsed()
            }
        };
        ensure!(
            sha256_of(&local)? == large.sha256,
            "{}: the downloaded copy differs ({} bytes of {})",
            tool.name(),
            fs::metadata(&local)?.len(),
            fs::metadata(&large.path)?.len()
        );
        Ok(wall)
    }

    fn upload_small(&self, tool: Tool, small: &[PathBuf]) -> Result<Duration> {
        let dir = self.clear("small")?;
        let wall = match tool {
            Tool::Dropgate => self.dropgate("small", async |c| {
                for path in small {
                    c.put(Upload::File(path), &file_name(path)).await?;
                }
                Ok(())
            })?,
            Tool::Lftp | Tool::LftpFsync => {
                let folder = small[0].parent().context("small files have a folder")?;
                self.lftp("small", &format!("mput {}/*", folder.display()))?
            }
        };
        let count = fs::read_dir(&dir)?.count();
        ensure!(
            count == small.len(),
            "{}: {count} files arrived",
            tool.name()
        );
        Ok(wall)
    }

    fn download_small(&self, tool: Tool, small: &[PathBuf]) -> Result<Duration> {
        let dir = self.clear("small")?;
        for path in small {
            fs::copy(path, dir.join(file_name(path)))?;
        }
        sync()?;
        let wall = match tool {
            Tool::Dropgate => self.dropgate("small", async |c| {
                for path in small {
                    let name = file_name(path);
                    c.download(&name, &self.downloads.join(&name), u64::MAX)
                        .await?;
                }
                Ok(())
            })?,
            Tool::Lftp | Tool::LftpFsync => {
                self.lftp("small", &format!("mget -O {} *", self.downloads.display()))?
            }
        };
        let count = fs::read_dir(&self.downloads)?.count();
        ensure!(
            count == small.len(),
            "{}: {count} files arrived",
            tool.name()
        );
        Ok(wall)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// `count` files of random bytes, each [`SMALL_FILE_BYTES`] long.
fn write_small_files(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(count);
    for n in 0..count {
        let path = dir.join(format!("small_{n:05}.bin"));
        let file = write_random_file(&path, SMALL_FILE_BYTES)?;
        paths.push(file.path);
    }
    if paths.is_empty() {
        bail!("no small files");
    }
    Ok(paths)
}
