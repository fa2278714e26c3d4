//! Kafka in and out, against a real Kafka-protocol broker on loopback.
//!
//! The broker is `$WEARFLOW_TEST_KAFKA` (`host:port`), or one started by
//! `deploy/local/kafka-up` when that is unset. Every test uses topics of its own, so tests
//! run in parallel and again on the same broker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value as Json;
use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::runtime::{self, RunSummary};
use wearflow_operators::{Value, ViewKind};
use wearflow_sinks::json::{key_to_json, row_to_json};
use wearflow_sinks::kafka::{KafkaSinkConfig, OwnedRecord, Producer};
use wearflow_sinks::{ServingStore, Snapshot};
use wearflow_sources::kafka::{ensure_topics, event_key};
use wearflow_sources::{
    Event, KafkaSourceConfig, KafkaTopics, SimulatorConfig, StreamKind, decode, simulate,
    write_jsonl,
};

use crate::common::render;

pub(crate) fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        if let Ok(brokers) = std::env::var("WEARFLOW_TEST_KAFKA") {
            return brokers;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kafka-up");
        let output = Command::new(script)
            .output()
            .expect("run deploy/local/kafka-up");
        assert!(
            output.status.success(),
            "kafka-up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("kafka-up prints the bootstrap address")
            .trim()
            .to_string()
    })
}

/// A name no other test (or earlier run on the same broker) uses.
pub(crate) fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}-{}-{nanos}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn source_config(tag: &str) -> KafkaSourceConfig {
    let prefix = unique(tag);
    KafkaSourceConfig {
        brokers: brokers().to_string(),
        topics: KafkaTopics {
            telemetry: format!("{prefix}.telemetry"),
            orders: format!("{prefix}.orders"),
            stock: format!("{prefix}.stock"),
            assets: format!("{prefix}.assets"),
        },
        group_id: prefix,
        stop_at_end: true,
        create_partitions: 3,
        ..KafkaSourceConfig::default()
    }
}

pub(crate) fn sink_config(tag: &str) -> KafkaSinkConfig {
    let prefix = unique(tag);
    KafkaSinkConfig {
        brokers: brokers().to_string(),
        changelog_prefix: format!("{prefix}.view."),
        alerts_topic: format!("{prefix}.alerts"),
        dead_letter_prefix: format!("{prefix}.dead_letters."),
        create_partitions: 2,
        ..KafkaSinkConfig::default()
    }
}

/// Produces events to their stream topics, keyed by entity, and waits for delivery.
pub(crate) fn produce(topics: &KafkaTopics, events: &[Event]) {
    let names: Vec<&str> = StreamKind::ALL.iter().map(|s| topics.of(*s)).collect();
    ensure_topics(brokers(), &BTreeMap::new(), &names, 3, &[]).expect("create topics");
    let producer = Producer::new(brokers(), &BTreeMap::new()).expect("producer");
    for event in events {
        let key = event_key(event);
        let payload = event.to_json_line();
        producer
            .send(
                topics.of(event.stream()),
                Some(key.as_bytes()),
                Some(payload.as_bytes()),
                &[],
            )
            .expect("queue");
    }
    producer.flush(Duration::from_secs(60)).expect("delivered");
}

fn engine_config(source: SourceConfig, sink: Option<KafkaSinkConfig>, data: &Path) -> Config {
    Config {
        workers: 2,
        data_dir: data.to_path_buf(),
        clock: ClockConfig {
            tick_records: 2_000,
            ..ClockConfig::default()
        },
        source,
        kafka_sink: sink,
        ..Config::default()
    }
}

fn run(config: &Config) -> (RunSummary, Arc<Snapshot>) {
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let summary = runtime::run(
        config,
        Arc::clone(&store),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(false)),
    )
    .expect("engine run");
    (summary, store.snapshot())
}

/// One message read back: key, value, headers.
pub(crate) type Read = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Every message of a topic, from its start to its end, partition by partition.
pub(crate) fn read_topic(topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("partition");
        open.insert(partition.id());
    }
    assert!(!open.is_empty(), "topic {topic} has no partitions");
    consumer.assign(&list).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic} not read to its end in time"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let record = OwnedRecord::of(&m);
                out.push((record.key, record.payload, record.headers));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    consumer.unassign().ok();
    out
}

/// A topic compacted by key: the last value per key, tombstones removing the key.
pub(crate) fn compact(messages: &[Read]) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for (key, value, _) in messages {
        let key = String::from_utf8(key.clone().expect("changelog messages have keys"))
            .expect("utf-8 key");
        match value {
            Some(value) => {
                let mut json: Json = serde_json::from_slice(value).expect("JSON value");
                json.as_object_mut().expect("object").remove("as_of");
                out.insert(key, json);
            }
            None => {
                out.remove(&key);
            }
        }
    }
    out
}

/// A keyed view as the changelog should hold it: key JSON → row JSON.
fn expected_changelog(snapshot: &Snapshot, view: &str) -> BTreeMap<String, Json> {
    let data = &snapshot.views[view];
    data.iter()
        .map(|row| {
            (
                key_to_json(&data.schema, &row[..data.schema.key_len]).to_string(),
                row_to_json(&data.schema, row),
            )
        })
        .collect()
}

/// The pipeline every test below checks: a simulated fleet produced to Kafka in two halves,
/// with the engine run to the end of the first half, stopped, and run again after the
/// second; plus the same events replayed from files.
struct Pipeline {
    sink: KafkaSinkConfig,
    kafka: (RunSummary, Arc<Snapshot>),
    files: (RunSummary, Arc<Snapshot>),
    events: usize,
}

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let config = SimulatorConfig {
            seed: 7,
            machines: 5,
            ..SimulatorConfig::default()
        };
        let (mut events, _) = simulate(config, 32 * 3_600_000);
        // Two teeth of another machine wear past their limit, one in each half: the
        // simulated fleet is too young to raise alerts of its own.
        for (device, hour) in [("X1-T1", 8), ("X2-T1", 31)] {
            for i in 0..30u64 {
                let line = format!(
                    "{{\"device_id\":\"{device}\",\"machine_id\":\"{}\",\"ts\":{},\"metrics\":{{\"remaining_mm\":{}}}}}",
                    &device[..2],
                    1_767_225_600_000u64 + hour * 3_600_000 + i * 10_000,
                    41.0 - i as f64 * 0.1
                );
                events.push(decode(StreamKind::Telemetry, 0, 0, line.as_bytes()).expect("valid"));
            }
        }
        events.sort_by_key(Event::ts_ms);
        let data = tempfile::tempdir().expect("data dir");
        let input = tempfile::tempdir().expect("input dir");
        write_jsonl(input.path(), &events).expect("files");
        let files = run(&engine_config(
            SourceConfig::Files {
                dir: input.path().to_path_buf(),
                speed: 0.0,
            },
            None,
            data.path(),
        ));

        let source = source_config("pipeline");
        let sink = sink_config("pipeline");
        let half = events.len() / 2;
        produce(&source.topics, &events[..half]);
        let config = engine_config(
            SourceConfig::Kafka(source.clone()),
            Some(sink.clone()),
            data.path(),
        );
        let (first, _) = run(&config);
        assert_eq!(first.records as usize, half, "the first run reads the first half");
        // Restart: a new engine over the same topics after more events arrived, with another
        // number of workers (so the partitions are spread differently).
        produce(&source.topics, &events[half..]);
        // (A checkpoint is restored only by the same number of workers: this restart
        // reads its input again from the start.)
        let kafka = run(&Config {
            workers: 3,
            checkpoint: wearflow::checkpoint::CheckpointConfig {
                enabled: false,
                ..Default::default()
            },
            ..config
        });
        Pipeline {
            sink,
            kafka,
            files,
            events: events.len(),
        }
    })
}

/// Simulator → Kafka → wearflow gives every view of the same events replayed from files,
/// at the same `as_of`, after a restart mid-stream: nothing counted twice or missed.
#[test]
fn kafka_views_equal_the_file_replay_after_a_restart() {
    let p = pipeline();
    assert_eq!(p.kafka.0.records as usize, p.events);
    assert_eq!(p.kafka.0.bad, 0);
    assert_eq!(
        p.kafka.0.late, 0,
        "partition watermarks keep in-order data on time"
    );
    assert_eq!(p.kafka.1.as_of, p.files.1.as_of);
    assert!(p.kafka.1.views["tooth_wear"].len() > 10);
    let kafka = render(&p.kafka.1);
    let files = render(&p.files.1);
    for (view, rows) in &files {
        assert_eq!(
            &kafka[view], rows,
            "view {view} differs from the file replay"
        );
    }
}

/// Each changelog topic, read from the start and compacted by key, equals its view — also
/// after the restart, whose replayed updates overwrite rather than duplicate.
#[test]
fn compacted_changelogs_equal_the_views() {
    let p = pipeline();
    let snapshot = &p.kafka.1;
    let mut checked = 0;
    for (name, view) in &snapshot.views {
        if view.schema.kind != ViewKind::Keyed {
            continue;
        }
        let topic = format!("{}{name}", p.sink.changelog_prefix);
        let messages = read_topic(&topic);
        let compacted = compact(&messages);
        assert_eq!(
            compacted,
            expected_changelog(snapshot, name),
            "changelog {topic} differs from view {name}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} keyed views");
}

/// The alerts topic holds each alert once, the restart notwithstanding, and all of them.
#[test]
fn alerts_topic_holds_each_alert_once() {
    let p = pipeline();
    let messages = read_topic(&p.sink.alerts_topic);
    let mut ids = BTreeMap::new();
    for (_, value, _) in &messages {
        let json: Json = serde_json::from_slice(value.as_ref().expect("alert")).expect("JSON");
        let id = json["alert_id"].as_str().expect("alert_id").to_string();
        *ids.entry(id).or_insert(0) += 1;
    }
    let alerts = &p.kafka.1.views["alerts"];
    assert!(
        alerts.len() >= 2,
        "the fixture raises alerts in both halves"
    );
    let expected: BTreeMap<String, i32> = alerts
        .iter()
        .map(|row| match &row[0] {
            Value::Str(id) => (id.clone(), 1),
            other => panic!("alert_id is text: {other:?}"),
        })
        .collect();
    assert_eq!(ids, expected);
}

/// A consumer written with another client (Python confluent-kafka) reads the changelog and
/// alerts topics to the same content.
#[test]
fn python_confluent_kafka_reads_the_outputs() {
    let p = pipeline();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_read.py");
    let topic = format!("{}inventory_balances", p.sink.changelog_prefix);
    let output = Command::new("python3")
        .arg(&script)
        .arg(brokers())
        .arg(&topic)
        .arg(&p.sink.alerts_topic)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_slice(&output.stdout).expect("JSON report");
    let compacted: BTreeMap<String, Json> =
        serde_json::from_value(report["changelog"].clone()).expect("changelog map");
    assert_eq!(
        compacted,
        expected_changelog(&p.kafka.1, "inventory_balances")
    );
    let alerts = report["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), p.kafka.1.views["alerts"].len());
}

/// Malformed messages land on the dead-letter topic with their original bytes and reason;
/// the valid messages around them are all counted.
#[test]
fn malformed_messages_go_to_the_dead_letter_topic() {
    let source = source_config("bad");
    let sink = sink_config("bad");
    let config = SimulatorConfig {
        seed: 3,
        machines: 2,
        ..SimulatorConfig::default()
    };
    let (events, _) = simulate(config, 8 * 3_600_000);
    let telemetry: Vec<&Event> = events
        .iter()
        .filter(|e| e.stream() == StreamKind::Telemetry)
        .take(400)
        .collect();
    assert!(telemetry.len() > 100);
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"device_id":"d1","machine_id":"m1","ts":"2026-01-01T07:00:00Z","metrics":{"wear_mm":"thick"}}"#.to_vec(),
        br#"{"device_id":"d1","machine_id":"m1","ts":"2026-01-01T07:00:00Z","metrics":{},"colour":"red"}"#.to_vec(),
        Vec::new(),
        format!("{{\"device_id\":\"{}\"}}", "x".repeat(70_000)).into_bytes(),
    ];
    let names: Vec<&str> = StreamKind::ALL
        .iter()
        .map(|s| source.topics.of(*s))
        .collect();
    ensure_topics(brokers(), &BTreeMap::new(), &names, 1, &[]).expect("topics");
    let producer = Producer::new(brokers(), &BTreeMap::new()).expect("producer");
    let mut bad_iter = bad.iter();
    for (i, event) in telemetry.iter().enumerate() {
        let payload = event.to_json_line();
        producer
            .send(
                &source.topics.telemetry,
                Some(b"k"),
                Some(payload.as_bytes()),
                &[],
            )
            .expect("queue");
        if i % 50 == 25
            && let Some(b) = bad_iter.next()
        {
            producer
                .send(&source.topics.telemetry, Some(b"k"), Some(b), &[])
                .expect("queue");
        }
    }
    producer.flush(Duration::from_secs(60)).expect("delivered");
    assert!(bad_iter.next().is_none(), "every bad message was produced");

    let data = tempfile::tempdir().expect("data dir");
    let config = engine_config(
        SourceConfig::Kafka(source.clone()),
        Some(sink.clone()),
        data.path(),
    );
    let (summary, snapshot) = run(&config);
    assert_eq!(summary.bad as usize, bad.len());
    assert_eq!(summary.records as usize, telemetry.len() + bad.len());
    let quality = snapshot.views["data_quality"]
        .iter()
        .find(|row| row[0] == Value::Str("telemetry".into()))
        .expect("telemetry quality row")
        .clone();
    assert_eq!(quality[1], Value::Int(telemetry.len() as i64), "records_ok");
    assert_eq!(quality[2], Value::Int(bad.len() as i64), "records_bad");

    let letters = read_topic(&format!("{}telemetry", sink.dead_letter_prefix));
    assert_eq!(letters.len(), bad.len());
    let mut payloads: Vec<Vec<u8>> = letters
        .iter()
        .map(|(_, v, _)| v.clone().unwrap_or_default())
        .collect();
    let mut expected = bad.clone();
    payloads.sort();
    expected.sort();
    assert_eq!(payloads, expected, "dead letters carry the original bytes");
    for (_, _, headers) in &letters {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert!(!header("wearflow.reason").is_empty());
        assert_eq!(header("wearflow.source_topic"), source.topics.telemetry);
        assert_eq!(header("wearflow.partition"), "0");
        assert!(header("wearflow.offset").parse::<u64>().is_ok());
    }
    let reasons: Vec<String> = letters
        .iter()
        .flat_map(|(_, _, h)| h.iter().filter(|(k, _)| k == "wearflow.reason"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("exceeds the limit")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("empty record")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown field")),
        "{reasons:?}"
    );
}

/// `wearflow simulate --kafka` produces the simulation to the stream topics: as many messages
/// as the same simulation writes to files, keyed by entity.
#[test]
fn simulate_produces_to_kafka() {
    let prefix = unique("cli");
    let output = Command::new(env!("CARGO_BIN_EXE_wearflow"))
        .args([
            "simulate",
            "--seed",
            "5",
            "--machines",
            "2",
            "--duration",
            "8h",
        ])
        .args([
            "--kafka",
            brokers(),
            "--topic-prefix",
            &prefix,
            "--partitions",
            "2",
        ])
        .output()
        .expect("wearflow simulate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = SimulatorConfig {
        seed: 5,
        machines: 2,
        ..SimulatorConfig::default()
    };
    let (events, _) = simulate(config, 8 * 3_600_000);
    for stream in StreamKind::ALL {
        let expected = events.iter().filter(|e| e.stream() == stream).count();
        let messages = read_topic(&format!("{prefix}.{}", stream.name()));
        assert_eq!(messages.len(), expected, "{stream} messages");
        assert!(messages.iter().all(|(k, v, _)| k.is_some() && v.is_some()));
    }
}
