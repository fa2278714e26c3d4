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
//!
//! With `exactly_once`, changelogs and alerts get a transactional producer of their own:
//! each snapshot's messages are one Kafka transaction, and at start the writer reads back
//! what the topics hold ([`Committed`]) and resumes from it, so a restart that replays
//! its input sends no change a second time.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Changelogs and alerts through Kafka transactions, one per snapshot, resumed after a
    /// restart from what the topics hold: each change once for `read_committed` consumers.
    pub exactly_once: bool,
    /// The `transactional.id` with `exactly_once` (empty = the changelog prefix followed by
    /// `writer`); keep it stable across restarts and unique per deployment.
    pub transactional_id: String,
}

impl KafkaSinkConfig {
    /// The `transactional.id` of the changelog and alerts writer.
    pub fn transactional_id(&self) -> String {
        if self.transactional_id.is_empty() {
            format!("{}writer", self.changelog_prefix)
        } else {
            self.transactional_id.clone()
        }
    }
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
            exactly_once: false,
            transactional_id: String::new(),
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
        Self::with(brokers, options, None, Arc::default())
    }

    /// A transactional producer with `transactional.id` = `id`, its transactions initialised
    /// (which aborts what an earlier producer of the same id left open, and fences it). Its
    /// deliveries are counted in `stats` (e.g. another producer's, for one set of metrics).
    pub fn transactional(
        brokers: &str,
        options: &BTreeMap<String, String>,
        id: &str,
        timeout: Duration,
        stats: Arc<DeliveryStats>,
    ) -> Result<Producer, KafkaSinkError> {
        let producer = Self::with(brokers, options, Some(id), stats)?;
        producer.inner.init_transactions(timeout)?;
        Ok(producer)
    }

    fn with(
        brokers: &str,
        options: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
        stats: Arc<DeliveryStats>,
    ) -> Result<Producer, KafkaSinkError> {
        let context = DeliveryContext {
            stats,
            failed: Arc::default(),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (key, value) in options {
            config.set(key, value);
        }
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let inner = config.create_with_context(context.clone())?;
        Ok(Producer { inner, context })
    }

    /// Begins a transaction (transactional producers only).
    pub fn begin(&self) -> Result<(), KafkaSinkError> {
        self.take_failed();
        Ok(self.inner.begin_transaction()?)
    }

    /// Commits the open transaction: every message in it is delivered, or none is visible.
    pub fn commit(&self, timeout: Duration) -> Result<(), KafkaSinkError> {
        Ok(self.inner.commit_transaction(timeout)?)
    }

    /// Aborts the open transaction; its messages are to be sent again in a new one.
    pub fn abort(&self, timeout: Duration) -> Result<(), KafkaSinkError> {
        let aborted = self.inner.abort_transaction(timeout);
        self.take_failed();
        Ok(aborted?)
    }

    fn take_failed(&self) -> Vec<OwnedRecord> {
        self.context
            .failed
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
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
            let failed = self.take_failed();
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
    let mut keys = HashSet::new();
    scan(
        brokers,
        options,
        &[topic.to_string()],
        false,
        timeout,
        |_, key, _| {
            if let Some(key) = key {
                keys.insert(key.to_vec());
            }
        },
    )?;
    Ok(keys)
}

/// Reads every message of each of `topics` from its start to its end, one topic after the
/// other, and hands each to `each` (topic, key, payload). With `committed`, only messages of
/// committed transactions are read (`isolation.level` = `read_committed`).
fn scan(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topics: &[String],
    committed: bool,
    timeout: Duration,
    mut each: impl FnMut(&str, Option<&[u8]>, Option<&[u8]>),
) -> Result<(), KafkaSinkError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "wearflow-sink-scan")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    // Producer options that are consumer options too (security, timeouts) apply to the scan.
    for (key, value) in options
        .iter()
        .filter(|(k, _)| !k.starts_with("enable.idempotence") && !k.starts_with("transaction"))
    {
        config.set(key, value);
    }
    if committed {
        config.set("isolation.level", "read_committed");
    }
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let started = std::time::Instant::now();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut list = TopicPartitionList::new();
        let mut open = HashSet::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            list.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            open.insert(partition.id());
        }
        consumer.assign(&list)?;
        while !open.is_empty() && started.elapsed() < timeout {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => each(topic, message.key(), message.payload()),
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
    }
    Ok(())
}

/// What the changelog and alerts topics hold for a `read_committed` consumer: per topic,
/// the last row of each key (without `as_of`; a tombstone removes the key), and the greatest
/// `as_of` of any message. An `exactly_once` writer resumes from it after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Committed {
    /// The newest snapshot time any message was written at (none: the topics are empty).
    pub as_of: Option<u64>,
    /// Topic → key (JSON text) → row (JSON object without `as_of`).
    pub rows: HashMap<String, HashMap<Vec<u8>, Json>>,
}

impl Committed {
    /// Reads `topics` from their start to their end (committed transactions only).
    pub fn read(
        brokers: &str,
        options: &BTreeMap<String, String>,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Committed, KafkaSinkError> {
        let mut committed = Committed::default();
        scan(
            brokers,
            options,
            topics,
            true,
            timeout,
            |topic, key, payload| {
                committed.add(topic, key, payload);
            },
        )?;
        Ok(committed)
    }

    /// Takes one message into account, in topic order. Messages without a key are not
    /// wearflow's and are left out.
    pub fn add(&mut self, topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let Some(key) = key else { return };
        let rows = self.rows.entry(topic.to_string()).or_default();
        match payload.map(serde_json::from_slice::<Json>) {
            Some(Ok(Json::Object(mut row))) => {
                if let Some(as_of) = row.remove("as_of").and_then(|a| a.as_u64()) {
                    self.as_of = self.as_of.max(Some(as_of));
                }
                rows.insert(key.to_vec(), Json::Object(row));
            }
            Some(_) => {
                tracing::warn!("{topic}: a message that is not a JSON object is left out");
            }
            None => {
                rows.remove(key);
            }
        }
    }

    fn row(&self, topic: &str, key: &[u8]) -> Option<&Json> {
        self.rows.get(topic)?.get(key)
    }
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
    /// sent again, so the topic holds each alert once. With `exactly_once` the writer uses a
    /// transactional producer of its own (counting its deliveries in `producer`'s stats): one
    /// transaction per snapshot, and it resumes from what the topics hold (see
    /// [`SnapshotWriter::write_full`]).
    pub fn spawn(
        config: &KafkaSinkConfig,
        store: Arc<ServingStore>,
        producer: Arc<Producer>,
    ) -> Result<ViewSink, KafkaSinkError> {
        let timeout = Duration::from_secs(30);
        let (producer, sent_alerts, resume) = if config.exactly_once {
            // First the producer: initialising it aborts a transaction a killed run left
            // open, so that reading back is not held at it.
            let producer = Producer::transactional(
                &config.brokers,
                &config.options,
                &config.transactional_id(),
                timeout,
                Arc::clone(producer.stats()),
            )?;
            let topics = Self::topics(config, &store);
            let committed = Committed::read(&config.brokers, &config.options, &topics, timeout)?;
            let sent_alerts = committed
                .rows
                .get(&config.alerts_topic)
                .map(|rows| rows.keys().cloned().collect())
                .unwrap_or_default();
            (Arc::new(producer), sent_alerts, Some(committed))
        } else if config.alerts_topic.is_empty() {
            (producer, HashSet::new(), None)
        } else {
            let keys = existing_keys(
                &config.brokers,
                &config.options,
                &config.alerts_topic,
                timeout,
            )?;
            (producer, keys, None)
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
                    resume,
                    in_transaction: Vec::new(),
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
    /// With `exactly_once`, until the first snapshot is written: what the topics held at
    /// start, the base of that first snapshot's changes.
    resume: Option<Committed>,
    /// Alert keys sent in the open transaction (forgotten again if it aborts).
    in_transaction: Vec<Vec<u8>>,
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
        if topic == self.config.alerts_topic {
            if !self.sent_alerts.insert(key.as_bytes().to_vec()) {
                return;
            }
            if self.config.exactly_once {
                self.in_transaction.push(key.as_bytes().to_vec());
            }
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

    /// Writes the changes that made `snapshot`, then flushes (or commits).
    fn write(&mut self, snapshot: &Arc<Snapshot>) {
        let follows = self
            .last
            .as_ref()
            .is_none_or(|last| snapshot.version == last.version + 1);
        if !follows || self.resume.is_some() {
            self.write_full(snapshot);
            return;
        }
        self.deliver(snapshot, true);
    }

    /// Sends `snapshot` (its changes, or with `incremental` false its difference from what
    /// was written before) and flushes; with `exactly_once` the messages are one transaction,
    /// begun and committed here, and a failed transaction is aborted and sent again whole.
    fn deliver(&mut self, snapshot: &Arc<Snapshot>, incremental: bool) {
        let timeout = Duration::from_secs(30);
        let mut incremental = incremental;
        loop {
            if !self.config.exactly_once {
                self.sends(snapshot, incremental);
                self.flush();
                break;
            }
            self.in_transaction.clear();
            let outcome = match self.producer.begin() {
                Ok(()) => {
                    self.sends(snapshot, incremental);
                    self.producer.commit(timeout)
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        "kafka sink transaction of as_of {} failed: {e}; sending it again",
                        snapshot.as_of
                    );
                    for key in self.in_transaction.drain(..) {
                        self.sent_alerts.remove(&key);
                    }
                    if let Err(e) = self.producer.abort(timeout) {
                        // The producer is unusable (fenced, or in a fatal state): a new one
                        // aborts whatever the old one left open.
                        tracing::warn!("kafka sink abort: {e}; starting a new producer");
                        match Producer::transactional(
                            &self.config.brokers,
                            &self.config.options,
                            &self.config.transactional_id(),
                            timeout,
                            Arc::clone(self.producer.stats()),
                        ) {
                            Ok(producer) => self.producer = Arc::new(producer),
                            Err(e) => tracing::error!("kafka sink producer: {e}"),
                        }
                    }
                    incremental = false;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        self.last = Some(Arc::clone(snapshot));
        self.resume = None;
    }

    fn sends(&mut self, snapshot: &Arc<Snapshot>, incremental: bool) {
        if incremental {
            self.send_changes(snapshot);
        } else {
            self.send_difference(snapshot);
        }
    }

    fn send_changes(&mut self, snapshot: &Arc<Snapshot>) {
        for (name, changes) in snapshot.changes.iter() {
            let Some(view) = snapshot.view(name) else {
                continue;
            };
            let Some(topic) = self.topic_of(view) else {
                continue;
            };
            for change in changes {
                let key = key_to_json(&view.schema, &change.key);
                let value = match (&change.op, &change.row) {
                    (ChangeOp::Delete, _) | (_, None) => None,
                    (_, Some(row)) => Some(Self::row_value(view, row, snapshot.as_of)),
                };
                self.send(&topic, &key, value);
            }
        }
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

    /// Writes the difference between what was written before and `snapshot`, then flushes.
    ///
    /// After an `exactly_once` restart "before" is what the topics hold ([`Committed`]):
    /// snapshots older than its `as_of` (the input being replayed) are passed over, and the
    /// first one at or after it sends only the rows that differ from the topics' (and the
    /// alerts not in the topic yet), so no change is sent twice.
    fn write_full(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(resume) = &self.resume
            && resume.as_of.is_some_and(|as_of| snapshot.as_of < as_of)
        {
            return;
        }
        self.deliver(snapshot, false);
    }

    fn send_difference(&mut self, snapshot: &Arc<Snapshot>) {
        let last = self.last.clone();
        let resume = self.resume.take();
        for (name, view) in &snapshot.views {
            let Some(topic) = self.topic_of(view) else {
                continue;
            };
            let before = last.as_ref().and_then(|l| l.view(name));
            match view.schema.kind {
                ViewKind::Keyed => {
                    let mut keys = HashSet::new();
                    for (key_values, row) in view.rows.iter() {
                        let key = key_to_json(&view.schema, key_values);
                        let changed = match &resume {
                            Some(committed) => {
                                let text = key.to_string().into_bytes();
                                let changed = committed.row(&topic, &text)
                                    != Some(&row_to_json(&view.schema, row));
                                keys.insert(text);
                                changed
                            }
                            None => before.and_then(|b| b.rows.get(key_values)) != Some(row),
                        };
                        if changed {
                            let value = Self::row_value(view, row, snapshot.as_of);
                            self.send(&topic, &key, Some(value));
                        }
                    }
                    match (&resume, before) {
                        (Some(committed), _) => {
                            let gone: Vec<Json> = committed
                                .rows
                                .get(&topic)
                                .into_iter()
                                .flat_map(|rows| rows.keys())
                                .filter(|k| !keys.contains(*k))
                                .filter_map(|k| serde_json::from_slice(k).ok())
                                .collect();
                            for key in gone {
                                self.send(&topic, &key, None);
                            }
                        }
                        (None, Some(before)) => {
                            for key in before.rows.keys() {
                                if !view.rows.contains_key(key) {
                                    self.send(&topic, &key_to_json(&view.schema, key), None);
                                }
                            }
                        }
                        (None, None) => {}
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
        // A failed transaction sends the snapshot again against the same base.
        self.resume = resume;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_keeps_the_last_row_per_key_and_the_newest_as_of() {
        let mut committed = Committed::default();
        let topic = "v.tooth_wear";
        committed.add(
            topic,
            Some(b"{\"id\":\"a\"}"),
            Some(br#"{"id":"a","x":1,"as_of":10}"#),
        );
        committed.add(
            topic,
            Some(b"{\"id\":\"b\"}"),
            Some(br#"{"id":"b","x":2,"as_of":10}"#),
        );
        committed.add(
            topic,
            Some(b"{\"id\":\"a\"}"),
            Some(br#"{"id":"a","x":3,"as_of":30}"#),
        );
        // A tombstone removes its key; a message without a key is not wearflow's.
        committed.add(topic, Some(b"{\"id\":\"b\"}"), None);
        committed.add(topic, None, Some(br#"{"as_of":99}"#));
        committed.add(
            "alerts",
            Some(b"k"),
            Some(br#"{"alert_id":"k","as_of":20}"#),
        );
        assert_eq!(committed.as_of, Some(30));
        assert_eq!(
            committed.row(topic, b"{\"id\":\"a\"}"),
            Some(&serde_json::json!({"id": "a", "x": 3})),
            "the last row, without as_of"
        );
        assert_eq!(committed.row(topic, b"{\"id\":\"b\"}"), None);
        assert_eq!(committed.rows[topic].len(), 1);
        assert!(committed.row("alerts", b"k").is_some());
    }

    #[test]
    fn the_transactional_id_defaults_to_the_changelog_prefix() {
        let mut config = KafkaSinkConfig::default();
        assert_eq!(config.transactional_id(), "wearflow.view.writer");
        config.transactional_id = "plant-7".into();
        assert_eq!(config.transactional_id(), "plant-7");
    }
}
