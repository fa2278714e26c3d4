//! The domain dataflows of wearflow and the registry of views that engineers extend.
//!
//! ```text
//!  Inputs (telemetry, orders, stock, assets, quality marks, error records)
//!     │  Context memoizes shared intermediates (tooth state, order state, balances)
//!     ▼
//!  registry(): [ViewDef { schema, build }]  ──►  one Collection<Row> per view
//! ```
//!
//! Adding a view: write a module with `pub fn view() -> ViewDef` (its schema and a builder
//! from [`Context`] to a collection of rows), then add one line to [`registry`].

use std::cell::OnceCell;

use serde::{Deserialize, Serialize};
use wearflow_operators::{Collection, ErrorRecord, LatestByKey, Row, ViewSchema};
use wearflow_sources::{Asset, Order, Stock, Telemetry};

pub mod alerts;
pub mod data_quality;
pub mod dead_letters;
pub mod features;
pub mod fleet_kpis;
pub mod inventory_balances;
pub mod machine_health;
pub mod model;
pub mod order_flow;
pub mod order_state;
pub mod orders_open;
pub mod predictions;
pub mod tooth_wear;

/// How a record counted at ingestion; the runtime feeds one mark per record (diff = count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QualityMark {
    /// Decoded, valid and on time.
    Ok,
    /// Rejected (it is also in the error records).
    Bad,
    /// Valid but behind the frontier: stamped at the frontier instead of its event time.
    Late,
}

impl QualityMark {
    /// This mark as `(accepted, rejected, late)` counts; a late record is also accepted.
    pub fn counts(self) -> (isize, isize, isize) {
        match self {
            QualityMark::Ok => (1, 0, 0),
            QualityMark::Bad => (0, 1, 0),
            QualityMark::Late => (1, 0, 1),
        }
    }
}

/// The input collections every dataflow reads.
pub struct Inputs<'scope> {
    /// Telemetry readings.
    pub telemetry: Collection<'scope, Telemetry>,
    /// Order lifecycle events.
    pub orders: Collection<'scope, Order>,
    /// Stock movements.
    pub stock: Collection<'scope, Stock>,
    /// Reference data.
    pub assets: Collection<'scope, Asset>,
    /// `(source, mark)`, the diff counting records.
    pub quality: Collection<'scope, (String, QualityMark)>,
    /// `(source, max event time seen)` observations.
    pub source_times: Collection<'scope, (String, u64)>,
    /// Rejected records.
    pub errors: Collection<'scope, ErrorRecord>,
    /// `(shard, version)` of the current failure model, for every shard of
    /// [`predictions::SHARDS`] (`physics` without a model).
    pub models: Collection<'scope, (u64, String)>,
}

/// Tunable thresholds of the domain dataflows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataflowConfig {
    /// A tooth silent this long while its machine reports is lost.
    pub silence_ms: u64,
    /// Window of the wear-rate trend (least-squares slope of remaining length).
    pub trend_window_ms: u64,
    /// Window of impact and load statistics.
    pub stats_window_ms: u64,
    /// An impact at or above this many g counts as an impact.
    pub impact_threshold_g: f64,
    /// A drop of remaining length of at least this many mm below the trend window's maximum
    /// marks a broken tooth.
    pub drop_threshold_mm: f64,
    /// A tooth this many hours or fewer from its wear limit is on watch.
    pub watch_hours: f64,
    /// New tooth length when the device record does not say.
    pub default_new_length_mm: f64,
    /// Wear limit when the device record does not say.
    pub default_wear_limit_mm: f64,
    /// A device counts as reporting if it sent telemetry in this window.
    pub reporting_window_ms: u64,
    /// Records leave sum-based windows at multiples of this (state ∝ window / granularity).
    pub window_granularity_ms: u64,
    /// A device's failure prediction is made again at most once per this much event time
    /// (sooner for a new model version, a lost or a replaced tooth); 0 = on every change of
    /// its features.
    pub score_interval_ms: u64,
}

impl Default for DataflowConfig {
    fn default() -> Self {
        DataflowConfig {
            silence_ms: 10 * 60_000,
            trend_window_ms: 6 * 3_600_000,
            stats_window_ms: 3_600_000,
            impact_threshold_g: 8.0,
            drop_threshold_mm: 15.0,
            watch_hours: 48.0,
            default_new_length_mm: 140.0,
            default_wear_limit_mm: 40.0,
            reporting_window_ms: 5 * 60_000,
            window_granularity_ms: 60_000,
            score_interval_ms: 5 * 60_000,
        }
    }
}

/// What a view builder gets: the inputs, the config and shared intermediates built once.
pub struct Context<'scope> {
    /// The inputs.
    pub inputs: Inputs<'scope>,
    /// The thresholds.
    pub config: DataflowConfig,
    readings: OnceCell<Collection<'scope, tooth_wear::Reading>>,
    device_last_seen: OnceCell<Collection<'scope, (String, (u64, String))>>,
    tooth_wear: OnceCell<Collection<'scope, tooth_wear::ToothWear>>,
    order_state: OnceCell<Collection<'scope, order_state::OrderState>>,
    balances: OnceCell<Collection<'scope, inventory_balances::Balance>>,
    features: OnceCell<Collection<'scope, features::DeviceFeatures>>,
    scored: OnceCell<Collection<'scope, (predictions::DevicePrediction, Vec<u8>)>>,
    predictions: OnceCell<Collection<'scope, predictions::DevicePrediction>>,
    demand: OnceCell<Collection<'scope, predictions::Demand>>,
    drift: OnceCell<Collection<'scope, (String, String, i64, i64)>>,
}

impl<'scope> Context<'scope> {
    /// A context over these inputs.
    pub fn new(inputs: Inputs<'scope>, config: DataflowConfig) -> Context<'scope> {
        Context {
            inputs,
            config,
            readings: OnceCell::new(),
            device_last_seen: OnceCell::new(),
            tooth_wear: OnceCell::new(),
            order_state: OnceCell::new(),
            balances: OnceCell::new(),
            features: OnceCell::new(),
            scored: OnceCell::new(),
            predictions: OnceCell::new(),
            demand: OnceCell::new(),
            drift: OnceCell::new(),
        }
    }

    /// Telemetry projected to the fields the tooth dataflows use.
    pub fn readings(&self) -> Collection<'scope, tooth_wear::Reading> {
        self.readings
            .get_or_init(|| self.inputs.telemetry.clone().map(tooth_wear::Reading::of))
            .clone()
    }

    /// The newest reading time per device, with the machine it came from.
    pub fn device_last_seen(&self) -> Collection<'scope, (String, (u64, String))> {
        self.device_last_seen
            .get_or_init(|| {
                self.readings()
                    .map(|r| (r.device_id, (r.ts, r.machine_id)))
                    .latest_by_key("device: last seen")
            })
            .clone()
    }

    /// Per-device tooth state (shared by `tooth_wear`, `machine_health`, `alerts`).
    pub fn tooth_wear(&self) -> Collection<'scope, tooth_wear::ToothWear> {
        self.tooth_wear
            .get_or_init(|| tooth_wear::build(self))
            .clone()
    }

    /// Per-order state (shared by `orders_open`, `order_flow`, `inventory_balances`).
    pub fn order_state(&self) -> Collection<'scope, order_state::OrderState> {
        self.order_state
            .get_or_init(|| order_state::build(self))
            .clone()
    }

    /// Per-device feature vectors (shared by `features`, the predictions and drift).
    pub fn features(&self) -> Collection<'scope, features::DeviceFeatures> {
        self.features.get_or_init(|| features::build(self)).clone()
    }

    /// Per-device predictions of the current model, with the training bins of the features
    /// each was made from (shared by the predictions and drift).
    pub fn scored(&self) -> Collection<'scope, (predictions::DevicePrediction, Vec<u8>)> {
        self.scored.get_or_init(|| predictions::build(self)).clone()
    }

    /// Per-device predictions of the current model.
    pub fn predictions(&self) -> Collection<'scope, predictions::DevicePrediction> {
        self.predictions
            .get_or_init(|| self.scored().map(|(prediction, _)| prediction))
            .clone()
    }

    /// Per-(warehouse, sku) replacement demand against stock.
    pub fn demand(&self) -> Collection<'scope, predictions::Demand> {
        self.demand
            .get_or_init(|| predictions::demand(self))
            .clone()
    }

    /// `(version, feature, psi µ, devices)` of the current model's features.
    pub fn drift(&self) -> Collection<'scope, (String, String, i64, i64)> {
        self.drift.get_or_init(|| predictions::drift(self)).clone()
    }

    /// Per-(warehouse, sku) balances (shared by `inventory_balances`, `alerts`).
    pub fn balances(&self) -> Collection<'scope, inventory_balances::Balance> {
        self.balances
            .get_or_init(|| inventory_balances::build(self))
            .clone()
    }
}

/// A view: its schema, and how to build its rows from the context.
pub struct ViewDef {
    /// The declared schema.
    pub schema: fn() -> ViewSchema,
    /// Builds the view's rows (key columns first, schema order).
    pub build: for<'scope> fn(&Context<'scope>) -> Collection<'scope, Row>,
}

/// Every view the engine maintains, in publication order. Add new views here.
pub fn registry() -> Vec<ViewDef> {
    vec![
        tooth_wear::view(),
        machine_health::view(),
        inventory_balances::view(),
        orders_open::view(),
        order_flow::view(),
        alerts::view(),
        fleet_kpis::view(),
        data_quality::view(),
        dead_letters::view(),
        features::view(),
        predictions::predictions_view(),
        predictions::demand_view(),
        predictions::drift_view(),
    ]
}

/// Builds a schema that is known to be valid (a bug otherwise: the registry test checks all).
pub(crate) fn schema(
    name: &str,
    kind: wearflow_operators::ViewKind,
    key_len: usize,
    columns: Vec<wearflow_operators::Column>,
    description: &str,
) -> ViewSchema {
    match ViewSchema::new(name, kind, key_len, columns, description) {
        Ok(schema) => schema,
        Err(e) => panic!("view declaration is broken: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_schemas_valid() {
        let names: Vec<String> = registry().iter().map(|v| (v.schema)().name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names.contains(&"tooth_wear".to_string()));
    }
}
