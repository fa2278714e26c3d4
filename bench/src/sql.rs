//! `wearflow-bench sql`: the SQL layer's figures of the SQL issue, in one run.
//!
//! 1. Point lookup by key on a 1,000,000-row live view, over the Postgres protocol
//!    (tokio-postgres, a prepared statement with a parameter) and over `POST /sql`: p50, p99.
//! 2. A group-by aggregate over the same view (the view's Arrow batch already cached).
//! 3. A time-range aggregate over 10,000,000 archived telemetry rows (written by the real
//!    archive writer), wearflow (`SqlEngine`) against DuckDB (Python package) on the same
//!    files, in the same run; the ratio is wearflow's time over DuckDB's.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value as Json, json};
use wearflow::config::SqlConfig;
use wearflow::http::{self, AppState};
use wearflow::metrics::Metrics;
use wearflow_operators::{Column, ColumnType, Value, ViewKind, ViewSchema};
use wearflow_sinks::ServingStore;
use wearflow_sinks::archive::{Archive, ArchiveConfig, ArchiveTable, Partitioning};
use wearflow_sql::{HistoryConfig, Outcome, SqlEngine, SqlEngineConfig};

/// 2026-01-01T00:00:00Z.
const DAY_MS: i64 = 1_767_225_600_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> Json {
    samples.sort();
    json!({
        "n": samples.len(),
        "p50_ms": percentile(&samples, 0.50),
        "p99_ms": percentile(&samples, 0.99),
        "max_ms": percentile(&samples, 1.0),
    })
}

/// A keyed view of `rows` teeth on `rows / 8` machines.
fn big_store(rows: usize) -> Arc<ServingStore> {
    let schema = ViewSchema::new(
        "teeth",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("device_id", ColumnType::Utf8),
            Column::required("machine_id", ColumnType::Utf8),
            Column::nullable("remaining_mm", ColumnType::Float64),
            Column::required("impacts_1h", ColumnType::Int64),
        ],
        "benchmark view",
    )
    .expect("valid schema");
    let store = Arc::new(ServingStore::new(vec![schema]));
    let updates = (0..rows)
        .map(|i| {
            let row = vec![
                Value::str(format!("D{i:07}")),
                Value::str(format!("M{:06}", i / 8)),
                Value::float(40.0 + (i % 1000) as f64 / 10.0),
                Value::Int((i % 50) as i64),
            ];
            (0, row, 1)
        })
        .collect();
    store.publish(1, updates);
    store
}

async fn sql_value(engine: &SqlEngine, sql: &str) -> anyhow::Result<usize> {
    match engine.execute(sql, None).await? {
        Outcome::Rows(result) => Ok(result.rows()),
        Outcome::Done { .. } => Ok(0),
    }
}

/// Runs the benchmark; returns the JSON result line.
pub async fn run(
    view_rows: usize,
    lookups: usize,
    archive_rows: usize,
    dir: &Path,
) -> anyhow::Result<Json> {
    let store = big_store(view_rows);
    let config = SqlConfig {
        pg_addr: "127.0.0.1:0".into(),
        ..SqlConfig::default()
    };
    let sql =
        wearflow::sql::start(&config, dir, Arc::clone(&store), None, Default::default()).await?;
    let listener = http::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = AppState {
        store: Arc::clone(&store),
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(AtomicBool::new(true)),
        sql: Some(sql.state.clone()),
        dataflows: None,
        models: Default::default(),
        access: Default::default(),
        checkpoints: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    // 1. Point lookups. The first query builds the view's Arrow batch; warm it up.
    let engine = Arc::clone(&sql.state.engine);
    let started = Instant::now();
    sql_value(&engine, "SELECT count(*) FROM teeth").await?;
    let first_scan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=wearflow dbname=wearflow",
            sql.pg_addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .context("postgres connect")?;
    tokio::spawn(connection);
    let statement = client
        .prepare("SELECT * FROM teeth WHERE device_id = $1")
        .await?;
    let key = |i: usize| format!("D{:07}", (i * 7919) % view_rows);
    let mut pg = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let id = key(i);
        let started = Instant::now();
        let rows = client.query(&statement, &[&id]).await?;
        pg.push(started.elapsed());
        if rows.len() != 1 {
            bail!("lookup of {id} returned {} rows", rows.len());
        }
    }
    let http_client = reqwest::Client::new();
    let mut over_http = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let body = json!({ "sql": format!("SELECT * FROM teeth WHERE device_id = '{}'", key(i)) });
        let started = Instant::now();
        let answer: Json = http_client
            .post(format!("{base}/sql"))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        over_http.push(started.elapsed());
        if answer["rows"].as_array().map(Vec::len) != Some(1) {
            bail!("http lookup returned {answer}");
        }
    }

    // 2. Group-by over the whole view.
    let mut group_by = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let groups = sql_value(
            &engine,
            "SELECT machine_id, count(*), avg(remaining_mm), max(impacts_1h) FROM teeth GROUP BY machine_id",
        )
        .await?;
        group_by.push(started.elapsed());
        if groups != view_rows.div_ceil(8) {
            bail!("group-by returned {groups} groups");
        }
    }
    let _ = stop.send(());
    server.await??;
    sql.stop().await;

    // 3. Archive: write `archive_rows` readings over 10 days, then the same aggregate both ways.
    let archive = archive_comparison(archive_rows, dir).await?;
    Ok(json!({
        "benchmark": "sql",
        "view_rows": view_rows,
        "first_scan_ms": first_scan_ms,
        "point_lookup_pgwire": summary(pg),
        "point_lookup_http": summary(over_http),
        "group_by_1m": summary(group_by),
        "archive": archive,
    }))
}

async fn archive_comparison(rows: usize, dir: &Path) -> anyhow::Result<Json> {
    let table = ArchiveTable::appended(
        "telemetry",
        vec![
            Column::required("device_id", ColumnType::Utf8),
            Column::required("machine_id", ColumnType::Utf8),
            Column::required("ts", ColumnType::TimestampMs),
            Column::nullable("remaining_mm", ColumnType::Float64),
            Column::nullable("load_kn", ColumnType::Float64),
        ],
        "ts",
        Partitioning::DateHour,
    )?;
    let archive_dir = dir.join("archive");
    let config = ArchiveConfig {
        roll_interval_ms: 3_600_000,
        ..ArchiveConfig::default()
    };
    let written = Instant::now();
    let archive = Archive::start(
        &archive_dir,
        &config,
        vec![table.clone()],
        None,
        Box::new(|_| {}),
    )?;
    let input = archive.input();
    let span_ms = 10 * 86_400_000i64;
    let step = span_ms / rows.max(1) as i64;
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..rows {
        let ms = DAY_MS + i as i64 * step;
        batch.push(vec![
            Value::str(format!("D{:05}", i % 20_000)),
            Value::str(format!("M{:04}", (i % 20_000) / 8)),
            Value::Int(ms),
            Value::float(40.0 + (i % 997) as f64 / 10.0),
            Value::float(100.0 + (i % 613) as f64 / 7.0),
        ]);
        if batch.len() == 50_000 {
            input.append(0, std::mem::take(&mut batch));
        }
    }
    input.append(0, batch);
    archive.close();
    let write_seconds = written.elapsed().as_secs_f64();

    let engine = SqlEngine::new(
        Arc::new(ServingStore::new(Vec::new())),
        SqlEngineConfig {
            history: Some(HistoryConfig {
                dir: archive_dir.clone(),
                tables: vec![table],
            }),
            ..SqlEngineConfig::default()
        },
    )
    .await?;
    // Days 3..6 of the ten: 30 % of the rows.
    let (from, to) = ("2026-01-04T00:00:00Z", "2026-01-07T00:00:00Z");
    let query = format!(
        "SELECT machine_id, count(*), avg(remaining_mm), max(load_kn) FROM telemetry_history \
         WHERE ts >= '{from}' AND ts < '{to}' GROUP BY machine_id"
    );
    let mut ours = Vec::new();
    let mut groups = 0;
    for _ in 0..5 {
        let started = Instant::now();
        groups = sql_value(&engine, &query).await?;
        ours.push(started.elapsed());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb_time_range.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&archive_dir)
        .arg(from)
        .arg(to)
        .output()
        .context("python3 with duckdb")?;
    if !output.status.success() {
        bail!(
            "duckdb script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let duck: Json = serde_json::from_slice(&output.stdout)?;
    if duck["groups"].as_u64() != Some(groups as u64) {
        bail!("duckdb found {} groups, wearflow {groups}", duck["groups"]);
    }
    let ours = summary(ours);
    let ratio =
        ours["p50_ms"].as_f64().unwrap_or(f64::NAN) / duck["p50_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "rows": rows,
        "write_seconds": write_seconds,
        "groups": groups,
        "wearflow": ours,
        "duckdb": duck,
        "wearflow_over_duckdb": ratio,
    }))
}
