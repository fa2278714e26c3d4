//! `wearflow-bench kafka`: the broker's own produce and consume ceilings, wearflow end to end
//! from Kafka at maximum rate, and at fixed rates with freshness from produce to readable.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::broadcast::error::TryRecvError;
use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::runtime;
use wearflow_operators::Value;
use wearflow_operators::time::ceil_to;
use wearflow_sinks::ServingStore;
use wearflow_sinks::kafka::Producer;
use wearflow_sources::kafka::{ensure_topics, event_key};
use wearflow_sources::{
    Event, KafkaSourceConfig, KafkaTopics, SimulatorConfig, StreamKind, simulate,
};

/// One message to produce: stream, event time, key, payload.
pub(crate) struct Message {
    stream: StreamKind,
    pub(crate) ts: u64,
    /// The device of a telemetry reading (its effect shows in `tooth_wear`).
    device: Option<String>,
    key: String,
    payload: String,
}

impl Message {
    /// The message of an event: keyed as wearflow's own producer keys it.
    pub(crate) fn of(e: &Event) -> Message {
        Message {
            stream: e.stream(),
            ts: e.ts_ms(),
            device: match e {
                Event::Telemetry(t) => Some(t.device_id.clone()),
                _ => None,
            },
            key: event_key(e),
            payload: e.to_json_line(),
        }
    }

    pub(crate) fn send(&self, producer: &Producer, topics: &KafkaTopics) -> anyhow::Result<()> {
        producer.send(
            topics.of(self.stream),
            Some(self.key.as_bytes()),
            Some(self.payload.as_bytes()),
            &[],
        )?;
        Ok(())
    }
}

fn messages(machines: usize, hours: u64) -> Vec<Message> {
    let config = SimulatorConfig {
        seed: 1,
        machines,
        ..SimulatorConfig::default()
    };
    let (events, _) = simulate(config, hours * 3_600_000);
    events.iter().map(Message::of).collect()
}

pub(crate) fn topics(tag: &str) -> KafkaTopics {
    let prefix = format!("bench-{}-{tag}", std::process::id());
    KafkaTopics {
        telemetry: format!("{prefix}.telemetry"),
        orders: format!("{prefix}.orders"),
        stock: format!("{prefix}.stock"),
        assets: format!("{prefix}.assets"),
    }
}

pub(crate) fn create(brokers: &str, topics: &KafkaTopics, partitions: i32) -> anyhow::Result<()> {
    let names: Vec<&str> = StreamKind::ALL.iter().map(|s| topics.of(*s)).collect();
    ensure_topics(brokers, &BTreeMap::new(), &names, partitions, &[])?;
    Ok(())
}

/// Produces every message as fast as possible; returns the seconds taken until all are
/// acknowledged.
fn produce_all(brokers: &str, topics: &KafkaTopics, messages: &[Message]) -> anyhow::Result<f64> {
    let producer = Producer::new(brokers, &BTreeMap::new())?;
    let started = Instant::now();
    for m in messages {
        m.send(&producer, topics)?;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Reads every partition of the topics to its end with a plain consumer; returns (messages,
/// seconds).
fn consume_all(brokers: &str, topics: &KafkaTopics) -> anyhow::Result<(u64, f64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-ceiling-{}", std::process::id()))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let started = Instant::now();
    let mut list = TopicPartitionList::new();
    let mut open = std::collections::BTreeSet::new();
    for stream in StreamKind::ALL {
        let topic = topics.of(stream);
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            open.insert((topic.to_string(), p.id()));
        }
    }
    consumer.assign(&list)?;
    let mut count = 0u64;
    // EOF events carry no topic: count them per partition number across topics.
    let mut eof_by_partition: BTreeMap<i32, usize> = BTreeMap::new();
    let partitions_by_number = open.iter().fold(BTreeMap::new(), |mut m, (_, p)| {
        *m.entry(*p).or_insert(0usize) += 1;
        m
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    while eof_by_partition != partitions_by_number && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let seen = eof_by_partition.entry(p).or_insert(0);
                *seen = (*seen + 1).min(partitions_by_number.get(&p).copied().unwrap_or(0));
            }
            Some(Err(e)) => anyhow::bail!("consume: {e}"),
            None => {}
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Engines configured so far in this process.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn engine_config(
    brokers: &str,
    topics: &KafkaTopics,
    stop_at_end: bool,
    idle_ms: u64,
) -> Config {
    Config {
        workers: 2,
        // A data directory per engine: a run must not restore the checkpoint of the one before.
        data_dir: std::env::temp_dir().join(format!(
            "wearflow-bench-kafka-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        )),
        clock: ClockConfig {
            idle_timeout_ms: idle_ms,
            ..ClockConfig::default()
        },
        source: SourceConfig::Kafka(KafkaSourceConfig {
            brokers: brokers.to_string(),
            topics: topics.clone(),
            group_id: format!("bench-{}", std::process::id()),
            stop_at_end,
            ..KafkaSourceConfig::default()
        }),
        ..Config::default()
    }
}

/// An engine running on a thread of its own until it is stopped.
pub(crate) struct LiveEngine {
    /// Its serving store.
    pub(crate) store: Arc<ServingStore>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<runtime::RunSummary, runtime::RuntimeError>>,
}

impl LiveEngine {
    pub(crate) fn start(config: Config) -> LiveEngine {
        let store = Arc::new(ServingStore::new(runtime::view_schemas()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || runtime::run(&config, store, Arc::new(Metrics::new()), stop))
        };
        LiveEngine {
            store,
            stop,
            thread,
        }
    }

    /// Whether the engine has ended (on its own: an error).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the engine and waits for it to drain.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("engine panicked"))??;
        Ok(())
    }
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What the watcher still waits for, of the events produced so far.
#[derive(Default)]
struct Pending {
    /// (visible-at stamp, send instant) of every event, in produce order: visible at the
    /// latest once a snapshot's `as_of` reaches the stamp.
    by_stamp: VecDeque<(u64, Instant)>,
    /// Per device, (event time, send instant) of its telemetry readings, in produce order:
    /// visible once `tooth_wear` shows a `last_seen_ms` at or past the reading's time.
    by_device: HashMap<String, VecDeque<(u64, Instant)>>,
}

/// Freshness samples of one fixed-rate run, in seconds.
#[derive(Default)]
struct Freshness {
    /// Telemetry readings: produce → their effect readable in `tooth_wear`.
    effect: Vec<f64>,
    /// Every event: produce → a snapshot whose `as_of` reaches an upper bound of its stamp.
    bound: Vec<f64>,
}

impl Pending {
    /// Records the readings `tooth_wear` shows for `device` as of `last_seen`.
    fn seen(&mut self, device: &str, last_seen: u64, now: Instant, out: &mut Vec<f64>) {
        if let Some(queue) = self.by_device.get_mut(device) {
            while let Some(&(ts, at)) = queue.front() {
                if ts > last_seen {
                    break;
                }
                out.push(now.duration_since(at).as_secs_f64());
                queue.pop_front();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_stamp.is_empty() && self.by_device.values().all(VecDeque::is_empty)
    }
}

/// A device's `last_seen_ms` in a `tooth_wear` row.
fn last_seen<'a>(key: &'a [Value], row: &[Value], column: usize) -> Option<(&'a str, u64)> {
    match (key.first(), row.get(column)) {
        (Some(Value::Str(device)), Some(Value::Int(ms))) => Some((device.as_str(), *ms as u64)),
        _ => None,
    }
}

/// Produces `messages` at `rate` per second for at most `seconds` while the engine runs live;
/// returns the events produced and their freshness.
fn fixed_rate(
    brokers: &str,
    messages: &[Message],
    rate: f64,
    seconds: f64,
    partitions: i32,
    idle_ms: u64,
) -> anyhow::Result<(usize, Freshness)> {
    let topics = topics(&format!("rate{}", rate as u64));
    create(brokers, &topics, partitions)?;
    let config = engine_config(brokers, &topics, false, idle_ms);
    let resolution_ms = config.clock.resolution_ms;
    let batch_ms = config.clock.batch_ms;
    let data_dir = config.data_dir.clone();
    let engine = LiveEngine::start(config);
    let store = Arc::clone(&engine.store);
    let column = store
        .schemas()
        .iter()
        .find(|s| s.name == "tooth_wear")
        .and_then(|s| s.column_index("last_seen_ms"))
        .ok_or_else(|| anyhow::anyhow!("tooth_wear has no last_seen_ms"))?;
    let pending: Arc<Mutex<Pending>> = Arc::default();
    let freshness: Arc<Mutex<Freshness>> = Arc::default();
    let watcher_done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let pending = Arc::clone(&pending);
        let freshness = Arc::clone(&freshness);
        let done = Arc::clone(&watcher_done);
        let store = Arc::clone(&store);
        let mut feed = store.subscribe();
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let (snapshot, lagged) = match feed.try_recv() {
                    Ok(snapshot) => (snapshot, false),
                    // Changes were missed: read the newest snapshot whole.
                    Err(TryRecvError::Lagged(_)) => (store.snapshot(), true),
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    Err(TryRecvError::Closed) => break,
                };
                let now = Instant::now();
                let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = freshness.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(&(stamp, at)) = pending.by_stamp.front() {
                    if stamp > snapshot.as_of {
                        break;
                    }
                    out.bound.push(now.duration_since(at).as_secs_f64());
                    pending.by_stamp.pop_front();
                }
                let mut record =
                    |(device, ms): (&str, u64)| pending.seen(device, ms, now, &mut out.effect);
                if lagged {
                    if let Some(view) = snapshot.view("tooth_wear") {
                        view.rows
                            .iter()
                            .filter_map(|(key, row)| last_seen(key, row, column))
                            .for_each(&mut record);
                    }
                } else if let Some(changes) = snapshot.changes.get("tooth_wear") {
                    changes
                        .iter()
                        .filter_map(|c| last_seen(&c.key, c.row.as_deref()?, column))
                        .for_each(&mut record);
                }
            }
        })
    };
    // Give the engine time to assign partitions and pass the assets bootstrap.
    std::thread::sleep(Duration::from_millis(1500));
    let producer = Producer::new(brokers, &BTreeMap::new())?;
    let started = Instant::now();
    let mut produced = 0usize;
    for m in messages {
        if started.elapsed().as_secs_f64() >= seconds {
            break;
        }
        // Reference data has no time: it is visible at the next snapshot. With batched
        // stamps a record is stamped at most at its time rounded up to the batch (less when
        // its tick ends sooner): waiting for that bound never reports it visible too early.
        let stamp = ceil_to(ceil_to(m.ts, resolution_ms), batch_ms);
        {
            let now = Instant::now();
            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.by_stamp.push_back((stamp, now));
            if let Some(device) = &m.device {
                pending
                    .by_device
                    .entry(device.clone())
                    .or_default()
                    .push_back((m.ts, now));
            }
        }
        m.send(&producer, &topics)?;
        produced += 1;
        let due = Duration::from_secs_f64(produced as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed())
            && wait > Duration::from_micros(500)
        {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    // Wait for the last events to become readable (the frontier needs the sparse partitions
    // to go idle), then stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !pending.lock().map(|p| p.is_empty()).unwrap_or(true) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(left) = pending.lock() {
        let readings: usize = left.by_device.values().map(VecDeque::len).sum();
        if let Some((stamp, _)) = left.by_stamp.front() {
            eprintln!(
                "{} events not readable 20 s after the last was produced: first stamp {stamp}, as_of {}",
                left.by_stamp.len(),
                store.snapshot().as_of
            );
        }
        if readings > 0 {
            eprintln!(
                "{readings} readings not shown in tooth_wear 20 s after the last was produced"
            );
        }
    }
    engine.stop()?;
    std::fs::remove_dir_all(&data_dir).ok();
    watcher_done.store(true, Ordering::Release);
    watcher.join().ok();
    let mut freshness = std::mem::take(&mut *freshness.lock().unwrap_or_else(|e| e.into_inner()));
    freshness.effect.sort_by(f64::total_cmp);
    freshness.bound.sort_by(f64::total_cmp);
    Ok((produced, freshness))
}

/// Runs the Kafka benchmark and prints its JSON result as the last line.
pub fn run(
    brokers: &str,
    machines: usize,
    hours: u64,
    partitions: i32,
    rates: &[f64],
    rate_seconds: f64,
    idle_ms: u64,
) -> anyhow::Result<serde_json::Value> {
    let messages = messages(machines, hours);
    let total = messages.len();
    eprintln!("{total} events from {machines} machines over {hours} h");

    let max_topics = topics("max");
    create(brokers, &max_topics, partitions)?;
    let produce_s = produce_all(brokers, &max_topics, &messages)?;
    eprintln!(
        "broker produce ceiling: {:.0} events/s",
        total as f64 / produce_s
    );
    let (consumed, consume_s) = consume_all(brokers, &max_topics)?;
    anyhow::ensure!(consumed as usize == total, "consumed {consumed} of {total}");
    let consume_rate = consumed as f64 / consume_s;
    eprintln!("broker consume ceiling: {consume_rate:.0} events/s");

    let config = engine_config(brokers, &max_topics, true, idle_ms);
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let started = Instant::now();
    let summary = runtime::run(
        &config,
        store,
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(false)),
    )?;
    let e2e_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        summary.records as usize == total,
        "engine read {} of {total}",
        summary.records
    );
    let e2e_rate = total as f64 / e2e_s;
    eprintln!(
        "wearflow end to end: {e2e_rate:.0} events/s ({:.0} % of the consume ceiling)",
        100.0 * e2e_rate / consume_rate
    );

    let mut fixed = Vec::new();
    for &rate in rates {
        let (produced, freshness) =
            fixed_rate(brokers, &messages, rate, rate_seconds, partitions, idle_ms)?;
        let ms = |samples: &[f64], q: f64| percentile(samples, q) * 1000.0;
        let max = |samples: &[f64]| samples.last().map(|l| l * 1000.0);
        let (effect, bound) = (&freshness.effect, &freshness.bound);
        eprintln!(
            "at {rate:.0} events/s: {produced} produced; readings visible in tooth_wear ({} measured): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; as_of past the stamp bound ({} measured): p50 {:.1} ms, p99 {:.1} ms",
            effect.len(),
            ms(effect, 0.5),
            ms(effect, 0.99),
            max(effect).unwrap_or(f64::NAN),
            bound.len(),
            ms(bound, 0.5),
            ms(bound, 0.99),
        );
        fixed.push(serde_json::json!({
            "rate": rate,
            "produced": produced,
            "measured": effect.len(),
            "freshness_p50_ms": ms(effect, 0.5),
            "freshness_p99_ms": ms(effect, 0.99),
            "freshness_max_ms": max(effect),
            "bound_measured": bound.len(),
            "bound_p50_ms": ms(bound, 0.5),
            "bound_p99_ms": ms(bound, 0.99),
            "bound_max_ms": max(bound),
        }));
    }
    std::fs::remove_dir_all(config.data_dir).ok();
    Ok(serde_json::json!({
        "benchmark": "kafka",
        "events": total,
        "partitions_per_topic": partitions,
        "idle_timeout_ms": idle_ms,
        "broker_produce_events_per_sec": total as f64 / produce_s,
        "broker_consume_events_per_sec": consume_rate,
        "wearflow_e2e_events_per_sec": e2e_rate,
        "e2e_share_of_consume_ceiling": e2e_rate / consume_rate,
        "fixed_rates": fixed,
    }))
}
