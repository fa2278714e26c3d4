//! The runtime: timely workers running every registered view, fed by source drivers,
//! publishing consistent snapshots to the serving store.
//!
//! Kafka partitions are spread over all workers; the simulator and file replays are read by
//! worker 0. Each reading worker stamps its records on its own event-time clock
//! ([`Watermarks`] over its partitions) and feeds its input sessions one tick at a time; a
//! worker whose partitions are all idle follows the most advanced reader. Differential
//! exchanges records by key to all workers. Every view's rows are sent to the first worker of
//! every process (the process's *leader*), whose publish operator applies all updates at times
//! its input frontier has passed (so every worker is done with them) and publishes one snapshot
//! of that process's serving store at `as_of = frontier - 1`.
//!
//! In cluster mode (`[cluster]`) the workers of several processes form one timely computation:
//! Kafka partitions are spread over all workers of the cluster, the simulator and file replays
//! are read by worker 0 of process 0, and every process serves every view. Readers coordinate
//! (reference data loaded, the most advanced frontier, the end of input, a stop request) with
//! [`Control`] messages that travel to every leader through a small timely dataflow of their
//! own, so the same code runs in one process and in many.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::input::{Input, InputSession};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::{Input as _, Map as _};
use wearflow_dataflows::{Context, Inputs, QualityMark, registry};
use wearflow_operators::time::ceil_to;
use wearflow_operators::{Diff, ErrorRecord, Row, Time};
use wearflow_sinks::kafka::{DeadLetters, KafkaSinkConfig, Producer, ViewSink};
use wearflow_sinks::{DeadLetterFile, ServingStore};
use wearflow_sources::file::SourceRecord;
use wearflow_sources::kafka::ensure_topics;
use wearflow_sources::{
    Asset, Event, FileReplay, KafkaSource, KafkaSourceConfig, KafkaTopics, Order, Simulator,
    SimulatorConfig, Stock, StreamKind, Telemetry, Watermarks,
};

use crate::checkpoint::{
    Checkpoint, CheckpointError, CheckpointHandle, CheckpointStore, Checkpointer, Cut, FINAL_EPOCH,
    WalWriter, WorkerState,
};
use crate::config::{ClusterConfig, Config, SourceConfig};
use crate::introspection::DataflowLog;
use crate::metrics::Metrics;

/// What a finished run reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read (good and bad).
    pub records: u64,
    /// Records rejected.
    pub bad: u64,
    /// Records stamped late.
    pub late: u64,
    /// The last published `as_of`.
    pub as_of: Time,
}

/// Runtime errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The source could not be opened.
    #[error("cannot open source: {0}")]
    Source(#[from] wearflow_sources::Error),
    /// A sink could not be opened.
    #[error("cannot open sink: {0}")]
    Sink(#[from] wearflow_sinks::Error),
    /// A Kafka sink failed.
    #[error("kafka sink: {0}")]
    Kafka(String),
    /// A checkpoint could not be restored or the write-ahead log not opened.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// Timely failed to start or a worker panicked.
    #[error("dataflow failed: {0}")]
    Dataflow(String),
}

/// The schemas of every registered view, in registry order.
pub fn view_schemas() -> Vec<wearflow_operators::ViewSchema> {
    registry().iter().map(|v| (v.schema)()).collect()
}

/// Where this process sits in the timely cluster (one process when not in cluster mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Topology {
    /// This process's index.
    process: usize,
    /// Processes in the cluster.
    processes: usize,
    /// Workers per process.
    threads: usize,
}

impl Topology {
    fn of(config: &Config) -> Topology {
        let threads = config.workers.max(1);
        match &config.cluster {
            Some(cluster) => Topology {
                process: cluster.process,
                processes: cluster.hosts.len().max(1),
                threads,
            },
            None => Topology {
                process: 0,
                processes: 1,
                threads,
            },
        }
    }

    /// Workers in the whole cluster.
    fn peers(&self) -> usize {
        self.processes * self.threads
    }

    /// The global index of this process's first worker.
    fn first_worker(&self) -> usize {
        self.process * self.threads
    }

    /// The first worker of every process: the workers that publish to a serving store.
    fn leaders(&self) -> Vec<usize> {
        (0..self.processes).map(|p| p * self.threads).collect()
    }

    fn timely(&self, cluster: Option<&ClusterConfig>) -> timely::Config {
        match cluster {
            Some(cluster) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: self.threads,
                    process: cluster.process,
                    addresses: cluster.hosts.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
            None => timely::Config::process(self.threads),
        }
    }
}

/// What readers and leaders tell every process's leader, which applies it to its process's
/// [`Shared`] state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Control {
    /// A reader's reference data is loaded.
    Bootstrapped,
    /// A reader's input frontier (for readers whose partitions are all idle to follow).
    Hint(Time),
    /// A reader reached the end of its input; no stamp of it is at or after this time.
    Ended(Time),
    /// Stop reading (a process received SIGTERM or SIGINT).
    Stop,
    /// A process published the end of input.
    Published,
}

/// How often a paced (real-time or accelerated) simulator is polled: a reading waits for the
/// next poll, and every poll is a tick of its own through the whole dataflow.
const PACED_POLL: Duration = Duration::from_millis(5);

/// Where worker 0 gets records from.
enum Driver {
    Simulator {
        sim: Box<Simulator>,
        speed: f64,
        end_ms: Option<Time>,
        wall_start: Instant,
        sim_start: Time,
    },
    Files {
        replay: FileReplay,
        speed: f64,
        first_ts: Option<Time>,
        wall_start: Instant,
    },
    Kafka {
        source: Box<KafkaSource>,
        topics: KafkaTopics,
        /// Bytes per partition already counted in the metrics.
        counted_bytes: Vec<u64>,
    },
}

/// What one poll of a driver produced besides records.
struct Polled {
    /// False once the source has ended.
    more: bool,
    /// A time no later record will be before, if the source knows one.
    heartbeat: Option<Time>,
}

/// Source partitions: one per stream for the simulator, one per file for replays.
fn partition_of(stream: StreamKind) -> usize {
    StreamKind::ALL
        .iter()
        .position(|s| *s == stream)
        .unwrap_or(0)
}

impl Driver {
    fn open(config: &Config) -> Result<Driver, RuntimeError> {
        Ok(match &config.source {
            SourceConfig::Simulator {
                seed,
                machines,
                speed,
                duration_ms,
                start_ms,
            } => {
                let start = start_ms.unwrap_or_else(|| {
                    if *speed > 0.0 {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        now - now % 1000
                    } else {
                        SimulatorConfig::default().start_ms
                    }
                });
                let sim = Simulator::new(SimulatorConfig {
                    seed: *seed,
                    machines: *machines,
                    start_ms: start,
                    ..SimulatorConfig::default()
                });
                Driver::Simulator {
                    sim: Box::new(sim),
                    speed: *speed,
                    end_ms: duration_ms.map(|d| start + d),
                    wall_start: Instant::now(),
                    sim_start: start,
                }
            }
            SourceConfig::Files { dir, speed } => Driver::Files {
                replay: FileReplay::open_dir(dir)?,
                speed: *speed,
                first_ts: None,
                wall_start: Instant::now(),
            },
            SourceConfig::Kafka(kafka) => Driver::kafka(kafka, |_| true)?,
        })
    }

    fn kafka(
        config: &KafkaSourceConfig,
        take: impl Fn(usize) -> bool,
    ) -> Result<Driver, RuntimeError> {
        let source = KafkaSource::open(config, take)?;
        let partitions = source.partitions().len();
        Ok(Driver::Kafka {
            source: Box::new(source),
            topics: config.topics.clone(),
            counted_bytes: vec![0; partitions],
        })
    }

    /// One driver per worker of this process, and the number of reading workers in the whole
    /// cluster. Kafka partitions are spread over all workers of the cluster (global partition
    /// `g` goes to worker `g % peers`; a worker left without partitions gets none, so the
    /// readers are the first `min(partitions, peers)` workers); the simulator and file
    /// replays are read by worker 0 of process 0 alone.
    fn open_all(
        config: &Config,
        topology: &Topology,
    ) -> Result<(Vec<Option<Driver>>, usize), RuntimeError> {
        let peers = topology.peers();
        match &config.source {
            SourceConfig::Kafka(kafka) => {
                let partitions = std::cell::Cell::new(0usize);
                let drivers = (0..topology.threads)
                    .map(|local| {
                        let index = topology.first_worker() + local;
                        let driver = Driver::kafka(kafka, |g| {
                            partitions.set(partitions.get().max(g + 1));
                            g % peers == index
                        })?;
                        Ok((driver.partitions() > 0).then_some(driver))
                    })
                    .collect::<Result<Vec<_>, RuntimeError>>()?;
                Ok((drivers, partitions.get().min(peers)))
            }
            _ => {
                let mut drivers: Vec<Option<Driver>> =
                    (0..topology.threads).map(|_| None).collect();
                if topology.process == 0 {
                    drivers[0] = Some(Driver::open(config)?);
                }
                Ok((drivers, 1))
            }
        }
    }

    /// Whether this driver's reference data is loaded (Kafka reads its assets partitions to
    /// their end before anything else; other drivers merge assets by time).
    fn assets_loaded(&self) -> bool {
        match self {
            Driver::Kafka { source, .. } => source.assets_loaded(),
            _ => true,
        }
    }

    /// Partitions that stop holding the frontier back once the reference data is loaded.
    fn asset_partitions(&self) -> Vec<usize> {
        match self {
            Driver::Kafka { source, .. } => source.asset_partitions(),
            _ => Vec::new(),
        }
    }

    /// Starts reading the event streams (after every reader's reference data is loaded).
    fn start_streams(&mut self) {
        if let Driver::Kafka { source, .. } = self
            && let Err(e) = source.start_streams()
        {
            tracing::error!("{e}");
        }
    }

    /// The topic a stream's records came from (Kafka only).
    fn topic_of(&self, stream: StreamKind) -> Option<&str> {
        match self {
            Driver::Kafka { topics, .. } => Some(topics.of(stream)),
            _ => None,
        }
    }

    /// Brings the per-partition Kafka metrics up to date.
    fn report(&mut self, metrics: &Metrics) {
        let Driver::Kafka {
            source,
            counted_bytes,
            ..
        } = self
        else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (status, counted) in source.partitions().iter().zip(counted_bytes.iter_mut()) {
            let partition = status.partition.to_string();
            let labels = [status.topic.as_str(), partition.as_str()];
            let lag = status.lag_messages();
            metrics
                .kafka_lag_messages
                .with_label_values(&labels)
                .set(lag);
            let lag_seconds = match status.last_record_ms {
                Some(ts) if lag > 0 => (now_ms - ts).max(0) as f64 / 1000.0,
                _ => 0.0,
            };
            metrics
                .kafka_lag_seconds
                .with_label_values(&labels)
                .set(lag_seconds);
            metrics
                .kafka_offset
                .with_label_values(&labels)
                .set(status.next_offset.max(0));
            metrics
                .bytes_in
                .with_label_values(&[status.stream.name()])
                .inc_by(status.bytes - *counted);
            *counted = status.bytes;
        }
    }

    /// Calls `hold` with every partition that may have records waiting (Kafka partitions
    /// behind their high watermark, or whose end is not known yet); files and the simulator
    /// have none.
    fn backlogged(&self, mut hold: impl FnMut(usize)) {
        if let Driver::Kafka { source, .. } = self {
            for (index, status) in source.partitions().iter().enumerate() {
                if status.pending() {
                    hold(index);
                }
            }
        }
    }

    /// Resumes Kafka partitions at a checkpoint's offsets.
    fn resume(&mut self, offsets: &[(String, i32, i64)]) -> Result<usize, RuntimeError> {
        match self {
            Driver::Kafka { source, .. } => Ok(source.resume(offsets)?),
            _ => Ok(0),
        }
    }

    /// `(topic, partition, next offset)` of every partition read from so far.
    fn offsets(&self) -> Vec<(String, i32, i64)> {
        match self {
            Driver::Kafka { source, .. } => source
                .partitions()
                .iter()
                .filter(|s| s.next_offset >= 0)
                .map(|s| (s.topic.clone(), s.partition, s.next_offset))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn partitions(&self) -> usize {
        match self {
            Driver::Simulator { .. } => StreamKind::ALL.len(),
            Driver::Files { replay, .. } => replay.partitions().len(),
            Driver::Kafka { source, .. } => source.partitions().len(),
        }
    }

    /// Fills `out` with up to `max` records.
    fn poll(&mut self, max: usize, out: &mut Vec<SourceRecord>) -> Polled {
        let (more, heartbeat) = match self {
            Driver::Kafka { source, .. } => {
                return match source.poll(max, Duration::from_millis(5), out) {
                    Ok(outcome) => Polled {
                        more: outcome.more,
                        heartbeat: None,
                    },
                    Err(e) => {
                        tracing::error!("{e}");
                        std::thread::sleep(Duration::from_millis(100));
                        Polled {
                            more: true,
                            heartbeat: None,
                        }
                    }
                };
            }
            Driver::Simulator {
                sim,
                speed,
                end_ms,
                wall_start,
                sim_start,
            } => {
                let mut target = if *speed > 0.0 {
                    *sim_start + (wall_start.elapsed().as_secs_f64() * *speed * 1000.0) as Time
                } else {
                    // As fast as possible: one simulated minute per tick at most.
                    sim.clock_ms() + 60_000
                };
                if let Some(end) = end_ms {
                    target = target.min(*end);
                }
                let mut events = Vec::new();
                if target > sim.clock_ms() {
                    sim.advance(target, &mut events);
                }
                out.extend(events.into_iter().map(|event| SourceRecord {
                    stream: event.stream(),
                    partition: partition_of(event.stream()) as u32,
                    position: 0,
                    event: Ok(event),
                    original: None,
                }));
                let more = end_ms.is_none_or(|end| sim.clock_ms() < end);
                (more, Some(sim.clock_ms()))
            }
            Driver::Files {
                replay,
                speed,
                first_ts,
                wall_start,
            } => {
                let mut last_ts = None;
                while out.len() < max {
                    let Some(record) = replay.next() else {
                        return Polled {
                            more: false,
                            heartbeat: last_ts,
                        };
                    };
                    if let Ok(event) = &record.event {
                        let ts = event.ts_ms();
                        last_ts = Some(ts);
                        if *speed > 0.0 && ts > 0 {
                            let first = *first_ts.get_or_insert(ts);
                            let due =
                                Duration::from_secs_f64((ts - first) as f64 / 1000.0 / *speed);
                            if let Some(wait) = due.checked_sub(wall_start.elapsed()) {
                                out.push(record);
                                std::thread::sleep(wait.min(Duration::from_millis(50)));
                                return Polled {
                                    more: true,
                                    heartbeat: last_ts,
                                };
                            }
                        }
                    }
                    out.push(record);
                }
                // Replays are merged by event time: nothing later will be before the last one.
                (true, last_ts)
            }
        };
        Polled { more, heartbeat }
    }
}

/// The Kafka outputs of a run: one producer for changelogs, alerts and dead letters.
struct KafkaOut {
    producer: Arc<Producer>,
    dead_letters: Option<DeadLetters>,
}

impl KafkaOut {
    /// Creates the output topics and the producer; returns the view sink apart, for the run
    /// to stop after the last publication. Without `views` (the processes of a cluster but
    /// the first, whose views are the same) only dead letters are written.
    fn start(
        config: &KafkaSinkConfig,
        store: &Arc<ServingStore>,
        views: bool,
    ) -> Result<(KafkaOut, Option<ViewSink>), RuntimeError> {
        let kafka = |e: &dyn std::fmt::Display| RuntimeError::Kafka(e.to_string());
        let changelogs = if views {
            ViewSink::topics(config, store)
        } else {
            Vec::new()
        };
        let compacted: Vec<&str> = changelogs
            .iter()
            .filter(|t| **t != config.alerts_topic)
            .map(String::as_str)
            .collect();
        ensure_topics(
            &config.brokers,
            &config.options,
            &compacted,
            config.create_partitions,
            &[("cleanup.policy", "compact")],
        )
        .map_err(|e| kafka(&e))?;
        let mut plain: Vec<String> = Vec::new();
        if views && !config.alerts_topic.is_empty() {
            plain.push(config.alerts_topic.clone());
        }
        if !config.dead_letter_prefix.is_empty() {
            plain.extend(
                StreamKind::ALL
                    .iter()
                    .map(|s| format!("{}{}", config.dead_letter_prefix, s.name())),
            );
        }
        let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
        ensure_topics(
            &config.brokers,
            &config.options,
            &plain,
            config.create_partitions,
            &[],
        )
        .map_err(|e| kafka(&e))?;
        let producer =
            Arc::new(Producer::new(&config.brokers, &config.options).map_err(|e| kafka(&e))?);
        let views = if views {
            Some(
                ViewSink::spawn(config, Arc::clone(store), Arc::clone(&producer))
                    .map_err(|e| kafka(&e))?,
            )
        } else {
            None
        };
        let dead_letters = (!config.dead_letter_prefix.is_empty())
            .then(|| DeadLetters::new(Arc::clone(&producer), &config.dead_letter_prefix));
        Ok((
            KafkaOut {
                producer,
                dead_letters,
            },
            views,
        ))
    }
}

/// Brings the producer metrics up to date; `counted` holds the totals already reported.
fn report_producer(producer: &Producer, metrics: &Metrics, counted: &mut (u64, u64)) {
    let stats = producer.stats();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    metrics
        .kafka_delivered
        .inc_by(delivered.saturating_sub(counted.0));
    metrics
        .kafka_delivery_errors
        .inc_by(errors.saturating_sub(counted.1));
    *counted = (delivered, errors);
    metrics
        .kafka_queue_depth
        .set(i64::from(producer.queue_depth()));
}

/// One view update on its way to the publishing leaders.
type PublishUpdate = ((usize, Row), Time, Diff);

/// One update a reader fed, as its write-ahead log holds it (written from borrowed data).
#[derive(Serialize)]
enum EntryRef<'a> {
    Telemetry(&'a Telemetry, Time),
    Order(&'a Order, Time),
    Stock(&'a Stock, Time),
    Asset(&'a Asset, Time),
    Quality(&'a str, QualityMark, Time, Diff),
    SourceTime(&'a str, Time, Time),
    Error(&'a ErrorRecord, Time),
    Model(u64, &'a str, Time, Diff),
    Advance(Time),
}

/// [`EntryRef`] read back (bincode encodes both alike: variant index, then fields).
#[derive(Deserialize)]
enum Entry {
    Telemetry(Telemetry, Time),
    Order(Order, Time),
    Stock(Stock, Time),
    Asset(Asset, Time),
    Quality(String, QualityMark, Time, Diff),
    SourceTime(String, Time, Time),
    Error(ErrorRecord, Time),
    Model(u64, String, Time, Diff),
    Advance(Time),
}

/// What replaying a log restored besides the dataflow's inputs.
#[derive(Default)]
struct Replayed {
    summary: RunSummary,
    max_stamp: Time,
    model: Option<String>,
    frames: u64,
}

/// The input sessions of one worker.
struct InputSessions {
    telemetry: InputSession<Time, Telemetry, Diff>,
    orders: InputSession<Time, Order, Diff>,
    stock: InputSession<Time, Stock, Diff>,
    assets: InputSession<Time, Asset, Diff>,
    quality: InputSession<Time, (String, QualityMark), Diff>,
    source_times: InputSession<Time, (String, Time), Diff>,
    errors: InputSession<Time, ErrorRecord, Diff>,
    models: InputSession<Time, (u64, String), Diff>,
    /// The reader's write-ahead log, when checkpointing.
    wal: Option<WalWriter>,
}

impl InputSessions {
    fn log(&mut self, entry: EntryRef<'_>) {
        if let Some(wal) = &mut self.wal {
            wal.log(&entry);
        }
    }

    /// Feeds one event at `stamp`.
    fn feed(&mut self, event: Event, stamp: Time) {
        match event {
            Event::Telemetry(t) => {
                self.log(EntryRef::Telemetry(&t, stamp));
                self.telemetry.update_at(t, stamp, 1);
            }
            Event::Order(o) => {
                self.log(EntryRef::Order(&o, stamp));
                self.orders.update_at(o, stamp, 1);
            }
            Event::Stock(s) => {
                self.log(EntryRef::Stock(&s, stamp));
                self.stock.update_at(s, stamp, 1);
            }
            Event::Asset(a) => {
                self.log(EntryRef::Asset(&a, stamp));
                self.assets.update_at(a, stamp, 1);
            }
        }
    }

    fn feed_error(&mut self, error: ErrorRecord, time: Time) {
        self.log(EntryRef::Error(&error, time));
        self.errors.update_at(error, time, 1);
    }

    fn feed_quality(&mut self, stream: &str, mark: QualityMark, stamp: Time, count: Diff) {
        self.log(EntryRef::Quality(stream, mark, stamp, count));
        self.quality
            .update_at((stream.to_string(), mark), stamp, count);
    }

    fn feed_source_time(&mut self, stream: &str, ts: Time, time: Time) {
        self.log(EntryRef::SourceTime(stream, ts, time));
        self.source_times
            .update_at((stream.to_string(), ts), time, 1);
    }

    /// Writes the tick's log frame.
    fn commit_log(&mut self) {
        if let Some(wal) = &mut self.wal
            && let Err(e) = wal.commit()
        {
            tracing::error!("write-ahead log: {e}");
        }
    }

    /// Applies one logged frame (no logging: these updates are in the log already).
    fn apply(&mut self, entries: Vec<Entry>, replayed: &mut Replayed) {
        for entry in entries {
            match entry {
                Entry::Telemetry(t, stamp) => {
                    replayed.max_stamp = replayed.max_stamp.max(stamp);
                    self.telemetry.update_at(t, stamp, 1);
                }
                Entry::Order(o, stamp) => {
                    replayed.max_stamp = replayed.max_stamp.max(stamp);
                    self.orders.update_at(o, stamp, 1);
                }
                Entry::Stock(s, stamp) => {
                    replayed.max_stamp = replayed.max_stamp.max(stamp);
                    self.stock.update_at(s, stamp, 1);
                }
                Entry::Asset(a, stamp) => {
                    replayed.max_stamp = replayed.max_stamp.max(stamp);
                    self.assets.update_at(a, stamp, 1);
                }
                Entry::Quality(stream, mark, stamp, count) => {
                    let n = count.max(0) as u64;
                    replayed.summary.records += n;
                    match mark {
                        QualityMark::Bad => replayed.summary.bad += n,
                        QualityMark::Late => replayed.summary.late += n,
                        QualityMark::Ok => {}
                    }
                    self.quality.update_at((stream, mark), stamp, count);
                }
                Entry::SourceTime(stream, ts, time) => {
                    self.source_times.update_at((stream, ts), time, 1);
                }
                Entry::Error(error, time) => self.errors.update_at(error, time, 1),
                Entry::Model(shard, version, time, diff) => {
                    if diff > 0 {
                        replayed.model = Some(version.clone());
                    }
                    self.models.update_at((shard, version), time, diff);
                }
                Entry::Advance(time) => {
                    if time > self.time() {
                        self.advance_to(time);
                    }
                }
            }
        }
        replayed.frames += 1;
    }

    fn advance_to(&mut self, time: Time) {
        self.log(EntryRef::Advance(time));
        self.advance_unlogged(time);
    }

    /// Advances without logging: the end-of-input advances follow from every reader having
    /// ended, which a restart does not restore (its readers end again).
    fn advance_unlogged(&mut self, time: Time) {
        self.telemetry.advance_to(time);
        self.orders.advance_to(time);
        self.stock.advance_to(time);
        self.assets.advance_to(time);
        self.quality.advance_to(time);
        self.source_times.advance_to(time);
        self.errors.advance_to(time);
        self.models.advance_to(time);
    }
    fn flush(&mut self) {
        self.telemetry.flush();
        self.orders.flush();
        self.stock.flush();
        self.assets.flush();
        self.quality.flush();
        self.source_times.flush();
        self.errors.flush();
        self.models.flush();
    }
    fn time(&self) -> Time {
        *self.telemetry.time()
    }
    fn close(self) {
        self.telemetry.close();
        self.orders.close();
        self.stock.close();
        self.assets.close();
        self.quality.close();
        self.source_times.close();
        self.errors.close();
        self.models.close();
    }

    /// Updates the models input at its current time, logged.
    fn update_model(&mut self, shard: u64, version: &str, diff: Diff) {
        let time = self.time();
        self.log(EntryRef::Model(shard, version, time, diff));
        self.models
            .update_at((shard, version.to_string()), time, diff);
    }

    /// Makes `version` the current model version at the input's time (if it is not already).
    fn set_model(&mut self, fed: &mut Option<String>, version: String) {
        if fed.as_deref() == Some(version.as_str()) {
            return;
        }
        for shard in 0..wearflow_dataflows::predictions::SHARDS {
            if let Some(old) = fed.as_ref() {
                self.update_model(shard, old, -1);
            }
            self.update_model(shard, &version, 1);
        }
        *fed = Some(version);
    }
}

/// What the workers of one process share; the counts are of the whole cluster, brought here
/// by [`Control`] messages to this process's leader.
struct Shared {
    /// Workers of the cluster that read a source.
    readers: usize,
    /// Readers whose reference data is loaded.
    bootstrapped: AtomicUsize,
    /// Readers at the end of their input.
    ended: AtomicUsize,
    /// The end of input: the largest of the ended readers' `newest stamp + 1`.
    end: AtomicU64,
    /// The largest input frontier of any reader; a reader whose partitions are all idle or
    /// finished follows it, so that it does not hold the others back.
    hint: AtomicU64,
    /// Processes that published the end of input; when all have, every worker drops the
    /// dataflow. (Later frontiers only reflect future-time updates past the end of input,
    /// window expiries, which are never published.)
    published: AtomicUsize,
    /// Ticks awaiting their snapshot: `(newest stamp of a tick, when the tick began)`.
    pending: Mutex<Vec<(Time, Instant)>>,
    /// Counts of all readers.
    summary: Mutex<RunSummary>,
}

impl Shared {
    /// Applies one control message (on a process's leader).
    fn apply(&self, message: Control, stop: &AtomicBool) {
        match message {
            Control::Bootstrapped => {
                self.bootstrapped.fetch_add(1, Ordering::AcqRel);
            }
            Control::Hint(time) => {
                self.hint.fetch_max(time, Ordering::AcqRel);
            }
            Control::Ended(end) => {
                // The end first: whoever sees every reader ended sees the final end.
                self.end.fetch_max(end, Ordering::AcqRel);
                self.ended.fetch_add(1, Ordering::AcqRel);
            }
            Control::Stop => stop.store(true, Ordering::Release),
            Control::Published => {
                self.published.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The end of input, once every reader of the cluster has ended.
    fn final_end(&self) -> Option<Time> {
        (self.ended.load(Ordering::Acquire) >= self.readers)
            .then(|| self.end.load(Ordering::Acquire))
    }
}

/// One worker's end of the control dataflow: it sends [`Control`] messages to every
/// process's leader and, on a leader, passes a stop request on and announces when its
/// process has published the end of input.
struct Coordinator {
    control: timely::dataflow::InputHandleVec<u64, (usize, Control)>,
    leaders: Vec<usize>,
    leader: bool,
    /// This process's serving store (to see the end of input published).
    store: Arc<ServingStore>,
    stop_sent: bool,
    published_sent: bool,
}

impl Coordinator {
    /// Sends `message` to every process's leader.
    fn tell(&mut self, message: Control) {
        for leader in &self.leaders {
            self.control.send((*leader, message.clone()));
        }
        // Only a new epoch pushes the exchange's buffers out (and wakes the input operator).
        let next = self.control.time() + 1;
        self.control.advance_to(next);
    }

    /// On a leader, passes this process's stop request on to the cluster, once.
    fn relay_stop(&mut self, stop: &AtomicBool) {
        if self.leader && !self.stop_sent && stop.load(Ordering::Acquire) {
            self.stop_sent = true;
            self.tell(Control::Stop);
        }
    }

    /// True once every process has published the end of input.
    fn done(&mut self, shared: &Shared, stop: &AtomicBool) -> bool {
        self.relay_stop(stop);
        if self.leader
            && !self.published_sent
            && let Some(end) = shared.final_end()
            && self.store.snapshot().as_of + 1 >= end
        {
            self.published_sent = true;
            self.tell(Control::Published);
        }
        shared.published.load(Ordering::Acquire) >= self.leaders.len()
    }
}

/// In a cluster, a process whose peer is gone cannot make progress (timely clusters are
/// static): when timely's network threads report a broken connection, say so and exit
/// instead of hanging, so that an orchestrator restarts the cluster.
fn fail_fast_on_lost_peers() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.contains("timely communication error") {
                eprintln!(
                    "wearflow: lost a peer of the timely cluster ({message}); a timely cluster \
                     is static, so this process exits and the cluster must be restarted"
                );
                std::process::exit(3);
            }
        }));
    });
}

/// What a checkpointed run starts from.
struct Restore {
    store: CheckpointStore,
    /// The newest valid checkpoint, if any.
    checkpoint: Option<Checkpoint>,
    /// This process's topology, for the checkpoints it writes.
    template: Checkpoint,
}

impl Restore {
    /// Loads the newest valid checkpoint of a Kafka-fed run (none for other sources or with
    /// checkpoints off) and deletes the archive files written after it.
    fn prepare(config: &Config, topology: &Topology) -> Result<Option<Restore>, RuntimeError> {
        if !config.checkpoint.enabled || !matches!(config.source, SourceConfig::Kafka(_)) {
            return Ok(None);
        }
        let dir = config.checkpoint.dir_in(&config.data_dir);
        let store = CheckpointStore::open(&dir, config.checkpoint.keep)?;
        let loaded = store.load();
        for (path, reason) in &loaded.skipped {
            eprintln!("wearflow: checkpoint {} skipped: {reason}", path.display());
        }
        let checkpoint = loaded.checkpoint.map(|(c, _)| c);
        if let Some(checkpoint) = &checkpoint {
            checkpoint.check_topology(
                &dir,
                topology.process,
                topology.processes,
                topology.threads,
            )?;
        }
        let archive_dir = crate::archive::dir(config);
        if config.archive.enabled {
            let discarded = match checkpoint.as_ref().and_then(|c| c.archive.as_ref()) {
                Some(state) => {
                    wearflow_sinks::archive::discard_after(&archive_dir, &state.marks, state.views)
                }
                // A log without a checkpoint: a run that died before its first checkpoint,
                // whose input is read again from the start, archive included.
                None if checkpoint.is_none() && logs_exist(&store, topology) => {
                    wearflow_sinks::archive::discard_after(
                        &archive_dir,
                        &BTreeMap::new(),
                        Default::default(),
                    )
                }
                None => 0,
            };
            if discarded > 0 {
                eprintln!(
                    "wearflow: deleted {discarded} archive file(s) written after the checkpoint \
                     (their rows are read again)"
                );
            }
        }
        match &checkpoint {
            Some(c) => eprintln!(
                "wearflow: restoring checkpoint {} (written {} s ago; {} reader(s), {} log bytes, \
                 {} partition offsets) from {}",
                c.sequence,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
                    .saturating_sub(c.created_ms)
                    / 1000,
                c.workers.len(),
                c.workers.iter().map(|w| w.wal_bytes).sum::<u64>(),
                c.workers.iter().map(|w| w.offsets.len()).sum::<usize>(),
                dir.display()
            ),
            None => eprintln!(
                "wearflow: no checkpoint in {}: reading from the start position",
                dir.display()
            ),
        }
        Ok(Some(Restore {
            store,
            checkpoint,
            template: Checkpoint {
                process: topology.process,
                processes: topology.processes,
                threads: topology.threads,
                ..Checkpoint::default()
            },
        }))
    }
}

/// Whether any worker of this process has a non-empty write-ahead log.
fn logs_exist(store: &CheckpointStore, topology: &Topology) -> bool {
    (0..topology.threads).any(|local| {
        let path = store.wal_path(topology.process, topology.first_worker() + local);
        std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    })
}

/// A reader's cut for checkpoint `epoch`: its log length, frontier and offsets, and the
/// archive's cut of its files.
fn cut(
    checkpoints: &CheckpointHandle,
    epoch: u64,
    worker: usize,
    inputs: &InputSessions,
    driver: &Driver,
    archive: Option<&wearflow_sinks::archive::ArchiveInput>,
    metrics: &Metrics,
) {
    let Some(wal) = &inputs.wal else {
        return;
    };
    metrics.wal_bytes.set(wal.len() as i64);
    checkpoints.cut(Cut {
        epoch,
        state: WorkerState {
            worker,
            wal_bytes: wal.len(),
            frontier: inputs.time(),
            offsets: driver.offsets(),
        },
        wal: wal.path().to_path_buf(),
        archive: archive.and_then(|a| a.cut()),
    });
}

/// Runs the engine until the source ends or `stop` is set; blocks the calling thread.
pub fn run(
    config: &Config,
    store: Arc<ServingStore>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, RuntimeError> {
    run_with_log(config, store, metrics, stop, None)
}

/// [`run`] to the end of the input, with metrics of its own and no stop signal (batch
/// replays, tests and benchmarks).
pub fn run_to_end(config: &Config, store: Arc<ServingStore>) -> Result<RunSummary, RuntimeError> {
    run(
        config,
        store,
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(false)),
    )
}

/// [`run`], with every worker's operators and arrangement sizes recorded in `log` (for
/// `GET /dataflows`).
pub fn run_with_log(
    config: &Config,
    store: Arc<ServingStore>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    log: Option<Arc<DataflowLog>>,
) -> Result<RunSummary, RuntimeError> {
    std::fs::create_dir_all(&config.data_dir).ok();
    let topology = Topology::of(config);
    if config.cluster.is_some() {
        fail_fast_on_lost_peers();
    }
    let (drivers, readers) = Driver::open_all(config, &topology)?;
    for driver in drivers.iter().flatten() {
        if let Driver::Simulator {
            speed, wall_start, ..
        } = driver
            && *speed > 0.0
        {
            let started = std::time::SystemTime::now() - wall_start.elapsed();
            let seconds = started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics.simulator_started_seconds.set(seconds);
        }
    }
    let drivers: Arc<Vec<Mutex<Option<Driver>>>> =
        Arc::new(drivers.into_iter().map(Mutex::new).collect());
    let dead_letters = DeadLetterFile::open(&config.data_dir.join("dead_letters.jsonl"))?;
    let dead_letters = Arc::new(Mutex::new(dead_letters));
    let shared = Arc::new(Shared {
        readers,
        bootstrapped: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        end: AtomicU64::new(0),
        hint: AtomicU64::new(0),
        published: AtomicUsize::new(0),
        pending: Mutex::new(Vec::new()),
        summary: Mutex::new(RunSummary::default()),
    });
    let config = config.clone();
    let restore = Restore::prepare(&config, &topology)?;
    let archive = crate::archive::start(&config, &store, &metrics)?;
    let archive_input = archive.as_ref().map(|a| a.input());
    let local_readers = drivers
        .iter()
        .filter(|d| d.lock().is_ok_and(|d| d.is_some()))
        .count();
    let checkpointer = restore.as_ref().and_then(|restore| {
        (local_readers > 0).then(|| {
            let observer_metrics = Arc::clone(&metrics);
            Checkpointer::start(
                restore.store.clone(),
                Duration::from_millis(config.checkpoint.interval_ms.max(1)),
                local_readers,
                restore.template.clone(),
                archive.is_some(),
                config.checkpoint_trigger.clone(),
                Box::new(move |written| {
                    observer_metrics.checkpoints.inc();
                    observer_metrics
                        .checkpoint_seconds
                        .observe(written.took.as_secs_f64());
                    observer_metrics
                        .checkpoint_sequence
                        .set(written.checkpoint.sequence as i64);
                    tracing::debug!(
                        sequence = written.checkpoint.sequence,
                        took_ms = written.took.as_millis() as u64,
                        "checkpoint written"
                    );
                }),
            )
        })
    });
    let checkpoint_handle = checkpointer.as_ref().map(Checkpointer::handle);
    let restore = Arc::new(restore);
    if let Some(restored) = restore
        .as_ref()
        .as_ref()
        .and_then(|r| r.checkpoint.as_ref())
    {
        metrics
            .restoring
            .set(restored.workers.len().min(local_readers) as i64);
        metrics.checkpoint_sequence.set(restored.sequence as i64);
    }
    // Archive table of each source partition kind (telemetry, orders, stock; assets are not
    // archived), by `partition_of` index.
    let archive_tables: Vec<Option<usize>> = StreamKind::ALL
        .iter()
        .map(|s| archive.as_ref().and_then(|a| a.table_index(s.name())))
        .collect();
    let result_shared = Arc::clone(&shared);
    let (kafka_out, view_sink) = match &config.kafka_sink {
        Some(sink) => {
            let (out, views) = KafkaOut::start(sink, &store, topology.process == 0)?;
            (Some(Arc::new(out)), views)
        }
        None => (None, None),
    };
    let worker_kafka_out = kafka_out.clone();
    let timely_config = topology.timely(config.cluster.as_ref());
    let guards = timely::execute(timely_config, move |worker| {
        if let Some(log) = &log {
            log.register(worker);
        }
        let index = worker.index();
        let leader = index % topology.threads == 0;
        let leaders = topology.leaders();
        let kafka_out = worker_kafka_out.clone();
        let archive_input = archive_input.as_ref().map(|a| a.for_writer(index as u32));
        let checkpoints = checkpoint_handle.clone();
        let restore = Arc::clone(&restore);
        let mut archive_rows: Vec<Vec<Row>> = StreamKind::ALL.iter().map(|_| Vec::new()).collect();
        let shared = Arc::clone(&shared);
        let publisher_shared = Arc::clone(&shared);
        let publish_producer = kafka_out.as_ref().map(|k| Arc::clone(&k.producer));
        let mut producer_counted = (0, 0);
        let finish_store = Arc::clone(&store);
        let store = Arc::clone(&store);
        let publish_metrics = Arc::clone(&metrics);
        let dataflow_config = config.dataflow.clone();
        let publish_leaders = leaders.clone();
        let dataflow_id = worker.next_dataflow_index();
        let (mut inputs, probe) = worker.dataflow::<Time, _, _>(move |scope| {
            let (telemetry_in, telemetry) = scope.new_collection();
            let (orders_in, orders) = scope.new_collection();
            let (stock_in, stock) = scope.new_collection();
            let (assets_in, assets) = scope.new_collection();
            let (quality_in, quality) = scope.new_collection();
            let (source_times_in, source_times) = scope.new_collection();
            let (errors_in, errors) = scope.new_collection();
            let (models_in, models) = scope.new_collection();
            let ctx = Context::new(
                Inputs {
                    telemetry,
                    orders,
                    stock,
                    assets,
                    quality,
                    source_times,
                    errors,
                    models,
                },
                dataflow_config,
            );
            let views: Vec<_> = registry()
                .iter()
                .enumerate()
                .map(|(i, def)| (def.build)(&ctx).map(move |row| (i, row)))
                .collect();
            let all = differential_dataflow::collection::concatenate(scope, views);
            let probe = ProbeHandle::new();
            let mut buffered: BTreeMap<Time, Vec<(usize, Row, Diff)>> = BTreeMap::new();
            // Every update goes to every process's leader.
            let targets = publish_leaders;
            all.inner
                .probe_with(&probe)
                .flat_map(move |update| {
                    let mut routed = Vec::with_capacity(targets.len());
                    for target in &targets[1..] {
                        routed.push((*target, update.clone()));
                    }
                    routed.push((targets[0], update));
                    routed
                })
                .sink(
                    Exchange::new(|(target, _): &(usize, PublishUpdate)| *target as u64),
                    "publish",
                    move |(input, frontier)| {
                        if !leader {
                            input.for_each(|_cap, data| data.clear());
                            return;
                        }
                        input.for_each(|_cap, data| {
                            for (_, ((view, row), time, diff)) in data.drain(..) {
                                buffered.entry(time).or_default().push((view, row, diff));
                            }
                        });
                        let Some(&bound) = frontier.frontier().first() else {
                            return;
                        };
                        // Nothing past the end of input is published.
                        let bound = match publisher_shared.final_end() {
                            Some(end) => bound.min(end),
                            None => bound,
                        };
                        let as_of = bound.saturating_sub(1);
                        if bound == 0 {
                            return;
                        }
                        let mut updates = Vec::new();
                        while let Some(entry) = buffered.first_entry() {
                            if *entry.key() >= bound {
                                break;
                            }
                            updates.extend(entry.remove());
                        }
                        if updates.is_empty() && as_of <= store.snapshot().as_of {
                            return;
                        }
                        let snapshot = store.publish(as_of, updates);
                        publish_metrics
                            .snapshot_version
                            .set(snapshot.version as i64);
                        publish_metrics.snapshot_as_of_ms.set(snapshot.as_of as i64);
                        publisher_shared
                            .summary
                            .lock()
                            .map(|mut s| s.as_of = snapshot.as_of)
                            .ok();
                        let now = Instant::now();
                        if let Ok(mut pending) = publisher_shared.pending.lock() {
                            pending.retain(|&(stamp, began)| {
                                if stamp > as_of {
                                    return true;
                                }
                                let age = now.duration_since(began).as_secs_f64();
                                publish_metrics.freshness_seconds.observe(age);
                                publish_metrics.publish_lag_seconds.set(age);
                                false
                            });
                        }
                        if let Some(producer) = &publish_producer {
                            report_producer(producer, &publish_metrics, &mut producer_counted);
                        }
                    },
                );
            (
                InputSessions {
                    telemetry: telemetry_in,
                    orders: orders_in,
                    stock: stock_in,
                    assets: assets_in,
                    quality: quality_in,
                    source_times: source_times_in,
                    errors: errors_in,
                    models: models_in,
                    wal: None,
                },
                probe,
            )
        });

        // The control dataflow: messages to leaders, applied to this process's `Shared`.
        let control_id = worker.next_dataflow_index();
        let control_shared = Arc::clone(&shared);
        let control_stop = Arc::clone(&stop);
        let control = worker.dataflow::<u64, _, _>(move |scope| {
            let (handle, stream) = scope.new_input::<(usize, Control)>();
            stream.sink(
                Exchange::new(|(target, _): &(usize, Control)| *target as u64),
                "control",
                move |(input, _frontier)| {
                    input.for_each(|_cap, data| {
                        for (_, message) in data.drain(..) {
                            control_shared.apply(message, &control_stop);
                        }
                    });
                },
            );
            handle
        });
        let mut coordinator = Coordinator {
            control,
            leaders,
            leader,
            store: finish_store,
            stop_sent: false,
            published_sent: false,
        };

        let driver = drivers
            .get(index - topology.first_worker())
            .and_then(|d| d.lock().ok().and_then(|mut d| d.take()));
        let Some(mut driver) = driver else {
            // Nothing to read here: the inputs close and the worker computes its share (and,
            // on a leader, publishes) until every process has published the end of input.
            inputs.close();
            while !coordinator.done(&shared, &stop) {
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            worker.drop_dataflow(dataflow_id);
            worker.drop_dataflow(control_id);
            return;
        };
        // Restore: replay this reader's log up to the checkpoint, then resume its partitions
        // where the log ends.
        let mut replayed = Replayed::default();
        if let Some(restore) = restore.as_ref() {
            let restored = restore.checkpoint.as_ref().and_then(|c| c.worker(index));
            let state = restored.cloned().unwrap_or_default();
            let path = restore.store.wal_path(topology.process, index);
            let began = Instant::now();
            let frames = crate::checkpoint::replay::<Entry>(&path, state.wal_bytes, |entries| {
                inputs.apply(entries, &mut replayed);
                inputs.flush();
                worker.step();
                if replayed.frames % 64 == 0 {
                    // Bounded work in flight, as in a live tick.
                    let time = inputs.time();
                    worker.step_while(|| probe.less_than(&time));
                }
            });
            if restored.is_some() {
                metrics.restoring.dec();
            }
            match frames {
                Ok(frames) if frames > 0 => {
                    let positioned = driver.resume(&state.offsets).unwrap_or_else(|e| {
                        tracing::error!("cannot resume from the checkpoint's offsets: {e}");
                        0
                    });
                    tracing::info!(
                        worker = index,
                        frames,
                        bytes = state.wal_bytes,
                        records = replayed.summary.records,
                        frontier = state.frontier,
                        partitions = positioned,
                        took_ms = began.elapsed().as_millis() as u64,
                        "restored from the write-ahead log"
                    );
                }
                Ok(_) => {}
                Err(e) => panic!("cannot restore worker {index}: {e}"),
            }
            match WalWriter::open(&path, state.wal_bytes) {
                Ok(wal) => inputs.wal = Some(wal),
                Err(e) => panic!("cannot open the write-ahead log: {e}"),
            }
        }
        // Readers restore different frontiers: one whose partitions are all idle (or ended)
        // follows the others' hints, so tell them where this one stands.
        if replayed.frames > 0 && shared.readers > 1 {
            coordinator.tell(Control::Hint(inputs.time()));
        }
        let mut last_epoch = checkpoints.as_ref().map_or(0, CheckpointHandle::requested);
        let mut pressure = crate::backpressure::Backpressure::new(
            &config.backpressure,
            kafka_out.as_ref().map(|k| Arc::clone(&k.producer)),
        );
        let kafka_dead_letters = kafka_out.as_ref().and_then(|k| k.dead_letters.as_ref());
        let mut bootstrapped = false;
        let mut streaming = false;
        let clock = &config.clock;
        let mut marks = Watermarks::new(
            driver.partitions(),
            clock.allowed_lateness_ms,
            Duration::from_millis(clock.idle_timeout_ms),
            clock.resolution_ms,
        );
        let mut batch = Vec::with_capacity(clock.tick_records);
        let mut quality_counts: HashMap<(StreamKind, QualityMark, Time), Diff> = HashMap::new();
        let mut source_max: BTreeMap<StreamKind, Time> = BTreeMap::new();
        let mut local = replayed.summary.clone();
        let mut max_stamp: Time = replayed.max_stamp;
        let mut sent_hint: Time = 0;
        // The first worker of the cluster feeds the current model version.
        let feeds_models = index == 0;
        let mut fed_model: Option<String> = replayed.model.take();
        loop {
            // Backpressure: while memory or an output is over its limit, read nothing (the
            // dataflow goes on computing and publishing what it has).
            if !stop.load(Ordering::Acquire)
                && let Some(pause) = pressure.check(&metrics)
            {
                let began = Instant::now();
                coordinator.relay_stop(&stop);
                worker.step_or_park(Some(Duration::from_millis(10)));
                metrics
                    .backpressure_seconds
                    .with_label_values(&[pause.name()])
                    .inc_by(began.elapsed().as_secs_f64());
                continue;
            }
            if let Some(input) = &archive_input {
                metrics.archive_queue.set(input.queued() as i64);
            }
            let tick_began = Instant::now();
            batch.clear();
            let Polled { more, heartbeat } = driver.poll(clock.tick_records, &mut batch);
            driver.backlogged(|p| marks.hold(p, tick_began));
            if !bootstrapped && driver.assets_loaded() {
                bootstrapped = true;
                for p in driver.asset_partitions() {
                    marks.finish(p);
                }
                coordinator.tell(Control::Bootstrapped);
            }
            if bootstrapped
                && !streaming
                && shared.bootstrapped.load(Ordering::Acquire) >= shared.readers
            {
                streaming = true;
                driver.start_streams();
            }
            let frontier = inputs.time();
            if feeds_models {
                inputs.set_model(&mut fed_model, config.models.version());
            }
            // A record's stamp before batching: its time rounded up, at least the frontier
            // (a late record lands there).
            let stamp_of = |ts: Time| ceil_to(ts, clock.resolution_ms).max(frontier);
            // The tick's newest stamp: the cap of batched stamps (see `ClockConfig::batched`).
            let tick_newest = batch
                .iter()
                .filter_map(|record| record.event.as_ref().ok())
                .map(|event| stamp_of(event.ts_ms()))
                .max()
                .unwrap_or(frontier);
            let mut tick_max_stamp = 0;
            for record in batch.drain(..) {
                local.records += 1;
                let stream = record.stream;
                metrics.records_in.with_label_values(&[stream.name()]).inc();
                match record.event {
                    Ok(event) => {
                        let ts = event.ts_ms();
                        marks.observe(record.partition as usize, ts, tick_began);
                        let mark = if ceil_to(ts, clock.resolution_ms) < frontier && ts > 0 {
                            local.late += 1;
                            metrics
                                .late_records
                                .with_label_values(&[stream.name()])
                                .inc();
                            QualityMark::Late
                        } else {
                            QualityMark::Ok
                        };
                        let stamp = clock.batched(stamp_of(ts), tick_newest);
                        tick_max_stamp = tick_max_stamp.max(stamp);
                        *quality_counts.entry((stream, mark, stamp)).or_default() += 1;
                        if ts > 0 {
                            let max = source_max.entry(stream).or_default();
                            *max = (*max).max(ts);
                        }
                        if archive_input.is_some()
                            && archive_tables[partition_of(stream)].is_some()
                            && let Some(row) = event.archive_row()
                        {
                            archive_rows[partition_of(stream)].push(row);
                        }
                        inputs.feed(event, stamp);
                    }
                    Err(error) => {
                        local.bad += 1;
                        metrics
                            .bad_records
                            .with_label_values(&[stream.name()])
                            .inc();
                        metrics
                            .dead_letters
                            .with_label_values(&[stream.name()])
                            .inc();
                        if let Ok(mut file) = dead_letters.lock()
                            && let Err(e) = file.write(&error)
                        {
                            tracing::warn!("dead-letter file: {e}");
                        }
                        if let (Some(out), Some(topic)) =
                            (kafka_dead_letters.as_ref(), driver.topic_of(stream))
                            && let Err(e) = out.send(&error, topic, record.original.as_deref())
                        {
                            tracing::warn!("dead-letter topic: {e}");
                        }
                        *quality_counts
                            .entry((stream, QualityMark::Bad, frontier))
                            .or_default() += 1;
                        inputs.feed_error(error, frontier);
                    }
                }
            }
            if let Some(input) = &archive_input {
                for (kind, rows) in archive_rows.iter_mut().enumerate() {
                    if let Some(table) = archive_tables[kind]
                        && !rows.is_empty()
                    {
                        input.append(table, std::mem::take(rows));
                    }
                }
            }
            for ((stream, mark, stamp), count) in quality_counts.drain() {
                inputs.feed_quality(stream.name(), mark, stamp, count);
            }
            for (stream, ts) in &source_max {
                inputs.feed_source_time(stream.name(), *ts, frontier);
                metrics
                    .watermark_ms
                    .with_label_values(&[stream.name()])
                    .set(*ts as i64);
            }
            source_max.clear();
            if let Some(beat) = heartbeat {
                for p in 0..driver.partitions() {
                    marks.heartbeat(p, beat, tick_began);
                }
            }
            max_stamp = max_stamp.max(tick_max_stamp);
            if tick_max_stamp > 0
                && let Ok(mut pending) = shared.pending.lock()
            {
                pending.push((tick_max_stamp, tick_began));
            }
            if let Ok(mut file) = dead_letters.lock() {
                file.flush().ok();
            }
            driver.report(&metrics);
            let stopping = stop.load(Ordering::Acquire);
            coordinator.relay_stop(&stop);
            if !more || stopping {
                // The end of input is past every reader's newest stamp: wait until every
                // reader has ended (following the others meanwhile, so as not to hold them
                // back), advance there, and wait until it is published.
                coordinator.tell(Control::Ended((max_stamp + 1).max(inputs.time())));
                let end = loop {
                    if let Some(end) = shared.final_end() {
                        break end;
                    }
                    let hint = shared.hint.load(Ordering::Acquire);
                    if hint > inputs.time() {
                        inputs.advance_unlogged(hint);
                    }
                    inputs.flush();
                    worker.step_or_park(Some(Duration::from_millis(1)));
                };
                let end = end.max(inputs.time());
                inputs.advance_unlogged(end);
                inputs.flush();
                inputs.commit_log();
                if let Some(checkpoints) = &checkpoints {
                    cut(
                        checkpoints,
                        FINAL_EPOCH,
                        index,
                        &inputs,
                        &driver,
                        archive_input.as_ref(),
                        &metrics,
                    );
                }
                break;
            }
            let now = Instant::now();
            let mut next = marks.advance(now);
            if marks.quiet(now) {
                next = next.max(shared.hint.load(Ordering::Acquire));
            }
            // Only another reader follows a hint.
            if shared.readers > 1 && next > sent_hint {
                sent_hint = next;
                coordinator.tell(Control::Hint(next));
            }
            if next > inputs.time() {
                inputs.advance_to(next);
            }
            inputs.flush();
            inputs.commit_log();
            if let Some(checkpoints) = &checkpoints
                && checkpoints.requested() > last_epoch
            {
                last_epoch = checkpoints.requested();
                cut(
                    checkpoints,
                    last_epoch,
                    index,
                    &inputs,
                    &driver,
                    archive_input.as_ref(),
                    &metrics,
                );
            }
            // Backpressure: at most one tick in flight behind the input. Not while the assets
            // are read first (they are few): the probe waits for every reader's input, and a
            // reader restored at a later frontier than another's would wait for one that
            // cannot move before this one has loaded its assets too.
            // The wait parks rather than spins: what it waits for is often another worker's
            // share (or another reader's input), and a spinning worker takes the core that
            // worker, the Kafka client threads or the broker need. Timely wakes a parked
            // worker when a message or progress update arrives for it.
            if streaming {
                while probe.less_than(&frontier) {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
            }
            worker.step();
            if let Driver::Simulator { speed, .. } = &driver
                && *speed > 0.0
            {
                // A paced simulator is polled every PACED_POLL; until then the worker goes on
                // computing (a sleep here held back this worker's share of the last tick).
                let until = tick_began + PACED_POLL;
                loop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    worker.step_or_park(Some(until - now));
                }
            }
        }
        shared
            .summary
            .lock()
            .map(|mut s| {
                s.records += local.records;
                s.bad += local.bad;
                s.late += local.late;
            })
            .ok();
        // Wait until every process has published the end of input. What the dataflow would
        // still compute (window expiries past the end) is never published: drop it on every
        // worker.
        while !coordinator.done(&shared, &stop) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        drop(inputs);
        worker.drop_dataflow(dataflow_id);
        worker.drop_dataflow(control_id);
    })
    .map_err(RuntimeError::Dataflow)?;
    for result in guards.join() {
        result.map_err(RuntimeError::Dataflow)?;
    }
    if let Some(checkpointer) = checkpointer {
        // The readers' last cuts make the final checkpoint (before the archive closes: it
        // answers their cuts).
        checkpointer.stop();
    }
    if let Some(views) = view_sink {
        // Writes what was published and not yet written, and flushes.
        views.stop();
    }
    if let Some(archive) = archive {
        // A last view snapshot; every open file is finished and made visible.
        archive.close();
    }
    if let Some(out) = &kafka_out {
        out.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
    }
    let summary = result_shared
        .summary
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    Ok(summary)
}
