//! Where views go: the in-memory serving store that every read is answered from, and the
//! dead-letter sink for records that could not be used.
//!
//! ```text
//!  runtime (all workers' frontiers passed t) ──publish(t, updates)──► ServingStore
//!        ArcSwap<Snapshot> ◄── readers (HTTP, SQL) take one snapshot, never block
//!        broadcast<Arc<Snapshot>> ──► live subscribers (SSE), each snapshot with its changes
//!  ErrorRecord ──► DeadLetterFile (JSONL)
//! ```
//!
//! Main items: [`ServingStore`], [`Snapshot`], [`ViewData`], [`Change`], [`DeadLetterFile`].

pub mod dead_letters;
pub mod json;
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
}
