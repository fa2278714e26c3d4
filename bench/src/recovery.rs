//! `wearflow-bench recovery` and `wearflow-bench http-load`, on the real `wearflow` binary
//! (`cargo build --release -p wearflow`) reading from a Kafka-protocol broker.
//!
//! - recovery: produce N simulated events, let the engine ingest them all and checkpoint,
//!   `kill -9` it, restart it, and time how long until `/ready` answers 200 and until the
//!   views' `as_of` is back where it was before the kill.
//! - http-load: while a paced producer feeds the engine at a fixed rate, 200 connections
//!   read `GET /views/tooth_wear/{key}` as fast as they can; latency percentiles, errors, and
//!   what the engine ingested meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value as Json, json};
use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow_sinks::kafka::Producer;
use wearflow_sources::{KafkaSourceConfig, KafkaTopics, SimulatorConfig, simulate};

use crate::cluster::wearflow_binary;
use crate::kafka::{Message, create, percentile, topics};

const TOKEN: &str = "wearflow-bench-token";

/// Simulated events until there are at least `n` (whole simulated hours of `machines`).
fn events(n: usize, machines: usize) -> Vec<Message> {
    let mut hours = 12;
    loop {
        let (events, _) = simulate(
            SimulatorConfig {
                seed: 1,
                machines,
                ..SimulatorConfig::default()
            },
            hours * 3_600_000,
        );
        if events.len() >= n || hours > 24 * 365 {
            return events.iter().take(n).map(Message::of).collect();
        }
        // The fleet digs 06:00–22:00: scale by what the first attempt produced.
        hours = (hours as f64 * n as f64 / events.len().max(1) as f64 * 1.05).ceil() as u64;
    }
}

/// A started `wearflow run` and its HTTP base.
struct Engine {
    child: Child,
    base: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn write_config(dir: &Path, brokers: &str, topics: &KafkaTopics) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let config = Config {
        workers: 2,
        data_dir: dir.to_path_buf(),
        clock: ClockConfig {
            idle_timeout_ms: 200,
            ..ClockConfig::default()
        },
        source: SourceConfig::Kafka(KafkaSourceConfig {
            brokers: brokers.to_string(),
            topics: topics.clone(),
            group_id: format!("bench-recovery-{}", std::process::id()),
            ..KafkaSourceConfig::default()
        }),
        ..Config::default()
    };
    let path = dir.join("wearflow.toml");
    std::fs::write(&path, toml::to_string(&config)?)?;
    Ok(path)
}

fn start(binary: &Path, config: &Path, dir: &Path) -> anyhow::Result<Engine> {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("WEARFLOW_AUTH_TOKENS", format!("bench:admin:{TOKEN}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start wearflow run")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("wearflow is serving on ") {
                tx.send(rest.trim().to_string()).ok();
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .context("wearflow did not print its address")?;
    Ok(Engine { child, base })
}

fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1_000)
        .build()?)
}

/// Sum of a metric over its labels in a Prometheus scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

async fn as_of(client: &reqwest::Client, base: &str) -> Option<i64> {
    let views: Json = client
        .get(format!("{base}/views"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    views["as_of"].as_i64()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// The recovery benchmark: `n` events, kill -9 after all are ingested and checkpointed.
pub fn recovery(brokers: &str, n: usize, machines: usize, dir: &Path) -> anyhow::Result<Json> {
    let binary = wearflow_binary()?;
    let topics = topics("recovery");
    create(brokers, &topics, 4)?;
    eprintln!("recovery: simulating {n} events");
    let messages = events(n, machines);
    let n = messages.len();
    eprintln!("recovery: producing {n} events");
    let producer = Producer::new(brokers, &Default::default())?;
    for m in &messages {
        m.send(&producer, &topics)?;
    }
    producer.flush(Duration::from_secs(600))?;
    drop(messages);
    let data = dir.join("engine");
    let config = write_config(&data, brokers, &topics)?;
    let http = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = client()?;

    let began = Instant::now();
    let engine = start(&binary, &config, &data)?;
    // Ingest everything, then wait for a checkpoint that covers it.
    let (ingest_seconds, sequence) = http.block_on(async {
        loop {
            let text = scrape(&client, &engine.base).await.unwrap_or_default();
            if metric(&text, "wearflow_source_records_total") as usize >= n {
                return (
                    began.elapsed().as_secs_f64(),
                    metric(&text, "wearflow_checkpoint_sequence"),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eprintln!("recovery: ingested {n} events in {ingest_seconds:.1} s; waiting for a checkpoint");
    let before = http.block_on(async {
        loop {
            let text = scrape(&client, &engine.base).await.unwrap_or_default();
            if metric(&text, "wearflow_checkpoint_sequence") > sequence {
                return as_of(&client, &engine.base).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let before = before.context("no as_of before the kill")?;
    let wal_bytes = dir_bytes(&data.join("checkpoint"));
    let mut engine = engine;
    engine.child.kill()?;
    engine.child.wait()?;
    drop(engine);
    eprintln!("recovery: killed (-9) with views as of {before}; restarting");

    let killed = Instant::now();
    let engine = start(&binary, &config, &data)?;
    let serving = killed.elapsed().as_secs_f64();
    let (ready, current) = http.block_on(async {
        let mut ready = None;
        loop {
            if ready.is_none()
                && let Ok(r) = client.get(format!("{}/ready", engine.base)).send().await
                && r.status() == 200
            {
                ready = Some(killed.elapsed().as_secs_f64());
            }
            if let Some(a) = as_of(&client, &engine.base).await
                && a >= before
            {
                return (ready, killed.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let ready = ready.unwrap_or(current);
    drop(engine);
    Ok(json!({
        "benchmark": "recovery",
        "events": n,
        "ingest_seconds": ingest_seconds,
        "checkpoint_dir_bytes": wal_bytes,
        "restart_to_serving_seconds": serving,
        "restart_to_ready_seconds": ready,
        "restart_to_current_views_seconds": current,
    }))
}

/// The HTTP load benchmark: point reads on `tooth_wear` by `connections` connections for
/// `seconds` while the engine ingests at `rate` events/s.
pub fn http_load(
    brokers: &str,
    rate: f64,
    connections: usize,
    seconds: f64,
    machines: usize,
    dir: &Path,
) -> anyhow::Result<Json> {
    let binary = wearflow_binary()?;
    let topics = topics("httpload");
    create(brokers, &topics, 4)?;
    // Enough events for a warm-up and the measurement at `rate`.
    let wanted = (rate * (seconds + 20.0)) as usize;
    eprintln!("http-load: simulating {wanted} events");
    let messages = Arc::new(events(wanted, machines));
    let data = dir.join("engine");
    let config = write_config(&data, brokers, &topics)?;
    let engine = start(&binary, &config, &data)?;

    // The paced producer: `rate` events/s in 10 ms slices.
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (messages, stop, brokers, topics) = (
            Arc::clone(&messages),
            Arc::clone(&stop),
            brokers.to_string(),
            topics.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let producer = Producer::new(&brokers, &Default::default())?;
            let began = Instant::now();
            let mut sent = 0;
            while sent < messages.len() && !stop.load(Ordering::Acquire) {
                let due = ((began.elapsed().as_secs_f64() * rate) as usize).min(messages.len());
                while sent < due {
                    messages[sent].send(&producer, &topics)?;
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(60))?;
            Ok(sent)
        })
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = client()?;
    let base = engine.base.clone();
    let figures = runtime.block_on(async move {
        // Keys to read: the teeth the view holds after a warm-up.
        let mut keys: Vec<String> = Vec::new();
        let warm = Instant::now();
        while keys.len() < 10 && warm.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let page: Json = match client
                .get(format!("{base}/views/tooth_wear?limit=1000"))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => continue,
            };
            keys = page["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["device_id"].as_str().map(str::to_string))
                .collect();
        }
        if keys.is_empty() {
            bail!("tooth_wear stayed empty");
        }
        let records_before = metric(
            &scrape(&client, &base).await?,
            "wearflow_source_records_total",
        );
        let keys = Arc::new(keys);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (client, base, keys) = (client.clone(), base.clone(), Arc::clone(&keys));
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0u64;
                    let mut i = c;
                    while Instant::now() < deadline {
                        let key = &keys[i % keys.len()];
                        i += 1;
                        let began = Instant::now();
                        match client
                            .get(format!("{base}/views/tooth_wear/{key}"))
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 200 => {
                                if r.bytes().await.is_err() {
                                    errors += 1;
                                    continue;
                                }
                                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await?;
            latencies.extend(l);
            errors += e;
        }
        let records_after = metric(
            &scrape(&client, &base).await?,
            "wearflow_source_records_total",
        );
        latencies.sort_by(f64::total_cmp);
        Ok::<_, anyhow::Error>(json!({
            "requests": latencies.len(),
            "errors": errors,
            "requests_per_sec": latencies.len() as f64 / seconds,
            "p50_ms": percentile(&latencies, 0.50),
            "p99_ms": percentile(&latencies, 0.99),
            "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
            "ingested_per_sec_during": (records_after - records_before) / seconds,
        }))
    })?;
    stop.store(true, Ordering::Release);
    let sent = producer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    drop(engine);
    Ok(json!({
        "benchmark": "http_load",
        "connections": connections,
        "seconds": seconds,
        "produce_rate": rate,
        "produced": sent,
        "figures": figures,
    }))
}
