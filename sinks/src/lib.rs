//! Where views go: the in-memory serving store that every read is answered from, the
//! dead-letter file for records that could not be used, and the Kafka sinks.
//!
//! ```text
//!  runtime (all workers' frontiers passed t) ──publish(t, updates)──► ServingStore
//!        ArcSwap<Snapshot> ◄── readers (HTTP, SQL) take one snapshot, never block
//!        broadcast<Arc<Snapshot>> ──► live subscribers (SSE), each snapshot with its changes
//!  ErrorRecord ──► DeadLetterFile (JSONL), kafka::DeadLetters (a topic per stream)
//!  snapshots ──► kafka::ViewSink (a changelog topic per view, the alerts topic)
//!  raw events + periodic view snapshots ──► archive::Archive (Hive-partitioned Parquet)
//! ```
//!
//! Main items: [`ServingStore`], [`Snapshot`], [`ViewData`], [`Change`], [`DeadLetterFile`],
//! [`kafka`], [`archive::Archive`], [`arrow_rows`] (rows as Arrow, shared with the SQL layer).

pub mod archive;
pub mod arrow_rows;
pub mod dead_letters;
pub mod json;
pub mod kafka;
pub mod store;

pub use dead_letters::DeadLetterFile;
pub use store::{Change, ChangeOp, ServingStore, Snapshot, ViewData};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sink's file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A Parquet file could not be written.
    #[error("cannot write parquet file {path}: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A sink's configuration is not valid.
    #[error("invalid sink configuration: {0}")]
    Config(String),
}
