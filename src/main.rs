//! The `wearflow` command: run the engine, run the demo, or write simulator files.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use wearflow::auth::Authenticator;
use wearflow::config::{ClusterConfig, Config, SourceConfig};
use wearflow::http::{self, AppState, HttpAccess};
use wearflow::introspection::DataflowLog;
use wearflow::metrics::Metrics;
use wearflow::predict::TrainingInput;
use wearflow::runtime;
use wearflow_dataflows::model::Boosting;
use wearflow_sinks::ServingStore;
use wearflow_sinks::kafka::Producer;
use wearflow_sources::kafka::{ensure_topics, event_key};
use wearflow_sources::{
    KafkaTopics, Simulator, SimulatorConfig, StreamKind, simulate, write_jsonl,
};
use wearflow_sql::access::Authenticate;
use wearflow_sql::audit::AuditLog;
use wearflow_sql::pg::PgAccess;

/// mimalloc instead of the system allocator: the dataflow allocates and frees many small
/// keys and rows, and glibc's malloc took about a third of ingest CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wearflow",
    version,
    about = "Streaming dataflow engine for bucket-tooth fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine with a config file (and WEARFLOW_* environment overrides).
    Run {
        /// The config file; defaults apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Replay this directory of JSONL files instead of the configured source.
        #[arg(long)]
        replay: Option<PathBuf>,
        /// HTTP listen address (overrides the config).
        #[arg(long)]
        http: Option<String>,
        /// Postgres wire-protocol listen address (overrides the config).
        #[arg(long)]
        pg: Option<String>,
        /// Keep serving after a finite source ends (until Ctrl-C).
        #[arg(long)]
        serve_after_end: bool,
        /// Cluster mode: this process's index in the hosts file (overrides `[cluster]`).
        #[arg(long, requires = "hosts")]
        process: Option<usize>,
        /// Cluster mode: a file with one `host:port` per process, in process order; every
        /// process runs the configured number of workers.
        #[arg(long, requires = "process")]
        hosts: Option<PathBuf>,
        /// The failure model directory (`wearflow train --out`; overrides `model_dir`).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Train the failure model on history: replays it through the live dataflow, samples the
    /// `features` view, labels from failure work orders, writes MODEL_DIR/model.json and
    /// MODEL_DIR/report.json.
    Train {
        /// A directory of JSONL history (`wearflow simulate --out`); repeat for several.
        #[arg(long, required_unless_present = "from_samples")]
        history: Vec<PathBuf>,
        /// Train on the samples an earlier `--samples-out DIR` wrote instead of replaying
        /// history (same split, same labels; for trying booster settings).
        #[arg(long, conflicts_with_all = ["history", "test_history", "sample_every"])]
        from_samples: Option<PathBuf>,
        /// Score on these histories instead of a held-out split of the training history.
        #[arg(long)]
        test_history: Vec<PathBuf>,
        /// Predict failure within this much operating (event) time, e.g. `24h`.
        #[arg(long, default_value = "24h")]
        horizon: String,
        /// Sample every active device's features this often in event time.
        #[arg(long, default_value = "1h")]
        sample_every: String,
        /// Trees per booster (default: see `Boosting` in dataflows/src/model.rs).
        #[arg(long)]
        iterations: Option<usize>,
        /// Each tree's weight (shrinkage).
        #[arg(long)]
        learning_rate: Option<f32>,
        /// Depth of each tree.
        #[arg(long)]
        max_depth: Option<usize>,
        /// The model directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Also write the labelled samples (train and test) as CSV files into this directory,
        /// for analysis outside wearflow.
        #[arg(long)]
        samples_out: Option<PathBuf>,
    },
    /// Replay history through the live dataflow with a model and write the final
    /// `maintenance_predictions` rows as JSON lines (backtests, batch scoring).
    Predict {
        /// A directory of JSONL history.
        #[arg(long)]
        history: PathBuf,
        /// The model directory.
        #[arg(long)]
        model: PathBuf,
        /// The JSONL file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Simulator + engine + HTTP API in one command, no other service needed.
    Demo {
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Postgres wire-protocol listen address.
        #[arg(long, default_value = "127.0.0.1:6875")]
        pg: String,
        /// Machines in the simulated fleet.
        #[arg(long, default_value_t = 60)]
        machines: usize,
        /// Simulated seconds per wall-clock second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// A failure model directory (`wearflow train --out`); physics predictions without.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Write simulator output as JSONL files (one per stream) or produce it to Kafka.
    Simulate {
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Machines in the fleet.
        #[arg(long, default_value_t = 20)]
        machines: usize,
        /// Simulated duration, e.g. `7d`, `36h`, `90m`.
        #[arg(long, default_value = "1d")]
        duration: String,
        /// Output directory.
        #[arg(long, required_unless_present = "kafka")]
        out: Option<PathBuf>,
        /// Produce to the stream topics of this Kafka cluster (`host:port`) instead.
        #[arg(long, conflicts_with = "out")]
        kafka: Option<String>,
        /// With --kafka: events per second (none = as fast as possible).
        #[arg(long, requires = "kafka")]
        rate: Option<f64>,
        /// With --kafka: partitions of each topic created because it does not exist.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// With --kafka: topics are `<prefix>.telemetry`, `.orders`, `.stock`, `.assets`.
        #[arg(long, default_value = "wearflow")]
        topic_prefix: String,
        /// Also write the true failure and loss times to this file (JSONL).
        #[arg(long)]
        ground_truth: Option<PathBuf>,
        /// Time between two readings of one sensor, e.g. `10s`, `5m`.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// `teeth` (the bucket-tooth fleet, all four streams) or `pump` (slurry pumps whose
        /// bearings degrade: telemetry and failure work orders only; --machines pumps).
        #[arg(long, default_value = "teeth")]
        profile: String,
    },
}

fn parse_duration_ms(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("invalid duration `{text}`"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" | "" => 86_400_000,
        _ => bail!("invalid duration unit in `{text}` (use ms, s, m, h or d)"),
    };
    Ok(number * unit_ms)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate {
            seed,
            machines,
            duration,
            out,
            kafka,
            rate,
            partitions,
            topic_prefix,
            ground_truth,
            interval,
            profile,
        } => {
            let duration_ms = parse_duration_ms(&duration)?;
            let config = SimulatorConfig {
                seed,
                machines,
                telemetry_interval_ms: parse_duration_ms(&interval)?.max(1),
                ..SimulatorConfig::default()
            };
            let pumps = match profile.as_str() {
                "teeth" => false,
                "pump" => true,
                other => bail!("unknown profile `{other}` (teeth or pump)"),
            };
            let truth = match (out, kafka) {
                (Some(out), _) => {
                    let (events, truth) = if pumps {
                        wearflow_sources::simulate_pumps(&config, duration_ms)
                    } else {
                        simulate(config, duration_ms)
                    };
                    write_jsonl(&out, &events)?;
                    println!("wrote {} events to {}", events.len(), out.display());
                    truth
                }
                (None, Some(_)) if pumps => bail!("--profile pump writes files only (--out)"),
                (None, Some(brokers)) => {
                    let topics = KafkaTopics {
                        telemetry: format!("{topic_prefix}.telemetry"),
                        orders: format!("{topic_prefix}.orders"),
                        stock: format!("{topic_prefix}.stock"),
                        assets: format!("{topic_prefix}.assets"),
                    };
                    produce_simulation(config, duration_ms, &brokers, &topics, rate, partitions)?
                }
                (None, None) => bail!("give --out DIR or --kafka BROKERS"),
            };
            if let Some(path) = ground_truth {
                let lines: Vec<String> = truth
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()?;
                std::fs::write(&path, lines.join("\n") + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Command::Run {
            config,
            replay,
            http,
            pg,
            serve_after_end,
            process,
            hosts,
            model,
        } => {
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(dir) = model {
                config.model_dir = Some(dir);
            }
            if let (Some(process), Some(hosts)) = (process, hosts) {
                config.cluster = Some(ClusterConfig::from_hosts_file(process, &hosts)?);
            }
            if let Some(dir) = replay {
                config.source = SourceConfig::Files { dir, speed: 0.0 };
            }
            if let Some(addr) = http {
                config.http_addr = addr;
            }
            if let Some(addr) = pg {
                config.sql.pg_addr = addr;
            }
            serve(config, serve_after_end, Access::Required)
        }
        Command::Demo {
            http,
            pg,
            machines,
            speed,
            seed,
            model,
        } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            // Start the simulated day at 06:00 UTC so that the first shift is digging.
            let start_ms = now_ms - now_ms % 86_400_000 + 6 * 3_600_000;
            let mut config = Config {
                http_addr: http,
                source: SourceConfig::Simulator {
                    seed,
                    machines,
                    speed,
                    duration_ms: None,
                    start_ms: Some(start_ms),
                },
                model_dir: model,
                ..Config::default()
            };
            config.sql.pg_addr = pg;
            serve(config, true, Access::Open)
        }
        Command::Train {
            history,
            from_samples,
            test_history,
            horizon,
            sample_every,
            iterations,
            learning_rate,
            max_depth,
            out,
            samples_out,
        } => {
            let defaults = Boosting::default();
            let boosting = Boosting {
                iterations: iterations.unwrap_or(defaults.iterations),
                learning_rate: learning_rate.unwrap_or(defaults.learning_rate),
                max_depth: max_depth.unwrap_or(defaults.max_depth),
            };
            let horizon_h = parse_duration_ms(&horizon)? as f64 / 3_600_000.0;
            let every_ms = parse_duration_ms(&sample_every)?;
            let input = match &from_samples {
                Some(dir) => TrainingInput::Samples(dir),
                None => TrainingInput::Histories {
                    train: &history,
                    test: &test_history,
                    every_ms,
                },
            };
            let report =
                wearflow::predict::train(input, horizon_h, boosting, &out, samples_out.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Predict {
            history,
            model,
            out,
        } => {
            let rows = wearflow::predict::predict(&history, &model, &out)?;
            eprintln!("wrote {rows} predictions to {}", out.display());
            Ok(())
        }
    }
}

/// Produces the simulation to the stream topics, keyed by entity, at `rate` events/s (or as
/// fast as possible); returns the ground truth.
fn produce_simulation(
    config: SimulatorConfig,
    duration_ms: u64,
    brokers: &str,
    topics: &KafkaTopics,
    rate: Option<f64>,
    partitions: i32,
) -> anyhow::Result<Vec<wearflow_sources::GroundTruth>> {
    let names: Vec<&str> = StreamKind::ALL.iter().map(|s| topics.of(*s)).collect();
    let options = Default::default();
    ensure_topics(brokers, &options, &names, partitions, &[])?;
    let producer = Producer::new(brokers, &options)?;
    let end = config.start_ms.saturating_add(duration_ms);
    let mut sim = Simulator::new(config);
    let started = std::time::Instant::now();
    let mut sent: u64 = 0;
    let mut events = Vec::new();
    while sim.clock_ms() < end {
        events.clear();
        sim.advance((sim.clock_ms() + 60_000).min(end), &mut events);
        for event in &events {
            let key = event_key(event);
            let payload = event.to_json_line();
            producer.send(
                topics.of(event.stream()),
                Some(key.as_bytes()),
                Some(payload.as_bytes()),
                &[],
            )?;
            sent += 1;
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                let due = std::time::Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(60))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "produced {sent} events to {brokers} in {seconds:.1} s ({:.0} events/s)",
        sent as f64 / seconds.max(1e-9)
    );
    Ok(sim.ground_truth().to_vec())
}

/// Starts HTTP and the engine; returns when the engine ends (or on SIGINT or SIGTERM).
/// Whether the servers check credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Everyone is an admin: `wearflow demo` only.
    Open,
    /// Bearer tokens / JWTs over HTTP, passwords over Postgres, roles, the audit log.
    Required,
}

/// The servers' credential checks and audit log for `access`.
fn access(config: &Config, access: Access) -> anyhow::Result<(HttpAccess, PgAccess)> {
    if access == Access::Open {
        eprintln!("authentication is off (demo): every client is an admin");
        return Ok((HttpAccess::default(), PgAccess::default()));
    }
    let authenticator = Authenticator::from_config(&config.auth)?;
    let path = config
        .auth
        .audit_log
        .clone()
        .unwrap_or_else(|| config.data_dir.join("audit.jsonl"));
    let audit = Arc::new(
        AuditLog::open(&path)
            .with_context(|| format!("cannot open the audit log {}", path.display()))?,
    );
    eprintln!(
        "authentication: {}; audit log {}",
        authenticator.describe(),
        path.display()
    );
    let authenticator: Arc<dyn Authenticate> = Arc::new(authenticator);
    Ok((
        HttpAccess {
            authenticator: Some(Arc::clone(&authenticator)),
            audit: Some(Arc::clone(&audit)),
        },
        PgAccess {
            authenticator: Some(authenticator),
            audit: Some(audit),
            tls: None,
            on_refused: None,
        },
    ))
}

fn serve(mut config: Config, serve_after_end: bool, access_mode: Access) -> anyhow::Result<()> {
    let (http_access, mut pg_access) = access(&config, access_mode)?;
    let tls = match &config.tls {
        Some(tls) => {
            let http = wearflow::tls::acceptor(tls, &[b"http/1.1"])?;
            pg_access.tls = Some(wearflow::tls::acceptor(tls, &[b"postgresql"])?);
            eprintln!("tls: {}", tls.cert_file.display());
            Some(http)
        }
        None => None,
    };
    if let Some(dir) = &config.model_dir {
        config.models = wearflow_dataflows::model::ModelSlot::load_from(dir)
            .with_context(|| format!("cannot load the model in {}", dir.display()))?;
        eprintln!(
            "model {} loaded from {}",
            config.models.version(),
            dir.display()
        );
    }
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let metrics = Arc::new(Metrics::new());
    if pg_access.authenticator.is_some() {
        let counted = Arc::clone(&metrics);
        pg_access.on_refused = Some(Arc::new(move |reason| {
            counted
                .auth_failures
                .with_label_values(&["pgwire", reason])
                .inc();
        }));
    }
    let dataflows = Arc::new(DataflowLog::new());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tokio = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let listener = tokio
        .block_on(http::bind(&config.http_addr))
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    let sql = tokio
        .block_on(wearflow::sql::start(
            &config.sql,
            &config.data_dir,
            Arc::clone(&store),
            wearflow::archive::history(&config, &store),
            pg_access,
        ))
        .context("cannot start the sql layer")?;
    let pg_addr = sql.pg_addr;
    let state = AppState {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        sql: Some(sql.state.clone()),
        dataflows: Some(Arc::clone(&dataflows)),
        models: config.models.clone(),
        access: http_access,
        checkpoints: config.checkpoint_trigger.clone(),
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_rx.await.ok();
    };
    let (server, scheme) = match tls {
        Some(acceptor) => {
            let listener = {
                let _runtime = tokio.enter();
                wearflow::tls::TlsListener::new(listener, acceptor)?
            };
            (tokio.spawn(http::serve(listener, state, shutdown)), "https")
        }
        None => (tokio.spawn(http::serve(listener, state, shutdown)), "http"),
    };
    // SIGINT (Ctrl-C) or SIGTERM (Kubernetes, docker stop): not ready any more, the sources
    // stop, the dataflow drains, sinks flush, and the process exits 0.
    let signal_stop = Arc::clone(&stop);
    let signal_ready = Arc::clone(&ready);
    tokio.spawn(async move {
        if stop_signal().await {
            signal_ready.store(false, Ordering::Relaxed);
            signal_stop.store(true, Ordering::Relaxed);
        }
    });
    println!("wearflow is serving on {scheme}://{addr}");
    println!("  views:    {scheme}://{addr}/views");
    println!("  a view:   {scheme}://{addr}/views/tooth_wear?limit=10");
    println!("  live:     {scheme}://{addr}/views/machine_health/changes");
    println!("  metrics:  {scheme}://{addr}/metrics");
    println!("  graph:    {scheme}://{addr}/dataflows");
    println!("  sql:      POST {scheme}://{addr}/sql");
    match access_mode {
        Access::Open => println!(
            "  postgres: psql \"host={} port={} user=wearflow dbname=wearflow\"",
            pg_addr.ip(),
            pg_addr.port()
        ),
        Access::Required => println!(
            "  postgres: psql \"host={} port={} dbname=wearflow\" -U <user> (the password is a token of that user)",
            pg_addr.ip(),
            pg_addr.port()
        ),
    }
    // Ready once the first snapshot is published: before that every view is empty.
    let ready_store = Arc::clone(&store);
    let ready_flag = Arc::clone(&ready);
    let ready_stop = Arc::clone(&stop);
    let ready_metrics = Arc::clone(&metrics);
    tokio.spawn(async move {
        // After a restart, also once every reader has replayed its write-ahead log.
        while ready_store.snapshot().version == 0 || ready_metrics.restoring.get() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !ready_stop.load(Ordering::Relaxed) {
            ready_flag.store(true, Ordering::Relaxed);
        }
    });
    let engine_store = Arc::clone(&store);
    let engine_stop = Arc::clone(&stop);
    let engine_config = config.clone();
    let engine = std::thread::Builder::new()
        .name("wearflow-engine".into())
        .spawn(move || {
            runtime::run_with_log(
                &engine_config,
                engine_store,
                metrics,
                engine_stop,
                Some(dataflows),
            )
        })
        .context("cannot start the engine thread")?;
    let summary = engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"))??;
    println!(
        "engine finished: {} records, {} bad, {} late, views as of {}",
        summary.records, summary.bad, summary.late, summary.as_of
    );
    if serve_after_end && !stop.load(Ordering::Relaxed) {
        println!("source ended; still serving (Ctrl-C to stop)");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    ready.store(false, Ordering::Relaxed);
    shutdown_tx.send(()).ok();
    tokio.block_on(server).ok();
    tokio.block_on(sql.stop());
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; false if no signal handler could be installed.
async fn stop_signal() -> bool {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(_) => return tokio::signal::ctrl_c().await.is_ok(),
        };
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.is_ok(),
        terminated = terminate.recv() => terminated.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("7d").expect("7d"), 7 * 86_400_000);
        assert_eq!(parse_duration_ms("90m").expect("90m"), 90 * 60_000);
        assert!(parse_duration_ms("7y").is_err());
    }
}
