//! `wearflow train` and `wearflow predict`: history replayed through the live dataflow, its
//! `features` view sampled over event time, labelled from failure work orders, a model trained
//! and scored.
//!
//! Labels (DOMAIN.md): a device fails when a work order for it completes with reason
//! `failure`. A sample of device `d` at time `t` looks at `d`'s next completed work order after
//! `t`: a failure `f` hours later gives `rul = f` and `fails = f <= H`; a replacement for any
//! other reason means this tooth did not fail (`fails = false`, life censored); no replacement
//! before the end of the history gives `fails = false` if the history runs at least `H` hours
//! past `t`, else the sample is dropped. Samples where the engine already counts the tooth as
//! lost are left out: that is detection (`tooth_lost`), not prediction.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use wearflow_dataflows::features::DeviceFeatures;
use wearflow_dataflows::model::{Boosting, Model, ModelSlot};
use wearflow_operators::{Time, Value};
use wearflow_sinks::ServingStore;
use wearflow_sinks::store::Snapshot;
use wearflow_sources::decode::decode;
use wearflow_sources::{Event, OrderKind, OrderStatus, StreamKind, WorkReason};

use crate::config::{Config, SourceConfig};
use crate::runtime;

const HOUR: f64 = 3_600_000.0;

/// One labelled sample: a device's features at a moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The features.
    pub features: DeviceFeatures,
    /// The moment (the snapshot's `as_of`).
    pub at_ms: Time,
    /// Fails within the horizon.
    pub fails: bool,
    /// Hours to the failure, if this tooth failed.
    pub rul_hours: Option<f64>,
}

/// What the replay of one history produced.
pub struct Replay {
    /// Labelled samples.
    pub samples: Vec<Sample>,
    /// The store after the end of the history.
    pub store: Arc<ServingStore>,
}

/// Replays `dir` through the dataflow (with `models` as the model), sampling each active
/// device's features every `every_ms` of event time, labelled for horizon `horizon_h`.
pub fn replay(
    dir: &Path,
    horizon_h: f64,
    every_ms: u64,
    models: ModelSlot,
) -> anyhow::Result<Replay> {
    let sampler = Arc::new(Mutex::new(Sampler::new(
        every_ms,
        Config::default().dataflow.trend_window_ms,
    )));
    let tap = Arc::clone(&sampler);
    let store = run_history(
        dir,
        models,
        Some(Box::new(move |snapshot| {
            if let Ok(mut sampler) = tap.lock() {
                sampler.observe(snapshot);
            }
        })),
    )?;
    let taken = std::mem::take(
        &mut sampler
            .lock()
            .map_err(|_| anyhow::anyhow!("sampler poisoned"))?
            .taken,
    );
    let labels = Labels::read(dir, store.snapshot().as_of)?;
    let samples = taken
        .into_iter()
        .filter(|(f, _)| f.get("lost").is_none_or(|l| l < 0.5))
        .filter_map(|(features, at_ms)| {
            let (fails, rul_hours) = labels.label(&features.device_id, at_ms, horizon_h)?;
            Some(Sample {
                features,
                at_ms,
                fails,
                rul_hours,
            })
        })
        .collect();
    Ok(Replay { samples, store })
}

/// Replays `dir` to its end through the dataflow with `models`; `tap` sees every snapshot.
fn run_history(
    dir: &Path,
    models: ModelSlot,
    tap: Option<wearflow_sinks::store::Tap>,
) -> anyhow::Result<Arc<ServingStore>> {
    let mut config = Config {
        source: SourceConfig::Files {
            dir: dir.to_path_buf(),
            speed: 0.0,
        },
        models,
        ..Config::default()
    };
    // Snapshots every few minutes of event time, so samples sit close to their moment.
    config.clock.tick_records = 5_000;
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    config.data_dir = scratch.path().to_path_buf();
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    if let Some(tap) = tap {
        store.set_tap(tap);
    }
    runtime::run_to_end(&config, Arc::clone(&store))
        .with_context(|| format!("cannot replay {}", dir.display()))?;
    Ok(store)
}

/// Keeps the `features` view current from snapshot changes and takes samples.
struct Sampler {
    every_ms: u64,
    warmup_ms: u64,
    first_as_of: Option<Time>,
    next_ms: Time,
    devices: HashMap<String, (u64, BTreeMap<String, f64>)>,
    taken: Vec<(DeviceFeatures, Time)>,
}

impl Sampler {
    fn new(every_ms: u64, warmup_ms: u64) -> Sampler {
        Sampler {
            every_ms: every_ms.max(1),
            warmup_ms,
            first_as_of: None,
            next_ms: 0,
            devices: HashMap::new(),
            taken: Vec::new(),
        }
    }

    fn observe(&mut self, snapshot: &Snapshot) {
        if let Some(changes) = snapshot.changes.get("features") {
            for change in changes {
                let Some(Value::Str(device)) = change.key.first() else {
                    continue;
                };
                let parsed = change.row.as_ref().and_then(|row| {
                    let seen = match row.get(1) {
                        Some(Value::Int(ms)) => *ms as u64,
                        _ => 0,
                    };
                    let Some(Value::Str(json)) = row.last() else {
                        return None;
                    };
                    let object: BTreeMap<String, f64> = serde_json::from_str(json).ok()?;
                    Some((seen, object))
                });
                match parsed {
                    Some(entry) => {
                        self.devices.insert(device.clone(), entry);
                    }
                    None => {
                        self.devices.remove(device);
                    }
                }
            }
        }
        let first = *self.first_as_of.get_or_insert(snapshot.as_of);
        if self.next_ms == 0 {
            self.next_ms = first + self.warmup_ms;
        }
        if snapshot.as_of < self.next_ms {
            return;
        }
        let at = snapshot.as_of;
        for (device, (seen, values)) in &self.devices {
            // Only devices that reported since the previous sample: a machine off shift does
            // not age its teeth.
            if *seen + self.every_ms < at || values.is_empty() {
                continue;
            }
            self.taken.push((
                DeviceFeatures::from_values(
                    device,
                    *seen,
                    values.iter().map(|(name, v)| (name.clone(), *v)),
                ),
                at,
            ));
        }
        while self.next_ms <= at {
            self.next_ms += self.every_ms;
        }
    }
}

/// Completed work orders per device, from the history's `orders.jsonl`.
struct Labels {
    /// Per device: (completion time, was a failure), in time order.
    replaced: HashMap<String, Vec<(Time, bool)>>,
    /// The newest event time of the history.
    end_ms: Time,
}

impl Labels {
    /// `end_ms`: the newest event time of the history (the replay's final `as_of`).
    fn read(dir: &Path, end_ms: Time) -> anyhow::Result<Labels> {
        let path = dir.join("orders.jsonl");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut replaced: HashMap<String, Vec<(Time, bool)>> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let Ok(Event::Order(order)) = decode(StreamKind::Orders, 0, i as u64, line.as_bytes())
            else {
                continue;
            };
            if order.kind == OrderKind::Work
                && order.status == OrderStatus::Completed
                && let Some(device) = order.device_id
            {
                let failure = order.reason == Some(WorkReason::Failure);
                replaced
                    .entry(device)
                    .or_default()
                    .push((order.ts.0, failure));
            }
        }
        for list in replaced.values_mut() {
            list.sort();
        }
        Ok(Labels { replaced, end_ms })
    }

    /// `(fails within horizon, rul hours if this tooth fails)`, or none when unknown.
    fn label(&self, device: &str, at_ms: Time, horizon_h: f64) -> Option<(bool, Option<f64>)> {
        let next = self
            .replaced
            .get(device)
            .and_then(|list| list.iter().find(|(ts, _)| *ts > at_ms));
        match next {
            Some(&(ts, true)) => {
                let rul = (ts - at_ms) as f64 / HOUR;
                Some((rul <= horizon_h, Some(rul)))
            }
            Some(_) => Some((false, None)),
            None if (self.end_ms.saturating_sub(at_ms)) as f64 / HOUR >= horizon_h => {
                Some((false, None))
            }
            None => None,
        }
    }
}

/// Scores of a model (or the physics baseline) on labelled samples.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Samples scored.
    pub samples: usize,
    /// Of them failing within the horizon.
    pub positives: usize,
    /// The threshold the classification figures use.
    pub threshold: f64,
    /// Precision at the threshold.
    pub precision: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// F1 at the threshold.
    pub f1: f64,
    /// Area under the ROC curve.
    pub roc_auc: f64,
    /// Area under the precision-recall curve (average precision).
    pub pr_auc: f64,
    /// The best recall at precision ≥ 0.80, and the threshold that gives it.
    pub recall_at_precision_80: (f64, f64),
    /// Calibration: (mean predicted, observed rate, samples) per decile of prediction.
    pub calibration: Vec<(f64, f64, usize)>,
    /// RUL root mean squared error, hours, over samples whose tooth failed.
    pub rul_rmse_h: f64,
    /// RUL mean absolute error, hours.
    pub rul_mae_h: f64,
    /// RUL samples scored.
    pub rul_samples: usize,
}

/// One scored sample: the predicted probability, the label, the predicted and the true hours
/// to failure.
pub type ScoreRow = (f64, bool, Option<f64>, Option<f64>);

/// Scores `(p, fails, predicted rul, true rul)` rows at `threshold`.
pub fn score(rows: &[ScoreRow], threshold: f64) -> Report {
    let positives = rows.iter().filter(|r| r.1).count();
    let (precision, recall) = precision_recall(rows, threshold);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let mut sorted: Vec<(f64, bool)> = rows.iter().map(|r| (r.0, r.1)).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    // ROC AUC by ranks (ties share their average rank).
    let negatives = rows.len() - positives;
    let roc_auc = if positives == 0 || negatives == 0 {
        f64::NAN
    } else {
        let mut ascending = sorted.clone();
        ascending.reverse();
        let mut rank_sum = 0.0;
        let mut i = 0;
        while i < ascending.len() {
            let mut j = i;
            while j + 1 < ascending.len() && ascending[j + 1].0 == ascending[i].0 {
                j += 1;
            }
            let rank = (i + j) as f64 / 2.0 + 1.0;
            rank_sum += rank * ascending[i..=j].iter().filter(|r| r.1).count() as f64;
            i = j + 1;
        }
        (rank_sum - (positives * (positives + 1)) as f64 / 2.0)
            / (positives as f64 * negatives as f64)
    };
    // Average precision and the best recall at precision ≥ 0.8, walking thresholds down.
    let (mut tp, mut fp, mut ap, mut best) = (0usize, 0usize, 0.0, (0.0, 1.0));
    let mut i = 0;
    while i < sorted.len() {
        let threshold = sorted[i].0;
        let mut new_tp = 0;
        while i < sorted.len() && sorted[i].0 == threshold {
            if sorted[i].1 {
                new_tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        tp += new_tp;
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / positives.max(1) as f64;
        ap += precision * new_tp as f64 / positives.max(1) as f64;
        if precision >= 0.8 && recall > best.0 {
            best = (recall, threshold);
        }
    }
    let mut calibration = Vec::new();
    let mut by_p: Vec<(f64, bool)> = sorted;
    by_p.reverse();
    for chunk in by_p.chunks(by_p.len().div_ceil(10).max(1)) {
        let mean = chunk.iter().map(|r| r.0).sum::<f64>() / chunk.len() as f64;
        let rate = chunk.iter().filter(|r| r.1).count() as f64 / chunk.len() as f64;
        calibration.push((mean, rate, chunk.len()));
    }
    let errors: Vec<f64> = rows
        .iter()
        .filter_map(|r| Some(r.2? - r.3?))
        .filter(|e| e.is_finite())
        .collect();
    let n = errors.len().max(1) as f64;
    Report {
        samples: rows.len(),
        positives,
        threshold,
        precision,
        recall,
        f1,
        roc_auc,
        pr_auc: ap,
        recall_at_precision_80: best,
        calibration,
        rul_rmse_h: (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
        rul_mae_h: errors.iter().map(|e| e.abs()).sum::<f64>() / n,
        rul_samples: errors.len(),
    }
}

fn precision_recall(rows: &[ScoreRow], threshold: f64) -> (f64, f64) {
    let tp = rows.iter().filter(|r| r.0 >= threshold && r.1).count() as f64;
    let fp = rows.iter().filter(|r| r.0 >= threshold && !r.1).count() as f64;
    let positives = rows.iter().filter(|r| r.1).count() as f64;
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    (precision, tp / positives.max(1.0))
}

/// The model's rows for scoring.
pub fn model_rows(model: &Model, samples: &[&Sample]) -> Vec<ScoreRow> {
    let features: Vec<&DeviceFeatures> = samples.iter().map(|s| &s.features).collect();
    model
        .predict_many(&features)
        .into_iter()
        .zip(samples)
        .map(|(p, s)| (p.p_fail.unwrap_or(0.0), s.fails, p.rul_hours, s.rul_hours))
        .collect()
}

/// The physics baseline's rows: RUL = hours to the wear limit; "fails" when that is within
/// the horizon (scored as a probability of 1 or 0).
pub fn physics_rows(samples: &[&Sample], horizon_h: f64) -> Vec<ScoreRow> {
    samples
        .iter()
        .map(|s| {
            let rul = s.features.get("hours_to_limit");
            let p = if rul.is_some_and(|h| h <= horizon_h) {
                1.0
            } else {
                0.0
            };
            (p, s.fails, rul, s.rul_hours)
        })
        .collect()
}

/// The held-out part of an internal split: one device in five, after 70 % of the time span.
fn held_out(sample: &Sample, cutoff_ms: Time) -> Option<bool> {
    let test_device =
        wearflow_dataflows::predictions::shard_of(&sample.features.device_id).is_multiple_of(5);
    let late = sample.at_ms >= cutoff_ms;
    match (test_device, late) {
        (true, true) => Some(true),
        (false, false) => Some(false),
        // Training devices late and test devices early are in neither part (no leakage).
        _ => None,
    }
}

/// Where `wearflow train` gets its labelled samples.
pub enum TrainingInput<'a> {
    /// Replays these histories, sampling every `every_ms` of event time; without test
    /// histories, part of the training history is held out.
    Histories {
        /// Histories to train on.
        train: &'a [PathBuf],
        /// Histories to score on.
        test: &'a [PathBuf],
        /// Sampling interval in event time.
        every_ms: u64,
    },
    /// Reads the samples an earlier `--samples-out DIR` wrote (`train.csv`, `test.csv`,
    /// `samples.json`), split as they were then: trying other booster settings takes minutes
    /// instead of a replay.
    Samples(&'a Path),
}

/// The metadata file beside exported samples.
const SAMPLES_META: &str = "samples.json";

/// `wearflow train`.
pub fn train(
    input: TrainingInput<'_>,
    horizon_h: f64,
    boosting: Boosting,
    out: &Path,
    samples_out: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let (train_samples, test_samples, split) = match input {
        TrainingInput::Histories {
            train,
            test,
            every_ms,
        } => {
            let (train, test, split) = replay_split(train, test, horizon_h, every_ms)?;
            (train, test, split.to_string())
        }
        TrainingInput::Samples(dir) => read_sample_dir(dir, horizon_h)?,
    };
    let positives = train_samples.iter().filter(|s| s.fails).count();
    if positives == 0 {
        bail!(
            "the training history has no failure within {horizon_h} h of any sample: \
             simulate more machines or days"
        );
    }
    let mut names: Vec<String> = train_samples
        .iter()
        .flat_map(|s| s.features.values().into_iter().map(|(n, _)| n))
        .filter(|n| n != "lost")
        .collect();
    names.sort();
    names.dedup();
    let rows: Vec<&DeviceFeatures> = train_samples.iter().map(|s| &s.features).collect();
    let failed: Vec<f64> = train_samples
        .iter()
        .map(|s| if s.fails { 1.0 } else { 0.0 })
        .collect();
    let log_rul: Vec<f64> = train_samples
        .iter()
        .map(|s| s.rul_hours.map_or(f64::NAN, f64::ln_1p))
        .collect();
    let started = std::time::Instant::now();
    let mut model = Model::train(names, &rows, &failed, &log_rul, horizon_h, boosting)?;
    let train_refs: Vec<&Sample> = train_samples.iter().collect();
    // The threshold: the best F1 on the training samples.
    let train_rows = model_rows(&model, &train_refs);
    let mut best = (0.0, 0.5);
    for step in 1..100 {
        let t = step as f64 / 100.0;
        let (p, r) = precision_recall(&train_rows, t);
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        if f1 > best.0 {
            best = (f1, t);
        }
    }
    model.threshold = best.1;
    model.restamp()?;
    let trained_s = started.elapsed().as_secs_f64();
    let path = model.save(out)?;
    let test_refs: Vec<&Sample> = test_samples.iter().collect();
    let test_rows = model_rows(&model, &test_refs);
    if let Some(dir) = samples_out {
        write_samples(&dir.join("train.csv"), &model, &train_refs, &train_rows)?;
        write_samples(&dir.join("test.csv"), &model, &test_refs, &test_rows)?;
        let meta = json!({ "horizon_h": horizon_h, "split": split });
        let meta_path = dir.join(SAMPLES_META);
        std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("cannot write {}", meta_path.display()))?;
    }
    let report = json!({
        "model_version": model.version,
        "horizon_h": horizon_h,
        "split": split,
        "train_samples": train_samples.len(),
        "train_positives": positives,
        "features": model.features.len(),
        "boosting": {
            "library": "forust-ml",
            "iterations": boosting.iterations,
            "learning_rate": boosting.learning_rate,
            "max_depth": boosting.max_depth,
        },
        "training_seconds": trained_s,
        "model": score(&test_rows, model.threshold),
        "physics_baseline": score(&physics_rows(&test_refs, horizon_h), 0.5),
    });
    let report_path = out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    eprintln!("wrote {} and {}", path.display(), report_path.display());
    Ok(report)
}

/// Replays the histories into training and test samples (see [`TrainingInput::Histories`]).
fn replay_split(
    histories: &[PathBuf],
    test_histories: &[PathBuf],
    horizon_h: f64,
    every_ms: u64,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>, &'static str)> {
    if histories.is_empty() {
        bail!("give at least one --history DIR");
    }
    let mut train_samples = Vec::new();
    for dir in histories {
        let replay = replay(dir, horizon_h, every_ms, ModelSlot::default())?;
        eprintln!("{}: {} samples", dir.display(), replay.samples.len());
        train_samples.extend(replay.samples);
    }
    let mut test_samples = Vec::new();
    for dir in test_histories {
        let replay = replay(dir, horizon_h, every_ms, ModelSlot::default())?;
        eprintln!("{} (test): {} samples", dir.display(), replay.samples.len());
        test_samples.extend(replay.samples);
    }
    let split = if test_histories.is_empty() {
        // Hold out by device and by time within the training history.
        let (lo, hi) = train_samples.iter().fold((Time::MAX, 0), |(lo, hi), s| {
            (lo.min(s.at_ms), hi.max(s.at_ms))
        });
        let cutoff = lo + (hi.saturating_sub(lo)) * 7 / 10;
        let mut train = Vec::new();
        let mut test = Vec::new();
        for s in train_samples {
            match held_out(&s, cutoff) {
                Some(true) => test.push(s),
                Some(false) => train.push(s),
                None => {}
            }
        }
        train_samples = train;
        test_samples = test;
        "internal: one device in five held out, after 70 % of the time span"
    } else {
        "by history: trained on --history, scored on --test-history"
    };
    Ok((train_samples, test_samples, split))
}

/// Reads a `--samples-out` directory: training and test samples and the split they came
/// from, refused when they were labelled for another horizon.
fn read_sample_dir(
    dir: &Path,
    horizon_h: f64,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>, String)> {
    let meta_path = dir.join(SAMPLES_META);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&meta_path)
            .with_context(|| format!("cannot read {}", meta_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", meta_path.display()))?;
    let labelled_for = meta["horizon_h"]
        .as_f64()
        .with_context(|| format!("{} names no horizon_h", meta_path.display()))?;
    if labelled_for != horizon_h {
        bail!(
            "the samples in {} are labelled for a {labelled_for} h horizon, not \
             {horizon_h} h: give --horizon {labelled_for}h",
            dir.display()
        );
    }
    let split = meta["split"].as_str().unwrap_or("unknown");
    Ok((
        read_samples(&dir.join("train.csv"))?,
        read_samples(&dir.join("test.csv"))?,
        format!("samples from {} ({split})", dir.display()),
    ))
}

/// The leading columns of a samples file; every feature follows.
const SAMPLE_COLUMNS: [&str; 5] = ["device_id", "at_ms", "fails", "rul_hours", "p_fail"];

/// Reads samples that [`write_samples`] wrote. Values round-trip exactly (the CSV holds each
/// feature's stored micro-units), so training on them gives the model a replay would.
pub fn read_samples(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{} is empty", path.display()))?
        .split(',')
        .collect();
    if header.get(..SAMPLE_COLUMNS.len()) != Some(&SAMPLE_COLUMNS[..]) {
        bail!(
            "{} is not a samples file of `wearflow train --samples-out`",
            path.display()
        );
    }
    let names = &header[SAMPLE_COLUMNS.len()..];
    let mut samples = Vec::new();
    for (n, line) in lines.enumerate() {
        let at = || format!("{} line {}", path.display(), n + 2);
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != header.len() {
            bail!(
                "{}: {} fields, the header has {}",
                at(),
                fields.len(),
                header.len()
            );
        }
        let number = |text: &str| -> anyhow::Result<f64> {
            text.parse::<f64>()
                .with_context(|| format!("{}: {text:?} is not a number", at()))
        };
        let mut values = Vec::new();
        for (name, text) in names.iter().zip(&fields[SAMPLE_COLUMNS.len()..]) {
            if !text.is_empty() {
                values.push((name.to_string(), number(text)?));
            }
        }
        let at_ms: Time = fields[1]
            .parse()
            .with_context(|| format!("{}: at_ms {:?}", at(), fields[1]))?;
        samples.push(Sample {
            features: DeviceFeatures::from_values(fields[0], at_ms, values),
            at_ms,
            fails: match fields[2] {
                "1" => true,
                "0" => false,
                other => bail!("{}: fails is {other:?}, not 0 or 1", at()),
            },
            rul_hours: match fields[3] {
                "" => None,
                text => Some(number(text)?),
            },
        });
    }
    Ok(samples)
}

/// Writes labelled samples as CSV: device, moment, label, hours to failure, the model's
/// probability (from `rows`, the model's rows for those samples), then every feature the
/// model uses (empty when absent).
fn write_samples(
    path: &Path,
    model: &Model,
    samples: &[&Sample],
    rows: &[ScoreRow],
) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    write!(out, "{}", SAMPLE_COLUMNS.join(","))?;
    for name in &model.features {
        write!(out, ",{name}")?;
    }
    writeln!(out)?;
    for (sample, row) in samples.iter().zip(rows) {
        let rul = sample.rul_hours.map(|h| h.to_string()).unwrap_or_default();
        write!(
            out,
            "{},{},{},{rul},{}",
            sample.features.device_id, sample.at_ms, sample.fails as u8, row.0
        )?;
        for name in &model.features {
            match sample.features.get(name) {
                Some(v) => write!(out, ",{v}")?,
                None => write!(out, ",")?,
            }
        }
        writeln!(out)?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `wearflow predict`: the final `maintenance_predictions` rows of a replay with the model.
pub fn predict(history: &Path, model_dir: &Path, out: &Path) -> anyhow::Result<usize> {
    let slot = ModelSlot::load_from(model_dir)?;
    let snapshot = run_history(history, slot, None)?.snapshot();
    let view = snapshot
        .view("maintenance_predictions")
        .context("no maintenance_predictions view")?;
    let schema = &view.schema;
    let mut text = String::new();
    let mut count = 0;
    for row in view.iter() {
        let mut object = serde_json::Map::new();
        for (column, value) in schema.columns.iter().zip(row) {
            object.insert(column.name.clone(), value_json(value));
        }
        text.push_str(&serde_json::Value::Object(object).to_string());
        text.push('\n');
        count += 1;
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(count)
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
    }
}
