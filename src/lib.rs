//! dropgate: batch file exchange for health and social care.
//!
//! A file travels `receive → land → decrypt → validate → map → load`; the
//! order is written once, in [`pipeline`]. The [`ledger`] records every step.

pub mod alerts;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod decrypt;
pub mod digest;
pub mod domain;
pub mod export;
pub mod formats;
pub mod forward;
pub mod health;
pub mod intake;
pub mod keys;
pub mod land;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod problem;
pub mod publish;
pub mod receipt;
pub mod receive;
pub mod records;
pub mod remote;
pub mod repeated;
pub mod retention;
pub mod route;
pub mod schedule;
pub mod schema;
pub mod spool;
pub mod systemd;
pub mod text;
pub mod validate;
