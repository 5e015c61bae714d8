//! Any path a client may send to the embedded SFTP server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let _ = dropgate::receive::sftp_server::resolves(path);
});
