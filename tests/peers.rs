//! The benchmark peers compute what wearflow computes: the DuckDB peer
//! (`bench/peers/duckdb_peer.py`, a from-scratch recompute) gives exactly wearflow's
//! `tooth_wear` and `inventory_balances` rows for the same simulated files, as judged by
//! `bench/peers/compare.py`, and that comparison catches a single changed value.
//! (`scripts/test` installs duckdb; Pathway, a 105 MB wheel, is left to the benchmark.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{Value as Json, json};
use wearflow::config::{Config, SourceConfig};
use wearflow::runtime;
use wearflow_sinks::ServingStore;
use wearflow_sinks::json::row_to_json;
use wearflow_sources::{SimulatorConfig, simulate, write_jsonl};

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/peers")
        .join(name)
}

fn python(script: &str, args: &[&Path]) -> Output {
    Command::new("python3")
        .arg(peer_script(script))
        .args(args)
        .output()
        .expect("python3 runs")
}

/// wearflow's rows of the two compared views, in the peers' format.
fn wearflow_rows(input: &Path, data: &Path) -> Json {
    let config = Config {
        workers: 2,
        data_dir: data.to_path_buf(),
        source: SourceConfig::Files {
            dir: input.to_path_buf(),
            speed: 0.0,
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    runtime::run_to_end(&config, Arc::clone(&store)).expect("replay");
    let snapshot = store.snapshot();
    let rows = |name: &str| -> Vec<Json> {
        let schema = store
            .schemas()
            .iter()
            .find(|s| s.name == name)
            .expect("a schema");
        let view = snapshot.view(name).expect("a published view");
        view.iter().map(|row| row_to_json(schema, row)).collect()
    };
    json!({ "tooth": rows("tooth_wear"), "balances": rows("inventory_balances") })
}

#[test]
fn the_duckdb_peer_agrees_with_wearflow_and_a_difference_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input");
    // Two simulated days of three machines: work orders, stock and sales, not only telemetry.
    let (events, _) = simulate(
        SimulatorConfig {
            seed: 5,
            machines: 3,
            ..SimulatorConfig::default()
        },
        48 * 3_600_000,
    );
    write_jsonl(&input, &events).expect("input files");
    let rows = wearflow_rows(&input, &dir.path().join("data"));
    let tooth = rows["tooth"].as_array().expect("tooth rows").clone();
    let balances = rows["balances"].as_array().expect("balance rows").clone();
    assert!(tooth.len() >= 3, "{} tooth rows", tooth.len());
    assert!(!balances.is_empty(), "no balance rows");
    let wearflow = dir.path().join("wearflow-rows.json");
    std::fs::write(&wearflow, serde_json::to_vec(&rows).expect("json")).expect("write rows");

    let peer = dir.path().join("duckdb-rows.json");
    let run = python("duckdb_peer.py", &[&input, Path::new("--out"), &peer]);
    assert!(
        run.status.success(),
        "duckdb_peer.py failed (scripts/test installs duckdb):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Json = serde_json::from_str(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .expect("a JSON summary");
    assert_eq!(summary["events"], json!(events.len()));

    let compare = python(
        "compare.py",
        &[Path::new("--wearflow-rows"), &wearflow, &peer],
    );
    assert!(
        compare.status.success(),
        "the DuckDB peer differs from wearflow:\n{}",
        String::from_utf8_lossy(&compare.stdout)
    );

    // One tooth's remaining length off by a millimetre: the comparison must say so.
    let mut changed = rows.clone();
    let row = changed["tooth"]
        .as_array_mut()
        .and_then(|t| t.iter_mut().find(|r| r["remaining_mm"].is_number()))
        .expect("a tooth with a length");
    let mm = row["remaining_mm"].as_f64().unwrap_or_default();
    row["remaining_mm"] = json!(mm + 1.0);
    std::fs::write(&wearflow, serde_json::to_vec(&changed).expect("json")).expect("write rows");
    let compare = python(
        "compare.py",
        &[Path::new("--wearflow-rows"), &wearflow, &peer],
    );
    assert!(
        !compare.status.success(),
        "compare.py missed a changed value:\n{}",
        String::from_utf8_lossy(&compare.stdout)
    );
}
