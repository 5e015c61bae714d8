//! What the benchmarks share: options, scratch space, input files.

use std::fs::{self, File};
use std::io::Read;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use dropgate::digest::hex;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub struct Options {
    pub size_mib: u64,
    pub small_files: usize,
}

impl Options {
    /// `--size-mib N --small-files N`, for the benchmark called `bench`.
    pub fn parse(bench: &str, args: impl Iterator<Item = String>) -> Result<Options> {
        let options = parse_options(
            bench,
            args,
            &[("--size-mib", 1024), ("--small-files", 1_000)],
            &[],
        )?;
        Ok(Options {
            size_mib: options.number("--size-mib"),
            small_files: usize::try_from(options.number("--small-files"))?,
        })
    }
}

/// A benchmark's command-line options, as parsed.
pub struct Parsed {
    numbers: Vec<(&'static str, u64)>,
    flags: Vec<&'static str>,
}

impl Parsed {
    pub fn number(&self, name: &str) -> u64 {
        self.numbers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .expect("a declared option")
    }

    #[allow(dead_code)] // not every benchmark has flags
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// Options `--NAME N` (whole numbers of at least 1, with defaults) and
/// `--FLAG`, for the benchmark called `bench`; `--help` prints them.
pub fn parse_options(
    bench: &str,
    mut args: impl Iterator<Item = String>,
    numbers: &[(&'static str, u64)],
    flags: &[&'static str],
) -> Result<Parsed> {
    let mut parsed = Parsed {
        numbers: numbers.to_vec(),
        flags: Vec::new(),
    };
    while let Some(arg) = args.next() {
        if let Some(slot) = parsed.numbers.iter_mut().find(|(n, _)| *n == arg) {
            let name = slot.0;
            slot.1 = args
                .next()
                .with_context(|| format!("{name} needs a value"))?
                .parse::<u64>()
                .with_context(|| format!("{name} takes a whole number"))?;
            ensure!(slot.1 > 0, "{name} must be at least 1");
        } else if let Some(flag) = flags.iter().find(|f| **f == arg) {
            parsed.flags.push(flag);
        } else if arg == "--bench" {
            // Cargo appends `--bench` when it runs a benchmark.
        } else if arg == "-h" || arg == "--help" {
            let mut usage: Vec<String> = numbers
                .iter()
                .map(|(n, default)| format!("{n} N (default {default})"))
                .collect();
            usage.extend(flags.iter().map(|f| f.to_string()));
            println!(
                "usage: cargo bench --bench {bench} [-- {}]",
                usage.join(" ")
            );
            std::process::exit(0);
        } else {
            bail!("unknown argument `{arg}` (try --help)");
        }
    }
    Ok(parsed)
}

/// A benchmark's exit: a failure is said, not panicked.
pub fn exit_code(outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn progress(message: impl std::fmt::Display) {
    eprintln!("· {message}");
}

/// A folder under `target/bench-scratch/`, removed at the end, that also
/// becomes the default temporary folder, so the helpers' deployment lands on
/// the project's disk rather than in `/tmp`, which is often a tmpfs where
/// fsync costs nothing.
pub fn scratch(prefix: &str) -> Result<TempDir> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scratch");
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let scratch = tempfile::Builder::new().prefix(prefix).tempdir_in(&base)?;
    if let Err(already) = tempfile::env::override_temp_dir(scratch.path()) {
        bail!(
            "the temporary folder was already set to {}",
            already.display()
        );
    }
    Ok(scratch)
}

pub struct LargeFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// Random bytes, so that nothing on the way can compress them.
pub fn write_random_file(path: &Path, bytes: u64) -> Result<LargeFile> {
    // xorshift64*: plenty for incompressible data, and fast.
    let mut state: u64 = 0x5eed_5f79_0000_0001;
    let mut hasher = Sha256::new();
    let mut out = File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = usize::try_from(left.min(chunk.len() as u64))?;
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.sync_all()?;
    Ok(LargeFile {
        path: path.to_path_buf(),
        bytes,
        sha256: hex(&hasher.finalize()),
    })
}

pub fn sha256_of(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Everything written so far on disk, so one run's writeback does not slow the next.
pub fn sync() -> Result<()> {
    ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

pub fn mb_per_s(bytes: u64, wall: Duration) -> f64 {
    bytes as f64 / 1e6 / wall.as_secs_f64()
}

/// How often a measured child's peak memory is sampled.
pub const POLL: Duration = Duration::from_millis(20);

/// Reads a child's pipe to the end on its own thread, so a full pipe never
/// stalls the child while we wait for it.
fn collect(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// The peak resident set size so far, from the kernel's high-water mark.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

pub struct Measured {
    pub status: ExitStatus,
    pub started: SystemTime,
    pub wall: Duration,
    pub peak_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion, timing it and sampling its peak RSS.
///
/// VmHWM is a high-water mark, so sampling only misses growth in the last
/// interval before exit (the kernel drops it once the process is a zombie).
pub fn run_measured(mut command: Command) -> Result<Measured> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut child = command.spawn().context("starting dropgate")?;
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let pid = child.id();
        thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak_rss_kib(pid).map_or(peak, |kib| kib.max(peak));
                thread::sleep(POLL);
            }
            peak
        })
    };
    // Waiting here, not in the sampling loop, keeps the wall time exact.
    let status = child.wait()?;
    let wall = clock.elapsed();
    done.store(true, Ordering::Relaxed);
    Ok(Measured {
        status,
        started,
        wall,
        peak_rss_kib: sampler.join().expect("the sampler does not panic"),
        stdout: stdout.join().expect("the reader does not panic"),
        stderr: stderr.join().expect("the reader does not panic"),
    })
}
