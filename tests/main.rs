//! The root package's integration tests, one module per area, in one test binary.
//!
//! Modules that start `wearflow` processes use [`common::process`]; every module may run
//! concurrently with the others (`cargo test` threads), so each uses its own ports (port 0)
//! and temporary directories.

mod common;

mod architecture;
mod cluster;
mod deploy;
mod engine;
mod http;
mod kafka;
mod openapi;
mod peers;
mod predict;
mod python_clients;
mod recovery;
mod shutdown;
mod sql;
mod sql_flood;
mod sql_golden;
