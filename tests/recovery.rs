//! Crash recovery of the real binary against a real broker: `kill -9` at random points while
//! it ingests from Kafka, restart each time, and the final views, the compacted changelog
//! topics and the archive's row counts equal those of a run that was never interrupted. The
//! killed run writes its changelogs with `exactly_once`: no change reaches a topic twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use wearflow::checkpoint::CheckpointConfig;
use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow_operators::ViewKind;
use wearflow_sinks::kafka::KafkaSinkConfig;
use wearflow_sources::{Event, KafkaSourceConfig, SimulatorConfig, StreamKind, decode, simulate};

use crate::common::process::{Engine, client};
use crate::kafka::{Read, compact, produce, read_topic, sink_config, source_config};

/// Kills survived before the run that is let finish.
const KILLS: usize = 5;

/// Writes the engine's configuration into `dir` and returns its path.
fn write_config(dir: &Path, source: &KafkaSourceConfig, sink: &KafkaSinkConfig) -> String {
    let config = Config {
        workers: 2,
        data_dir: dir.to_path_buf(),
        clock: ClockConfig {
            tick_records: 2_000,
            ..ClockConfig::default()
        },
        source: SourceConfig::Kafka(source.clone()),
        kafka_sink: Some(sink.clone()),
        checkpoint: CheckpointConfig {
            interval_ms: 200,
            ..CheckpointConfig::default()
        },
        ..Config::default()
    };
    let path = dir.join("wearflow.toml");
    std::fs::create_dir_all(dir).expect("engine dir");
    std::fs::write(&path, toml::to_string(&config).expect("config as TOML")).expect("write");
    path.display().to_string()
}

fn start(dir: &Path, config: &str) -> Engine {
    Engine::start(dir, &["run", "--config", config, "--serve-after-end"])
}

/// Rows per archived event table, from the Parquet footers of every visible file.
fn archive_rows(dir: &Path) -> BTreeMap<String, i64> {
    fn walk(dir: &Path, rows: &mut i64) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, rows);
            } else if name.starts_with("part-") && name.ends_with(".parquet") {
                let file = std::fs::File::open(&path).expect("open");
                let reader = parquet::file::reader::SerializedFileReader::new(file)
                    .unwrap_or_else(|e| panic!("{}: not whole Parquet: {e}", path.display()));
                *rows += parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows();
            }
        }
    }
    ["telemetry", "orders", "stock"]
        .into_iter()
        .map(|table| {
            let mut rows = 0;
            walk(&dir.join("archive").join(table), &mut rows);
            (table.to_string(), rows)
        })
        .collect()
}

/// The messages of a changelog topic that repeat their key's previous message (`as_of`
/// aside): a change sent twice. Messages of one key keep their order (one partition).
fn repeated_changes(messages: &[Read]) -> Vec<String> {
    let mut last: BTreeMap<Vec<u8>, Option<serde_json::Value>> = BTreeMap::new();
    let mut repeated = Vec::new();
    for (key, value, _) in messages {
        let key = key.clone().expect("changelog messages have keys");
        let row = value.as_ref().map(|value| {
            let mut row: serde_json::Value = serde_json::from_slice(value).expect("JSON");
            row.as_object_mut().expect("object").remove("as_of");
            row
        });
        if last.get(&key) == Some(&row) {
            repeated.push(format!("{} {row:?}", String::from_utf8_lossy(&key)));
        }
        last.insert(key, row);
    }
    repeated
}

/// Sum of a counter over its labels in a Prometheus scrape.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn killed_five_times_the_views_changelogs_and_archive_equal_an_uninterrupted_run() {
    let (events, _) = simulate(
        SimulatorConfig {
            seed: 23,
            machines: 2,
            ..SimulatorConfig::default()
        },
        24 * 3_600_000,
    );
    // A tooth wears past its limit, so that alerts are raised: the simulated fleet is too
    // young to raise any of its own.
    let (mut events, _) = (events, ());
    for i in 0..30u64 {
        let line = format!(
            "{{\"device_id\":\"X1-T1\",\"machine_id\":\"X1\",\"ts\":{},\"metrics\":{{\"remaining_mm\":{}}}}}",
            1_767_225_600_000u64 + 14 * 3_600_000 + i * 10_000,
            41.0 - i as f64 * 0.1
        );
        events.push(decode(StreamKind::Telemetry, 0, 0, line.as_bytes()).expect("valid"));
    }
    events.sort_by_key(Event::ts_ms);
    let source = source_config("crash");
    produce(&source.topics, &events);
    let per_stream = |stream: StreamKind| events.iter().filter(|e| e.stream() == stream).count();
    let http = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scratch = tempfile::tempdir().expect("scratch");
    // WEARFLOW_TEST_KEEP=1 keeps the engines' directories (logs, checkpoints) for a look.
    let scratch_dir = if std::env::var_os("WEARFLOW_TEST_KEEP").is_some() {
        let kept = scratch.keep();
        eprintln!("crash test: keeping {}", kept.display());
        kept
    } else {
        scratch.path().to_path_buf()
    };

    // The run that is never interrupted.
    let reference_sink = sink_config("reference");
    let reference_dir = scratch_dir.join("reference");
    let config = write_config(&reference_dir, &source, &reference_sink);
    let began = Instant::now();
    let mut reference = start(&reference_dir, &config);
    reference.wait_for("source ended", Duration::from_secs(300));
    let full_run = began.elapsed();
    let expected = reference.views(&http);
    reference.stop();

    // The run that is killed with SIGKILL at random points, and restarted each time.
    let crash_sink = KafkaSinkConfig {
        exactly_once: true,
        ..sink_config("crashed")
    };
    let crash_dir = scratch_dir.join("crashed");
    let config = write_config(&crash_dir, &source, &crash_sink);
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    eprintln!("crash test: seed {seed}, an uninterrupted run takes {full_run:?}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for kill in 0..KILLS {
        let mut engine = start(&crash_dir, &config);
        if kill == 0 {
            // An admin takes a checkpoint on demand; the answer comes once it is on disk.
            let sequence = http.block_on(async {
                loop {
                    let response = client()
                        .post(format!("{}/checkpoint", engine.base))
                        .send()
                        .await
                        .expect("POST /checkpoint");
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.expect("JSON");
                    match status {
                        200 => return body["sequence"].as_u64().expect("sequence"),
                        // Until the engine has opened its sources.
                        409 => tokio::time::sleep(Duration::from_millis(50)).await,
                        other => panic!("POST /checkpoint: {other} {body}"),
                    }
                }
            });
            assert!(sequence >= 1);
            let file = crash_dir
                .join("checkpoint")
                .join(format!("checkpoint-{sequence:010}.json"));
            assert!(file.exists(), "{} is on disk", file.display());
        }
        // Somewhere within the time a whole run takes (start-up and restore included).
        let millis = rng.random_range(300..(full_run.as_millis() as u64).max(600));
        std::thread::sleep(Duration::from_millis(millis));
        engine.child.kill().expect("kill -9");
        engine.child.wait().expect("reaped");
        eprintln!("crash test: kill {} after {millis} ms", kill + 1);
    }
    let checkpoints = std::fs::read_dir(crash_dir.join("checkpoint"))
        .expect("checkpoint dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .count();
    assert!(checkpoints >= 1, "the killed runs wrote checkpoints");
    // Tear the newest checkpoint, as a crash in the middle of writing it would (were the
    // write not atomic): the last run skips it, says so, and restores the one before.
    let mut files: Vec<PathBuf> = std::fs::read_dir(crash_dir.join("checkpoint"))
        .expect("checkpoint dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let newest = files.pop().expect("newest");
    let previous = files.pop().expect("previous");
    let bytes = std::fs::read(&newest).expect("read");
    std::fs::write(&newest, &bytes[..bytes.len() * 2 / 3]).expect("truncate");
    let stderr_path = crash_dir.join("last-run.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut last = Engine::start_with(
        &crash_dir,
        &["run", "--config", &config, "--serve-after-end"],
        stderr.into(),
    );
    last.wait_for("source ended", Duration::from_secs(300));
    let actual = last.views(&http);
    let metrics = http.block_on(async {
        client()
            .get(format!("{}/metrics", last.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text")
    });
    last.stop();
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let sequence = |path: &Path| -> u64 {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("checkpoint-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .expect("a checkpoint file name")
    };
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("checkpoint {} skipped", newest.display()))),
        "the torn checkpoint is reported: {stderr}"
    );
    assert!(
        stderr.contains(&format!("restoring checkpoint {} ", sequence(&previous))),
        "the previous checkpoint is restored: {stderr}"
    );

    // Views: the same snapshot time and the same rows in every view.
    assert_eq!(actual.0, expected.0, "as_of");
    assert!(expected.1["tooth_wear"].len() > 10);
    for (view, rows) in &expected.1 {
        assert_eq!(
            actual.1.get(view),
            Some(rows),
            "view {view} differs from the uninterrupted run"
        );
    }
    // The last run resumed: it read fewer records from Kafka than there are.
    let read = metric_sum(&metrics, "wearflow_source_records_total");
    assert!(
        read < events.len() as f64,
        "the last run read {read} of {} records: it did not resume",
        events.len()
    );

    // Changelogs: each keyed view's topic, compacted by key, equals the uninterrupted one's.
    let mut checked = 0;
    for schema in wearflow::runtime::view_schemas() {
        if schema.kind != ViewKind::Keyed {
            continue;
        }
        let name = &schema.name;
        let crashed = read_topic(&format!("{}{name}", crash_sink.changelog_prefix));
        let uninterrupted = read_topic(&format!("{}{name}", reference_sink.changelog_prefix));
        assert_eq!(
            compact(&crashed),
            compact(&uninterrupted),
            "changelog of {name}"
        );
        // Exactly once: the restarts sent no change again (at least once would have sent
        // every replayed row again).
        let repeated = repeated_changes(&crashed);
        assert!(
            repeated.is_empty(),
            "{} changes of {name} sent twice, e.g. {:?}",
            repeated.len(),
            &repeated[..repeated.len().min(3)]
        );
        assert!(repeated_changes(&uninterrupted).is_empty());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} keyed views");

    // Alerts: each alert of the uninterrupted run once (alerts already in the topic are not
    // sent again after a restart).
    let alert_ids = |topic: &str| -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for (_, value, _) in read_topic(topic) {
            let json: serde_json::Value =
                serde_json::from_slice(&value.expect("an alert")).expect("JSON");
            *ids.entry(json["alert_id"].as_str().expect("alert_id").to_string())
                .or_insert(0) += 1;
        }
        ids
    };
    let expected_alerts = alert_ids(&reference_sink.alerts_topic);
    assert!(!expected_alerts.is_empty(), "the fixture raises alerts");
    assert!(expected_alerts.values().all(|n| *n == 1));
    assert_eq!(alert_ids(&crash_sink.alerts_topic), expected_alerts);

    // The archive: every event exactly once, no partial file.
    let crashed = archive_rows(&crash_dir);
    let uninterrupted = archive_rows(&reference_dir);
    assert_eq!(crashed, uninterrupted);
    assert_eq!(
        crashed["telemetry"] as usize,
        per_stream(StreamKind::Telemetry)
    );
    assert_eq!(crashed["orders"] as usize, per_stream(StreamKind::Orders));
    assert_eq!(crashed["stock"] as usize, per_stream(StreamKind::Stock));
}
