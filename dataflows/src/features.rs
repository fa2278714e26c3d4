//! `features`: the current feature vector of every device, the input of the failure model.
//!
//! Generic part, for every metric a device reports (known or not), named `<metric>.<stat>`
//! (one stateful fold per device over its readings): over the stats window of event time,
//! `last`, `mean`, `stddev`, `min`, `max`, `slope_per_h` and `count`; against the device's own
//! normal since its installation, `baseline`, `change` and `largest_step`; slopes per
//! operating hour, `trend_3h`, `trend_6h` and `trend_12h`. Domain part: `hour_of_day`, and
//! where the device is a tooth `wear_pct`, `wear_rate_mm_per_h`, `hours_to_limit`, `impacts`
//! (at or above the impact threshold in the stats window), `peak_impact_g`,
//! `hours_since_install`, `site_abrasiveness`, and `lost` (1 when the engine already counts
//! the tooth as lost). Training replays history through this same code (`wearflow train`), so
//! live and training features cannot differ.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use differential_dataflow::AsCollection;
use differential_dataflow::difference::{Abelian, Semigroup};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use wearflow_operators::time::{MS_PER_HOUR, ceil_to, from_micro, to_micro, write_micro};
use wearflow_operators::trend::slope_per_hour;
use wearflow_operators::{
    CentredMoments, Collection, Column, ColumnType, Drift, FoldByKey, LatestByKey, Moments, Row,
    Value, ViewKind, ViewSchema, fit_drift,
};
use wearflow_sources::{Asset, Micro};

use crate::tooth_wear::{ToothStatus, ToothWear};
use crate::{Context, ViewDef};

/// The statistics of each metric, in storage order; a feature is named `<metric>.<stat>`.
/// `baseline` is the metric's mean over the first stats window of readings since the device
/// was installed (its own normal), `change` the window's mean less that baseline: a drift
/// from a device's own normal shows even where devices differ more than the drift.
/// `largest_step` is the signed difference between two consecutive readings with the largest
/// magnitude since the installation: a sudden shift (a broken part) stays visible after the
/// window has moved past it. `trend_3h`, `trend_6h` and `trend_12h` are least-squares slopes
/// per operating hour over the last 3, 6 and 12 operating hours since the installation (see
/// [`Trend`]): how fast a drift grows, which with `change` says how far it has to go.
/// `drift_*` fit a hinge (flat, then a straight line from an onset) to the last
/// [`DRIFT_WINDOW_H`] operating hours since the installation (see [`fit_drift`]):
/// `drift_age_h` is the operating hours since the onset that fits best, `drift_rate` the
/// line's slope per operating hour and `drift_level` its value now less the baseline, both
/// as fractions of the baseline, and `drift_fit` the share of the variance the hinge
/// explains. `recent_1h` is the mean of the last operating hour against the baseline
/// (a fraction). A fault that started recently and one that has run for a day can read the
/// same `change`; their age and rate tell them apart. The fractions need a positive
/// baseline; otherwise they are absent.
pub const STATS: [&str; 18] = [
    "baseline",
    "change",
    "count",
    "largest_step",
    "last",
    "max",
    "mean",
    "min",
    "slope_per_h",
    "stddev",
    "trend_3h",
    "trend_6h",
    "trend_12h",
    "drift_age_h",
    "drift_rate",
    "drift_level",
    "drift_fit",
    "recent_1h",
];

/// The operating-hour windows of the `trend_*` statistics, in [`STATS`] order (ascending).
const TREND_WINDOWS_H: [u64; 3] = [3, 6, 12];

/// The operating hours the `drift_*` statistics look back over (the operating-time buckets
/// are kept this long).
pub const DRIFT_WINDOW_H: u64 = 48;

/// Readings since the installation before the `drift_*` statistics are computed.
const DRIFT_MIN_READINGS: i64 = 12;

/// A gap between two readings counts as operating time up to this long: a device that does
/// not report is not operating (a machine off shift does not age its parts).
pub const OPERATING_GAP_MS: u64 = 15 * 60_000;

/// The grain of the operating-time trends.
const TREND_BUCKET_MS: u64 = 15 * 60_000;

/// The domain features, in storage order (each also a column of the view). `hour_of_day` is
/// the UTC hour (fractional) of the newest reading: where machines work in shifts, how much
/// operating time the next day of event time holds depends on it.
pub const DOMAIN: [&str; 9] = [
    "wear_pct",
    "wear_rate_mm_per_h",
    "hours_to_limit",
    "impacts",
    "peak_impact_g",
    "hours_since_install",
    "site_abrasiveness",
    "lost",
    "hour_of_day",
];

/// The index of `hours_since_install` in [`DOMAIN`] (a smaller value means a new part).
pub const HOURS_SINCE_INSTALL: usize = 5;

/// Statistics of one metric, µ-units, in [`STATS`] order.
pub type MetricStats = [Option<i64>; STATS.len()];

/// One device's features, compact: names are derived, not stored per value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceFeatures {
    /// The device.
    pub device_id: String,
    /// Its newest telemetry time (the moment the features describe).
    pub last_seen_ms: u64,
    /// Per metric, sorted by name: its window statistics.
    pub metrics: Vec<(String, MetricStats)>,
    /// The domain features in [`DOMAIN`] order, µ-units.
    pub domain: [Option<i64>; DOMAIN.len()],
}

impl DeviceFeatures {
    /// A feature's value in natural units.
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some(i) = DOMAIN.iter().position(|d| *d == name) {
            return self.domain[i].map(from_micro);
        }
        let (metric, stat) = name.rsplit_once('.')?;
        let s = STATS.iter().position(|x| *x == stat)?;
        let m = self
            .metrics
            .binary_search_by(|(n, _)| n.as_str().cmp(metric))
            .ok()?;
        self.metrics[m].1[s].map(from_micro)
    }

    /// Every present feature as `(name, value)`, sorted by name.
    pub fn values(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = DOMAIN
            .iter()
            .zip(&self.domain)
            .filter_map(|(name, v)| Some((name.to_string(), from_micro((*v)?))))
            .collect();
        for (metric, stats) in &self.metrics {
            for (stat, v) in STATS.iter().zip(stats) {
                if let Some(v) = v {
                    out.push((format!("{metric}.{stat}"), from_micro(*v)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every present feature as one JSON object `{"name": value, …}`, values as
    /// `from_micro(v)` displays them. On the view's hot path (every change of a device's
    /// features): names are escaped once per metric and values written as decimals of their
    /// µ-units ([`write_micro`]), with no float formatting and no per-value strings.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 40 * STATS.len() * self.metrics.len());
        out.push('{');
        let mut first = true;
        let mut separate = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        for (name, v) in DOMAIN.iter().zip(&self.domain) {
            if let Some(v) = v {
                // Domain names are plain ASCII identifiers: nothing to escape.
                separate(&mut out);
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                write_micro(&mut out, *v);
            }
        }
        for (metric, stats) in &self.metrics {
            // Metric names come from input: escape them as a JSON string, then drop the
            // closing quote so that `.stat"` completes it (stat names need no escaping).
            let mut prefix = serde_json::Value::from(metric.as_str()).to_string();
            prefix.pop();
            for (stat, v) in STATS.iter().zip(stats) {
                if let Some(v) = v {
                    separate(&mut out);
                    out.push_str(&prefix);
                    out.push('.');
                    out.push_str(stat);
                    out.push_str("\":");
                    write_micro(&mut out, *v);
                }
            }
        }
        out.push('}');
        out
    }

    /// Rebuilds features from `(name, value)` pairs (as the view's JSON column holds them).
    pub fn from_values(
        device_id: &str,
        last_seen_ms: u64,
        values: impl IntoIterator<Item = (String, f64)>,
    ) -> DeviceFeatures {
        let mut features = DeviceFeatures {
            device_id: device_id.to_string(),
            last_seen_ms,
            metrics: Vec::new(),
            domain: [None; DOMAIN.len()],
        };
        for (name, value) in values {
            let micro = Some(to_micro(value));
            if let Some(i) = DOMAIN.iter().position(|d| *d == name) {
                features.domain[i] = micro;
                continue;
            }
            let Some((metric, stat)) = name.rsplit_once('.') else {
                continue;
            };
            let Some(s) = STATS.iter().position(|x| *x == stat) else {
                continue;
            };
            match features
                .metrics
                .binary_search_by(|(n, _)| n.as_str().cmp(metric))
            {
                Ok(m) => features.metrics[m].1[s] = micro,
                Err(at) => {
                    let mut stats = [None; STATS.len()];
                    stats[s] = micro;
                    features.metrics.insert(at, (metric.to_string(), stats));
                }
            }
        }
        features
    }
}

/// Where one named feature sits in a [`DeviceFeatures`].
#[derive(Clone, Debug, PartialEq)]
enum Slot {
    /// A domain feature, by its index in [`DOMAIN`].
    Domain(usize),
    /// A statistic of a metric: the metric's place in [`FeatureColumns::metrics`] and the
    /// statistic's index in [`STATS`].
    Stat(usize, usize),
    /// No feature has this name.
    Unknown,
}

/// A list of feature names resolved once, so that reading them from many feature vectors
/// (the model's columns, on every prediction) costs one search per metric instead of
/// parsing and comparing each name every time.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureColumns {
    slots: Vec<Slot>,
    /// The distinct metrics the names refer to.
    metrics: Vec<String>,
}

impl FeatureColumns {
    /// Resolves `names`.
    pub fn new(names: &[String]) -> FeatureColumns {
        let mut metrics: Vec<String> = Vec::new();
        let slots = names
            .iter()
            .map(|name| {
                if let Some(i) = DOMAIN.iter().position(|d| *d == name) {
                    return Slot::Domain(i);
                }
                let Some((metric, stat)) = name.rsplit_once('.') else {
                    return Slot::Unknown;
                };
                let Some(s) = STATS.iter().position(|x| *x == stat) else {
                    return Slot::Unknown;
                };
                let m = metrics.iter().position(|n| n == metric).unwrap_or_else(|| {
                    metrics.push(metric.to_string());
                    metrics.len() - 1
                });
                Slot::Stat(m, s)
            })
            .collect();
        FeatureColumns { slots, metrics }
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The values of the columns in `features` (NaN where one is missing), appended to `out`.
    pub fn extend(&self, features: &DeviceFeatures, out: &mut Vec<f64>) {
        let found: Vec<Option<&MetricStats>> = self
            .metrics
            .iter()
            .map(|metric| {
                features
                    .metrics
                    .binary_search_by(|(n, _)| n.as_str().cmp(metric))
                    .ok()
                    .map(|m| &features.metrics[m].1)
            })
            .collect();
        out.extend(self.slots.iter().map(|slot| {
            let micro = match slot {
                Slot::Domain(i) => features.domain[*i],
                Slot::Stat(m, s) => found[*m].and_then(|stats| stats[*s]),
                Slot::Unknown => None,
            };
            micro.map_or(f64::NAN, from_micro)
        }));
    }
}

/// What a device's features are folded from, one variant per upstream collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Observation {
    Reading(u64, BTreeMap<String, Micro>),
    Tooth(Box<ToothWear>),
    Installed(u64),
    Abrasiveness(i64),
}

/// A device's state: its readings of the last window (by event time, before its newest
/// reading), running statistics per metric, and the newest domain facts.
#[derive(Default)]
struct DeviceState {
    /// The window's readings in event-time order, as `(metric index, value µ)`.
    readings: VecDeque<(u64, Vec<(usize, i64)>)>,
    /// Metric names seen from this device, by index (a reading does not allocate names).
    names: Vec<String>,
    /// Name → index.
    index: BTreeMap<String, usize>,
    /// Per metric index: exact sums (x = ms since `origin`), min/max deques; none if absent
    /// from the window.
    metrics: Vec<Option<MetricWindow>>,
    /// The device's first reading time: the origin of `x`.
    origin: Option<u64>,
    /// Per metric index: `(Σ value, count)` of its readings in the baseline window.
    baseline: Vec<(i128, i64)>,
    /// Per metric index: `(previous reading, largest step)` since the installation.
    steps: Vec<(Option<i64>, Option<i64>)>,
    /// The first reading time at or after the installation: the baseline window opens here.
    baseline_from: Option<u64>,
    /// Operating-time sums since the installation, for the `trend_*` statistics.
    trend: Trend,
    tooth: Option<Box<ToothWear>>,
    installed: Option<u64>,
    abrasiveness: Option<i64>,
}

/// Per-metric sums over operating time since the installation, in buckets of
/// [`TREND_BUCKET_MS`], for slopes per operating hour. Operating time advances by the gap
/// between two consecutive readings, capped at [`OPERATING_GAP_MS`], so a night off shift
/// neither flattens a slope nor pushes a drift out of the window. Readings older than the
/// newest one (late) are left out of the trends.
#[derive(Default)]
struct Trend {
    /// Operating ms since the installation.
    op_ms: u64,
    /// The newest reading's time.
    last_ts: Option<u64>,
    /// `(first operating ms, sums per metric index with x = operating ms)`, oldest first;
    /// none older than the longest window.
    buckets: VecDeque<(u64, Vec<Moments>)>,
    /// Per bucket (same order) and metric index, the sums [`fit_drift`] reads and the
    /// baseline they are centred on, kept once the bucket is closed (only the newest bucket
    /// still changes): the fit runs at every feature update over 48 hours of buckets.
    centred: RefCell<VecDeque<Vec<Option<Centred>>>>,
}

/// A closed bucket's sums of one metric, centred on a baseline: `(baseline, sums)`.
type Centred = (i64, CentredMoments);

impl Trend {
    fn add(&mut self, ts: u64, values: &[(usize, i64)]) {
        if let Some(last) = self.last_ts {
            if ts < last {
                return;
            }
            self.op_ms += (ts - last).min(OPERATING_GAP_MS);
        }
        self.last_ts = Some(ts);
        let start = self.op_ms - self.op_ms % TREND_BUCKET_MS;
        if self.buckets.back().is_none_or(|(s, _)| *s != start) {
            self.buckets.push_back((start, Vec::new()));
            self.centred.get_mut().push_back(Vec::new());
        }
        let longest = DRIFT_WINDOW_H.max(TREND_WINDOWS_H[TREND_WINDOWS_H.len() - 1]) * MS_PER_HOUR;
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| s + longest < self.op_ms)
        {
            self.buckets.pop_front();
            self.centred.get_mut().pop_front();
        }
        let Some((_, sums)) = self.buckets.back_mut() else {
            return;
        };
        for &(i, value) in values {
            if sums.len() <= i {
                sums.resize(i + 1, Moments::default());
            }
            sums[i].plus_equals(&Moments::of(self.op_ms as i64, value));
        }
    }

    /// Metric `i`'s slopes per operating hour, µ-units, one per [`TREND_WINDOWS_H`]: over the
    /// buckets that start within the last that many operating hours. One pass, newest first.
    fn slopes(&self, i: usize) -> [Option<i64>; TREND_WINDOWS_H.len()] {
        let mut out = [None; TREND_WINDOWS_H.len()];
        let mut sum = Moments::default();
        let mut buckets = self.buckets.iter().rev().peekable();
        for (k, window_h) in TREND_WINDOWS_H.iter().enumerate() {
            let from = self.op_ms.saturating_sub(window_h * MS_PER_HOUR);
            while let Some((_, sums)) = buckets.next_if(|(s, _)| *s >= from) {
                if let Some(m) = sums.get(i) {
                    sum.plus_equals(m);
                }
            }
            out[k] = slope_per_hour(&sum).map(|v| v.round() as i64);
        }
        out
    }
}

impl Trend {
    /// Metric `i`'s drift against `baseline` (µ-units) over the kept buckets, and the mean of
    /// its last operating hour against the baseline; both need a positive baseline.
    fn drift(&self, i: usize, baseline: Option<i64>) -> (Option<Drift>, Option<f64>) {
        let Some(base) = baseline.filter(|b| *b > 0) else {
            return (None, None);
        };
        fn metric(bucket: &(u64, Vec<Moments>), i: usize) -> Option<(i64, &Moments)> {
            Some((bucket.0 as i64, bucket.1.get(i)?))
        }
        let mut centred = self.centred.borrow_mut();
        let closed = self.buckets.len().saturating_sub(1);
        for (bucket, kept) in self.buckets.iter().zip(centred.iter_mut()).take(closed) {
            if let Some((start, m)) = metric(bucket, i) {
                if kept.len() <= i {
                    kept.resize(i + 1, None);
                }
                if kept[i].is_none_or(|(b, _)| b != base) {
                    kept[i] = Some((base, CentredMoments::of(m, start, base)));
                }
            }
        }
        let newest = self
            .buckets
            .back()
            .and_then(|b| metric(b, i))
            .map(|(start, m)| (start, CentredMoments::of(m, start, base)));
        let drift = fit_drift(
            self.buckets
                .iter()
                .zip(centred.iter())
                .take(closed)
                .filter_map(|(b, kept)| Some((b.0 as i64, kept.get(i).copied().flatten()?.1)))
                .chain(newest),
            self.op_ms as i64,
            base,
            DRIFT_MIN_READINGS,
        );
        drop(centred);
        let from = self.op_ms.saturating_sub(MS_PER_HOUR);
        let mut recent = Moments::default();
        for (_, m) in self
            .buckets
            .iter()
            .rev()
            .take_while(|(s, _)| *s >= from)
            .filter_map(|b| metric(b, i))
        {
            recent.plus_equals(m);
        }
        let recent = recent
            .mean_y()
            .map(|mean| (mean - base as f64) / base as f64);
        (drift, recent)
    }
}

/// One metric's window: sums that add and subtract exactly, and candidates for min and max.
#[derive(Default)]
struct MetricWindow {
    moments: Moments,
    /// `(ts, value)` with increasing values: the front is the window's minimum.
    minima: VecDeque<(u64, i64)>,
    /// `(ts, value)` with decreasing values: the front is the window's maximum.
    maxima: VecDeque<(u64, i64)>,
    last: i64,
}

impl DeviceState {
    fn x(&self, ts: u64) -> i64 {
        ts.saturating_sub(self.origin.unwrap_or(ts)) as i64
    }

    /// A reading's values by metric index (new names are registered).
    fn encode(&mut self, metrics: &BTreeMap<String, Micro>) -> Vec<(usize, i64)> {
        metrics
            .iter()
            .map(|(name, value)| {
                let i = match self.index.get(name.as_str()) {
                    Some(i) => *i,
                    None => {
                        let i = self.names.len();
                        self.names.push(name.clone());
                        self.index.insert(name.clone(), i);
                        self.metrics.push(None);
                        self.baseline.push((0, 0));
                        self.steps.push((None, None));
                        i
                    }
                };
                (i, value.0)
            })
            .collect()
    }

    /// Adds a reading that is the newest so far.
    fn push(&mut self, ts: u64, values: Vec<(usize, i64)>) {
        let x = self.x(ts);
        for &(i, value) in &values {
            let w = self.metrics[i].get_or_insert_with(MetricWindow::default);
            w.moments.plus_equals(&Moments::of(x, value));
            while w.minima.back().is_some_and(|(_, v)| *v >= value) {
                w.minima.pop_back();
            }
            w.minima.push_back((ts, value));
            while w.maxima.back().is_some_and(|(_, v)| *v <= value) {
                w.maxima.pop_back();
            }
            w.maxima.push_back((ts, value));
            w.last = value;
        }
        self.readings.push_back((ts, values));
    }

    /// Removes the oldest reading.
    fn pop(&mut self) {
        let Some((ts, values)) = self.readings.pop_front() else {
            return;
        };
        let x = self.x(ts);
        for (i, value) in values {
            let Some(w) = self.metrics[i].as_mut() else {
                continue;
            };
            let mut gone = Moments::of(x, value);
            gone.negate();
            w.moments.plus_equals(&gone);
            if w.minima.front().is_some_and(|(t, _)| *t <= ts) {
                w.minima.pop_front();
            }
            if w.maxima.front().is_some_and(|(t, _)| *t <= ts) {
                w.maxima.pop_front();
            }
            if w.moments.n <= 0 {
                self.metrics[i] = None;
            }
        }
    }

    /// Adds a reading to the largest steps since the installation, and to the baseline when
    /// it falls in the baseline window (the first `window_ms` of readings since then).
    fn add_to_baseline(&mut self, ts: u64, values: &[(usize, i64)], window_ms: u64) {
        if self.installed.is_some_and(|installed| ts < installed) {
            return;
        }
        self.trend.add(ts, values);
        for &(i, value) in values {
            let (previous, largest) = &mut self.steps[i];
            if let Some(previous) = *previous {
                let step = value - previous;
                if largest.is_none_or(|l: i64| step.unsigned_abs() > l.unsigned_abs()) {
                    *largest = Some(step);
                }
            }
            *previous = Some(value);
        }
        let from = *self.baseline_from.get_or_insert(ts);
        if ts < from || ts >= from.saturating_add(window_ms) {
            return;
        }
        for &(i, value) in values {
            let (sum, n) = &mut self.baseline[i];
            *sum += value as i128;
            *n += 1;
        }
    }

    /// A (re)installation at `ts`: a baseline that opened before it belongs to the old part.
    fn installed_at(&mut self, ts: u64) {
        self.installed = Some(ts);
        if self.baseline_from.is_some_and(|from| from < ts) {
            self.baseline_from = None;
            self.baseline.iter_mut().for_each(|b| *b = (0, 0));
            self.steps.iter_mut().for_each(|s| *s = (None, None));
            self.trend = Trend::default();
        }
    }

    /// Rebuilds the running state from the readings (after an out-of-order reading).
    fn rebuild(&mut self) {
        let readings = std::mem::take(&mut self.readings);
        self.metrics.iter_mut().for_each(|m| *m = None);
        for (ts, values) in readings {
            self.push(ts, values);
        }
    }
}

/// Builds the per-device feature vectors.
///
/// A stateful fold per device in time order (not an arrangement of readings) with exact
/// running sums (`Moments`) and monotonic deques for min and max: a reading costs O(metrics).
/// Observations are folded at the end of their `window_granularity_ms` granule, so the
/// vector changes once per device and granule. The window is the
/// `stats_window_ms` of event time before the device's newest reading, so a silent device
/// keeps the features of its last hour of readings.
pub(crate) fn build<'s>(ctx: &Context<'s>) -> Collection<'s, DeviceFeatures> {
    let window_ms = ctx.config.stats_window_ms;
    let readings = ctx
        .inputs
        .telemetry
        .clone()
        .map(|t| (t.device_id, Observation::Reading(t.ts.0, t.metrics)));
    let teeth = ctx.tooth_wear();
    let sites = ctx
        .inputs
        .assets
        .clone()
        .flat_map(|asset| match asset {
            Asset::Site(s) => s
                .abrasiveness
                .map(|a| (s.site.clone(), (s.ts.map_or(0, |t| t.0), a.0))),
            _ => None,
        })
        .latest_by_key("features: site abrasiveness");
    let abrasiveness = teeth
        .clone()
        .flat_map(|t| t.site.clone().map(|site| (site, t.device_id.clone())))
        .join_map(sites, |_site, device, (_, a)| {
            (device.clone(), Observation::Abrasiveness(*a))
        });
    let installed = ctx
        .inputs
        .assets
        .clone()
        .flat_map(|asset| match asset {
            Asset::Device(d) => d.installed_at.map(|t| (d.device_id.clone(), (t.0, ()))),
            _ => None,
        })
        .concat(crate::tooth_wear::replacement_times(ctx).map(|(d, ts)| (d, (ts, ()))))
        .latest_by_key("features: installed")
        .map(|(device, (ts, ()))| (device, Observation::Installed(ts)));
    let teeth = teeth.map(|t| (t.device_id.clone(), Observation::Tooth(Box::new(t))));
    let granularity_ms = ctx.config.window_granularity_ms;
    readings
        .concat(teeth)
        .concat(abrasiveness)
        .concat(installed)
        // Everything a device observes in one granule of event time is folded at its end:
        // one feature vector per device and granule, not one per reading. A tooth's state
        // can change several times in a granule (a reading, then an impact leaving the
        // window); at the granule's time those versions cancel but the last, so the fold
        // sees the newest, however the input was batched.
        .delay(move |t| ceil_to(*t, granularity_ms))
        .fold_by_key(
            "features",
            move |state: &mut DeviceState, observation: &Observation| {
                fold(state, observation, window_ms)
            },
            present,
        )
        .map(|(device, mut features)| {
            features.device_id = device;
            features
        })
}

fn fold(state: &mut DeviceState, observation: &Observation, window_ms: u64) {
    match observation {
        Observation::Reading(ts, metrics) => {
            state.origin.get_or_insert(*ts);
            let values = state.encode(metrics);
            state.add_to_baseline(*ts, &values, window_ms);
            let newest = state.readings.back().map(|(t, _)| *t);
            if newest.is_none_or(|n| n <= *ts) {
                state.push(*ts, values);
            } else {
                // Late: insert in order and recount (rare).
                let at = state.readings.partition_point(|(t, _)| t <= ts);
                state.readings.insert(at, (*ts, values));
                state.rebuild();
            }
            let newest = state.readings.back().map_or(*ts, |(t, _)| *t);
            while state
                .readings
                .front()
                .is_some_and(|(t, _)| t.saturating_add(window_ms) <= newest)
            {
                state.pop();
            }
        }
        Observation::Tooth(t) => state.tooth = Some(t.clone()),
        Observation::Installed(ts) => state.installed_at(*ts),
        Observation::Abrasiveness(a) => state.abrasiveness = Some(*a),
    }
}

/// The features of a device's state (the device id is filled in by the caller).
fn present(state: &DeviceState) -> Option<DeviceFeatures> {
    let last_seen_ms = state.readings.back()?.0;
    let mut metrics: Vec<(String, MetricStats)> = state
        .metrics
        .iter()
        .zip(&state.names)
        .zip(state.baseline.iter().zip(&state.steps))
        .enumerate()
        .filter_map(|(i, ((w, name), b))| Some((i, name, w.as_ref()?, b)))
        .map(|(i, name, w, (&(sum, n), &(_, largest_step)))| {
            let m = &w.moments;
            let mean = m.mean_y().map(|v| v.round() as i64);
            let baseline = (n > 0).then(|| (sum as f64 / n as f64).round() as i64);
            let trend = state.trend.slopes(i);
            let (drift, recent) = state.trend.drift(i, baseline);
            let micro = |v: Option<f64>| v.filter(|v| v.is_finite()).map(to_micro);
            // STATS order: baseline, change, count, largest_step, last, max, mean, min,
            // slope_per_h, stddev, trend_3h, trend_6h, trend_12h, drift_age_h, drift_rate,
            // drift_level, drift_fit, recent_1h.
            let stats = [
                baseline,
                mean.zip(baseline).map(|(m, b)| m - b),
                Some(to_micro(m.n as f64)),
                largest_step,
                Some(w.last),
                w.maxima.front().map(|(_, v)| *v),
                mean,
                w.minima.front().map(|(_, v)| *v),
                slope_per_hour(m).map(|v| v.round() as i64),
                m.stddev_y().map(|v| v.round() as i64),
                trend[0],
                trend[1],
                trend[2],
                micro(drift.map(|d| d.age_h)),
                micro(drift.map(|d| d.rate)),
                micro(drift.map(|d| d.level)),
                micro(drift.map(|d| d.fit)),
                micro(recent),
            ];
            (name.clone(), stats)
        })
        .collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    let mut features = DeviceFeatures {
        device_id: String::new(),
        last_seen_ms,
        metrics,
        domain: [None; DOMAIN.len()],
    };
    let micro = |v: Option<f64>| v.filter(|v| v.is_finite()).map(to_micro);
    if let Some(t) = &state.tooth {
        // DOMAIN order.
        features.domain[0] = micro(t.wear_pct());
        features.domain[1] = t.wear_rate_micro_per_h;
        features.domain[2] = micro(t.hours_to_limit());
        features.domain[3] = Some(to_micro(t.impacts as f64));
        features.domain[4] = t.peak_impact_micro;
        let lost = t.status == ToothStatus::Lost;
        features.domain[7] = Some(to_micro(if lost { 1.0 } else { 0.0 }));
    }
    if let Some(installed) = state.installed.filter(|i| *i <= last_seen_ms) {
        let hours = (last_seen_ms - installed) as f64 / MS_PER_HOUR as f64;
        features.domain[HOURS_SINCE_INSTALL] = micro(Some(hours));
    }
    features.domain[6] = state.abrasiveness;
    let day_ms = last_seen_ms % (24 * MS_PER_HOUR);
    features.domain[8] = Some(to_micro(day_ms as f64 / MS_PER_HOUR as f64));
    Some(features)
}

fn schema() -> ViewSchema {
    use ColumnType::*;
    let mut columns = vec![
        Column::required("device_id", Utf8),
        Column::required("last_seen_ms", TimestampMs),
    ];
    columns.extend(DOMAIN.iter().map(|c| Column::nullable(c, Float64)));
    columns.push(Column::required("features", Utf8));
    crate::schema(
        "features",
        ViewKind::Keyed,
        1,
        columns,
        "per device: the feature vector the failure model sees (`features` holds every \
         feature as a JSON object; the domain features also have columns)",
    )
}

/// The view row of a device's features.
pub fn row(f: &DeviceFeatures) -> Row {
    let mut row = vec![
        Value::str(f.device_id.as_str()),
        Value::Int(f.last_seen_ms as i64),
    ];
    row.extend(f.domain.iter().map(|v| Value::opt_float(v.map(from_micro))));
    row.push(Value::Str(f.to_json()));
    row
}

/// The `features` view: one row per device.
///
/// Rendering the JSON column is most of the view's cost, and every change of a device's
/// features retracts the row its previous change inserted. So each worker keeps the row it
/// rendered last per device, and a retraction of those same features reuses it (equal
/// features render equal rows); anything else is rendered again.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx| rows(ctx.features()),
    }
}

/// The view's rows of `features`, each change's row rendered once (see [`view`]).
fn rows<'s>(features: Collection<'s, DeviceFeatures>) -> Collection<'s, Row> {
    let mut rendered: HashMap<String, (DeviceFeatures, Row)> = HashMap::new();
    features
        .inner
        .map(move |(f, time, diff)| {
            let out = if diff < 0 {
                match rendered.remove(&f.device_id) {
                    Some((cached, cached_row)) if cached == f => cached_row,
                    _ => row(&f),
                }
            } else {
                let out = row(&f);
                rendered.insert(f.device_id.clone(), (f, out.clone()));
                out
            };
            (out, time, diff)
        })
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each update's row is its own features' row, whether the cache holds those features
    /// (the usual retraction), other features of the device, or nothing.
    #[test]
    fn rows_are_rendered_from_each_update_whatever_the_cache_holds() {
        let f = |device: &str, ts: u64, strain: f64| {
            DeviceFeatures::from_values(device, ts, [("strain_ue.mean".to_string(), strain)])
        };
        let (a1, a2, a3, b1) = (
            f("A", 1, 1.0),
            f("A", 2, 2.0),
            f("A", 3, 3.0),
            f("B", 1, 5.0),
        );
        let updates = vec![
            (a1.clone(), 1, 1),
            (b1.clone(), 1, 1),
            (a1.clone(), 2, -1),
            (a2.clone(), 2, 1),
            // A's cached row is now a3's: retracting a2 must not take it.
            (a3.clone(), 3, 1),
            (a2.clone(), 4, -1),
            (a3.clone(), 4, -1),
            (b1.clone(), 5, -1),
        ];
        let totals = |updates: Vec<(Row, u64, isize)>| {
            let mut out: BTreeMap<(Row, u64), isize> = BTreeMap::new();
            for (row, time, diff) in updates {
                *out.entry((row, time)).or_default() += diff;
            }
            out.retain(|_, d| *d != 0);
            out
        };
        let expected = totals(updates.iter().map(|(f, t, d)| (row(f), *t, *d)).collect());
        for workers in [1, 2] {
            let got = totals(wearflow_operators::testing::run(
                workers,
                updates.clone(),
                rows,
            ));
            assert_eq!(got, expected, "{workers} workers");
        }
        assert_ne!(row(&a2), row(&a3));
    }

    fn reading(ts: u64, strain: f64, load: f64) -> (u64, BTreeMap<String, Micro>) {
        let metrics = [("load_kn", load), ("strain_ue", strain)]
            .into_iter()
            .map(|(n, v)| (n.to_string(), Micro::from_f64(v)))
            .collect();
        (ts, metrics)
    }

    /// Folds strain readings (with a constant load) into the state.
    fn feed(state: &mut DeviceState, readings: &[(u64, f64)], window_ms: u64) {
        for &(ts, strain) in readings {
            let (ts, metrics) = reading(ts, strain, 50.0);
            fold(state, &Observation::Reading(ts, metrics), window_ms);
        }
    }

    #[test]
    fn resolved_columns_read_what_get_reads() {
        let mut state = DeviceState::default();
        fold(&mut state, &Observation::Installed(0), MS_PER_HOUR);
        feed(
            &mut state,
            &[(60_000, 400.0), (120_000, 410.0)],
            MS_PER_HOUR,
        );
        let features = present(&state).expect("features");
        let mut names: Vec<String> = features.values().into_iter().map(|(n, _)| n).collect();
        // Absent, unknown and malformed names read as missing.
        names.extend(
            [
                "wear_pct",
                "nonsense.mean",
                "strain_ue.nonsense",
                "plain",
                "a.b.c",
            ]
            .map(String::from),
        );
        names.reverse();
        let columns = FeatureColumns::new(&names);
        let mut row = vec![-1.0];
        columns.extend(&features, &mut row);
        assert_eq!(row.len(), names.len() + 1);
        assert_eq!(row[0], -1.0, "appends");
        for (name, value) in names.iter().zip(&row[1..]) {
            match features.get(name) {
                Some(v) => assert_eq!(*value, v, "{name}"),
                None => assert!(value.is_nan(), "{name}: {value}"),
            }
        }
        assert!(row[1..].iter().filter(|v| !v.is_nan()).count() > 20);
    }

    /// The JSON rendering as first written (escape every name, format every float): the
    /// oracle for the fast [`DeviceFeatures::to_json`].
    fn reference_json(f: &DeviceFeatures) -> String {
        let mut parts = Vec::new();
        for (name, v) in DOMAIN.iter().zip(&f.domain) {
            if let Some(v) = v {
                parts.push(format!(
                    "{}:{}",
                    serde_json::Value::from(*name),
                    from_micro(*v)
                ));
            }
        }
        for (metric, stats) in &f.metrics {
            for (stat, v) in STATS.iter().zip(stats) {
                if let Some(v) = v {
                    let name = serde_json::Value::from(format!("{metric}.{stat}"));
                    parts.push(format!("{name}:{}", from_micro(*v)));
                }
            }
        }
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn json_matches_the_reference_rendering() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn value(next: &mut impl FnMut() -> u64) -> Option<i64> {
            match next() % 5 {
                0 => None,
                1 => Some((next() % 2_000_000_000) as i64 - 1_000_000_000),
                2 => Some(next() as i64),
                3 => Some(((next() % 1000) as i64 - 500) * 1_000_000),
                _ => Some((next() % 100) as i64),
            }
        }
        let names = [
            "load_kn",
            "quote\"d",
            "back\\slash",
            "new\nline",
            "ünïcode",
            "tab\t",
        ];
        for _ in 0..500 {
            let domain = std::array::from_fn(|_| value(&mut next));
            let mut metrics: Vec<(String, MetricStats)> = Vec::new();
            for n in names {
                if next() % 3 != 0 {
                    metrics.push((n.to_string(), std::array::from_fn(|_| value(&mut next))));
                }
            }
            metrics.sort_by(|a, b| a.0.cmp(&b.0));
            let f = DeviceFeatures {
                device_id: "D".into(),
                last_seen_ms: 1,
                metrics,
                domain,
            };
            assert_eq!(f.to_json(), reference_json(&f));
            let parsed: serde_json::Value = serde_json::from_str(&f.to_json()).expect("valid JSON");
            assert!(parsed.is_object());
        }
        let empty = DeviceFeatures {
            device_id: "D".into(),
            last_seen_ms: 1,
            metrics: vec![("load_kn".into(), [None; STATS.len()])],
            domain: [None; DOMAIN.len()],
        };
        assert_eq!(empty.to_json(), "{}");
        assert_eq!(row(&empty).last(), Some(&Value::str("{}")));
    }

    #[test]
    fn window_statistics_per_metric() {
        let mut state = DeviceState::default();
        let hour = MS_PER_HOUR;
        // Out of order on purpose; the first reading leaves the 1 h window.
        feed(
            &mut state,
            &[(0, 999.0), (2 * hour, 420.0), (hour + hour / 2, 400.0)],
            hour,
        );
        let mut f = present(&state).expect("features");
        f.device_id = "D".into();
        assert_eq!(f.last_seen_ms, 2 * hour);
        assert_eq!(f.get("strain_ue.count"), Some(2.0));
        assert_eq!(f.get("strain_ue.last"), Some(420.0));
        assert_eq!(f.get("strain_ue.min"), Some(400.0));
        assert_eq!(f.get("strain_ue.max"), Some(420.0));
        assert_eq!(f.get("strain_ue.mean"), Some(410.0));
        assert_eq!(f.get("strain_ue.stddev"), Some(10.0));
        // 20 units over half an hour.
        assert_eq!(f.get("strain_ue.slope_per_h"), Some(40.0));
        assert_eq!(f.get("load_kn.slope_per_h"), Some(0.0));
        assert_eq!(f.get("wear_pct"), None);
        assert_eq!(f.get("nonsense.mean"), None);
        // The baseline is the first hour of readings (only the first one here); the change
        // is the window's mean less it.
        assert_eq!(f.get("strain_ue.baseline"), Some(999.0));
        assert_eq!(f.get("strain_ue.change"), Some(410.0 - 999.0));
        assert_eq!(f.get("load_kn.change"), Some(0.0));
        // Readings in arrival order: 999 → 420 → 400.
        assert_eq!(f.get("strain_ue.largest_step"), Some(-579.0));
        assert_eq!(f.get("load_kn.largest_step"), Some(0.0));
        // The JSON form round-trips.
        let back = DeviceFeatures::from_values("D", f.last_seen_ms, f.values());
        assert_eq!(back, f);
        let parsed: BTreeMap<String, f64> = serde_json::from_str(&f.to_json()).expect("JSON");
        let again = DeviceFeatures::from_values("D", f.last_seen_ms, parsed);
        assert_eq!(again, f);
    }

    #[test]
    fn trends_run_on_operating_time() {
        let mut state = DeviceState::default();
        let hour = MS_PER_HOUR;
        let five = 5 * 60_000;
        fold(&mut state, &Observation::Installed(0), hour);
        // Strain rises 1 µε per 5 operating minutes for 4 h, the machine stands for 10 h,
        // then works 2 h more. The 10 h gap counts as OPERATING_GAP_MS (15 minutes), so the
        // rise is a line of 12 µε per operating hour.
        let mut readings: Vec<(u64, f64)> =
            (0..=48).map(|k| (k * five, 400.0 + k as f64)).collect();
        readings.extend((49..=72).map(|k| (14 * hour + (k - 48) * five, 402.0 + k as f64)));
        feed(&mut state, &readings, hour);
        let f = present(&state).expect("features");
        for window in ["3h", "6h", "12h"] {
            assert_eq!(
                f.get(&format!("strain_ue.trend_{window}")),
                Some(12.0),
                "{window}"
            );
            assert_eq!(
                f.get(&format!("load_kn.trend_{window}")),
                Some(0.0),
                "{window}"
            );
        }
        assert_eq!(f.get("hour_of_day"), Some(16.0));

        // A late reading does not move the trends.
        feed(&mut state, &[(hour, 9_999.0)], hour);
        assert_eq!(
            present(&state)
                .expect("features")
                .get("strain_ue.trend_12h"),
            Some(12.0)
        );

        // A replacement starts the trends over: the new part's readings are flat.
        fold(&mut state, &Observation::Installed(17 * hour), hour);
        feed(
            &mut state,
            &(0..=12)
                .map(|k| (17 * hour + k * five, 500.0))
                .collect::<Vec<_>>(),
            hour,
        );
        let f = present(&state).expect("features");
        assert_eq!(f.get("strain_ue.trend_3h"), Some(0.0));
        assert_eq!(f.get("strain_ue.trend_12h"), Some(0.0));
        assert_eq!(f.get("hour_of_day"), Some(18.0));
    }

    #[test]
    fn a_drift_is_dated_and_measured_on_operating_time() {
        let mut state = DeviceState::default();
        let hour = MS_PER_HOUR;
        let five = 5 * 60_000;
        fold(&mut state, &Observation::Installed(0), hour);
        // Strain reads 1,000 µε for 10 operating hours, then rises 1 % of that per
        // operating hour. After 4 h of the rise the machine stands for 8 h (15 operating
        // minutes), then works 3 h more: the drift is 7¼ operating hours old and 7.25 % high.
        let strain = |op_min: u64| 1_000.0 + 10.0 * (op_min as f64 / 60.0 - 10.0).max(0.0);
        let mut readings: Vec<(u64, f64)> =
            (0..=14 * 12).map(|k| (k * five, strain(k * 5))).collect();
        let restart = 14 * hour + 8 * hour;
        readings.extend((0..=3 * 12).map(|k| (restart + k * five, strain(14 * 60 + 15 + k * 5))));
        feed(&mut state, &readings, hour);
        let f = present(&state).expect("features");
        let near = |name: &str, want: f64, tolerance: f64| {
            let got = f.get(name).unwrap_or(f64::NAN);
            assert!(
                (got - want).abs() <= tolerance,
                "{name}: {got} against {want}"
            );
        };
        near("strain_ue.drift_age_h", 7.25, 1e-6);
        near("strain_ue.drift_rate", 0.01, 1e-5);
        near("strain_ue.drift_level", 0.0725, 1e-4);
        near("strain_ue.drift_fit", 1.0, 1e-3);
        // The buckets that start in the last operating hour (16:15 to 17:15 operating
        // time, 13 readings) average 6.75 %.
        near("strain_ue.recent_1h", 0.0675, 1e-4);
        // A constant metric has no drift.
        assert_eq!(f.get("load_kn.drift_age_h"), None);
        assert_eq!(f.get("load_kn.recent_1h"), Some(0.0));
    }

    #[test]
    fn a_reinstallation_starts_a_new_baseline() {
        let mut state = DeviceState::default();
        let hour = MS_PER_HOUR;
        fold(&mut state, &Observation::Installed(0), hour);
        feed(
            &mut state,
            &[(hour / 2, 400.0), (hour, 404.0), (2 * hour, 420.0)],
            hour,
        );
        let f = present(&state).expect("features");
        // Readings from 0.5 h until 1.5 h form the baseline.
        assert_eq!(f.get("strain_ue.baseline"), Some(402.0));
        assert_eq!(f.get("strain_ue.change"), Some(18.0));
        assert_eq!(f.get("strain_ue.largest_step"), Some(16.0));

        // The part is replaced at 3 h: readings before do not count, later ones do.
        fold(&mut state, &Observation::Installed(3 * hour), hour);
        feed(
            &mut state,
            &[
                (3 * hour, 500.0),
                (3 * hour + hour / 2, 520.0),
                (4 * hour + hour / 2, 600.0),
            ],
            hour,
        );
        let f = present(&state).expect("features");
        assert_eq!(f.get("strain_ue.baseline"), Some(510.0));
        // The window holds only the newest reading (the 1 h window ends at 4.5 h).
        assert_eq!(f.get("strain_ue.mean"), Some(600.0));
        assert_eq!(f.get("strain_ue.change"), Some(90.0));
        // Steps count from the new part's first reading: 500 → 520 → 600.
        assert_eq!(f.get("strain_ue.largest_step"), Some(80.0));
        // An installation time already known does not reset the baseline.
        fold(&mut state, &Observation::Installed(3 * hour), hour);
        assert_eq!(present(&state).expect("features"), f);
    }
}
