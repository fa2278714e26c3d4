//! `wearflow-bench peers`: the same work done by wearflow, Pathway and a DuckDB recompute,
//! on the same input, in one run, with the answers checked for agreement.
//!
//! - Throughput: wearflow replays the simulator's JSONL files in-process (every view on);
//!   `bench/peers/pathway_peer.py` and `duckdb_peer.py` compute the tooth-wear features and
//!   inventory balances from the same files. `bench/peers/compare.py` checks that each peer's
//!   rows equal wearflow's `tooth_wear` and `inventory_balances` rows at the end of input.
//! - Update latency after a batch: DuckDB appends the next `batch` events to a history of N
//!   events and recomputes (`duckdb_peer.py --update-latency`); wearflow, with a broker,
//!   ingests the same N events from Kafka, then gets the next `batch` events produced and is
//!   timed from the first send until a published snapshot holds the whole batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value as Json, json};
use wearflow::config::{Config, SourceConfig};
use wearflow::runtime;
use wearflow_operators::time::ceil_to;
use wearflow_sinks::ServingStore;
use wearflow_sinks::json::row_to_json;
use wearflow_sinks::kafka::Producer;
use wearflow_sources::{Event, SimulatorConfig, simulate, write_jsonl};

use crate::kafka::{self, LiveEngine, Message};

/// What `peers` measures.
pub struct Plan<'a> {
    /// Machines and simulated hours of the throughput input.
    pub machines: usize,
    /// Simulated hours of the throughput input.
    pub hours: u64,
    /// History sizes (events) for the update latency.
    pub history: &'a [usize],
    /// Events per appended batch.
    pub batch: usize,
    /// Batches per history size.
    pub reps: usize,
    /// A broker for wearflow's side of the update latency (none = DuckDB's side only).
    pub brokers: Option<&'a str>,
    /// Skip Pathway (its wheel is ~105 MB).
    pub skip_pathway: bool,
    /// wearflow's idle timeout (ms) for the update latency: how soon the quiet partition lets
    /// the frontier pass the batch's newest event.
    pub idle_ms: u64,
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The peers' Python (`bench/peers/setup` installs them into a virtual environment).
fn peer_python() -> anyhow::Result<PathBuf> {
    let output = Command::new(peers_dir().join("setup"))
        .output()
        .context("running bench/peers/setup")?;
    anyhow::ensure!(
        output.status.success(),
        "bench/peers/setup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let python = stdout.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(!python.is_empty(), "bench/peers/setup printed no python");
    Ok(PathBuf::from(python))
}

/// Runs a peer script; its last stdout line is one JSON object.
fn run_peer(python: &Path, script: &str, args: &[&str]) -> anyhow::Result<Json> {
    let output = Command::new(python)
        .arg(peers_dir().join(script))
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("{script} printed no JSON: {last}"))
}

/// Replays `dir` through wearflow in-process; returns (events/s, rows in the peers' format).
fn wearflow_replay(dir: &Path) -> anyhow::Result<(u64, f64, Json)> {
    let config = Config {
        workers: 2,
        data_dir: dir.join("wearflow-data"),
        source: SourceConfig::Files {
            dir: dir.to_path_buf(),
            speed: 0.0,
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let started = Instant::now();
    let summary = runtime::run_to_end(&config, Arc::clone(&store))?;
    let seconds = started.elapsed().as_secs_f64();
    let snapshot = store.snapshot();
    let rows = |name: &str| -> anyhow::Result<Vec<Json>> {
        let schema = store
            .schemas()
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no view {name}"))?;
        let view = snapshot
            .view(name)
            .with_context(|| format!("view {name} not published"))?;
        Ok(view.iter().map(|row| row_to_json(schema, row)).collect())
    };
    let rows = json!({ "tooth": rows("tooth_wear")?, "balances": rows("inventory_balances")? });
    Ok((summary.records, summary.records as f64 / seconds, rows))
}

fn simulated(machines: usize, hours: u64, seed: u64) -> Vec<Event> {
    let config = SimulatorConfig {
        seed,
        machines,
        ..SimulatorConfig::default()
    };
    simulate(config, hours * 3_600_000).0
}

/// Throughput of wearflow and the peers on one input, and their agreement.
fn throughput(plan: &Plan, python: &Path, dir: &Path) -> anyhow::Result<Json> {
    let events = simulated(plan.machines, plan.hours, 1);
    write_jsonl(dir, &events)?;
    drop(events);
    let (records, wearflow_rate, rows) = wearflow_replay(dir)?;
    eprintln!("wearflow: {records} events, {wearflow_rate:.0} events/s (file replay, all views)");
    let wearflow_rows = dir.join("wearflow-rows.json");
    std::fs::write(&wearflow_rows, serde_json::to_vec(&rows)?)?;
    let dir_arg = dir.display().to_string();
    let mut result = json!({
        "machines": plan.machines,
        "simulated_hours": plan.hours,
        "events": records,
        "wearflow_events_per_sec": wearflow_rate,
    });
    let peers: &[(&str, &str)] = if plan.skip_pathway {
        &[("duckdb", "duckdb_peer.py")]
    } else {
        &[("pathway", "pathway_peer.py"), ("duckdb", "duckdb_peer.py")]
    };
    for (peer, script) in peers {
        let out = dir.join(format!("{peer}-rows.json"));
        let out_arg = out.display().to_string();
        let mut figures = run_peer(python, script, &[&dir_arg, "--out", &out_arg])?;
        let rate = figures["events_per_sec"].as_f64().unwrap_or(f64::NAN);
        let compare = Command::new(python)
            .arg(peers_dir().join("compare.py"))
            .arg("--wearflow-rows")
            .arg(&wearflow_rows)
            .arg(&out)
            .output()
            .context("running compare.py")?;
        let agree = compare.status.success();
        eprintln!(
            "{peer}: {rate:.0} events/s; wearflow ÷ {peer} {:.2}; answers {}",
            wearflow_rate / rate,
            if agree { "agree" } else { "DIFFER" }
        );
        if !agree {
            eprintln!("{}", String::from_utf8_lossy(&compare.stdout));
        }
        figures["agrees_with_wearflow"] = json!(agree);
        figures["wearflow_over_peer"] = json!(wearflow_rate / rate);
        result[*peer] = figures;
    }
    Ok(result)
}

/// wearflow's update latency: ingest `history` events from Kafka, then time `reps` batches
/// of `batch` events from the first send until a snapshot holds the whole batch.
fn wearflow_update_latency(
    brokers: &str,
    messages: &[Message],
    history: usize,
    batch: usize,
    reps: usize,
    idle_ms: u64,
) -> anyhow::Result<Json> {
    // One partition per topic: the frontier follows the newest telemetry at once instead of
    // waiting for sibling partitions to go idle.
    let topics = kafka::topics(&format!("update{history}"));
    kafka::create(brokers, &topics, 1)?;
    let producer = Producer::new(brokers, &BTreeMap::new())?;
    let started = Instant::now();
    for m in &messages[..history] {
        m.send(&producer, &topics)?;
    }
    producer.flush(Duration::from_secs(300))?;
    eprintln!(
        "  produced {history} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let config = kafka::engine_config(brokers, &topics, false, idle_ms);
    let data_dir = config.data_dir.clone();
    let resolution_ms = config.clock.resolution_ms;
    let engine = LiveEngine::start(config);
    let store = Arc::clone(&engine.store);
    let stamp = |ts: u64| ceil_to(ts, resolution_ms);
    let wait_for = |target: u64, limit: Duration| -> anyhow::Result<Duration> {
        let begun = Instant::now();
        while store.snapshot().as_of < target {
            anyhow::ensure!(
                begun.elapsed() < limit,
                "as_of {} did not reach {target} within {limit:?}",
                store.snapshot().as_of
            );
            if engine.is_finished() {
                anyhow::bail!("the engine stopped");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(begun.elapsed())
    };
    let newest = |ms: &[Message]| ms.iter().map(|m| m.ts).max().unwrap_or(0);
    let outcome = (|| -> anyhow::Result<Json> {
        wait_for(
            stamp(newest(&messages[..history])),
            Duration::from_secs(3600),
        )?;
        eprintln!(
            "  wearflow caught up with {history} events {:.1} s after the first was produced",
            started.elapsed().as_secs_f64()
        );
        let mut latencies = Vec::new();
        for rep in 0..reps {
            let from = history + rep * batch;
            let batch = &messages[from..from + batch];
            // Let the engine settle into waiting for input, as a live engine would be.
            std::thread::sleep(Duration::from_millis(500));
            let sent = Instant::now();
            for m in batch {
                m.send(&producer, &topics)?;
            }
            producer.flush(Duration::from_secs(30))?;
            wait_for(stamp(newest(batch)), Duration::from_secs(60))?;
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(json!({
            "history": history,
            "batch": batch,
            "reps": reps,
            "idle_timeout_ms": idle_ms,
            "update_latency_ms_median": kafka::percentile(&sorted, 0.5),
            "update_latency_ms": latencies,
        }))
    })();
    engine.stop()?;
    std::fs::remove_dir_all(data_dir).ok();
    outcome
}

/// DuckDB's and (with a broker) wearflow's update latency after a batch, per history size.
fn update_latency(plan: &Plan, python: &Path, dir: &Path) -> anyhow::Result<Json> {
    let needed = plan.history.iter().max().copied().unwrap_or(0) + plan.reps * plan.batch;
    // About 1,500 events per machine and simulated hour (digging 16 h a day): enough hours
    // for the largest history.
    let machines = 100;
    let hours = (needed as u64).div_ceil(machines as u64 * 1_400) + 12;
    let mut events = simulated(machines, hours, 3);
    anyhow::ensure!(
        events.len() >= needed,
        "{} simulated events, {needed} needed",
        events.len()
    );
    // The history is the first N events in event-time order (as duckdb_peer.py orders them).
    events.sort_by_key(|e| e.ts_ms());
    write_jsonl(dir, &events)?;
    let messages: Vec<Message> = events.iter().map(Message::of).collect();
    drop(events);
    let history_arg = plan
        .history
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let duckdb = run_peer(
        python,
        "duckdb_peer.py",
        &[
            &dir.display().to_string(),
            "--update-latency",
            "--history",
            &history_arg,
            "--batch",
            &plan.batch.to_string(),
            "--reps",
            &plan.reps.to_string(),
        ],
    )?;
    let mut rows = Vec::new();
    for &history in plan.history {
        let duck = duckdb["results"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["history"] == json!(history)))
            .cloned()
            .unwrap_or(Json::Null);
        let duck_ms = duck["update_latency_ms_median"].as_f64();
        eprintln!(
            "history {history}: DuckDB append + recompute {:.1} ms",
            duck_ms.unwrap_or(f64::NAN)
        );
        let wearflow = match plan.brokers {
            Some(brokers) => wearflow_update_latency(
                brokers,
                &messages,
                history,
                plan.batch,
                plan.reps,
                plan.idle_ms,
            )?,
            None => Json::Null,
        };
        let wearflow_ms = wearflow["update_latency_ms_median"].as_f64();
        if let (Some(w), Some(d)) = (wearflow_ms, duck_ms) {
            eprintln!(
                "history {history}: wearflow {w:.1} ms; DuckDB ÷ wearflow {:.1}",
                d / w
            );
        }
        rows.push(json!({
            "history": history,
            "duckdb": duck,
            "wearflow": wearflow,
            "duckdb_over_wearflow": match (duck_ms, wearflow_ms) {
                (Some(d), Some(w)) => json!(d / w),
                _ => Json::Null,
            },
        }));
    }
    Ok(json!({ "batch": plan.batch, "by_history": rows, "duckdb_threads": duckdb["threads"] }))
}

/// Runs the peer comparison and returns its JSON result.
pub fn run(plan: &Plan) -> anyhow::Result<Json> {
    let python = peer_python()?;
    let root = std::env::temp_dir().join(format!("wearflow-bench-peers-{}", std::process::id()));
    let outcome = (|| -> anyhow::Result<Json> {
        eprintln!("-- throughput on the same files");
        let throughput = throughput(plan, &python, &root.join("small"))?;
        eprintln!("-- update latency after a batch");
        let update = if plan.history.is_empty() {
            Json::Null
        } else {
            update_latency(plan, &python, &root.join("large"))?
        };
        Ok(json!({
            "benchmark": "peers",
            "throughput": throughput,
            "update_latency": update,
        }))
    })();
    std::fs::remove_dir_all(&root).ok();
    outcome
}
