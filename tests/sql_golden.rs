//! Golden SQL tests: the statements of `tests/golden/sql/*.sql` run against the live views and
//! the Parquet archive of one deterministic replay (three machines, 30 simulated hours, two
//! workers); each file's answers are compared with the `.out` file beside it.
//!
//! `WEARFLOW_BLESS=1 cargo test --test sql_golden` rewrites the `.out` files; review the diff.
//!
//! A statement ends with a line ending in `;`. Lines starting with `--` before a statement
//! are copied to the output as they are. An answer is the table Arrow prints, or
//! `ERROR <sqlstate>: <message>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wearflow::config::{Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::runtime;
use wearflow_sinks::ServingStore;
use wearflow_sinks::archive::ArchiveConfig;
use wearflow_sources::{SimulatorConfig, simulate, write_jsonl};
use wearflow_sql::{CATALOG_FILE, Outcome, SqlEngine, SqlEngineConfig};

/// Replays the simulation through the real runtime (the archive on, one file per partition)
/// and returns an engine over its views and archive.
async fn replayed_engine(data: &Path) -> SqlEngine {
    let input = data.join("input");
    let (events, _) = simulate(
        SimulatorConfig {
            seed: 7,
            machines: 3,
            ..SimulatorConfig::default()
        },
        30 * 3_600_000,
    );
    write_jsonl(&input, &events).expect("write input");
    let config = Config {
        workers: 2,
        data_dir: data.to_path_buf(),
        source: SourceConfig::Files {
            dir: input,
            speed: 0.0,
        },
        // Files roll only at the end and views are snapshotted once, at the end: the archive's
        // content is a function of the input alone.
        archive: ArchiveConfig {
            roll_interval_ms: 3_600_000,
            view_snapshot_interval_ms: 3_600_000,
            ..ArchiveConfig::default()
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let run_config = config.clone();
    let run_store = Arc::clone(&store);
    // The runtime blocks; keep it off the async test's thread.
    tokio::task::spawn_blocking(move || {
        runtime::run(
            &run_config,
            run_store,
            Arc::new(Metrics::new()),
            Arc::new(AtomicBool::new(false)),
        )
    })
    .await
    .expect("runtime thread")
    .expect("replay runs");
    SqlEngine::new(
        Arc::clone(&store),
        SqlEngineConfig {
            catalog_path: Some(data.join(CATALOG_FILE)),
            history: wearflow::archive::history(&config, &store),
            ..SqlEngineConfig::default()
        },
    )
    .await
    .expect("engine")
}

/// The statements of a golden file, each with the comment lines before it.
fn statements(text: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut comments = Vec::new();
    let mut sql = String::new();
    for line in text.lines() {
        if sql.is_empty() && (line.starts_with("--") || line.trim().is_empty()) {
            if line.starts_with("--") {
                comments.push(line.to_string());
            }
            continue;
        }
        if !sql.is_empty() {
            sql.push('\n');
        }
        sql.push_str(line);
        if line.trim_end().ends_with(';') {
            out.push((std::mem::take(&mut comments), std::mem::take(&mut sql)));
        }
    }
    assert!(
        sql.trim().is_empty(),
        "statement without a final `;`: {sql}"
    );
    out
}

async fn answer(engine: &SqlEngine, sql: &str) -> String {
    let statement = sql.trim_end().trim_end_matches(';');
    match engine.execute(statement, None).await {
        Ok(Outcome::Rows(result)) => {
            match arrow::util::pretty::pretty_format_batches_with_schema(
                Arc::clone(&result.schema),
                &result.batches,
            ) {
                Ok(table) => format!("{table}\n({} rows)", result.rows()),
                Err(error) => format!("cannot print the answer: {error}"),
            }
        }
        Ok(Outcome::Done { tag, .. }) => tag.to_string(),
        Err(error) => format!("ERROR {}: {error}", error.sqlstate()),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_sql_files() {
    let data = tempfile::tempdir().expect("data dir");
    let engine = replayed_engine(data.path()).await;
    let bless = std::env::var_os("WEARFLOW_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden/sql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "golden files missing: {files:?}");
    let mut failed = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read golden sql");
        let mut output = String::new();
        for (comments, sql) in statements(&text) {
            for comment in comments {
                output.push_str(&comment);
                output.push('\n');
            }
            output.push_str(&sql);
            output.push('\n');
            output.push_str(&answer(&engine, &sql).await);
            output.push_str("\n\n");
        }
        let expected_path = file.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &output).expect("write golden output");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != output {
            let actual_path = file.with_extension("out.actual");
            std::fs::write(&actual_path, &output).ok();
            failed.push(format!(
                "{}: answers differ; compare {} (WEARFLOW_BLESS=1 accepts them)",
                file.display(),
                actual_path.display()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
