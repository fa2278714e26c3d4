//! The event model of wearflow, its decoding and validation, and the source drivers.
//!
//! ```text
//!  JSONL files ─► FileReplay ─┐
//!  Simulator ─────────────────┼─► Event (Telemetry | Order | Stock | Asset) ─► runtime
//!  Kafka topics ──────────────┘        └─ bad bytes ─► ErrorRecord (dead letters)
//! ```
//!
//! Main items: [`Event`] and its stream kinds, [`decode`] (bytes → event or error record),
//! [`Simulator`] (the deterministic fleet), [`FileReplay`] (time-merged JSONL replay).

pub mod archive;
pub mod decode;
pub mod event;
pub mod file;
pub mod kafka;
pub mod simulator;
pub mod watermark;

pub use decode::decode;
pub use event::{
    Asset, DeviceAsset, Event, MachineAsset, Micro, Order, OrderKind, OrderStatus, SiteAsset,
    SkuAsset, Stock, StockReason, StreamKind, Telemetry, Timestamp, WorkReason,
};
pub use file::{FileReplay, SourceRecord, write_jsonl};
pub use kafka::{KafkaSource, KafkaSourceConfig, KafkaTopics, StartPosition};
pub use simulator::{GroundTruth, Simulator, SimulatorConfig, simulate, simulate_pumps};
pub use watermark::Watermarks;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The Kafka cluster refused or failed a request.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A duration or option given by the user is invalid.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// Why.
        reason: String,
    },
}
