//! Integration tests: the real `dropgate` binary in a temporary deployment,
//! with input encrypted by the real `age` command-line tool.

mod harness;

mod alerts;
mod audit;
mod cli;
mod daemon;
mod exports;
mod faults;
mod ftp;
mod ftpd;
mod health;
mod hostile;
mod ingest;
mod kill_points;
mod properties;
mod receipts;
mod remote;
mod retention;
mod routes;
mod sample_feeds;
mod sftp;
mod sshd;
mod structure;
mod systemd;
