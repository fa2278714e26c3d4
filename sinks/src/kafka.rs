//! Kafka sinks: a changelog topic per chosen view, the alerts topic, dead-letter topics.
//!
//! ```text
//!  ServingStore feed ─► ViewSink thread ─► wearflow.view.<name>   key = view key (JSON)
//!        (one snapshot at a time,           value = row + as_of, tombstone on delete
//!         flushed before the next)  └──────► wearflow.alerts       one JSON object per alert
//!  runtime (bad records) ─► DeadLetters ─► wearflow.dead_letters.<stream>  original bytes,
//!                                            headers: reason, source topic, partition, offset
//! ```
//!
//! Every message goes through one [`Producer`]: idempotent, with delivery reports counted;
//! a message whose delivery finally fails is kept and sent again at the next flush, so
//! nothing is dropped silently. Changelogs are keyed upserts: replaying a run overwrites
//! rather than duplicates, and a compacted changelog topic equals its view.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::broadcast::error::TryRecvError;
use wearflow_operators::{ErrorRecord, Row, ViewKind};

use crate::json::{key_to_json, row_to_json};
use crate::store::{ChangeOp, ServingStore, Snapshot, ViewData};

/// The Kafka sinks' configuration (`[kafka_sink]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Keyed views that get a changelog topic; `["*"]` = every keyed view.
    pub views: Vec<String>,
    /// Changelog topic of view `v` is this prefix followed by `v`.
    pub changelog_prefix: String,
    /// Topic of the alerts (empty = none).
    pub alerts_topic: String,
    /// Dead-letter topic of stream `s` is this prefix followed by `s` (empty = none).
    pub dead_letter_prefix: String,
    /// Partitions of a topic that wearflow creates because it does not exist.
    pub create_partitions: i32,
    /// librdkafka producer options passed through unchanged (they win over wearflow's own).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: "127.0.0.1:9092".into(),
            views: vec!["*".into()],
            changelog_prefix: "wearflow.view.".into(),
            alerts_topic: "wearflow.alerts".into(),
            dead_letter_prefix: "wearflow.dead_letters.".into(),
            create_partitions: 4,
            options: BTreeMap::new(),
        }
    }
}

/// Errors of the Kafka sinks.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Messages that could not be delivered even after retries (they are still queued).
    #[error("{0} messages not delivered yet")]
    Undelivered(usize),
}

/// One message, owned, so that it can be sent again after a failed delivery.
#[derive(Clone, Debug)]
pub struct OwnedRecord {
    /// Topic.
    pub topic: String,
    /// Key (none = no key).
    pub key: Option<Vec<u8>>,
    /// Value (none = a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OwnedRecord {
    /// A copy of a message, headers included.
    pub fn of(message: &impl Message) -> OwnedRecord {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        OwnedRecord {
            topic: message.topic().to_string(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Delivery counters of a [`Producer`].
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Messages acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Failed deliveries (each is retried at the next flush).
    pub errors: AtomicU64,
    /// Messages sent again after a failed delivery.
    pub retried: AtomicU64,
}

#[derive(Clone, Default)]
struct DeliveryContext {
    stats: Arc<DeliveryStats>,
    failed: Arc<Mutex<Vec<OwnedRecord>>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("kafka delivery to {} failed: {error}", message.topic());
                let record = OwnedRecord::of(message);
                if let Ok(mut failed) = self.failed.lock() {
                    failed.push(record);
                }
            }
        }
    }
}

/// An idempotent producer that never drops a message silently.
pub struct Producer {
    inner: ThreadedProducer<DeliveryContext>,
    context: DeliveryContext,
}

impl Producer {
    /// Connects to `brokers` with idempotence on and `options` passed through.
    pub fn new(
        brokers: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Producer, KafkaSinkError> {
        let context = DeliveryContext::default();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (key, value) in options {
            config.set(key, value);
        }
        let inner = config.create_with_context(context.clone())?;
        Ok(Producer { inner, context })
    }

    /// Delivery counters.
    pub fn stats(&self) -> &Arc<DeliveryStats> {
        &self.context.stats
    }

    /// Messages queued or in flight.
    pub fn queue_depth(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Queues one message; waits while the local queue is full (backpressure).
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaSinkError> {
        loop {
            let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            if !headers.is_empty() {
                let mut owned = OwnedHeaders::new_with_capacity(headers.len());
                for (key, value) in headers {
                    owned = owned.insert(Header {
                        key,
                        value: Some(*value),
                    });
                }
                record = record.headers(owned);
            }
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }

    /// Waits until every queued message is acknowledged, sending failed ones again (a few
    /// rounds); the ones still failing stay queued for the next flush.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaSinkError> {
        for _ in 0..5 {
            self.inner.flush(timeout)?;
            let failed = self
                .context
                .failed
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            if failed.is_empty() {
                return Ok(());
            }
            self.context
                .stats
                .retried
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            for record in &failed {
                let headers: Vec<(&str, &[u8])> = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                self.send(
                    &record.topic,
                    record.key.as_deref(),
                    record.payload.as_deref(),
                    &headers,
                )?;
            }
        }
        let left = self.context.failed.lock().map(|f| f.len()).unwrap_or(0);
        if left > 0 {
            return Err(KafkaSinkError::Undelivered(left));
        }
        Ok(())
    }
}

/// Sends bad records to `<prefix><stream>` with their original bytes and why.
pub struct DeadLetters {
    producer: Arc<Producer>,
    prefix: String,
}

impl DeadLetters {
    /// Dead letters through `producer` to topics named `prefix` + stream.
    pub fn new(producer: Arc<Producer>, prefix: &str) -> DeadLetters {
        DeadLetters {
            producer,
            prefix: prefix.to_string(),
        }
    }

    /// The topic of a stream's dead letters.
    pub fn topic(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// Queues one bad record: `original` bytes (or the bounded raw text kept in the error
    /// record), headers `wearflow.reason`, `wearflow.source_topic`, `wearflow.partition`,
    /// `wearflow.offset`.
    pub fn send(
        &self,
        error: &ErrorRecord,
        source_topic: &str,
        original: Option<&[u8]>,
    ) -> Result<(), KafkaSinkError> {
        let partition = error.partition.to_string();
        let offset = error.position.to_string();
        let payload = original.unwrap_or(error.raw.as_bytes());
        self.producer.send(
            &self.topic(&error.source),
            Some(error.source.as_bytes()),
            Some(payload),
            &[
                ("wearflow.reason", error.reason.as_bytes()),
                ("wearflow.source_topic", source_topic.as_bytes()),
                ("wearflow.partition", partition.as_bytes()),
                ("wearflow.offset", offset.as_bytes()),
            ],
        )
    }
}

/// The keys of every message in `topic`, read from its start to its end (at most `timeout`).
pub fn existing_keys(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<HashSet<Vec<u8>>, KafkaSinkError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "wearflow-sink-scan")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (key, value) in options
        .iter()
        .filter(|(k, _)| !k.starts_with("enable.idempotence"))
    {
        config.set(key, value);
    }
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut list = TopicPartitionList::new();
    let mut open = HashSet::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        open.insert(partition.id());
    }
    consumer.assign(&list)?;
    let started = std::time::Instant::now();
    let mut keys = HashSet::new();
    while !open.is_empty() && started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if let Some(key) = message.key() {
                    keys.insert(key.to_vec());
                }
            }
            Some(Err(KafkaError::PartitionEOF(id))) => {
                open.remove(&id);
            }
            Some(Err(e)) => tracing::warn!("scanning {topic}: {e}"),
            None => {}
        }
    }
    consumer.unassign().ok();
    if !open.is_empty() {
        return Err(KafkaSinkError::Kafka(KafkaError::Global(
            RDKafkaErrorCode::OperationTimedOut,
        )));
    }
    Ok(keys)
}

/// A client context that does not log the end of a partition as an error.
struct QuietContext;

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

/// The changelog and alerts writer: follows the serving store, one snapshot at a time.
pub struct ViewSink {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ViewSink {
    /// The topics this configuration writes for `store`'s views.
    pub fn topics(config: &KafkaSinkConfig, store: &ServingStore) -> Vec<String> {
        let mut topics: Vec<String> = store
            .schemas()
            .iter()
            .filter(|s| s.kind == ViewKind::Keyed && wants(config, &s.name))
            .map(|s| format!("{}{}", config.changelog_prefix, s.name))
            .collect();
        if !config.alerts_topic.is_empty() {
            topics.push(config.alerts_topic.clone());
        }
        topics
    }

    /// Starts a thread that writes every snapshot `store` publishes from now on (and the
    /// current one, if it is not empty) and flushes after each.
    ///
    /// Alerts already in the alerts topic (by key, e.g. from a run before a restart) are not
    /// sent again, so the topic holds each alert once.
    pub fn spawn(
        config: &KafkaSinkConfig,
        store: Arc<ServingStore>,
        producer: Arc<Producer>,
    ) -> Result<ViewSink, KafkaSinkError> {
        let sent_alerts = if config.alerts_topic.is_empty() {
            HashSet::new()
        } else {
            existing_keys(
                &config.brokers,
                &config.options,
                &config.alerts_topic,
                Duration::from_secs(30),
            )?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let config = config.clone();
        let mut feed = store.subscribe();
        let handle = std::thread::Builder::new()
            .name("wearflow-kafka-views".into())
            .spawn(move || {
                let mut writer = SnapshotWriter {
                    config,
                    producer,
                    last: None,
                    sent_alerts,
                };
                let current = store.snapshot();
                if current.version > 0 {
                    writer.write_full(&current);
                }
                loop {
                    match feed.try_recv() {
                        Ok(snapshot) => writer.write(&snapshot),
                        Err(TryRecvError::Lagged(_)) => {
                            // Snapshots were missed: write the difference to the newest.
                            writer.write_full(&store.snapshot());
                        }
                        Err(TryRecvError::Closed) => break,
                        Err(TryRecvError::Empty) => {
                            if thread_stop.load(Ordering::Acquire) {
                                // Catch up to what was published before the stop.
                                let newest = store.snapshot();
                                if writer
                                    .last
                                    .as_ref()
                                    .is_none_or(|l| l.version < newest.version)
                                {
                                    writer.write_full(&newest);
                                }
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            })
            .ok();
        Ok(ViewSink { handle, stop })
    }

    /// Writes what was published up to now, flushes and stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.join().ok();
        }
    }
}

impl Drop for ViewSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.join().ok();
        }
    }
}

fn wants(config: &KafkaSinkConfig, view: &str) -> bool {
    config.views.iter().any(|v| v == "*" || v == view)
}

struct SnapshotWriter {
    config: KafkaSinkConfig,
    producer: Arc<Producer>,
    /// The newest snapshot written.
    last: Option<Arc<Snapshot>>,
    /// Keys of the alerts in the alerts topic.
    sent_alerts: HashSet<Vec<u8>>,
}

impl SnapshotWriter {
    fn flush(&self) {
        // Undelivered messages stay queued inside the producer and are counted; the next
        // flush sends them again.
        while let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::warn!("kafka sink flush: {e}; retrying");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn send(&mut self, topic: &str, key: &Json, value: Option<Json>) {
        let key = key.to_string();
        if topic == self.config.alerts_topic && !self.sent_alerts.insert(key.as_bytes().to_vec()) {
            return;
        }
        let value = value.map(|v| v.to_string());
        if let Err(e) = self.producer.send(
            topic,
            Some(key.as_bytes()),
            value.as_deref().map(str::as_bytes),
            &[],
        ) {
            tracing::error!("kafka sink cannot queue a message for {topic}: {e}");
        }
    }

    fn row_value(view: &ViewData, row: &Row, as_of: u64) -> Json {
        let mut value = row_to_json(&view.schema, row);
        if let Json::Object(map) = &mut value {
            map.insert("as_of".into(), Json::from(as_of));
        }
        value
    }

    /// Writes the changes that made `snapshot`, then flushes.
    fn write(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(last) = &self.last
            && snapshot.version != last.version + 1
        {
            self.write_full(snapshot);
            return;
        }
        for (name, changes) in snapshot.changes.iter() {
            let Some(view) = snapshot.view(name) else {
                continue;
            };
            let topic = self.topic_of(view);
            let Some(topic) = topic else { continue };
            for change in changes {
                let key = key_to_json(&view.schema, &change.key);
                let value = match (&change.op, &change.row) {
                    (ChangeOp::Delete, _) | (_, None) => None,
                    (_, Some(row)) => Some(Self::row_value(view, row, snapshot.as_of)),
                };
                self.send(&topic, &key, value);
            }
        }
        self.flush();
        self.last = Some(Arc::clone(snapshot));
    }

    fn topic_of(&self, view: &ViewData) -> Option<String> {
        match view.schema.kind {
            ViewKind::Keyed if wants(&self.config, &view.schema.name) => Some(format!(
                "{}{}",
                self.config.changelog_prefix, view.schema.name
            )),
            ViewKind::Append
                if view.schema.name == "alerts" && !self.config.alerts_topic.is_empty() =>
            {
                Some(self.config.alerts_topic.clone())
            }
            _ => None,
        }
    }

    /// Writes the difference between the last written snapshot and `snapshot`, then flushes.
    fn write_full(&mut self, snapshot: &Arc<Snapshot>) {
        let last = self.last.clone();
        for (name, view) in &snapshot.views {
            let Some(topic) = self.topic_of(view) else {
                continue;
            };
            let before = last.as_ref().and_then(|l| l.view(name));
            match view.schema.kind {
                ViewKind::Keyed => {
                    for (key, row) in view.rows.iter() {
                        if before.and_then(|b| b.rows.get(key)) != Some(row) {
                            let value = Self::row_value(view, row, snapshot.as_of);
                            self.send(&topic, &key_to_json(&view.schema, key), Some(value));
                        }
                    }
                    if let Some(before) = before {
                        for key in before.rows.keys() {
                            if !view.rows.contains_key(key) {
                                self.send(&topic, &key_to_json(&view.schema, key), None);
                            }
                        }
                    }
                }
                ViewKind::Append => {
                    let seen: std::collections::BTreeSet<&Vec<wearflow_operators::Value>> = before
                        .map(|b| b.events.iter().collect())
                        .unwrap_or_default();
                    let key_len = view.schema.key_len;
                    for row in view.events.iter().filter(|r| !seen.contains(r)) {
                        let value = Self::row_value(view, row, snapshot.as_of);
                        self.send(
                            &topic,
                            &key_to_json(&view.schema, &row[..key_len]),
                            Some(value),
                        );
                    }
                }
            }
        }
        self.flush();
        self.last = Some(Arc::clone(snapshot));
    }
}
