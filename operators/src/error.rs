//! Errors as data: a record that could not be used, and the crate's typed error.

use serde::{Deserialize, Serialize};

/// How many bytes of a bad record's raw input are kept.
pub const RAW_BYTES_LIMIT: usize = 1024;

/// A record that was rejected: where it came from, what it was, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The source (stream) name, e.g. `telemetry`.
    pub source: String,
    /// Partition within the source (file index, Kafka partition).
    pub partition: u32,
    /// Position within the partition (line number, Kafka offset).
    pub position: u64,
    /// The raw bytes, lossily decoded and cut at [`RAW_BYTES_LIMIT`].
    pub raw: String,
    /// Why it was rejected: one lowercase line.
    pub reason: String,
}

impl ErrorRecord {
    /// Builds an error record, bounding the raw bytes kept.
    pub fn new(source: &str, partition: u32, position: u64, raw: &[u8], reason: String) -> Self {
        let cut = &raw[..raw.len().min(RAW_BYTES_LIMIT)];
        ErrorRecord {
            source: source.to_string(),
            partition,
            position,
            raw: String::from_utf8_lossy(cut).into_owned(),
            reason,
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A view schema is inconsistent: a bug in the dataflow that declared it.
    #[error("invalid view schema for `{view}`: {reason}")]
    InvalidSchema {
        /// The view.
        view: String,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_are_bounded() {
        let raw = vec![b'x'; RAW_BYTES_LIMIT * 3];
        let record = ErrorRecord::new("telemetry", 0, 7, &raw, "bad".into());
        assert_eq!(record.raw.len(), RAW_BYTES_LIMIT);
        assert_eq!(record.position, 7);
    }
}
