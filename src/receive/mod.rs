//! Receive: sources that notice complete files and hand them to `land`.
//!
//! A source never offers a file that may still be growing: see each source
//! for how it decides a file is complete.

pub mod local;
pub mod remote_poll;
pub mod sftp_server;

use crate::config::TEMPORARY_SUFFIXES;

/// Names a sender uses while still writing: dot-files and temporary suffixes.
pub fn is_temporary_name(file_name: &str) -> bool {
    file_name.starts_with('.') || TEMPORARY_SUFFIXES.iter().any(|s| file_name.ends_with(s))
}
