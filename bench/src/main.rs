//! `wearflow-bench`: end-to-end benchmarks of the engine (run them from a release build).
//!
//! `wearflow-bench ingest` runs the simulator straight into the dataflow with every view on
//! and prints, as its last line, one JSON object with `events_per_sec` and `peak_rss_bytes`.
//! `wearflow-bench kafka --brokers HOST:PORT` measures the broker's ceilings and wearflow end
//! to end from Kafka (see `bench/README.md`). `wearflow-bench sql` measures point lookups and
//! a group-by on a 1,000,000-row view (pgwire and HTTP) and a time-range aggregate over
//! 10,000,000 archived rows against DuckDB. `wearflow-bench cluster` compares a replay by 1
//! process × 2 workers with a 2-process cluster × 1 worker (the real `wearflow` binary).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

mod cluster;
mod freshness;
mod kafka;
mod limit;
mod peers;
mod recovery;
mod sql;
use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow::runtime;
use wearflow_sinks::ServingStore;

/// The simulator's default start (2026-01-01T00:00:00Z), used when no start is configured.
const SIM_START_MS: u64 = 1_767_225_600_000;

/// mimalloc instead of the system allocator: the dataflow allocates and frees many small
/// keys and rows, and glibc's malloc took about a third of ingest CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wearflow-bench", about = "wearflow benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The simulated fleet a benchmark runs on.
#[derive(Args, Clone, Copy, Debug)]
struct Fleet {
    /// Machines in the simulated fleet.
    #[arg(long, default_value_t = 50)]
    machines: usize,
    /// Simulated hours (the fleet digs 06:00–22:00).
    #[arg(long, default_value_t = 12)]
    hours: u64,
}

/// The fleet of `wearflow-bench all`: the defaults above.
const DEFAULT_FLEET: Fleet = Fleet {
    machines: 50,
    hours: 12,
};

#[derive(Subcommand)]
enum Command {
    /// In-process ingest: simulator → all views → serving store, as fast as possible.
    Ingest {
        #[command(flatten)]
        fleet: Fleet,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Logical time resolution in ms.
        #[arg(long, default_value_t = 100)]
        resolution_ms: u64,
        /// Print resident memory and the published `as_of` every this many seconds (0 = never).
        #[arg(long, default_value_t = 0)]
        rss_every_secs: u64,
        /// Predict with this failure model (`wearflow train --out`) instead of physics.
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Score each device at most once per this much event time (default: the engine's
        /// `[dataflow] score_interval_ms`; 0 = on every change of its features).
        #[arg(long)]
        score_interval_ms: Option<u64>,
        /// Record time spent per operator and report the N operators with the most own time
        /// (`top_operators`); recording costs a few percent.
        #[arg(long, default_value_t = 0)]
        operators: usize,
    },
    /// Kafka: the broker's produce/consume ceilings, wearflow end to end at maximum rate, and
    /// freshness (produce → readable) at fixed rates.
    Kafka {
        /// Bootstrap servers of the broker to measure.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[command(flatten)]
        fleet: Fleet,
        /// Partitions per topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Fixed rates to measure freshness at, events per second.
        #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
        rates: Vec<f64>,
        /// Seconds of production per fixed rate.
        #[arg(long, default_value_t = 10.0)]
        rate_seconds: f64,
        /// The engine's idle timeout (ms): how soon a silent partition stops holding the
        /// frontier back.
        #[arg(long, default_value_t = 200)]
        idle_ms: u64,
    },
    /// Freshness in process: the simulator paced in real time at `--rate` events/s into the
    /// engine; each telemetry reading's arrival until its effect is readable over HTTP
    /// (`GET /views/tooth_wear/changes`).
    Freshness(freshness::Plan),
    /// The ceiling: a minimal differential count and sum per key over the same events.
    Limit {
        #[command(flatten)]
        fleet: Fleet,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Every benchmark in one run (Kafka only with --brokers): writes
    /// `bench/results/<date>.json` and prints a table.
    All {
        /// A Kafka-protocol broker for the Kafka figures (none = skip them).
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Peers on the same work: wearflow, Pathway and a DuckDB recompute over the same files
    /// (throughput, agreement of the answers), and the update latency after a batch at each
    /// history size against DuckDB's recompute (wearflow's side needs --brokers). Installs
    /// the peers with `bench/peers/setup`.
    Peers {
        #[command(flatten)]
        fleet: Fleet,
        /// History sizes (events) for the update latency; empty = skip it.
        #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
        history: Vec<usize>,
        /// Events per batch.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Batches per history size.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// A Kafka-protocol broker for wearflow's update latency.
        #[arg(long)]
        brokers: Option<String>,
        /// Leave Pathway out.
        #[arg(long)]
        skip_pathway: bool,
        /// wearflow's idle timeout (ms) in the update latency: the batch's newest events are
        /// readable once their partition has been quiet this long.
        #[arg(long, default_value_t = 20)]
        idle_ms: u64,
    },
    /// Scale-out: the same replay by 1 process × 2 workers and by 2 processes × 1 worker
    /// (needs `cargo build --release -p wearflow` next to this binary).
    Cluster {
        #[command(flatten)]
        fleet: Fleet,
    },
    /// Recovery: ingest N events from Kafka, kill -9 the engine after a checkpoint, restart;
    /// seconds until `/ready` and until the views are as current as before the kill (needs
    /// `cargo build --release -p wearflow` next to this binary).
    Recovery {
        /// The Kafka-protocol broker.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Events ingested before the kill.
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        /// Machines of the simulated fleet (hours grow until there are enough events).
        #[arg(long, default_value_t = 200)]
        machines: usize,
    },
    /// HTTP under load: connections reading `GET /views/tooth_wear/{key}` while the engine
    /// ingests from Kafka at a fixed rate (needs the release `wearflow` binary).
    HttpLoad {
        /// The Kafka-protocol broker.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Events per second produced during the measurement.
        #[arg(long, default_value_t = 50_000.0)]
        rate: f64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Machines of the simulated fleet.
        #[arg(long, default_value_t = 50)]
        machines: usize,
    },
    /// SQL: point lookups and a group-by on a big live view (pgwire, HTTP), and a
    /// time-range aggregate over the Parquet archive against DuckDB (needs `pip install duckdb`).
    Sql {
        /// Rows of the live view.
        #[arg(long, default_value_t = 1_000_000)]
        view_rows: usize,
        /// Point lookups per protocol.
        #[arg(long, default_value_t = 2_000)]
        lookups: usize,
        /// Archived telemetry rows.
        #[arg(long, default_value_t = 10_000_000)]
        archive_rows: usize,
    },
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Cluster {
            fleet: Fleet { machines, hours },
        } => {
            let dir =
                std::env::temp_dir().join(format!("wearflow-bench-cluster-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let result = cluster::run(machines, hours, &dir);
            std::fs::remove_dir_all(&dir).ok();
            println!("{}", result?);
            Ok(())
        }
        Command::Recovery {
            brokers,
            events,
            machines,
        } => {
            let dir = std::env::temp_dir()
                .join(format!("wearflow-bench-recovery-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let result = recovery::recovery(&brokers, events, machines, &dir);
            std::fs::remove_dir_all(&dir).ok();
            println!("{}", result?);
            Ok(())
        }
        Command::HttpLoad {
            brokers,
            rate,
            connections,
            seconds,
            machines,
        } => {
            let dir =
                std::env::temp_dir().join(format!("wearflow-bench-http-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let result = recovery::http_load(&brokers, rate, connections, seconds, machines, &dir);
            std::fs::remove_dir_all(&dir).ok();
            println!("{}", result?);
            Ok(())
        }
        Command::Sql {
            view_rows,
            lookups,
            archive_rows,
        } => {
            let dir =
                std::env::temp_dir().join(format!("wearflow-bench-sql-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(sql::run(view_rows, lookups, archive_rows, &dir));
            std::fs::remove_dir_all(&dir).ok();
            println!("{}", result?);
            Ok(())
        }
        Command::Kafka {
            brokers,
            fleet: Fleet { machines, hours },
            partitions,
            rates,
            rate_seconds,
            idle_ms,
        } => {
            let result = kafka::run(
                &brokers,
                machines,
                hours,
                partitions,
                &rates,
                rate_seconds,
                idle_ms,
            )?;
            println!("{result}");
            Ok(())
        }
        Command::Ingest {
            fleet: Fleet { machines, hours },
            workers,
            resolution_ms,
            rss_every_secs,
            model,
            score_interval_ms,
            operators,
        } => {
            let result = ingest(
                machines,
                hours,
                workers,
                resolution_ms,
                rss_every_secs,
                Scoring {
                    model: model.as_deref(),
                    interval_ms: score_interval_ms,
                },
                operators,
            )?;
            println!("{result}");
            Ok(())
        }
        Command::Freshness(plan) => {
            println!("{}", freshness::run(&plan)?);
            Ok(())
        }
        Command::Limit {
            fleet: Fleet { machines, hours },
            workers,
        } => {
            println!("{}", limit::run(machines, hours, workers)?);
            Ok(())
        }
        Command::Peers {
            fleet: Fleet { machines, hours },
            history,
            batch,
            reps,
            brokers,
            skip_pathway,
            idle_ms,
        } => {
            let plan = peers::Plan {
                machines,
                hours,
                history: &history,
                batch,
                reps,
                brokers: brokers.as_deref(),
                skip_pathway,
                idle_ms,
            };
            println!("{}", peers::run(&plan)?);
            Ok(())
        }
        Command::All { brokers } => all(brokers.as_deref()),
    }
}

/// Per alert kind: alerts raised and distinct subjects.
fn alerts_by_kind(snapshot: &wearflow_sinks::store::Snapshot) -> serde_json::Value {
    let Some(view) = snapshot.view("alerts") else {
        return serde_json::Value::Null;
    };
    let column = |name: &str| view.schema.columns.iter().position(|c| c.name == name);
    let (Some(kind), Some(subject)) = (column("kind"), column("subject")) else {
        return serde_json::Value::Null;
    };
    let mut kinds: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for row in view.iter() {
        let text = |i: usize| match &row[i] {
            wearflow_operators::Value::Str(s) => s.to_string(),
            other => format!("{other:?}"),
        };
        let entry = kinds.entry(text(kind)).or_default();
        entry.0 += 1;
        entry.1.insert(text(subject));
    }
    kinds
        .into_iter()
        .map(|(kind, (alerts, subjects))| {
            (
                kind,
                serde_json::json!({"alerts": alerts, "subjects": subjects.len()}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// How an ingest run predicts.
#[derive(Clone, Copy, Default)]
struct Scoring<'a> {
    /// A failure model directory (none: physics).
    model: Option<&'a std::path::Path>,
    /// `[dataflow] score_interval_ms` (none: the default).
    interval_ms: Option<u64>,
}

/// In-process ingest: simulator → every view → serving store.
fn ingest(
    machines: usize,
    hours: u64,
    workers: usize,
    resolution_ms: u64,
    rss_every_secs: u64,
    scoring: Scoring,
    top_operators: usize,
) -> anyhow::Result<serde_json::Value> {
    let data = std::env::temp_dir().join(format!("wearflow-bench-{}", std::process::id()));
    let models = match scoring.model {
        Some(dir) => wearflow_dataflows::model::ModelSlot::load_from(dir)?,
        None => Default::default(),
    };
    let model_version = models.version();
    let mut config = Config {
        models,
        workers,
        clock: ClockConfig {
            resolution_ms,
            ..ClockConfig::default()
        },
        data_dir: data.clone(),
        source: SourceConfig::Simulator {
            seed: 1,
            machines,
            speed: 0.0,
            duration_ms: Some(hours * 3_600_000),
            start_ms: None,
        },
        ..Config::default()
    };
    if let Some(interval_ms) = scoring.interval_ms {
        config.dataflow.score_interval_ms = interval_ms;
    }
    let score_interval_ms = config.dataflow.score_interval_ms;
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let started = Instant::now();
    if rss_every_secs > 0 {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(rss_every_secs));
                let snapshot = store.snapshot();
                let simulated_h = snapshot.as_of.saturating_sub(SIM_START_MS) as f64 / 3.6e6;
                eprintln!(
                    "rss: wall {:>6.1} s  simulated {:>7.1} h  rss {:>6.0} MiB",
                    started.elapsed().as_secs_f64(),
                    simulated_h.max(0.0),
                    wearflow::backpressure::rss_bytes().unwrap_or(0) as f64 / 1048576.0
                );
            }
        });
    }
    let log = (top_operators > 0).then(|| Arc::new(wearflow::introspection::DataflowLog::new()));
    let summary = runtime::run_with_log(
        &config,
        Arc::clone(&store),
        Arc::new(wearflow::metrics::Metrics::new()),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
        log.clone(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&data).ok();
    let snapshot = store.snapshot();
    let rows: usize = snapshot.views.values().map(|v| v.len()).sum();
    eprintln!(
        "ingested {} events in {seconds:.2} s with {workers} workers; {rows} view rows at as_of {}",
        summary.records, snapshot.as_of
    );
    let operators = crate::top_operators(log.as_deref(), top_operators);
    let mut result = serde_json::json!({
        "benchmark": "ingest",
        "machines": machines,
        "simulated_hours": hours,
        "workers": workers,
        "events": summary.records,
        "seconds": seconds,
        "events_per_sec": summary.records as f64 / seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "view_rows": rows,
        "rows_per_view": snapshot
            .views
            .iter()
            .map(|(name, view)| (name.to_string(), view.len()))
            .collect::<BTreeMap<String, usize>>(),
        "alerts_by_kind": alerts_by_kind(&snapshot),
        "model_version": model_version,
        "score_interval_ms": score_interval_ms,
    });
    if !operators.is_empty() {
        result["top_operators"] = operators.into();
    }
    Ok(result)
}

/// The `n` operators with the most own time in `log`, as JSON (empty without a log).
pub(crate) fn top_operators(
    log: Option<&wearflow::introspection::DataflowLog>,
    n: usize,
) -> Vec<serde_json::Value> {
    log.map(|log| log.operator_times())
        .unwrap_or_default()
        .into_iter()
        .take(n)
        .map(|op| {
            serde_json::json!({
                "name": op.name,
                "address": op.address,
                "own_seconds": op.own.as_secs_f64(),
                "seconds": op.total.as_secs_f64(),
            })
        })
        .collect()
}

/// Every benchmark in one run, one JSON file, one table.
fn all(brokers: Option<&str>) -> anyhow::Result<()> {
    let mut results = serde_json::Map::new();
    let mut table: Vec<(String, String)> = Vec::new();
    let rate = |v: &serde_json::Value, path: &[&str]| {
        let mut v = v;
        for p in path {
            v = &v[*p];
        }
        v.as_f64().unwrap_or(f64::NAN)
    };
    eprintln!("== ingest");
    let Fleet { machines, hours } = DEFAULT_FLEET;
    let ingest = ingest(machines, hours, 2, 100, 0, Scoring::default(), 0)?;
    let ingest_rate = rate(&ingest, &["events_per_sec"]);
    table.push((
        "ingest, all views (events/s)".into(),
        format!("{ingest_rate:.0}"),
    ));
    eprintln!("== limit");
    let limit = limit::run(machines, hours, 2)?;
    let limit_rate = rate(&limit, &["events_per_sec"]);
    table.push((
        "minimal differential count+sum (events/s)".into(),
        format!("{limit_rate:.0}"),
    ));
    table.push((
        "ingest ÷ ceiling".into(),
        format!("{:.3}", ingest_rate / limit_rate),
    ));
    results.insert("ingest".into(), ingest);
    results.insert("limit".into(), limit);
    eprintln!("== sql");
    let dir = std::env::temp_dir().join(format!("wearflow-bench-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let sql = runtime.block_on(sql::run(1_000_000, 2_000, 10_000_000, &dir.join("sql")))?;
    for (name, path) in [
        (
            "pgwire point lookup p99 (ms)",
            &["point_lookup_pgwire", "p99_ms"][..],
        ),
        (
            "HTTP point lookup p99 (ms)",
            &["point_lookup_http", "p99_ms"][..],
        ),
        (
            "group-by over 1M rows p50 (ms)",
            &["group_by_1m", "p50_ms"][..],
        ),
        (
            "archive time range ÷ DuckDB",
            &["archive", "wearflow_over_duckdb"][..],
        ),
    ] {
        table.push((name.into(), format!("{:.3}", rate(&sql, path))));
    }
    results.insert("sql".into(), sql);
    eprintln!("== cluster");
    std::fs::create_dir_all(dir.join("cluster"))?;
    match cluster::run(machines, hours, &dir.join("cluster")) {
        Ok(cluster) => {
            table.push((
                "2 processes × 1 worker ÷ 1 × 2".into(),
                format!("{:.3}", rate(&cluster, &["cluster_over_single"])),
            ));
            results.insert("cluster".into(), cluster);
        }
        Err(e) => eprintln!("cluster skipped: {e}"),
    }
    if let Some(brokers) = brokers {
        eprintln!("== kafka");
        let kafka = kafka::run(
            brokers,
            machines,
            hours,
            4,
            &[10_000.0, 50_000.0, 100_000.0],
            10.0,
            200,
        )?;
        table.push((
            "Kafka end to end ÷ broker consume ceiling".into(),
            format!("{:.3}", rate(&kafka, &["e2e_share_of_consume_ceiling"])),
        ));
        results.insert("kafka".into(), kafka);
    }
    eprintln!("== peers");
    let plan = peers::Plan {
        machines,
        hours,
        history: &[1_000_000, 10_000_000],
        batch: 1_000,
        reps: 5,
        brokers,
        skip_pathway: false,
        idle_ms: 20,
    };
    match peers::run(&plan) {
        Ok(peers) => {
            let throughput = &peers["throughput"];
            for peer in ["pathway", "duckdb"] {
                table.push((
                    format!("wearflow ÷ {peer} throughput (answers agree)"),
                    format!(
                        "{:.3} ({})",
                        rate(throughput, &[peer, "wearflow_over_peer"]),
                        throughput[peer]["agrees_with_wearflow"]
                    ),
                ));
            }
            for row in peers["update_latency"]["by_history"]
                .as_array()
                .into_iter()
                .flatten()
            {
                table.push((
                    format!(
                        "update after a batch at {} events: DuckDB ÷ wearflow",
                        row["history"]
                    ),
                    format!("{:.1}", rate(row, &["duckdb_over_wearflow"])),
                ));
            }
            results.insert("peers".into(), peers);
        }
        Err(e) => eprintln!("peers skipped: {e}"),
    }
    std::fs::remove_dir_all(&dir).ok();
    let date = std::process::Command::new("date")
        .arg("+%F")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "latest".into());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("{date}.json"));
    std::fs::create_dir_all(out.parent().expect("a results directory"))?;
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::Value::Object(results))?,
    )?;
    println!("| figure | value |\n| --- | --- |");
    for (name, value) in table {
        println!("| {name} | {value} |");
    }
    println!("written to {}", out.display());
    Ok(())
}
