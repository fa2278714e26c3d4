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
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};

use arc_swap::ArcSwapOption;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

use crate::features::{DeviceFeatures, FeatureColumns};

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
    /// `features`, resolved on first use.
    #[serde(skip)]
    columns: OnceLock<FeatureColumns>,
    /// The features of `bins`, resolved on first use.
    #[serde(skip)]
    bin_columns: OnceLock<FeatureColumns>,
    /// Classifier and regressor laid out for one-row prediction, built on first use (none
    /// when a booster has a layout [`Flat`] does not cover: `forust-ml` predicts then).
    #[serde(skip)]
    flat: OnceLock<Option<(Flat, Flat)>>,
}

/// A booster's trees laid out for predicting one row at a time: 16-byte nodes in breadth-first
/// order, a node's children side by side. `forust-ml`'s 80-byte nodes make a prediction of
/// 1,200 trees a walk through megabytes of memory; these take a fifth of it. The sum runs in
/// the booster's order from its base score, so the result is the same to the bit (tested).
struct Flat {
    base: f64,
    /// Each tree's root in `nodes`.
    roots: Vec<u32>,
    nodes: Vec<FlatNode>,
}

#[derive(Clone, Copy)]
struct FlatNode {
    /// The split value, or a leaf's weight.
    value: f64,
    /// The split feature, [`FlatNode::MISSING_RIGHT`] set when a missing value goes right;
    /// [`FlatNode::LEAF`] for a leaf.
    feature: u32,
    /// The left child (the right one follows it).
    left: u32,
}

impl FlatNode {
    const LEAF: u32 = u32::MAX;
    const MISSING_RIGHT: u32 = 1 << 31;
}

impl Flat {
    /// Lays out the trees `booster` predicts with; none if it treats missing values other
    /// than as NaN or a node sends them to a branch of their own.
    fn of(booster: &GradientBooster) -> Option<Flat> {
        if !booster.missing.is_nan() {
            return None;
        }
        let used = booster
            .prediction_iteration
            .unwrap_or(booster.trees.len())
            .min(booster.trees.len());
        let mut flat = Flat {
            base: booster.base_score,
            roots: Vec::with_capacity(used),
            nodes: Vec::new(),
        };
        for tree in &booster.trees[..used] {
            let root = u32::try_from(flat.nodes.len()).ok()?;
            flat.roots.push(root);
            let placeholder = FlatNode {
                value: 0.0,
                feature: FlatNode::LEAF,
                left: 0,
            };
            flat.nodes.push(placeholder);
            // (forust node index, its slot here), breadth first.
            let mut queue = std::collections::VecDeque::from([(0usize, root as usize)]);
            while let Some((index, slot)) = queue.pop_front() {
                let node = tree.nodes.get(index)?;
                if node.is_leaf {
                    flat.nodes[slot].value = node.weight_value as f64;
                    continue;
                }
                let missing_right = if node.missing_node == node.right_child {
                    FlatNode::MISSING_RIGHT
                } else if node.missing_node == node.left_child {
                    0
                } else {
                    return None;
                };
                let feature = u32::try_from(node.split_feature)
                    .ok()
                    .filter(|f| *f < FlatNode::MISSING_RIGHT)?;
                let left = flat.nodes.len();
                flat.nodes[slot] = FlatNode {
                    value: node.split_value,
                    feature: feature | missing_right,
                    left: u32::try_from(left).ok()?,
                };
                flat.nodes.extend([placeholder, placeholder]);
                queue.extend([(node.left_child, left), (node.right_child, left + 1)]);
            }
        }
        Some(flat)
    }

    /// The booster's raw output for one row (as many values as the booster's features).
    fn predict(&self, row: &[f64]) -> f64 {
        let mut sum = self.base;
        for root in &self.roots {
            let mut at = *root as usize;
            loop {
                let node = self.nodes[at];
                if node.feature == FlatNode::LEAF {
                    sum += node.value;
                    break;
                }
                let value = row[(node.feature & !FlatNode::MISSING_RIGHT) as usize];
                // As forust compares: left when below the split value.
                let below = value < node.value;
                let right = if value.is_nan() {
                    node.feature & FlatNode::MISSING_RIGHT != 0
                } else {
                    !below
                };
                at = node.left as usize + right as usize;
            }
        }
        sum
    }
}

/// The bin of a feature a device does not have (see [`Model::bins_of`]).
pub const NO_BIN: u8 = u8::MAX;

/// One prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Probability of failing within the horizon (none for the physics baseline).
    pub p_fail: Option<f64>,
    /// Remaining useful life in operating hours.
    pub rul_hours: Option<f64>,
}

impl Model {
    /// The feature matrix of `rows` (one row per sample) in the order of `columns`,
    /// column-major; a missing feature is NaN.
    pub fn matrix(columns: &FeatureColumns, rows: &[&DeviceFeatures]) -> Vec<f64> {
        let width = columns.len();
        let mut by_row = Vec::with_capacity(width * rows.len());
        for row in rows {
            columns.extend(row, &mut by_row);
        }
        if rows.len() <= 1 {
            return by_row;
        }
        (0..width)
            .flat_map(|c| (0..rows.len()).map(move |r| (r, c)))
            .map(|(r, c)| by_row[r * width + c])
            .collect()
    }

    /// The model's feature columns.
    fn columns(&self) -> &FeatureColumns {
        self.columns
            .get_or_init(|| FeatureColumns::new(&self.features))
    }

    /// The training bin of each of a device's features, in `bins` order ([`NO_BIN`] where it
    /// lacks one), for `model_drift`.
    pub fn bins_of(&self, features: &DeviceFeatures) -> Vec<u8> {
        let columns = self.bin_columns.get_or_init(|| {
            let names: Vec<String> = self.bins.iter().map(|b| b.feature.clone()).collect();
            FeatureColumns::new(&names)
        });
        let mut values = Vec::with_capacity(columns.len());
        columns.extend(features, &mut values);
        values
            .iter()
            .zip(&self.bins)
            .map(|(value, bins)| {
                if value.is_nan() {
                    NO_BIN
                } else {
                    bins.bin(*value).min(NO_BIN as usize - 1) as u8
                }
            })
            .collect()
    }

    /// Predicts for one device.
    pub fn predict(&self, features: &DeviceFeatures) -> Prediction {
        let data = Model::matrix(self.columns(), &[features]);
        let flat = self
            .flat
            .get_or_init(|| Flat::of(&self.classifier).zip(Flat::of(&self.regressor)));
        let (log_odds, log_rul) = match flat {
            Some((classifier, regressor)) => (classifier.predict(&data), regressor.predict(&data)),
            None => {
                let matrix = Matrix::new(&data, 1, self.features.len());
                (
                    self.classifier.predict(&matrix, false)[0],
                    self.regressor.predict(&matrix, false)[0],
                )
            }
        };
        Prediction {
            p_fail: Some(sigmoid(log_odds)).filter(|p| p.is_finite()),
            rul_hours: Some(log_rul.exp_m1().max(0.0)).filter(|h| h.is_finite()),
        }
    }

    /// Predictions for many samples at once (training and evaluation).
    pub fn predict_many(&self, rows: &[&DeviceFeatures]) -> Vec<Prediction> {
        if rows.is_empty() {
            return Vec::new();
        }
        let data = Model::matrix(self.columns(), rows);
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
        let columns = FeatureColumns::new(&features);
        let data = Model::matrix(&columns, rows);
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
        let data = Model::matrix(&columns, &uncensored);
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
            columns: OnceLock::from(columns),
            bin_columns: OnceLock::new(),
            flat: OnceLock::new(),
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
        let hash = fnv1a(
            text.bytes()
                .chain(self.threshold.to_bits().to_le_bytes())
                .chain(self.features.join(",").into_bytes()),
        );
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

/// 64-bit FNV-1a: model versions, version keys and device shards (stable across processes
/// and builds, unlike the standard library's hasher).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A version as a number (FNV-1a of its name): a compact key for dataflow records that would
/// otherwise carry the version string each.
pub fn version_key(version: &str) -> u64 {
    fnv1a(version.bytes())
}

/// A loaded model by [`version_key`].
pub fn loaded_by_key(key: u64) -> Option<Arc<Model>> {
    LOADED
        .read()
        .ok()?
        .iter()
        .find(|(version, _)| version_key(version) == key)
        .map(|(_, model)| Arc::clone(model))
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
                    [
                        ("strain_ue.mean".to_string(), strain),
                        ("load_kn.mean".to_string(), ((i * 7) % 13) as f64),
                    ],
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
        let names = vec!["strain_ue.mean".to_string(), "load_kn.mean".to_string()];
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
        // The flat layout predicts what forust does, to the bit, missing values included.
        let (classifier, regressor) = (
            Flat::of(&loaded.classifier).expect("flat classifier"),
            Flat::of(&loaded.regressor).expect("flat regressor"),
        );
        for i in 0..300 {
            let strain = if i % 7 == 0 {
                f64::NAN
            } else {
                380.0 + i as f64 * 0.45
            };
            let load = if i % 5 == 0 {
                f64::NAN
            } else {
                (i % 17) as f64
            };
            let row = [strain, load];
            let matrix = Matrix::new(&row, 1, 2);
            let forust = (
                loaded.classifier.predict(&matrix, false)[0],
                loaded.regressor.predict(&matrix, false)[0],
            );
            let flat = (classifier.predict(&row), regressor.predict(&row));
            assert_eq!(flat.0.to_bits(), forust.0.to_bits(), "{row:?}");
            assert_eq!(flat.1.to_bits(), forust.1.to_bits(), "{row:?}");
        }
        // One device at a time (live) and a column-major batch (evaluation) agree.
        let many = loaded.predict_many(&refs);
        for (row, batch) in rows.iter().zip(&many) {
            assert_eq!(loaded.predict(row), *batch, "{}", row.device_id);
        }
        // Drift bins: the training deciles of each feature, NO_BIN where one is missing.
        let bins = loaded.bins_of(&rows[95]);
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0] as usize, loaded.bins[0].bin(495.0));
        assert!(bins[0] >= 8, "{bins:?}");
        let none = DeviceFeatures::from_values("E", 0, [("load_kn.mean".to_string(), 3.0)]);
        assert_eq!(loaded.bins_of(&none)[0], NO_BIN);
        assert_ne!(loaded.bins_of(&none)[1], NO_BIN);
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
