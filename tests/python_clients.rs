//! Independent clients against a replayed engine: psycopg 3 over the Postgres wire protocol
//! (extended protocol, prepared statements with parameters, SQLSTATEs, refused file reads),
//! and DuckDB reading the Parquet archive, whose aggregate must equal wearflow's `POST /sql`
//! answer over `telemetry_history`. `scripts/test` installs both Python packages. The same
//! run serves `GET /dataflows`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use wearflow::config::{Config, SourceConfig, SqlConfig};
use wearflow::http::{self, AppState};
use wearflow::introspection::DataflowLog;
use wearflow::metrics::Metrics;
use wearflow::runtime;
use wearflow_sinks::ServingStore;
use wearflow_sinks::archive::ArchiveConfig;
use wearflow_sources::{SimulatorConfig, simulate, write_jsonl};

/// Runs `tests/python/<script>` with `args`; returns its JSON report.
async fn python(script: &str, args: Vec<String>) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(&path).args(&args).output()
    })
    .await
    .expect("python task")
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed (scripts/test installs psycopg and duckdb):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_duckdb_agree_with_wearflow() {
    let data = tempfile::tempdir().expect("data dir");
    let input = data.path().join("input");
    let (events, _) = simulate(
        SimulatorConfig {
            seed: 11,
            machines: 2,
            ..SimulatorConfig::default()
        },
        8 * 3_600_000,
    );
    write_jsonl(&input, &events).expect("input files");
    let config = Config {
        workers: 2,
        data_dir: data.path().to_path_buf(),
        source: SourceConfig::Files {
            dir: input,
            speed: 0.0,
        },
        sql: SqlConfig {
            pg_addr: "127.0.0.1:0".into(),
            ..SqlConfig::default()
        },
        archive: ArchiveConfig {
            roll_bytes: 256 * 1024,
            ..ArchiveConfig::default()
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let metrics = Arc::new(Metrics::new());
    let (run_config, run_store, run_metrics) =
        (config.clone(), Arc::clone(&store), Arc::clone(&metrics));
    let log = Arc::new(DataflowLog::new());
    let run_log = Arc::clone(&log);
    tokio::task::spawn_blocking(move || {
        runtime::run_with_log(
            &run_config,
            run_store,
            run_metrics,
            Arc::new(AtomicBool::new(false)),
            Some(run_log),
        )
    })
    .await
    .expect("runtime thread")
    .expect("replay runs");
    let rendered = metrics.render();
    assert!(
        rendered.contains("wearflow_archive_files_total{table=\"telemetry\"}"),
        "archive metrics: {rendered}"
    );

    let sql = wearflow::sql::start(
        &config.sql,
        &config.data_dir,
        Arc::clone(&store),
        wearflow::archive::history(&config, &store),
        Default::default(),
    )
    .await
    .expect("sql layer");
    let listener = http::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let state = AppState {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        ready: Arc::new(AtomicBool::new(true)),
        sql: Some(sql.state.clone()),
        dataflows: Some(log),
        models: Default::default(),
        access: Default::default(),
        checkpoints: Default::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let post = |sql: String| {
        let client = client.clone();
        let url = format!("{base}/sql");
        async move {
            let response = client
                .post(url)
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .expect("POST /sql");
            assert!(
                response.status().is_success(),
                "{sql}: {}",
                response.status()
            );
            response.json::<Json>().await.expect("JSON answer")
        }
    };

    // GET /dataflows: the run's operators and arrangements (the run has ended, so the
    // arrangements are dropped and hold nothing, but they are listed).
    let graph: Json = client
        .get(format!("{base}/dataflows"))
        .send()
        .await
        .expect("GET /dataflows")
        .json()
        .await
        .expect("JSON graph");
    let names: Vec<&str> = graph["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(names.contains(&"publish"), "{names:?}");
    // Time spent per operator: the publisher ran, and no operator's own time exceeds its total.
    let publish = graph["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .find(|o| o["name"] == "publish")
        .expect("publish");
    assert!(
        publish["seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{publish}"
    );
    for op in graph["operators"].as_array().expect("operators") {
        if let (Some(own), Some(total)) = (op["own_seconds"].as_f64(), op["seconds"].as_f64()) {
            assert!(own <= total + 1e-9, "{op}");
        }
    }
    assert!(
        graph["arrangements"]["count"].as_i64().unwrap_or(0) > 5,
        "{graph}"
    );
    assert_eq!(graph["workers"], 2);

    // psycopg: its answers equal the ones over HTTP.
    let report = python(
        "psycopg_client.py",
        vec!["127.0.0.1".into(), sql.pg_addr.port().to_string()],
    )
    .await;
    let teeth = post(
        "SELECT device_id, remaining_mm FROM tooth_wear WHERE machine_id = 'M0001' \
         AND remaining_mm < 1000 ORDER BY device_id"
            .into(),
    )
    .await;
    assert_eq!(report["teeth_m0001"], teeth["rows"], "prepared statement");
    let per_machine = post(
        "SELECT m.machine_id, count(t.device_id) FROM machine_health m \
         JOIN tooth_wear t ON t.machine_id = m.machine_id GROUP BY m.machine_id \
         ORDER BY m.machine_id"
            .into(),
    )
    .await;
    assert_eq!(report["teeth_per_machine"], per_machine["rows"], "join");
    let joined = post(
        "SELECT count(*) FROM telemetry_history h JOIN tooth_wear t \
         ON t.device_id = h.device_id WHERE h.ts <= as_of()"
            .into(),
    )
    .await;
    assert_eq!(report["history_rows_joined"], joined["rows"][0][0]);
    assert!(report["history_rows_joined"].as_i64().unwrap_or(0) > 1000);
    assert_eq!(report["syntax_error"], "42601");
    assert_eq!(report["refused"]["external_table"], "42601", "{report}");
    assert_eq!(report["refused"]["path_as_table"], "42P01", "{report}");

    // DuckDB over the same files: the same aggregate over a time range.
    let (from, to) = ("2026-01-01T06:20:00Z", "2026-01-01T07:55:00Z");
    let duck = python(
        "duckdb_archive.py",
        vec![
            wearflow::archive::dir(&config).display().to_string(),
            from.into(),
            to.into(),
        ],
    )
    .await;
    let ours = post(format!(
        "SELECT count(*), count(DISTINCT device_id), min(remaining_mm), max(remaining_mm), \
         sum(load_kn), count(DISTINCT hour) FROM telemetry_history \
         WHERE ts >= '{from}' AND ts < '{to}'"
    ))
    .await;
    let ours = &ours["rows"][0];
    let keys = [
        "rows",
        "devices",
        "min_remaining_mm",
        "max_remaining_mm",
        "sum_load_kn",
        "hours",
    ];
    assert!(duck["rows"].as_f64().unwrap_or(0.0) > 2_000.0, "{duck}");
    assert_eq!(duck["hours"].as_f64(), Some(2.0), "{duck}");
    for (i, key) in keys.iter().enumerate() {
        let (a, b) = (
            ours[i].as_f64().expect("number"),
            duck[key].as_f64().expect("number"),
        );
        // Sums of floats may differ in the last bits with the order of addition.
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            "{key}: wearflow {a}, duckdb {b}"
        );
    }
    let _ = stop.send(());
    server.await.expect("http task").expect("http server");
    sql.stop().await;
}
