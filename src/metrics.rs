//! The Prometheus metrics registry: every counter, gauge and histogram the engine exports.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for the record-to-readable latency: 0.5 ms to 10 s.
const FRESHNESS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for HTTP request durations: point reads are tens of microseconds, full pages
/// milliseconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric of one engine process, registered in one [`Registry`].
///
/// Cloning a metric handle is cheap and shares its value, so the runtime can hand copies of
/// the fields it needs to each worker.
pub struct Metrics {
    /// The registry all metrics below belong to.
    pub registry: Registry,
    /// `wearflow_source_records_total{source}`: records read.
    pub records_in: IntCounterVec,
    /// `wearflow_source_bytes_total{source}`: bytes read.
    pub bytes_in: IntCounterVec,
    /// `wearflow_source_bad_records_total{source}`: records that failed decoding or validation.
    pub bad_records: IntCounterVec,
    /// `wearflow_source_late_records_total{source}`: records that arrived behind the frontier.
    pub late_records: IntCounterVec,
    /// `wearflow_source_watermark_milliseconds{source}`: the source's event-time watermark.
    pub watermark_ms: IntGaugeVec,
    /// `wearflow_view_rows{view}`: rows (keyed) or retained events (append) per view.
    pub view_rows: IntGaugeVec,
    /// `wearflow_snapshot_version`: version of the newest published snapshot.
    pub snapshot_version: IntGauge,
    /// `wearflow_snapshot_as_of_milliseconds`: logical time of the newest published snapshot.
    pub snapshot_as_of_ms: IntGauge,
    /// `wearflow_snapshot_publish_lag_seconds`: wall time from ingest of the newest record in a
    /// snapshot to its publication.
    pub publish_lag_seconds: Gauge,
    /// `wearflow_view_freshness_seconds`: record arrival until readable in the serving store.
    pub freshness_seconds: Histogram,
    /// `wearflow_simulator_started_seconds`: Unix time at which a paced simulator's clock stood
    /// at its start (0 without one). A record of event time `t` exists from this plus
    /// `(t - start) / speed`: what an observer times the engine's latency from.
    pub simulator_started_seconds: Gauge,
    /// `wearflow_http_request_duration_seconds{route,method,status}`; `route` is the matched
    /// route template (`/views/{name}`), never the raw path.
    pub http_request_seconds: HistogramVec,
    /// `wearflow_dead_letters_total{source}`: error records written to the dead-letter sink.
    pub dead_letters: IntCounterVec,
    /// `wearflow_auth_failures_total{door,reason}`: refused requests and logins
    /// (`unauthenticated`, `token_expired`, `forbidden`).
    pub auth_failures: IntCounterVec,
    /// `wearflow_kafka_consumer_lag_messages{topic,partition}`: messages behind the end.
    pub kafka_lag_messages: IntGaugeVec,
    /// `wearflow_kafka_consumer_lag_seconds{topic,partition}`: age of the newest record read
    /// while the partition is behind its end (0 when caught up).
    pub kafka_lag_seconds: GaugeVec,
    /// `wearflow_kafka_consumer_offset{topic,partition}`: the next offset to read.
    pub kafka_offset: IntGaugeVec,
    /// `wearflow_kafka_producer_queue_depth`: messages queued or in flight to the broker.
    pub kafka_queue_depth: IntGauge,
    /// `wearflow_kafka_produced_total`: messages acknowledged by the broker.
    pub kafka_delivered: IntCounter,
    /// `wearflow_kafka_delivery_errors_total`: failed deliveries (each is sent again).
    pub kafka_delivery_errors: IntCounter,
    /// `wearflow_archive_files_total{table}`: Parquet files the archive made visible.
    pub archive_files: IntCounterVec,
    /// `wearflow_archive_rows_total{table}`: rows in those files.
    pub archive_rows: IntCounterVec,
    /// `wearflow_archive_bytes_total{table}`: bytes of those files.
    pub archive_bytes: IntCounterVec,
    /// `wearflow_checkpoints_total`: checkpoints written.
    pub checkpoints: IntCounter,
    /// `wearflow_checkpoint_seconds`: time to sync the logs and write one checkpoint.
    pub checkpoint_seconds: Histogram,
    /// `wearflow_checkpoint_sequence`: the newest checkpoint written or restored.
    pub checkpoint_sequence: IntGauge,
    /// `wearflow_checkpoint_wal_bytes`: write-ahead log bytes, all readers of the process.
    pub wal_bytes: IntGauge,
    /// `wearflow_restore_workers`: workers still replaying their log after a restart.
    pub restoring: IntGauge,
    /// `wearflow_memory_rss_bytes`: resident memory, as the memory budget sees it.
    pub rss_bytes: IntGauge,
    /// `wearflow_backpressure_seconds_total{reason}`: time readers spent paused.
    pub backpressure_seconds: prometheus::CounterVec,
    /// `wearflow_archive_queue_messages`: row batches waiting for the archive writer.
    pub archive_queue: IntGauge,
}

impl Metrics {
    /// A fresh registry holding every metric, all at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let records_in = counter_vec(
            &registry,
            "wearflow_source_records_total",
            "Records read, per source.",
            &["source"],
        );
        let bytes_in = counter_vec(
            &registry,
            "wearflow_source_bytes_total",
            "Bytes read, per source.",
            &["source"],
        );
        let bad_records = counter_vec(
            &registry,
            "wearflow_source_bad_records_total",
            "Records that failed decoding or validation, per source.",
            &["source"],
        );
        let late_records = counter_vec(
            &registry,
            "wearflow_source_late_records_total",
            "Records that arrived behind the input frontier and were stamped at it, per source.",
            &["source"],
        );
        let watermark_ms = gauge_vec(
            &registry,
            "wearflow_source_watermark_milliseconds",
            "Event-time watermark (input frontier) of each source, epoch milliseconds.",
            &["source"],
        );
        let view_rows = gauge_vec(
            &registry,
            "wearflow_view_rows",
            "Rows (keyed views) or retained events (append views) in the serving store.",
            &["view"],
        );
        let snapshot_version = register(
            &registry,
            IntGauge::new(
                "wearflow_snapshot_version",
                "Version of the newest published snapshot.",
            ),
        );
        let snapshot_as_of_ms = register(
            &registry,
            IntGauge::new(
                "wearflow_snapshot_as_of_milliseconds",
                "Logical time (epoch milliseconds) of the newest published snapshot.",
            ),
        );
        let publish_lag_seconds = register(
            &registry,
            Gauge::new(
                "wearflow_snapshot_publish_lag_seconds",
                "Wall time from ingest of the newest record in a snapshot to its publication.",
            ),
        );
        let freshness_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "wearflow_view_freshness_seconds",
                    "Wall time from record arrival until it is readable in the serving store.",
                )
                .buckets(FRESHNESS_BUCKETS.to_vec()),
            ),
        );
        let http_request_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "wearflow_http_request_duration_seconds",
                    "HTTP request durations by route template, method and status.",
                )
                .buckets(HTTP_BUCKETS.to_vec()),
                &["route", "method", "status"],
            ),
        );
        let auth_failures = counter_vec(
            &registry,
            "wearflow_auth_failures_total",
            "Requests and logins refused: missing, invalid or expired credentials, or too small a role.",
            &["door", "reason"],
        );
        let dead_letters = counter_vec(
            &registry,
            "wearflow_dead_letters_total",
            "Error records written to the dead-letter sink, per source.",
            &["source"],
        );
        let kafka_lag_messages = gauge_vec(
            &registry,
            "wearflow_kafka_consumer_lag_messages",
            "Messages between the read position and the end of each partition.",
            &["topic", "partition"],
        );
        let kafka_lag_seconds = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "wearflow_kafka_consumer_lag_seconds",
                    "Age of the newest record read from a partition that is behind its end.",
                ),
                &["topic", "partition"],
            ),
        );
        let kafka_offset = gauge_vec(
            &registry,
            "wearflow_kafka_consumer_offset",
            "The next offset to read, per partition.",
            &["topic", "partition"],
        );
        let kafka_queue_depth = register(
            &registry,
            IntGauge::new(
                "wearflow_kafka_producer_queue_depth",
                "Messages queued or in flight to the broker.",
            ),
        );
        let kafka_delivered = register(
            &registry,
            IntCounter::new(
                "wearflow_kafka_produced_total",
                "Messages acknowledged by the broker.",
            ),
        );
        let kafka_delivery_errors = register(
            &registry,
            IntCounter::new(
                "wearflow_kafka_delivery_errors_total",
                "Failed deliveries; each failed message is sent again.",
            ),
        );
        let archive_files = counter_vec(
            &registry,
            "wearflow_archive_files_total",
            "Parquet files the archive finished and made visible, per table.",
            &["table"],
        );
        let archive_rows = counter_vec(
            &registry,
            "wearflow_archive_rows_total",
            "Rows in the Parquet files the archive made visible, per table.",
            &["table"],
        );
        let archive_bytes = counter_vec(
            &registry,
            "wearflow_archive_bytes_total",
            "Bytes of the Parquet files the archive made visible, per table.",
            &["table"],
        );
        let checkpoints = register(
            &registry,
            IntCounter::new("wearflow_checkpoints_total", "Checkpoints written."),
        );
        let checkpoint_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "wearflow_checkpoint_seconds",
                    "Time to sync the write-ahead logs and write one checkpoint.",
                )
                .buckets(FRESHNESS_BUCKETS.to_vec()),
            ),
        );
        let checkpoint_sequence = register(
            &registry,
            IntGauge::new(
                "wearflow_checkpoint_sequence",
                "The newest checkpoint written or restored.",
            ),
        );
        let wal_bytes = register(
            &registry,
            IntGauge::new(
                "wearflow_checkpoint_wal_bytes",
                "Bytes in the write-ahead logs of this process's readers.",
            ),
        );
        let restoring = register(
            &registry,
            IntGauge::new(
                "wearflow_restore_workers",
                "Workers still replaying their write-ahead log after a restart.",
            ),
        );
        let rss_bytes = register(
            &registry,
            IntGauge::new(
                "wearflow_memory_rss_bytes",
                "Resident memory of the process, as the memory budget sees it.",
            ),
        );
        let backpressure_seconds = register(
            &registry,
            prometheus::CounterVec::new(
                Opts::new(
                    "wearflow_backpressure_seconds_total",
                    "Time readers spent paused, per reason (memory, kafka_sink).",
                ),
                &["reason"],
            ),
        );
        let simulator_started_seconds = register(
            &registry,
            Gauge::new(
                "wearflow_simulator_started_seconds",
                "Unix time at which a paced simulator's clock stood at its start (0: none).",
            ),
        );
        let archive_queue = register(
            &registry,
            IntGauge::new(
                "wearflow_archive_queue_messages",
                "Row batches waiting for the archive writer (a bounded queue).",
            ),
        );
        Metrics {
            registry,
            rss_bytes,
            backpressure_seconds,
            archive_queue,
            checkpoints,
            checkpoint_seconds,
            checkpoint_sequence,
            wal_bytes,
            restoring,
            archive_files,
            archive_rows,
            archive_bytes,
            kafka_lag_messages,
            kafka_lag_seconds,
            kafka_offset,
            kafka_queue_depth,
            kafka_delivered,
            kafka_delivery_errors,
            records_in,
            bytes_in,
            bad_records,
            late_records,
            watermark_ms,
            view_rows,
            snapshot_version,
            snapshot_as_of_ms,
            publish_lag_seconds,
            freshness_seconds,
            simulator_started_seconds,
            http_request_seconds,
            dead_letters,
            auth_failures,
        }
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            // Only an invalid metric family can fail to encode; say so in the scrape instead
            // of failing it, so the rest stays visible.
            tracing::warn!(%error, "cannot encode metrics");
            buffer.extend_from_slice(format!("# encoding error: {error}\n").as_bytes());
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers a metric whose definition is a constant of this module.
fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    // Names, labels and buckets are constants here and the registry is fresh: failing is a bug.
    let metric = metric.expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics
            .records_in
            .with_label_values(&["telemetry"])
            .inc_by(3);
        metrics.view_rows.with_label_values(&["tooth_wear"]).set(7);
        metrics.freshness_seconds.observe(0.002);
        metrics
            .http_request_seconds
            .with_label_values(&["/views/{name}", "GET", "200"])
            .observe(0.001);
        let text = metrics.render();
        assert!(text.contains("wearflow_source_records_total{source=\"telemetry\"} 3"));
        assert!(text.contains("wearflow_view_rows{view=\"tooth_wear\"} 7"));
        assert!(text.contains("wearflow_view_freshness_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("wearflow_view_freshness_seconds_bucket{le=\"10\"} 1"));
        assert!(text.contains("route=\"/views/{name}\""));
        assert!(text.contains("wearflow_snapshot_version 0"));
    }
}
