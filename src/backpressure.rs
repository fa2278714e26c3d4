//! Backpressure: when memory passes its budget or an output falls behind, readers stop
//! taking records from their sources (the dataflow keeps computing and publishing) until it
//! is back under its limit. Nothing is buffered without bound on the way:
//!
//! - the dataflow: a reader feeds a tick only once the previous one is computed;
//! - the archive: a bounded channel; a full one blocks the reader that hands it rows;
//! - the Kafka outputs: readers pause while the producer holds more than
//!   `kafka_queue_limit` messages (changelogs, alerts, dead letters);
//! - the serving store and the changelog writer: they follow the newest snapshot and skip
//!   intermediate ones, so they hold at most two;
//! - memory: readers pause while the process's resident memory is above `memory_budget_bytes`.
//!
//! Kafka sources then fall behind their partitions' ends (consumer lag, in the metrics),
//! which is where the backlog belongs: in the broker.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wearflow_sinks::kafka::Producer;

use crate::metrics::Metrics;

/// `[backpressure]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackpressureConfig {
    /// Resident memory above which readers pause (0 = no budget). `WEARFLOW_MEMORY_BUDGET`
    /// takes bytes or a size such as `4GiB`.
    pub memory_budget_bytes: u64,
    /// Messages waiting in the Kafka producer above which readers pause.
    pub kafka_queue_limit: i32,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            memory_budget_bytes: 0,
            kafka_queue_limit: 50_000,
        }
    }
}

/// Parses `123`, `64KiB`, `512MiB`, `4GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 4GiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit `{other}` (B, KiB, MiB, GiB)")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// This process's resident memory (Linux `/proc/self/statm`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Why readers pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Resident memory is above the budget.
    Memory,
    /// The Kafka producer's queue is above its limit.
    KafkaSink,
}

impl Pause {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Pause::Memory => "memory",
            Pause::KafkaSink => "kafka_sink",
        }
    }
}

/// One reader's view of the limits.
pub struct Backpressure {
    config: BackpressureConfig,
    producer: Option<std::sync::Arc<Producer>>,
    last_warning: Option<Instant>,
}

impl Backpressure {
    /// The limits of `config`, watching `producer` if there is one.
    pub fn new(
        config: &BackpressureConfig,
        producer: Option<std::sync::Arc<Producer>>,
    ) -> Backpressure {
        Backpressure {
            config: config.clone(),
            producer,
            last_warning: None,
        }
    }

    /// Whether to pause now, and why; updates the memory gauge.
    pub fn check(&mut self, metrics: &Metrics) -> Option<Pause> {
        let pause = self.pause(metrics);
        if let Some(pause) = pause
            && self
                .last_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_warning = Some(Instant::now());
            tracing::warn!(
                reason = pause.name(),
                rss = metrics.rss_bytes.get(),
                budget = self.config.memory_budget_bytes,
                "readers paused by backpressure"
            );
        }
        pause
    }

    fn pause(&self, metrics: &Metrics) -> Option<Pause> {
        if self.config.memory_budget_bytes > 0
            && let Some(rss) = rss_bytes()
        {
            metrics.rss_bytes.set(rss as i64);
            if rss > self.config.memory_budget_bytes {
                return Some(Pause::Memory);
            }
        }
        if let Some(producer) = &self.producer
            && producer.queue_depth() > self.config.kafka_queue_limit
        {
            return Some(Pause::KafkaSink);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("GiB").is_err());
    }

    #[test]
    fn a_budget_below_the_resident_memory_pauses() {
        let metrics = Metrics::new();
        let rss = rss_bytes().expect("Linux /proc");
        assert!(rss > 1 << 20, "a process uses more than 1 MiB: {rss}");
        let mut tight = Backpressure::new(
            &BackpressureConfig {
                memory_budget_bytes: 1 << 20,
                ..BackpressureConfig::default()
            },
            None,
        );
        assert_eq!(tight.check(&metrics), Some(Pause::Memory));
        assert!(metrics.rss_bytes.get() > 1 << 20);
        let mut roomy = Backpressure::new(
            &BackpressureConfig {
                memory_budget_bytes: 1 << 50,
                ..BackpressureConfig::default()
            },
            None,
        );
        assert_eq!(roomy.check(&metrics), None);
    }
}
