//! The failure model: a gradient-boosted classifier (fails within the horizon) and regressor
//! (remaining useful life), trained by `wearflow train` and applied in the dataflow.
//!
//! A model is immutable and named by its version (a hash of its file). Every loaded version
//! stays in a process-wide registry, so that the dataflow's retraction of a prediction made
//! with an older model recomputes exactly the row it once produced. Which version is current
//! is an input collection of the dataflow (see [`crate::predictions`]): a reload retracts
//! every prediction of the old version and predicts again with the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use arc_swap::ArcSwapOption;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

use crate::features::DeviceFeatures;

/// The version name of predictions made without a model (remaining length ÷ wear rate).
pub const PHYSICS: &str = "physics";

/// The model file's format version (2: `forust-ml` boosters; 1 held `perpetual` boosters).
pub const FORMAT: u32 = 2;

/// The model file name inside a model directory.
pub const FILE: &str = "model.json";

/// Errors of loading, saving and training models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be read or written.
    #[error("model file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The model file is not a model of this format.
    #[error("model file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Training failed.
    #[error("training failed: {0}")]
    Training(String),
    /// No model directory is configured.
    #[error("no model directory is configured (give --model DIR or [model] path)")]
    NotConfigured,
}

/// The training distribution of one feature: decile edges and the share of training samples
/// in each bin, for the population stability index of `model_drift`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    /// The feature.
    pub feature: String,
    /// Upper bin edges (a value `v` falls in the first bin whose edge is `>= v`; the last bin
    /// is open).
    pub edges: Vec<f64>,
    /// Share of training samples per bin (`edges.len() + 1` bins).
    pub shares: Vec<f64>,
}

impl FeatureBins {
    /// Bins of `values` at their deciles.
    pub fn of(feature: &str, values: &mut [f64]) -> FeatureBins {
        values.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .filter_map(|d| values.get(values.len() * d / 10).copied())
            .collect();
        edges.dedup();
        let mut counts = vec![0usize; edges.len() + 1];
        for v in values.iter() {
            counts[Self::bin_of(&edges, *v)] += 1;
        }
        let total = values.len().max(1) as f64;
        FeatureBins {
            feature: feature.to_string(),
            shares: counts.iter().map(|c| *c as f64 / total).collect(),
            edges,
        }
    }

    fn bin_of(edges: &[f64], value: f64) -> usize {
        edges.partition_point(|e| *e < value)
    }

    /// The bin of a value.
    pub fn bin(&self, value: f64) -> usize {
        Self::bin_of(&self.edges, value)
    }

    /// Population stability index of `counts` (per bin) against the training shares.
    pub fn psi(&self, counts: &[i64]) -> f64 {
        let total: i64 = counts.iter().sum();
        if total <= 0 {
            return 0.0;
        }
        let floor = 1e-4;
        self.shares
            .iter()
            .enumerate()
            .map(|(i, expected)| {
                let actual = counts.get(i).copied().unwrap_or(0) as f64 / total as f64;
                let (a, e) = (actual.max(floor), expected.max(floor));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

/// How the boosters are grown: the settings of `wearflow train`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Boosting {
    /// Trees per booster.
    pub iterations: usize,
    /// Each tree's weight (shrinkage).
    pub learning_rate: f32,
    /// The depth of each tree.
    pub max_depth: usize,
}

impl Default for Boosting {
    /// Chosen on the teeth simulator with the `drift_*` features (train on seed 1, score on
    /// seeds 2 and 3; see bench/README.md): 600 trees of depth 6 at rate 0.05 beat depth 4
    /// and fewer trees; the final figure is scored on a seed not used to choose them.
    fn default() -> Self {
        Boosting {
            iterations: 600,
            learning_rate: 0.05,
            max_depth: 6,
        }
    }
}

impl Boosting {
    fn booster(&self, objective: ObjectiveType) -> GradientBooster {
        GradientBooster::default()
            .set_objective_type(objective)
            .set_iterations(self.iterations)
            .set_learning_rate(self.learning_rate)
            .set_max_depth(self.max_depth)
    }
}

/// A trained model as stored in `MODEL_DIR/model.json`.
#[derive(Serialize, Deserialize)]
pub struct Model {
    /// File format ([`FORMAT`]).
    pub format: u32,
    /// Version: a hash of the trained boosters, stamped into every prediction.
    #[serde(default)]
    pub version: String,
    /// The classifier's horizon in (operating = event-time) hours.
    pub horizon_h: f64,
    /// The probability at or above which the model says "fails within the horizon" (chosen
    /// on the training split).
    pub threshold: f64,
    /// Feature names, in the boosters' column order.
    pub features: Vec<String>,
    /// Fails within the horizon: log-loss gradient-boosted trees (their output is log-odds).
    pub classifier: GradientBooster,
    /// Remaining useful life, `ln(1 + hours)`: squared-loss gradient-boosted trees.
    pub regressor: GradientBooster,
    /// The training distribution of each feature.
    pub bins: Vec<FeatureBins>,
}

/// One prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Probability of failing within the horizon (none for the physics baseline).
    pub p_fail: Option<f64>,
    /// Remaining useful life in operating hours.
    pub rul_hours: Option<f64>,
}

impl Model {
    /// The feature matrix of `rows` (one row per sample) in the model's column order,
    /// column-major; a missing feature is NaN.
    pub fn matrix(features: &[String], rows: &[&DeviceFeatures]) -> Vec<f64> {
        let mut data = Vec::with_capacity(features.len() * rows.len());
        for name in features {
            data.extend(rows.iter().map(|r| r.get(name).unwrap_or(f64::NAN)));
        }
        data
    }

    /// Predicts for one device.
    pub fn predict(&self, features: &DeviceFeatures) -> Prediction {
        let data = Model::matrix(&self.features, &[features]);
        let matrix = Matrix::new(&data, 1, self.features.len());
        let log_odds = self.classifier.predict(&matrix, false);
        let log_rul = self.regressor.predict(&matrix, false);
        Prediction {
            p_fail: log_odds
                .first()
                .map(|l| sigmoid(*l))
                .filter(|p| p.is_finite()),
            rul_hours: log_rul
                .first()
                .map(|l| l.exp_m1().max(0.0))
                .filter(|h| h.is_finite()),
        }
    }

    /// Predictions for many samples at once (training and evaluation).
    pub fn predict_many(&self, rows: &[&DeviceFeatures]) -> Vec<Prediction> {
        if rows.is_empty() {
            return Vec::new();
        }
        let data = Model::matrix(&self.features, rows);
        let matrix = Matrix::new(&data, rows.len(), self.features.len());
        let log_odds = self.classifier.predict(&matrix, true);
        let log_rul = self.regressor.predict(&matrix, true);
        log_odds
            .into_iter()
            .zip(log_rul)
            .map(|(p, l)| Prediction {
                p_fail: Some(sigmoid(p)).filter(|p| p.is_finite()),
                rul_hours: Some(l.exp_m1().max(0.0)).filter(|h| h.is_finite()),
            })
            .collect()
    }

    /// Trains both boosters on samples `x` (row per sample, columns = `features`), labels
    /// `failed` (0/1) and `log_rul` (NaN where the life is censored: left out of the
    /// regressor).
    pub fn train(
        features: Vec<String>,
        rows: &[&DeviceFeatures],
        failed: &[f64],
        log_rul: &[f64],
        horizon_h: f64,
        boosting: Boosting,
    ) -> Result<Model, ModelError> {
        let data = Model::matrix(&features, rows);
        let matrix = Matrix::new(&data, rows.len(), features.len());
        let mut classifier = boosting.booster(ObjectiveType::LogLoss);
        classifier
            .fit_unweighted(&matrix, failed, None)
            .map_err(|e| ModelError::Training(e.to_string()))?;
        let uncensored: Vec<&DeviceFeatures> = rows
            .iter()
            .zip(log_rul)
            .filter(|(_, l)| l.is_finite())
            .map(|(r, _)| *r)
            .collect();
        let targets: Vec<f64> = log_rul.iter().copied().filter(|l| l.is_finite()).collect();
        if uncensored.is_empty() {
            return Err(ModelError::Training(
                "no sample with a known failure time".into(),
            ));
        }
        let data = Model::matrix(&features, &uncensored);
        let matrix = Matrix::new(&data, uncensored.len(), features.len());
        let mut regressor = boosting.booster(ObjectiveType::SquaredLoss);
        regressor
            .fit_unweighted(&matrix, &targets, None)
            .map_err(|e| ModelError::Training(e.to_string()))?;
        let bins = features
            .iter()
            .map(|name| {
                let mut values: Vec<f64> = rows.iter().filter_map(|r| r.get(name)).collect();
                FeatureBins::of(name, &mut values)
            })
            .collect();
        let mut model = Model {
            format: FORMAT,
            version: String::new(),
            horizon_h,
            threshold: 0.5,
            features,
            classifier,
            regressor,
            bins,
        };
        model.version = model.content_version()?;
        Ok(model)
    }

    /// A version derived from the boosters and settings (same training, same version).
    fn content_version(&self) -> Result<String, ModelError> {
        let text = self
            .classifier
            .json_dump()
            .and_then(|c| self.regressor.json_dump().map(|r| c + &r))
            .map_err(|e| ModelError::Training(e.to_string()))?;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text
            .bytes()
            .chain(self.threshold.to_bits().to_le_bytes())
            .chain(self.features.join(",").into_bytes())
        {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(format!("m{hash:016x}"))
    }

    /// Re-derives the version after a setting changed (the threshold).
    pub fn restamp(&mut self) -> Result<(), ModelError> {
        self.version = self.content_version()?;
        Ok(())
    }

    /// Writes `dir/model.json` atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        let path = dir.join(FILE);
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = serde_json::to_vec(self).map_err(|e| ModelError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let temp = dir.join(format!(".{FILE}.tmp"));
        std::fs::write(&temp, text).map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)?;
        Ok(path)
    }

    /// Reads `dir/model.json` (or `dir` itself when it is a file).
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let path = if dir.is_dir() {
            dir.join(FILE)
        } else {
            dir.to_path_buf()
        };
        let invalid = |reason: String| ModelError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // The format first, so that a file of another format says so instead of failing on
        // whichever field changed.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if header.format != FORMAT {
            return Err(invalid(format!(
                "format {} (this engine reads {FORMAT}; retrain with `wearflow train`)",
                header.format
            )));
        }
        let model: Model = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if model.version.is_empty() || model.version == PHYSICS {
            return Err(invalid("the model has no version".into()));
        }
        Ok(model)
    }
}

/// The logistic function: log-odds to probability.
fn sigmoid(log_odds: f64) -> f64 {
    1.0 / (1.0 + (-log_odds).exp())
}

/// Every model version loaded in this process, by version.
static LOADED: LazyLock<RwLock<HashMap<String, Arc<Model>>>> = LazyLock::new(Default::default);

/// A loaded model by version.
pub fn loaded(version: &str) -> Option<Arc<Model>> {
    LOADED.read().ok()?.get(version).cloned()
}

fn register(model: Model) -> Arc<Model> {
    let model = Arc::new(model);
    if let Ok(mut loaded) = LOADED.write() {
        // Same version, same content: keep the first so that older predictions stay exact.
        return Arc::clone(
            loaded
                .entry(model.version.clone())
                .or_insert_with(|| Arc::clone(&model)),
        );
    }
    model
}

/// An engine's current model and where it is loaded from; cheap to clone, shared between
/// the runtime (which feeds the current version to the dataflow) and the HTTP reload.
#[derive(Clone, Default)]
pub struct ModelSlot {
    inner: Arc<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    dir: Mutex<Option<PathBuf>>,
    current: ArcSwapOption<Model>,
}

impl ModelSlot {
    /// A slot that loads from `dir` (now and on each reload).
    pub fn load_from(dir: &Path) -> Result<ModelSlot, ModelError> {
        let slot = ModelSlot::default();
        if let Ok(mut d) = slot.inner.dir.lock() {
            *d = Some(dir.to_path_buf());
        }
        slot.reload()?;
        Ok(slot)
    }

    /// Loads the model directory again; the dataflow switches to it at its next tick.
    pub fn reload(&self) -> Result<Arc<Model>, ModelError> {
        let dir = self
            .inner
            .dir
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .ok_or(ModelError::NotConfigured)?;
        let model = register(Model::load(&dir)?);
        self.inner.current.store(Some(Arc::clone(&model)));
        Ok(model)
    }

    /// The current model, if any.
    pub fn current(&self) -> Option<Arc<Model>> {
        self.inner.current.load_full()
    }

    /// The current version, or [`PHYSICS`] without a model.
    pub fn version(&self) -> String {
        self.current()
            .map_or_else(|| PHYSICS.to_string(), |m| m.version.clone())
    }
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelSlot({})", self.version())
    }
}

impl PartialEq for ModelSlot {
    /// Slots are runtime wiring, not configuration: any two compare equal.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_small_for_the_same_distribution_and_large_for_a_shift() {
        let mut training: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let bins = FeatureBins::of("x", &mut training);
        assert_eq!(bins.shares.len(), bins.edges.len() + 1);
        let count = |values: &mut dyn Iterator<Item = f64>| {
            let mut counts = vec![0i64; bins.shares.len()];
            for v in values {
                counts[bins.bin(v)] += 1;
            }
            counts
        };
        let same = count(&mut (0..500).map(|i| (2 * i) as f64));
        assert!(bins.psi(&same) < 0.01, "{}", bins.psi(&same));
        let shifted = count(&mut (0..500).map(|i| (700 + i) as f64));
        assert!(
            bins.psi(&shifted) > crate::predictions::DRIFT_PSI,
            "{}",
            bins.psi(&shifted)
        );
    }

    #[test]
    fn trains_saves_loads_and_predicts() {
        // Fails when strain is high; RUL shrinks with strain.
        let rows: Vec<DeviceFeatures> = (0..400)
            .map(|i| {
                let strain = 400.0 + (i % 100) as f64;
                DeviceFeatures::from_values(
                    &format!("D{i}"),
                    0,
                    [("strain_ue.mean".to_string(), strain)],
                )
            })
            .collect();
        let refs: Vec<&DeviceFeatures> = rows.iter().collect();
        let strain = |r: &DeviceFeatures| r.get("strain_ue.mean").unwrap_or(0.0);
        let failed: Vec<f64> = refs
            .iter()
            .map(|r| if strain(r) >= 450.0 { 1.0 } else { 0.0 })
            .collect();
        let log_rul: Vec<f64> = refs
            .iter()
            .map(|r| (500.0 - strain(r)).max(1.0).ln_1p())
            .collect();
        let names = vec!["strain_ue.mean".to_string()];
        let model = Model::train(names, &refs, &failed, &log_rul, 24.0, Boosting::default())
            .expect("train");
        assert!(model.version.starts_with('m'));
        let dir = tempfile_dir();
        model.save(&dir).expect("save");
        let loaded = Model::load(&dir).expect("load");
        assert_eq!(loaded.version, model.version);
        let high = loaded.predict(&rows[95]);
        let low = loaded.predict(&rows[5]);
        assert!(high.p_fail.expect("p") > 0.8, "{high:?}");
        assert!(low.p_fail.expect("p") < 0.2, "{low:?}");
        assert!(high.rul_hours.expect("rul") < low.rul_hours.expect("rul"));
        // A model file of another format is refused by name, not by a missing field.
        std::fs::write(dir.join(FILE), r#"{"format":1,"classifier":{}}"#).expect("write");
        let err = Model::load(&dir)
            .err()
            .expect("format 1 is refused")
            .to_string();
        assert!(err.contains("format 1"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wearflow-model-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).ok();
        dir
    }
}
