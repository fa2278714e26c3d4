//! The Kafka source: explicitly assigned partitions of the four stream topics, decoded into
//! [`SourceRecord`]s with per-partition offsets, end-of-partition detection and lag figures.
//!
//! ```text
//!  assets topic ──► read to its end first (reference data, upserts by key)
//!  telemetry / orders / stock topics ──► then all together, a fair share per poll
//! ```
//!
//! One consumer per topic: librdkafka reports the end of a partition by partition number
//! only, so a consumer per topic keeps that unambiguous. Partitions are assigned explicitly
//! (no group rebalancing), so which reader holds which partition, and from which offset it
//! starts, is decided by the configuration alone. Every partition has a global index (topics
//! in stream order, partitions ascending) that the event-time watermarks use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::decode::decode;
use crate::event::{Asset, Event, StreamKind};
use crate::file::SourceRecord;

/// The topic of each stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopics {
    /// Device telemetry.
    pub telemetry: String,
    /// Order lifecycle events.
    pub orders: String,
    /// Inventory movements.
    pub stock: String,
    /// Reference data, read as upserts by key.
    pub assets: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            telemetry: "wearflow.telemetry".into(),
            orders: "wearflow.orders".into(),
            stock: "wearflow.stock".into(),
            assets: "wearflow.assets".into(),
        }
    }
}

impl KafkaTopics {
    /// The topic of a stream.
    pub fn of(&self, stream: StreamKind) -> &str {
        match stream {
            StreamKind::Telemetry => &self.telemetry,
            StreamKind::Orders => &self.orders,
            StreamKind::Stock => &self.stock,
            StreamKind::Assets => &self.assets,
        }
    }
}

/// Where reading starts in each partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// The consumer group's committed offsets (earliest where none is committed).
    Committed,
}

/// The Kafka source's configuration (`[source] kind = "kafka"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic names.
    pub topics: KafkaTopics,
    /// Consumer group, used only for committed offsets (assignment is explicit).
    pub group_id: String,
    /// Where reading starts.
    pub start: StartPosition,
    /// End the run once every partition has been read to its end (replays, tests).
    pub stop_at_end: bool,
    /// Partitions of a topic that wearflow creates because it does not exist.
    pub create_partitions: i32,
    /// How often the read position is committed to the group, in ms (0 = never).
    pub commit_interval_ms: u64,
    /// librdkafka options passed through unchanged (they win over wearflow's own).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        KafkaSourceConfig {
            brokers: "127.0.0.1:9092".into(),
            topics: KafkaTopics::default(),
            group_id: "wearflow".into(),
            start: StartPosition::Earliest,
            stop_at_end: false,
            create_partitions: 4,
            commit_interval_ms: 5_000,
            options: BTreeMap::new(),
        }
    }
}

/// A client configuration with wearflow's defaults, then the user's pass-through options.
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// Creates the topics that do not exist yet, with `partitions` partitions each and the
/// topic configuration `settings` (e.g. `cleanup.policy = compact`).
pub fn ensure_topics(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topics: &[&str],
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, options)
        .create()
        .map_err(|e| kafka_error("admin client", e))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| kafka_error("metadata", e))?;
    let missing: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|t| {
            !metadata
                .topics()
                .iter()
                .any(|m| m.name() == **t && !m.partitions().is_empty())
        })
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(t, partitions.max(1), TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let results = futures::executor::block_on(admin.create_topics(
        &missing,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .map_err(|e| kafka_error("create topics", e))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka(format!("cannot create topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

fn kafka_error(what: &str, error: KafkaError) -> Error {
    Error::Kafka(format!("{what}: {error}"))
}

/// The message key a stream's event is produced with: the entity it updates, so that one
/// device's (order's, SKU's, asset's) events stay in order in one partition.
pub fn event_key(event: &Event) -> String {
    match event {
        Event::Telemetry(t) => t.device_id.clone(),
        Event::Order(o) => o.order_id.clone(),
        Event::Stock(s) => format!("{}/{}", s.warehouse, s.sku),
        Event::Asset(Asset::Device(d)) => format!("device/{}", d.device_id),
        Event::Asset(Asset::Sku(s)) => format!("sku/{}", s.sku),
        Event::Asset(Asset::Machine(m)) => format!("machine/{}", m.machine_id),
        Event::Asset(Asset::Site(s)) => format!("site/{}", s.site),
    }
}

/// Where one partition stands.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionStatus {
    /// The stream.
    pub stream: StreamKind,
    /// The topic.
    pub topic: String,
    /// The Kafka partition.
    pub partition: i32,
    /// The offset of the next record to read (-1 before the first).
    pub next_offset: i64,
    /// The partition's end (high watermark) as librdkafka last saw it, if known.
    pub high_watermark: Option<i64>,
    /// Kafka timestamp (ms) of the newest record read.
    pub last_record_ms: Option<i64>,
    /// Whether the partition was read to its end and nothing newer has arrived.
    pub at_end: bool,
    /// Records read.
    pub records: u64,
    /// Payload bytes read.
    pub bytes: u64,
}

impl PartitionStatus {
    /// Messages behind the end of the partition (0 when unknown).
    pub fn lag_messages(&self) -> i64 {
        if self.at_end {
            return 0;
        }
        match self.high_watermark {
            Some(high) => (high - self.next_offset.max(0)).max(0),
            None => 0,
        }
    }

    /// Whether the partition may hold records this reader has not read: a known backlog, or
    /// an end not known yet (assigned but no fetch answered: just after a start or restart,
    /// or while the assets topic is read first). Only a partition known to be caught up can
    /// go idle; one whose end is unknown must not let the frontier pass its unread records.
    pub fn pending(&self) -> bool {
        !self.at_end
            && self
                .high_watermark
                .is_none_or(|high| high > self.next_offset.max(0))
    }
}

/// Per-topic statistics callback: librdkafka's view of each partition's high watermark.
#[derive(Clone, Default)]
struct StatsContext {
    high_watermarks: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl ClientContext for StatsContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is reported through poll as well; it is not an error.
        if !matches!(
            error,
            KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
                | KafkaError::PartitionEOF(_)
        ) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Ok(mut marks) = self.high_watermarks.lock() else {
            return;
        };
        for topic in statistics.topics.values() {
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.hi_offset >= 0 {
                    marks.insert(*id, partition.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

struct TopicReader {
    stream: StreamKind,
    topic: String,
    consumer: BaseConsumer<StatsContext>,
    context: StatsContext,
    /// Global indexes of this topic's partitions, by Kafka partition number.
    partitions: BTreeMap<i32, usize>,
}

/// What one poll produced besides records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// False once the source has ended (only with `stop_at_end`).
    pub more: bool,
}

/// Reads the stream topics of one Kafka cluster. Create with [`KafkaSource::open`].
pub struct KafkaSource {
    readers: Vec<TopicReader>,
    status: Vec<PartitionStatus>,
    stop_at_end: bool,
    /// True while the assets topic is read to its end before anything else.
    bootstrapping: bool,
    start: StartPosition,
    commit_every: Option<Duration>,
    last_commit: std::time::Instant,
}

impl KafkaSource {
    /// Connects, creates missing topics, and assigns the partitions for which `take(global
    /// index)` holds. Reading starts with the assets topic alone, until
    /// [`KafkaSource::start_streams`].
    pub fn open(
        config: &KafkaSourceConfig,
        take: impl Fn(usize) -> bool,
    ) -> Result<KafkaSource, Error> {
        let topics: Vec<&str> = StreamKind::ALL
            .iter()
            .map(|s| config.topics.of(*s))
            .collect();
        ensure_topics(
            &config.brokers,
            &config.options,
            &topics,
            config.create_partitions,
            &[],
        )?;
        let mut readers = Vec::new();
        let mut status = Vec::new();
        let mut global = 0usize;
        for stream in StreamKind::ALL {
            let topic = config.topics.of(stream).to_string();
            let context = StatsContext::default();
            let mut client = ClientConfig::new();
            client
                .set("bootstrap.servers", &config.brokers)
                .set("group.id", &config.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "earliest")
                .set("statistics.interval.ms", "1000")
                .set("fetch.wait.max.ms", "20");
            for (key, value) in &config.options {
                client.set(key, value);
            }
            let consumer: BaseConsumer<StatsContext> = client
                .create_with_context(context.clone())
                .map_err(|e| kafka_error("consumer", e))?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| kafka_error(&format!("metadata of {topic}"), e))?;
            let mut ids: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            ids.sort_unstable();
            if ids.is_empty() {
                return Err(Error::Kafka(format!("topic {topic} has no partitions")));
            }
            let mut partitions = BTreeMap::new();
            for id in ids {
                if take(global) {
                    partitions.insert(id, status.len());
                    status.push(PartitionStatus {
                        stream,
                        topic: topic.clone(),
                        partition: id,
                        next_offset: -1,
                        high_watermark: None,
                        last_record_ms: None,
                        at_end: false,
                        records: 0,
                        bytes: 0,
                    });
                }
                global += 1;
            }
            readers.push(TopicReader {
                stream,
                topic,
                consumer,
                context,
                partitions,
            });
        }
        let mut source = KafkaSource {
            readers,
            status,
            stop_at_end: config.stop_at_end,
            bootstrapping: true,
            start: config.start,
            commit_every: (config.commit_interval_ms > 0)
                .then(|| Duration::from_millis(config.commit_interval_ms)),
            last_commit: std::time::Instant::now(),
        };
        source.assign(|stream| stream == StreamKind::Assets)?;
        Ok(source)
    }

    /// Assigns the partitions of the streams `which` selects, from the start position (or,
    /// for partitions already read from, from where reading stopped).
    fn assign(&mut self, which: impl Fn(StreamKind) -> bool) -> Result<(), Error> {
        for reader in &self.readers {
            let mut list = TopicPartitionList::new();
            if which(reader.stream) {
                for (&id, &index) in &reader.partitions {
                    let next = self.status[index].next_offset;
                    let offset = if next >= 0 {
                        Offset::Offset(next)
                    } else {
                        match self.start {
                            StartPosition::Earliest => Offset::Beginning,
                            StartPosition::Latest => Offset::End,
                            StartPosition::Committed => Offset::Stored,
                        }
                    };
                    list.add_partition_offset(&reader.topic, id, offset)
                        .map_err(|e| kafka_error("assignment", e))?;
                }
            }
            reader
                .consumer
                .assign(&list)
                .map_err(|e| kafka_error(&format!("assign {}", reader.topic), e))?;
        }
        Ok(())
    }

    /// Resumes from a checkpoint: each partition named in `offsets` (`(topic, partition,
    /// next offset)`) is read from that offset instead of the start position. Returns how
    /// many of this source's partitions were positioned.
    pub fn resume(&mut self, offsets: &[(String, i32, i64)]) -> Result<usize, Error> {
        let mut positioned = 0;
        for status in &mut self.status {
            if let Some((_, _, next)) = offsets
                .iter()
                .find(|(t, p, _)| *t == status.topic && *p == status.partition)
            {
                status.next_offset = *next;
                positioned += 1;
            }
        }
        if self.bootstrapping {
            self.assign(|stream| stream == StreamKind::Assets)?;
        } else {
            self.assign(|_| true)?;
        }
        Ok(positioned)
    }

    /// Whether every assets partition of this source has been read to its end (the
    /// reference data is loaded; true at once without assets partitions).
    pub fn assets_loaded(&self) -> bool {
        self.status
            .iter()
            .filter(|s| s.stream == StreamKind::Assets)
            .all(|s| s.at_end)
    }

    /// The local indexes of the assets partitions.
    pub fn asset_partitions(&self) -> Vec<usize> {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, s)| s.stream == StreamKind::Assets)
            .map(|(i, _)| i)
            .collect()
    }

    /// Ends the assets-first phase: assigns every partition (the assets ones from where
    /// reading stopped). Readers call this once every reader's assets are loaded, so that no
    /// telemetry is read anywhere before all reference data.
    pub fn start_streams(&mut self) -> Result<(), Error> {
        if self.bootstrapping {
            self.bootstrapping = false;
            self.assign(|_| true)?;
        }
        Ok(())
    }

    /// The partitions this source reads, by local index (the watermark partition index).
    pub fn partitions(&self) -> &[PartitionStatus] {
        &self.status
    }

    /// Reads up to `max` records into `out`, waiting at most about `wait` when none is ready.
    pub fn poll(
        &mut self,
        max: usize,
        wait: Duration,
        out: &mut Vec<SourceRecord>,
    ) -> Result<PollOutcome, Error> {
        let mut outcome = PollOutcome { more: true };
        let share = (max / self.readers.len().max(1)).max(1);
        let start_len = out.len();
        let mut progressed = true;
        while progressed && out.len() < max {
            progressed = false;
            for r in 0..self.readers.len() {
                let taken = self.poll_reader(r, share.min(max - out.len()), out)?;
                progressed |= taken > 0;
            }
        }
        if out.len() == start_len {
            std::thread::sleep(wait.min(Duration::from_millis(5)));
        }
        self.refresh_high_watermarks();
        if !self.bootstrapping && self.stop_at_end && self.status.iter().all(|s| s.at_end) {
            outcome.more = false;
        }
        if let Some(every) = self.commit_every
            && self.last_commit.elapsed() >= every
        {
            self.commit()?;
        }
        Ok(outcome)
    }

    fn poll_reader(
        &mut self,
        r: usize,
        max: usize,
        out: &mut Vec<SourceRecord>,
    ) -> Result<usize, Error> {
        let reader = &self.readers[r];
        let mut taken = 0;
        while taken < max {
            match reader.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(id))) => {
                    if let Some(&index) = reader.partitions.get(&id) {
                        self.status[index].at_end = true;
                    }
                }
                Some(Err(e)) => {
                    // Transient broker errors are retried by librdkafka; fatal ones end the run.
                    if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                        return Err(kafka_error(&format!("consume {}", reader.topic), e));
                    }
                    tracing::warn!("consume {}: {e}", reader.topic);
                }
                Some(Ok(message)) => {
                    let id = message.partition();
                    let offset = message.offset();
                    let Some(&index) = reader.partitions.get(&id) else {
                        continue;
                    };
                    let payload = message.payload().unwrap_or(&[]);
                    let status = &mut self.status[index];
                    status.next_offset = offset + 1;
                    status.at_end = false;
                    status.records += 1;
                    status.bytes += payload.len() as u64;
                    status.last_record_ms = message.timestamp().to_millis();
                    let position = u64::try_from(offset).unwrap_or(0);
                    let partition = u32::try_from(id).unwrap_or(0);
                    let event = decode(reader.stream, partition, position, payload);
                    let original = event.is_err().then(|| payload.to_vec());
                    out.push(SourceRecord {
                        stream: reader.stream,
                        partition: index as u32,
                        position,
                        event,
                        original,
                    });
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    fn refresh_high_watermarks(&mut self) {
        for reader in &self.readers {
            let Ok(marks) = reader.context.high_watermarks.lock() else {
                continue;
            };
            for (id, &index) in &reader.partitions {
                if let Some(&high) = marks.get(id) {
                    let status = &mut self.status[index];
                    status.high_watermark = Some(high.max(status.next_offset));
                }
            }
        }
    }

    /// Commits the read positions to the consumer group (asynchronously).
    pub fn commit(&mut self) -> Result<(), Error> {
        self.last_commit = std::time::Instant::now();
        for reader in &self.readers {
            let mut list = TopicPartitionList::new();
            for (&id, &index) in &reader.partitions {
                let next = self.status[index].next_offset;
                if next >= 0 {
                    list.add_partition_offset(&reader.topic, id, Offset::Offset(next))
                        .map_err(|e| kafka_error("commit list", e))?;
                }
            }
            if list.count() > 0 {
                reader
                    .consumer
                    .commit(&list, CommitMode::Async)
                    .map_err(|e| kafka_error(&format!("commit {}", reader.topic), e))?;
            }
        }
        Ok(())
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Unassign before the consumers are destroyed, so closing never waits on a fetch.
        for reader in &self.readers {
            reader.consumer.unassign().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(next_offset: i64, high_watermark: Option<i64>, at_end: bool) -> PartitionStatus {
        PartitionStatus {
            stream: StreamKind::Telemetry,
            topic: "telemetry".into(),
            partition: 0,
            next_offset,
            high_watermark,
            last_record_ms: None,
            at_end,
            records: 0,
            bytes: 0,
        }
    }

    #[test]
    fn only_a_partition_known_to_be_caught_up_has_nothing_pending() {
        // Just assigned (or restarted from a checkpoint): no fetch has answered yet.
        assert!(status(-1, None, false).pending());
        assert!(status(1_000, None, false).pending());
        // Behind its end.
        assert!(status(10, Some(25), false).pending());
        assert_eq!(status(10, Some(25), false).lag_messages(), 15);
        // Caught up, by the high watermark or by the end-of-partition event.
        assert!(!status(25, Some(25), false).pending());
        assert!(!status(1_000, None, true).pending());
        assert!(!status(10, Some(25), true).pending());
    }
}
