//! Any bytes as a sample of any feed (the first byte picks it), through
//! decrypt, the feed's reader and checks, and the mapping. A panic here is
//! a finding; so is an `internal_error` outcome (a caught panic).
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dropgate::config::Config;
use dropgate::pipeline::Processor;
use libfuzzer_sys::fuzz_target;

const FEEDS: [&str; 7] = ["news2", "clt", "trace", "rx", "redbag", "notes", "alerts"];

fn processor() -> &'static (Arc<Config>, Processor, PathBuf) {
    static PROCESSOR: OnceLock<(Arc<Config>, Processor, PathBuf)> = OnceLock::new();
    PROCESSOR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let fixtures = root.join("tests/fixtures");
        let dir = std::env::temp_dir().join(format!("dropgate-fuzz-{}", std::process::id()));
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for file in ["clt_gender.csv", "clt_event_types.csv"] {
            std::fs::copy(fixtures.join(file), config_dir.join(file)).unwrap();
        }
        let shipped = std::fs::read_to_string(root.join("config/dropgate.toml")).unwrap();
        let feeds = std::fs::read_to_string(fixtures.join("feeds.toml")).unwrap();
        let config = Config::parse(&config_dir.join("dropgate.toml"), &format!("{shipped}\n{feeds}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Arc::new(config);
        let processor = Processor::new(config.clone(), age::x25519::Identity::generate());
        (config, processor, dir.join("sample"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let (config, processor, path) = processor();
    std::fs::write(path, bytes).unwrap();
    let feed = &config.feeds[FEEDS[pick as usize % FEEDS.len()]];
    let outcome = processor.check_sample(feed, path);
    assert_ne!(outcome.reason.as_deref(), Some("internal_error"));
});
