//! Predictive maintenance end to end: history files → `train` (through the live dataflow) →
//! model file and report → `predict` rows → a live engine that switches models on reload.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wearflow::config::{Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::predict::{self, TrainingInput};
use wearflow::runtime;
use wearflow_dataflows::model::{Boosting, Model, ModelSlot};
use wearflow_operators::Value;
use wearflow_sinks::ServingStore;
use wearflow_sources::{SimulatorConfig, simulate, write_jsonl};

/// A small fleet with a raised failure rate, read every 10 minutes.
fn history(dir: &Path, seed: u64, days: u64) {
    let config = SimulatorConfig {
        seed,
        machines: 8,
        telemetry_interval_ms: 600_000,
        failure_rate_scale: 8.0,
        ..SimulatorConfig::default()
    };
    let (events, truth) = simulate(config, days * 86_400_000);
    assert!(!truth.is_empty(), "the history has failures");
    write_jsonl(dir, &events).expect("write history");
}

fn column(row: &[Value], schema: &wearflow_operators::ViewSchema, name: &str) -> Value {
    row[schema.column_index(name).expect("column")].clone()
}

#[test]
fn train_then_predict_then_reload_live() {
    let root = tempfile::tempdir().expect("tempdir");
    let (train_dir, test_dir) = (root.path().join("train"), root.path().join("test"));
    history(&train_dir, 11, 12);
    history(&test_dir, 12, 8);
    let model_dir = root.path().join("model");

    // Train on one seed, score on another.
    let boosting = Boosting {
        iterations: 50,
        ..Boosting::default()
    };
    let report = predict::train(
        TrainingInput::Histories {
            train: std::slice::from_ref(&train_dir),
            test: std::slice::from_ref(&test_dir),
            every_ms: 3_600_000,
        },
        24.0,
        boosting,
        &model_dir,
        Some(&root.path().join("samples")),
    )
    .expect("train");
    let model = Model::load(&model_dir).expect("the model file loads");
    // The exported test samples: a header naming the model's features, one row per sample.
    let csv = std::fs::read_to_string(root.path().join("samples/test.csv")).expect("test.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(
        header[..5],
        ["device_id", "at_ms", "fails", "rul_hours", "p_fail"]
    );
    assert_eq!(header.len(), 5 + model.features.len());
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len() as u64,
        report["model"]["samples"].as_u64().expect("samples")
    );
    assert!(rows.iter().all(|r| r.split(',').count() == header.len()));
    assert_eq!(report["model_version"], model.version.as_str());
    assert!(report["train_positives"].as_u64().expect("positives") > 0);
    assert!(model.features.iter().any(|f| f == "strain_ue.mean"));
    assert!(model.features.iter().any(|f| f == "wear_pct"));
    let scored = &report["model"];
    let positives = scored["positives"].as_u64().expect("test positives");
    assert!(positives > 0, "{report}");
    // The crack shows in strain: the model must rank failing teeth far above chance.
    let auc = scored["roc_auc"].as_f64().expect("auc");
    assert!(auc > 0.7, "ROC AUC {auc}: {report}");
    assert!(report["physics_baseline"]["samples"].as_u64() == scored["samples"].as_u64());
    assert!(model_dir.join("report.json").exists());

    // Retraining on the exported samples (no replay) sees the same samples and labels, so it
    // scores the same test set and ranks it as well as the replayed training did.
    let samples_dir = root.path().join("samples");
    let retrain = |horizon_h: f64, dir: &str| {
        predict::train(
            TrainingInput::Samples(&samples_dir),
            horizon_h,
            boosting,
            &root.path().join(dir),
            None,
        )
    };
    let again = retrain(24.0, "model-again").expect("train from samples");
    for field in ["samples", "positives"] {
        assert_eq!(again["model"][field], scored[field], "{field}: {again}");
    }
    assert_eq!(again["train_samples"], report["train_samples"]);
    assert_eq!(again["train_positives"], report["train_positives"]);
    assert_eq!(again["features"], report["features"]);
    let auc_again = again["model"]["roc_auc"].as_f64().expect("auc");
    assert!((auc_again - auc).abs() < 0.02, "{auc_again} vs {auc}");
    // Samples labelled for 24 h cannot train a 12 h model.
    let err = match retrain(12.0, "model-12h") {
        Ok(report) => panic!("a horizon other than the samples' is refused: {report}"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("--horizon 24h"), "{err}");

    // Batch scoring: one row per reporting device, each naming the model.
    let out = root.path().join("predictions.jsonl");
    let rows = predict::predict(&test_dir, &model_dir, &out).expect("predict");
    assert!(rows > 0);
    let text = std::fs::read_to_string(&out).expect("predictions file");
    let mut devices = std::collections::BTreeSet::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(row["model_version"], model.version.as_str(), "{row}");
        let p = row["p_fail"].as_f64().expect("p_fail");
        assert!((0.0..=1.0).contains(&p), "{row}");
        assert!(row["rul_hours"].as_f64().is_some_and(|h| h >= 0.0), "{row}");
        assert!(devices.insert(row["device_id"].as_str().expect("id").to_string()));
    }
    assert_eq!(devices.len(), rows);

    // Live: the engine predicts with model A, then switches every device to model B.
    let live_dir = root.path().join("live-model");
    model.save(&live_dir).expect("save A");
    let slot = ModelSlot::load_from(&live_dir).expect("load A");
    let version_a = slot.version();
    let data = tempfile::tempdir().expect("data dir");
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        source: SourceConfig::Simulator {
            seed: 5,
            machines: 3,
            speed: 600.0,
            duration_ms: None,
            start_ms: None,
        },
        models: slot.clone(),
        ..Config::default()
    };
    config.archive.enabled = false;
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            runtime::run(&config, store, Arc::new(Metrics::new()), stop).expect("engine")
        })
    };
    let versions = |store: &ServingStore| -> (usize, Vec<String>) {
        let snapshot = store.snapshot();
        let view = snapshot.view("maintenance_predictions").expect("view");
        let schema = view.schema.clone();
        let mut found: Vec<String> = view
            .iter()
            .map(|row| match column(row, &schema, "model_version") {
                Value::Str(v) => v,
                other => panic!("model_version {other:?}"),
            })
            .collect();
        let rows = found.len();
        found.sort();
        found.dedup();
        (rows, found)
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let began = Instant::now();
        while !done() {
            if began.elapsed() > Duration::from_secs(120) {
                stop.store(true, Ordering::Release);
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("predictions of model A", &|| {
        let (rows, found) = versions(&store);
        rows >= 10 && found == vec![version_a.clone()]
    });

    let mut changed = Model::load(&model_dir).expect("a second copy of model A");
    changed.threshold = (model.threshold * 0.5).max(0.01);
    changed.restamp().expect("restamp");
    changed.save(&live_dir).expect("save B");
    let version_b = slot.reload().expect("reload").version.clone();
    assert_ne!(version_a, version_b);
    wait("every prediction on model B", &|| {
        let (rows, found) = versions(&store);
        rows >= 10 && found == vec![version_b.clone()]
    });
    // Drift is computed against the current model's training distribution.
    wait("model_drift rows of model B", &|| {
        let snapshot = store.snapshot();
        let view = snapshot.view("model_drift").expect("view");
        let schema = view.schema.clone();
        !view.is_empty()
            && view
                .iter()
                .all(|row| column(row, &schema, "model_version") == Value::str(&version_b))
    });

    // A broken model file is refused and the current model stays.
    std::fs::write(live_dir.join("model.json"), b"{\"format\": 1").expect("corrupt");
    assert!(slot.reload().is_err());
    assert_eq!(slot.version(), version_b);

    stop.store(true, Ordering::Release);
    engine.join().expect("engine thread");
}
