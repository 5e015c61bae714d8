//! Any text as a configuration: accepted, or refused with positions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::env::temp_dir().join("dropgate-fuzz-config/dropgate.toml");
    if let Err(errors) = dropgate::config::Config::parse(&path, text) {
        for e in &errors.errors {
            assert!(e.line >= 1);
        }
    }
});
