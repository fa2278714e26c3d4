//! Live inference and what follows from it: `maintenance_predictions`, `demand_forecast`,
//! `model_drift`, and the `failure_risk` / `stockout_risk` conditions of `alerts`.
//!
//! The current model version is an input collection, `(shard, version)` for every shard, so
//! that a reload retracts each prediction of the old version and predicts again with the new
//! one, and the join spreads devices over workers by shard. Without a model the version is
//! [`PHYSICS`]: remaining useful life is the hours to the wear limit at the current rate.

use serde::{Deserialize, Serialize};
use wearflow_operators::time::{MS_PER_HOUR, from_micro, to_micro};
use wearflow_operators::{
    Collection, Column, ColumnType, FoldByKey, LatestByKey, Row, Value, ViewKind, ViewSchema,
};
use wearflow_sources::Asset;

use crate::features::{DeviceFeatures, HOURS_SINCE_INSTALL};
use crate::model::{self, PHYSICS};
use crate::{Context, ViewDef};

/// Shards of the model join (the current version is present once per shard).
pub const SHARDS: u64 = 64;

/// The shard of a device.
pub fn shard_of(device: &str) -> u64 {
    model::fnv1a(device.bytes()) % SHARDS
}

/// One device's prediction; probabilities and hours in micro-units so the struct orders.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DevicePrediction {
    /// The device.
    pub device_id: String,
    /// The model version, or `physics`.
    pub model_version: String,
    /// Probability of failing within the horizon, µ.
    pub p_fail_micro: Option<i64>,
    /// The model's horizon, hours.
    pub horizon_h: Option<i64>,
    /// The model's alert threshold, µ.
    pub threshold_micro: Option<i64>,
    /// Remaining useful life, µh.
    pub rul_micro: Option<i64>,
    /// The features' time.
    pub last_seen_ms: u64,
    /// The engine already counts the tooth as lost.
    pub lost: bool,
}

impl DevicePrediction {
    /// Probability of failing within the horizon.
    pub fn p_fail(&self) -> Option<f64> {
        self.p_fail_micro.map(from_micro)
    }
    /// Remaining useful life in hours.
    pub fn rul_hours(&self) -> Option<f64> {
        self.rul_micro.map(from_micro)
    }
    /// Whether the model says it fails within its horizon.
    pub fn at_risk(&self) -> bool {
        matches!((self.p_fail_micro, self.threshold_micro), (Some(p), Some(t)) if p >= t)
    }
    /// When it is expected to need replacement.
    pub fn predicted_failure_ms(&self) -> Option<u64> {
        let hours = self.rul_hours()?;
        Some(self.last_seen_ms + (hours * MS_PER_HOUR as f64) as u64)
    }
    /// Whether it needs replacement within `hours`.
    pub fn due_within(&self, hours: f64) -> bool {
        self.lost || self.at_risk() || self.rul_hours().is_some_and(|h| h <= hours)
    }
    /// Whole days until it is due for replacement (0 = now), capped at 31; none = unknown.
    /// Demand counts this instead of the prediction, which changes with every reading.
    pub fn due_days(&self) -> Option<i64> {
        if self.lost || self.at_risk() {
            return Some(0);
        }
        let hours = self.rul_hours()?;
        Some(((hours / 24.0).ceil() as i64).clamp(0, 31))
    }

    /// What to do.
    pub fn recommended_action(&self) -> &'static str {
        if self.lost {
            "replace_now"
        } else if self.at_risk() {
            "replace_before_failure"
        } else if self.due_within(7.0 * 24.0) {
            "plan_replacement"
        } else {
            "monitor"
        }
    }
}

/// Predicts one device with a model version (the same inputs always give the same row), with
/// the training bins of its features (none for physics).
pub fn score(features: &DeviceFeatures, version: &str) -> (DevicePrediction, Vec<u8>) {
    let lost = features.get("lost").is_some_and(|l| l > 0.5);
    let physics = DevicePrediction {
        device_id: features.device_id.clone(),
        model_version: PHYSICS.to_string(),
        p_fail_micro: None,
        horizon_h: None,
        threshold_micro: None,
        rul_micro: features.get("hours_to_limit").map(to_micro),
        last_seen_ms: features.last_seen_ms,
        lost,
    };
    let Some(model) = (version != PHYSICS)
        .then(|| model::loaded(version))
        .flatten()
    else {
        return (physics, Vec::new());
    };
    let prediction = model.predict(features);
    let bins = model.bins_of(features);
    let prediction = DevicePrediction {
        model_version: model.version.clone(),
        p_fail_micro: prediction.p_fail.map(to_micro),
        horizon_h: Some(model.horizon_h.round() as i64),
        threshold_micro: Some(to_micro(model.threshold)),
        rul_micro: prediction.rul_hours.map(to_micro),
        ..physics
    };
    (prediction, bins)
}

/// What the prediction fold keeps per device: the prediction it shows and what it was made
/// from.
#[derive(Default)]
struct Scored {
    /// The model version it was asked for (a version not loaded predicts as physics).
    version: String,
    /// The features' `hours_since_install` (a smaller one means a new tooth).
    since_install: Option<i64>,
    prediction: Option<DevicePrediction>,
    /// The scored features' training bins (empty without a model).
    bins: Vec<u8>,
}

impl Scored {
    /// Whether `features` under `version` are scored again rather than keeping the current
    /// prediction: always for physics (it costs nothing), a first prediction, another model
    /// version, a tooth found lost
    /// (or no longer lost), a replaced tooth or features older than the scored ones;
    /// otherwise once `interval_ms` of event time has passed since the scored features.
    fn due(&self, features: &DeviceFeatures, version: &str, interval_ms: u64) -> bool {
        let Some(scored) = &self.prediction else {
            return true;
        };
        let lost = features.get("lost").is_some_and(|l| l > 0.5);
        let since_install = features.domain[HOURS_SINCE_INSTALL];
        version == PHYSICS
            || self.version != version
            || scored.lost != lost
            || since_install
                .zip(self.since_install)
                .is_some_and(|(new, old)| new < old)
            || features.last_seen_ms < scored.last_seen_ms
            || features.last_seen_ms >= scored.last_seen_ms.saturating_add(interval_ms)
    }

    fn observe(&mut self, features: &DeviceFeatures, version: &str, interval_ms: u64) {
        if self.due(features, version, interval_ms) {
            let (prediction, bins) = score(features, version);
            self.prediction = Some(prediction);
            self.bins = bins;
            self.version = version.to_string();
            self.since_install = features.domain[HOURS_SINCE_INSTALL];
        }
    }
}

/// Builds the scoring of every device with features: its prediction and, with a model, the
/// training bins of the features it was made from.
///
/// A device is scored when its features change, at most once per `score_interval_ms` of
/// event time (sooner for a new model, a lost or replaced tooth): features change every
/// window granule (a minute), and a model of hundreds of trees per change would cost more
/// than the rest of the dataflow. The fold runs in time order on the WAL-replayed inputs, so
/// which features were scored is the same after a restart. Retractions never score: a
/// device's old prediction is the one the fold kept.
pub(crate) fn build<'s>(ctx: &Context<'s>) -> Collection<'s, (DevicePrediction, Vec<u8>)> {
    let interval_ms = ctx.config.score_interval_ms;
    ctx.features()
        .map(|f| (shard_of(&f.device_id), f))
        .join_map(ctx.inputs.models.clone(), |_shard, features, version| {
            (
                features.device_id.clone(),
                (features.clone(), version.clone()),
            )
        })
        .fold_by_key(
            "maintenance_predictions",
            move |scored: &mut Scored, (features, version): &(DeviceFeatures, String)| {
                scored.observe(features, version, interval_ms)
            },
            |scored| Some((scored.prediction.clone()?, scored.bins.clone())),
        )
        .map(|(_, scoring)| scoring)
}

fn predictions_schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "maintenance_predictions",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("device_id", Utf8),
            Column::required("model_version", Utf8),
            Column::nullable("p_fail", Float64),
            Column::nullable("horizon_h", Int64),
            Column::nullable("rul_hours", Float64),
            Column::nullable("predicted_failure_ms", TimestampMs),
            Column::required("recommended_action", Utf8),
            Column::required("last_seen_ms", TimestampMs),
        ],
        "per device: probability of failure within the horizon, remaining useful life, action",
    )
}

/// The `maintenance_predictions` view.
pub fn predictions_view() -> ViewDef {
    ViewDef {
        schema: predictions_schema,
        build: |ctx| {
            ctx.predictions().map(|p| -> Row {
                vec![
                    Value::str(p.device_id.as_str()),
                    Value::str(p.model_version.as_str()),
                    Value::opt_float(p.p_fail()),
                    p.horizon_h.map_or(Value::Null, Value::Int),
                    Value::opt_float(p.rul_hours()),
                    p.predicted_failure_ms()
                        .map_or(Value::Null, |ms| Value::Int(ms as i64)),
                    Value::str(p.recommended_action()),
                    Value::Int(p.last_seen_ms as i64),
                ]
            })
        },
    }
}

/// `failure_risk` conditions with hysteresis: raised when the probability reaches the
/// model's threshold, cleared only when it falls below half of it (or the tooth is lost, which
/// `tooth_lost` reports).
pub(crate) fn failure_risk<'s>(ctx: &Context<'s>) -> Collection<'s, (String, i64)> {
    ctx.predictions()
        .flat_map(|p| {
            let threshold = p.threshold_micro?;
            Some((p.device_id.clone(), (p.p_fail_micro?, threshold, p.lost)))
        })
        .fold_by_key(
            "failure_risk: hysteresis",
            |raised: &mut Option<i64>, &(p, threshold, lost): &(i64, i64, bool)| {
                if lost || p < threshold / 2 {
                    *raised = None;
                } else if p >= threshold {
                    *raised = Some(raised.map_or(p, |q| q.max(p)).min(threshold));
                }
            },
            |raised| *raised,
        )
}

/// Per (warehouse, sku): devices due within 7 and 30 days and within the SKU's lead time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Demand {
    /// Warehouse serving the devices' site.
    pub warehouse: String,
    /// SKU of the teeth.
    pub sku: String,
    /// Due within 7 days.
    pub due_7d: i64,
    /// Due within 30 days.
    pub due_30d: i64,
    /// Due within the lead time.
    pub due_lead_time: i64,
    /// Lead time, days.
    pub lead_time_days: i64,
    /// Available stock (on hand less reserved).
    pub available: i64,
    /// Open purchase orders.
    pub on_order: i64,
}

/// Lead time when the SKU record does not say.
const DEFAULT_LEAD_TIME_DAYS: i64 = 7;

/// Builds the demand per (warehouse, sku).
pub(crate) fn demand<'s>(ctx: &Context<'s>) -> Collection<'s, Demand> {
    let assets = ctx.inputs.assets.clone();
    let warehouses = assets
        .clone()
        .flat_map(|a| match a {
            Asset::Site(s) => s
                .warehouse
                .clone()
                .map(|w| (s.site.clone(), (s.ts.map_or(0, |t| t.0), w))),
            _ => None,
        })
        .latest_by_key("demand: site warehouse")
        .map(|(site, (_, warehouse))| (site, warehouse));
    let lead_times = assets
        .flat_map(|a| match a {
            Asset::Sku(s) => s
                .lead_time_days
                .map(|d| (s.sku.clone(), (s.ts.map_or(0, |t| t.0), d))),
            _ => None,
        })
        .latest_by_key("demand: sku lead time")
        .map(|(sku, (_, days))| (sku, days));
    // (device, (sku, site)) of each tooth.
    let placed = ctx
        .tooth_wear()
        .flat_map(|t| Some((t.device_id.clone(), (t.sku.clone()?, t.site.clone()?))));
    let due = ctx
        .predictions()
        .flat_map(|p| Some((p.device_id.clone(), p.due_days()?)))
        .join_map(placed, |_device, days, (sku, site)| {
            (site.clone(), (sku.clone(), *days))
        })
        .join_map(warehouses, |_site, (sku, days), warehouse| {
            (sku.clone(), (warehouse.clone(), *days))
        });
    let due_with_lead = due
        .clone()
        .join_map(lead_times.clone(), |sku, (warehouse, due), lead| {
            ((warehouse.clone(), sku.clone()), (*due, *lead))
        })
        .concat(
            due.antijoin(lead_times.map(|(sku, _)| sku))
                .map(|(sku, (warehouse, due))| ((warehouse, sku), (due, DEFAULT_LEAD_TIME_DAYS))),
        );
    let balances = ctx.balances().map(|b| {
        (
            (b.warehouse.clone(), b.sku.clone()),
            (b.available(), b.on_order),
        )
    });
    due_with_lead
        .reduce_named("demand_forecast: count", |_key, input, output| {
            let mut counts = (0i64, 0i64, 0i64, DEFAULT_LEAD_TIME_DAYS);
            for ((due, lead), diff) in input {
                let n = *diff as i64;
                counts.3 = *lead;
                counts.0 += n * i64::from(*due <= 7);
                counts.1 += n * i64::from(*due <= 30);
                counts.2 += n * i64::from(due <= lead);
            }
            output.push((counts, 1));
        })
        .join_map(
            balances,
            |(warehouse, sku), (d7, d30, dl, days), (available, on_order)| Demand {
                warehouse: warehouse.clone(),
                sku: sku.clone(),
                due_7d: *d7,
                due_30d: *d30,
                due_lead_time: *dl,
                lead_time_days: *days,
                available: *available,
                on_order: *on_order,
            },
        )
}

fn demand_schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "demand_forecast",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("warehouse", Utf8),
            Column::required("sku", Utf8),
            Column::required("due_7d", Int64),
            Column::required("due_30d", Int64),
            Column::required("due_lead_time", Int64),
            Column::required("lead_time_days", Int64),
            Column::required("available", Int64),
            Column::required("on_order", Int64),
            Column::required("shortfall", Int64),
        ],
        "per warehouse and SKU: teeth due for replacement in 7 and 30 days and within the \
         lead time, against available stock",
    )
}

/// The `demand_forecast` view.
pub fn demand_view() -> ViewDef {
    ViewDef {
        schema: demand_schema,
        build: |ctx| {
            ctx.demand().map(|d| -> Row {
                let shortfall = (d.due_lead_time - d.available - d.on_order).max(0);
                vec![
                    Value::Str(d.warehouse),
                    Value::Str(d.sku),
                    Value::Int(d.due_7d),
                    Value::Int(d.due_30d),
                    Value::Int(d.due_lead_time),
                    Value::Int(d.lead_time_days),
                    Value::Int(d.available),
                    Value::Int(d.on_order),
                    Value::Int(shortfall),
                ]
            })
        },
    }
}

/// Per model feature: population stability index of the live devices against training.
pub(crate) fn drift<'s>(ctx: &Context<'s>) -> Collection<'s, (String, String, i64, i64)> {
    ctx.scored()
        .flat_map(|(prediction, bins)| {
            // The version as a number: no string per record.
            let key = model::version_key(&prediction.model_version);
            bins.into_iter()
                .enumerate()
                .filter(|(_, bin)| *bin != model::NO_BIN)
                .map(move |(i, bin)| (key, i as u32, bin))
        })
        // Counting first: a device whose value stays in its bin cancels out here.
        .count()
        .map(|((key, index, bin), count)| ((key, index), (bin, count)))
        .reduce_named("model_drift: psi", |(key, index), bins, output| {
            let Some(model) = model::loaded_by_key(*key) else {
                return;
            };
            let Some(feature) = model.bins.get(*index as usize) else {
                return;
            };
            let mut counts = vec![0i64; feature.shares.len()];
            for ((bin, count), diff) in bins {
                if let Some(c) = counts.get_mut(*bin as usize) {
                    *c += *count as i64 * *diff as i64;
                }
            }
            let devices: i64 = counts.iter().sum();
            output.push(((to_micro(feature.psi(&counts)), devices), 1));
        })
        .flat_map(|((key, index), (psi, devices))| {
            let model = model::loaded_by_key(key)?;
            let feature = model.bins.get(index as usize)?.feature.clone();
            Some((model.version.clone(), feature, psi, devices))
        })
}

/// PSI above which a feature has drifted (the usual "significant shift" level).
pub const DRIFT_PSI: f64 = 0.25;

fn drift_schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "model_drift",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("model_version", Utf8),
            Column::required("feature", Utf8),
            Column::required("psi", Float64),
            Column::required("devices", Int64),
            Column::required("drifted", Bool),
        ],
        "per model feature: population stability index of live devices against training",
    )
}

/// The `model_drift` view.
pub fn drift_view() -> ViewDef {
    ViewDef {
        schema: drift_schema,
        build: |ctx| {
            ctx.drift().map(|(version, feature, psi, devices)| -> Row {
                let psi = from_micro(psi);
                vec![
                    Value::Str(version),
                    Value::Str(feature),
                    Value::float(psi),
                    Value::Int(devices),
                    Value::Bool(psi > DRIFT_PSI),
                ]
            })
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DOMAIN;

    fn features(last_seen_ms: u64, since_install_h: f64, lost: bool) -> DeviceFeatures {
        let mut f = DeviceFeatures {
            device_id: "D".into(),
            last_seen_ms,
            metrics: Vec::new(),
            domain: [None; DOMAIN.len()],
        };
        f.domain[HOURS_SINCE_INSTALL] = Some(to_micro(since_install_h));
        f.domain[7] = Some(to_micro(if lost { 1.0 } else { 0.0 }));
        f.domain[2] = Some(to_micro(100.0 - last_seen_ms as f64 / 3_600_000.0));
        f
    }

    #[test]
    fn scores_once_per_interval_and_at_once_on_what_matters() {
        assert_eq!(DOMAIN[HOURS_SINCE_INSTALL], "hours_since_install");
        let minute = 60_000;
        let mut scored = Scored::default();
        let seen = |scored: &mut Scored, f: DeviceFeatures, version: &str| {
            scored.observe(&f, version, 5 * minute);
            scored.prediction.as_ref().map(|p| p.last_seen_ms)
        };
        // Physics is cheap: every change.
        let model = "m-test";
        assert_eq!(
            seen(&mut scored, features(0, 10.0, false), PHYSICS),
            Some(0)
        );
        let physics = seen(&mut scored, features(minute, 10.0, false), PHYSICS);
        assert_eq!(physics, Some(minute));
        // A model version (one not loaded predicts as physics, which is enough here): its
        // first features are scored, then within the interval the prediction stays; at its
        // end it is made again.
        assert_eq!(seen(&mut scored, features(0, 10.0, false), model), Some(0));
        for m in 1..5 {
            let kept = seen(&mut scored, features(m * minute, 10.0, false), model);
            assert_eq!(kept, Some(0));
        }
        let at = 5 * minute;
        assert_eq!(
            seen(&mut scored, features(at, 10.0, false), model),
            Some(at)
        );
        // A lost tooth, a replaced one, older features and another model: at once.
        let lost = seen(&mut scored, features(at + minute, 10.0, true), model);
        assert_eq!(lost, Some(at + minute));
        assert!(scored.prediction.as_ref().is_some_and(|p| p.lost));
        let replaced = seen(&mut scored, features(at + 2 * minute, 0.1, false), model);
        assert_eq!(replaced, Some(at + 2 * minute));
        assert_eq!(seen(&mut scored, features(at, 0.1, false), model), Some(at));
        let other = seen(&mut scored, features(at + minute, 0.1, false), "m-unknown");
        assert_eq!(other, Some(at + minute));
        assert_eq!(scored.version, "m-unknown");
        // The scored features' values, not the newest ones, are shown.
        let kept = seen(
            &mut scored,
            features(at + 2 * minute, 0.2, false),
            "m-unknown",
        );
        assert_eq!(kept, Some(at + minute));
        let rul = scored.prediction.as_ref().and_then(|p| p.rul_hours());
        assert_eq!(rul, Some(100.0 - (at + minute) as f64 / 3_600_000.0));
        // Interval 0: every change.
        scored.observe(&features(at + 2 * minute, 0.2, false), "m-unknown", 0);
        assert_eq!(
            scored.prediction.map(|p| p.last_seen_ms),
            Some(at + 2 * minute)
        );
    }
}
