//! `wearflow-bench freshness`: the simulator paced in real time at a fixed rate straight into
//! the engine (no Kafka), and the time from each telemetry reading's arrival to its effect
//! being readable over HTTP.
//!
//! ```text
//!  simulator (paced: speed = rate / the fleet's events per simulated second)
//!     │  a reading of event time t exists from started + (t - start) / speed
//!     ▼
//!  engine (2 workers, every view) ── serving store ── HTTP ── GET /views/tooth_wear/changes
//!                                                                 │  server-sent events
//!  watcher: a reading is readable once tooth_wear shows its device ◄┘
//!           with last_seen_ms at or past t; latency = receipt − arrival
//! ```
//!
//! Arrival is the reading's place in the simulator's schedule (`started` is the engine's
//! `wearflow_simulator_started_seconds`), not the moment the engine's reader polled it, so
//! the reader's polling delay counts against the engine. The same seed and fleet run
//! headless in the benchmark enumerate the readings to wait for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wearflow::config::{Config, SourceConfig};
use wearflow::http::{AppState, HttpAccess};
use wearflow::metrics::Metrics;
use wearflow::runtime;
use wearflow_sinks::ServingStore;
use wearflow_sources::{Event, Simulator, SimulatorConfig};

use crate::kafka::percentile;

/// The simulated clock starts at 07:00 of the simulator's first day: the fleet digs from
/// 06:00, so the event rate is steady from the start.
const START_OFFSET_MS: u64 = 7 * 3_600_000;

/// What to measure.
#[derive(clap::Args)]
pub(crate) struct Plan {
    /// Events per second (telemetry, orders, stock).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup_seconds: f64,
    /// Machines in the simulated fleet.
    #[arg(long, default_value_t = 50)]
    machines: usize,
    /// Timely workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Record time spent per operator and report the N operators with the most own time.
    #[arg(long, default_value_t = 0)]
    operators: usize,
}

/// Readings still waiting for their effect, per device, in event-time order.
#[derive(Default)]
struct Waiting {
    by_device: HashMap<String, VecDeque<u64>>,
    /// Readings in `by_device`.
    left: usize,
    latencies: Vec<f64>,
}

impl Waiting {
    fn add(&mut self, device: &str, ts: u64) {
        match self.by_device.get_mut(device) {
            Some(queue) => queue.push_back(ts),
            None => {
                self.by_device
                    .insert(device.to_string(), VecDeque::from([ts]));
            }
        }
        self.left += 1;
    }

    /// `tooth_wear` shows `device` seen at `last_seen` at Unix time `now`: every reading of the
    /// device up to then is readable.
    fn seen(&mut self, device: &str, last_seen: u64, now: f64, arrival: impl Fn(u64) -> f64) {
        if let Some(queue) = self.by_device.get_mut(device) {
            while let Some(&ts) = queue.front() {
                if ts > last_seen {
                    break;
                }
                self.latencies.push(now - arrival(ts));
                queue.pop_front();
                self.left -= 1;
            }
        }
    }
}

/// The parts of a `tooth_wear` change event the watcher reads (other fields are skipped).
#[derive(serde::Deserialize)]
struct Payload {
    #[serde(default)]
    rows: Vec<ToothRow>,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(serde::Deserialize)]
struct Change {
    row: Option<ToothRow>,
}

#[derive(serde::Deserialize)]
struct ToothRow {
    device_id: String,
    last_seen_ms: Option<u64>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs the benchmark and returns its JSON result.
pub(crate) fn run(plan: &Plan) -> anyhow::Result<serde_json::Value> {
    let start = crate::SIM_START_MS + START_OFFSET_MS;
    let sim_config = SimulatorConfig {
        seed: 1,
        machines: plan.machines,
        start_ms: start,
        ..SimulatorConfig::default()
    };
    // The fleet's rate over its first ten simulated minutes sets the speed.
    let mut calibration = Simulator::new(sim_config.clone());
    let mut events = Vec::new();
    calibration.advance(start + 600_000, &mut events);
    let per_sim_second = events.len() as f64 / 600.0;
    anyhow::ensure!(per_sim_second > 0.0, "the simulated fleet sends nothing");
    let speed = plan.rate / per_sim_second;
    let span_ms = ((plan.warmup_seconds + plan.seconds) * speed * 1000.0) as u64;
    let measured_from = start + (plan.warmup_seconds * speed * 1000.0) as u64;

    // The readings to wait for: those of the measured span, per device.
    let mut waiting = Waiting::default();
    let mut sim = Simulator::new(sim_config);
    let mut all = Vec::new();
    sim.advance(start + span_ms, &mut all);
    for event in &all {
        if let Event::Telemetry(t) = event
            && t.ts.0 >= measured_from
        {
            waiting.add(&t.device_id, t.ts.0);
        }
    }
    let measured = waiting.left;
    waiting
        .by_device
        .values_mut()
        .for_each(|q| q.make_contiguous().sort_unstable());
    let total_events = all.len();
    drop(all);

    let data_dir =
        std::env::temp_dir().join(format!("wearflow-bench-fresh-{}", std::process::id()));
    let config = Config {
        workers: plan.workers,
        data_dir: data_dir.clone(),
        source: SourceConfig::Simulator {
            seed: 1,
            machines: plan.machines,
            speed,
            duration_ms: Some(span_ms),
            start_ms: Some(start),
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = tokio.block_on(wearflow::http::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        ready: Arc::new(AtomicBool::new(true)),
        sql: None,
        dataflows: None,
        models: config.models.clone(),
        access: HttpAccess::default(),
        checkpoints: config.checkpoint_trigger.clone(),
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio.spawn(wearflow::http::serve(listener, state, async move {
        http_stopped.await.ok();
    }));

    // Subscribe before the engine starts, so the first changes are not missed.
    let url = format!("http://{addr}/views/tooth_wear/changes");
    let response = tokio.block_on(reqwest::get(&url))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );

    let log = (plan.operators > 0).then(|| Arc::new(wearflow::introspection::DataflowLog::new()));
    let engine = {
        let (config, store, metrics, stop, log) = (
            config.clone(),
            Arc::clone(&store),
            Arc::clone(&metrics),
            Arc::clone(&stop),
            log.clone(),
        );
        std::thread::spawn(move || runtime::run_with_log(&config, store, metrics, stop, log))
    };
    let wall = Instant::now();
    let started = loop {
        let started = metrics.simulator_started_seconds.get();
        if started > 0.0 {
            break started;
        }
        anyhow::ensure!(
            !engine.is_finished() && wall.elapsed() < Duration::from_secs(30),
            "the engine did not start its simulator"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let arrival = move |ts: u64| started + (ts - start) as f64 / 1000.0 / speed;
    let engine_done = Arc::new(AtomicBool::new(false));

    let watch = {
        let engine_done = Arc::clone(&engine_done);
        async move {
            let mut response = response;
            let mut buffer: Vec<u8> = Vec::new();
            let mut settled_at: Option<Instant> = None;
            let mut events = 0usize;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await;
                let now = unix_now();
                match next {
                    Ok(Ok(Some(chunk))) => buffer.extend_from_slice(&chunk),
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {}
                }
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&block);
                    let data: String = text
                        .lines()
                        .filter_map(|line| line.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    events += 1;
                    let payload: Payload = serde_json::from_str(&data)?;
                    let rows = payload
                        .rows
                        .iter()
                        .chain(payload.changes.iter().filter_map(|c| c.row.as_ref()));
                    for row in rows {
                        if let Some(seen) = row.last_seen_ms {
                            waiting.seen(&row.device_id, seen, now, arrival);
                        }
                    }
                }
                if waiting.left == 0 {
                    break;
                }
                // After the engine has published its end, give the stream a little longer.
                if engine_done.load(Ordering::Acquire) {
                    let since = *settled_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        break;
                    }
                }
            }
            anyhow::Ok((waiting, events))
        }
    };
    let watcher = tokio.spawn(watch);
    let summary = engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine panicked"))??;
    let wall_seconds = wall.elapsed().as_secs_f64();
    engine_done.store(true, Ordering::Release);
    let (waiting, sse_events) = tokio.block_on(watcher)??;
    stop_http.send(()).ok();
    tokio.block_on(server)??;
    std::fs::remove_dir_all(&data_dir).ok();

    let unseen = waiting.left;
    let mut latencies = waiting.latencies;
    latencies.sort_by(f64::total_cmp);
    let ms = |q: f64| percentile(&latencies, q) * 1000.0;
    eprintln!(
        "freshness at {:.0} events/s ({} readings measured): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        plan.rate,
        latencies.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    let operators = crate::top_operators(log.as_deref(), plan.operators);
    Ok(serde_json::json!({
        "top_operators": operators,
        "benchmark": "freshness",
        "machines": plan.machines,
        "workers": plan.workers,
        "target_events_per_sec": plan.rate,
        "speed": speed,
        "events": total_events,
        "engine_records": summary.records,
        "scheduled_seconds": span_ms as f64 / speed / 1000.0,
        "engine_wall_seconds": wall_seconds,
        "warmup_seconds": plan.warmup_seconds,
        "measured_readings": measured,
        "readable_readings": latencies.len(),
        "unseen_readings": unseen,
        "sse_events": sse_events,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": ms(1.0),
    }))
}
