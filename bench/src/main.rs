//! `wearflow-bench`: end-to-end benchmarks of the engine (run them from a release build).
//!
//! `wearflow-bench ingest` runs the simulator straight into the dataflow with every view on
//! and prints, as its last line, one JSON object with `events_per_sec` and `peak_rss_bytes`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::{Parser, Subcommand};
use wearflow::config::{Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::runtime;
use wearflow_sinks::ServingStore;

#[derive(Parser)]
#[command(name = "wearflow-bench", about = "wearflow benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-process ingest: simulator → all views → serving store, as fast as possible.
    Ingest {
        /// Machines in the simulated fleet.
        #[arg(long, default_value_t = 500)]
        machines: usize,
        /// Simulated hours to ingest.
        #[arg(long, default_value_t = 48)]
        hours: u64,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
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
        Command::Ingest {
            machines,
            hours,
            workers,
        } => {
            let data = std::env::temp_dir().join(format!("wearflow-bench-{}", std::process::id()));
            let config = Config {
                workers,
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
            let store = Arc::new(ServingStore::new(runtime::view_schemas()));
            let started = Instant::now();
            let summary = runtime::run(
                &config,
                Arc::clone(&store),
                Arc::new(Metrics::new()),
                Arc::new(AtomicBool::new(false)),
            )?;
            let seconds = started.elapsed().as_secs_f64();
            std::fs::remove_dir_all(&data).ok();
            let snapshot = store.snapshot();
            let rows: usize = snapshot.views.values().map(|v| v.len()).sum();
            eprintln!(
                "ingested {} events in {seconds:.2} s with {workers} workers; {rows} view rows at as_of {}",
                summary.records, snapshot.as_of
            );
            let result = serde_json::json!({
                "benchmark": "ingest",
                "machines": machines,
                "simulated_hours": hours,
                "workers": workers,
                "events": summary.records,
                "seconds": seconds,
                "events_per_sec": summary.records as f64 / seconds,
                "peak_rss_bytes": peak_rss_bytes(),
                "view_rows": rows,
            });
            println!("{result}");
            Ok(())
        }
    }
}
