//! Hostile input as properties, run by proptest in every test run: the
//! same targets as the `cargo fuzz` ones in `fuzz/`. Every feed's reader
//! (CSV with header and trailer records, fixed width, XML) is given
//! arbitrary bytes and damaged copies of its valid samples, and the config
//! parser damaged configs. None may panic (a panic while reading a file is
//! an `internal_error` quarantine), and what they report stays in bounds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use dropgate::config::Config;
use dropgate::ledger::FileState;
use dropgate::pipeline::Processor;

use crate::harness::SHIPPED_CONFIG;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The shipped config and the sample feeds, read as `schema check` reads
/// a sample.
fn processor() -> &'static (Arc<Config>, Processor, tempfile::TempDir) {
    static PROCESSOR: OnceLock<(Arc<Config>, Processor, tempfile::TempDir)> = OnceLock::new();
    PROCESSOR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for file in ["clt_gender.csv", "clt_event_types.csv"] {
            std::fs::copy(fixture(file), config_dir.join(file)).unwrap();
        }
        let feeds = std::fs::read_to_string(fixture("feeds.toml")).unwrap();
        let text = format!("{SHIPPED_CONFIG}\n{feeds}");
        let config = Config::parse(&config_dir.join("dropgate.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Arc::new(config);
        let identity = age::x25519::Identity::generate();
        let processor = Processor::new(config.clone(), identity);
        (config, processor, dir)
    })
}

/// Reads `bytes` as a sample of `feed`: never an internal error, problems
/// kept within the cap, each at a line the input has.
fn read_as(feed: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let (config, processor, dir) = processor();
    let path = dir
        .path()
        .join(format!("sample-{:?}.bin", std::thread::current().id()));
    std::fs::write(&path, bytes).unwrap();
    let outcome = processor.check_sample(&config.feeds[feed], Path::new(&path));
    prop_assert_ne!(outcome.reason.as_deref(), Some("internal_error"));
    prop_assert!(matches!(
        outcome.state,
        FileState::Loaded | FileState::Quarantined
    ));
    prop_assert!(outcome.problems.len() <= config.daemon.max_errors_per_file);
    prop_assert!(outcome.problem_count >= outcome.problems.len() as u64);
    let lines = bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64 + 1;
    for problem in &outcome.problems {
        prop_assert!(problem.line <= lines, "line {} of {lines}", problem.line);
    }
    Ok(())
}

/// A valid sample with a few bytes flipped, inserted, removed or repeated.
fn damaged(sample: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let bytes = std::fs::read(fixture(sample)).unwrap();
    let len = bytes.len();
    proptest::collection::vec((0..len.max(1), any::<u8>(), 0u8..4), 1..8).prop_map(move |edits| {
        let mut b = bytes.clone();
        for (at, byte, how) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match how {
                0 if !b.is_empty() => b[at] = byte,
                1 => b.insert(at, byte),
                2 if !b.is_empty() => {
                    b.remove(at);
                }
                _ => {
                    let end = (at + 64).min(b.len());
                    let piece = b[at..end].to_vec();
                    b.splice(at..at, piece);
                }
            }
        }
        b
    })
}

/// Bytes that are mostly the structure a reader looks for.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"~".to_vec()),
        Just(b"HDR".to_vec()),
        Just(b"TRL".to_vec()),
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b"</".to_vec()),
        Just(b"<!DOCTYPE x [<!ENTITY a \"aa\">]>".to_vec()),
        Just(b"&amp;".to_vec()),
        Just(b"&a;".to_vec()),
        Just(b"<![CDATA[".to_vec()),
        Just(b"xmlns:rb=\"urn:x\"".to_vec()),
        Just(vec![0xef, 0xbb, 0xbf]),
        Just(vec![0xff, 0xfe]),
        Just(vec![0]),
        Just(vec![0xc3]),
        Just(b"9434765919".to_vec()),
        Just(b"2026-02-30".to_vec()),
        "[a-zA-Z0-9 ]{0,12}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(pieces, 0..200).prop_map(|p| p.concat())
}

/// The harness reads as the daemon would: the valid samples load, the
/// broken ones do not (so the properties below exercise real reading).
#[test]
fn the_samples_are_judged_as_their_feeds_judge_them() {
    let (config, processor, _) = processor();
    for (feed, sample, state) in [
        ("clt", "clt_valid.csv", FileState::Loaded),
        ("clt", "clt_broken.csv", FileState::Quarantined),
        ("rx", "rx_valid.txt", FileState::Loaded),
        ("rx", "rx_broken.txt", FileState::Quarantined),
        ("redbag", "redbag_valid.xml", FileState::Loaded),
        ("redbag", "redbag_dtd.xml", FileState::Quarantined),
        ("trace", "trace_valid.csv", FileState::Loaded),
    ] {
        let outcome = processor.check_sample(&config.feeds[feed], &fixture(sample));
        assert_eq!(outcome.state, state, "{sample}: {:?}", outcome.reason);
    }
}

const FEEDS: [&str; 7] = ["news2", "clt", "trace", "rx", "redbag", "notes", "alerts"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_read_as_any_feed_are_judged_never_crash(
        feed in proptest::sample::select(FEEDS.to_vec()),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        read_as(feed, &bytes)?;
    }

    #[test]
    fn structure_like_bytes_read_as_any_feed_are_judged_never_crash(
        feed in proptest::sample::select(FEEDS.to_vec()),
        bytes in structured(),
    ) {
        read_as(feed, &bytes)?;
    }

    #[test]
    fn a_damaged_social_care_return_is_judged(bytes in damaged("clt_valid.csv")) {
        read_as("clt", &bytes)?;
    }

    #[test]
    fn a_damaged_framed_pharmacy_extract_is_judged(bytes in damaged("rx_valid.txt")) {
        read_as("rx", &bytes)?;
    }

    #[test]
    fn a_damaged_red_bag_is_judged(bytes in damaged("redbag_valid.xml")) {
        read_as("redbag", &bytes)?;
    }

    #[test]
    fn a_damaged_trace_response_is_judged(bytes in damaged("trace_valid.csv")) {
        read_as("trace", &bytes)?;
    }

    /// A config with lines dropped, repeated or garbled is accepted or
    /// refused with positions inside the text; never a panic.
    #[test]
    fn a_damaged_config_is_refused_with_positions_or_accepted(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[ -~]{0,8}"), 1..6),
    ) {
        let mut lines: Vec<String> = SHIPPED_CONFIG.lines().map(str::to_string).collect();
        for (at, how, text) in edits {
            let i = at.index(lines.len());
            match how {
                0 => { lines.remove(i); }
                1 => { let line = lines[i].clone(); lines.insert(i, line); }
                _ => { let cut = lines[i].len() / 2; lines[i].replace_range(cut.., &text); }
            }
        }
        let text = lines.join("\n");
        let dir = tempfile::tempdir().unwrap();
        if let Err(errors) = Config::parse(&dir.path().join("dropgate.toml"), &text) {
            let last_line = text.lines().count().max(1);
            for e in &errors.errors {
                prop_assert!(e.line >= 1 && e.line <= last_line + 1, "{e}");
            }
        }
    }
}
