//! `tooth_wear`: per tooth, its current length, wear rate, impacts, load and status.

use serde::{Deserialize, Serialize};
use wearflow_operators::time::{MICRO, from_micro, to_micro};
use wearflow_operators::trend::slope_per_hour;
use wearflow_operators::{
    Collection, Column, ColumnType, LatestByKey, Moments, Row, Sessions, Silence, Stats, Trend,
    Value, ViewKind, ViewSchema, WindowStats,
};
use wearflow_sources::{Asset, DeviceAsset, OrderKind, OrderStatus, Telemetry};

use crate::{Context, ViewDef};

/// A tooth's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ToothStatus {
    /// Wearing normally.
    Ok,
    /// Near its wear limit.
    Watch,
    /// At or past its wear limit.
    Replace,
    /// Silent while its machine works, or a sudden length drop.
    Lost,
}

impl ToothStatus {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            ToothStatus::Ok => "ok",
            ToothStatus::Watch => "watch",
            ToothStatus::Replace => "replace",
            ToothStatus::Lost => "lost",
        }
    }
}

/// Why a tooth counts as lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LostReason {
    /// No reading for the silence period while its machine reported.
    Silent,
    /// Remaining length dropped suddenly (broken tooth).
    LengthDrop,
}

impl LostReason {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            LostReason::Silent => "silent",
            LostReason::LengthDrop => "length_drop",
        }
    }
}

/// One tooth's state; lengths and rates in micro-units so the struct orders exactly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ToothWear {
    /// The device.
    pub device_id: String,
    /// Its machine (from telemetry, else the device record).
    pub machine_id: Option<String>,
    /// Position on the bucket.
    pub position: Option<i64>,
    /// SKU.
    pub sku: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Last telemetry time.
    pub last_seen_ms: Option<u64>,
    /// Remaining length, µmm.
    pub remaining_micro: Option<i64>,
    /// New length, µmm.
    pub new_length_micro: i64,
    /// Wear limit, µmm.
    pub wear_limit_micro: i64,
    /// Wear rate, µmm per hour (positive when wearing).
    pub wear_rate_micro_per_h: Option<i64>,
    /// Impacts at or above the threshold in the stats window.
    pub impacts: i64,
    /// Largest of those impacts, µg.
    pub peak_impact_micro: Option<i64>,
    /// Mean load over the stats window, µkN.
    pub mean_load_micro: Option<i64>,
    /// Status.
    pub status: ToothStatus,
    /// Why it counts as lost.
    pub lost_reason: Option<LostReason>,
}

impl ToothWear {
    /// Fraction of usable length worn, in percent.
    pub fn wear_pct(&self) -> Option<f64> {
        let usable = (self.new_length_micro - self.wear_limit_micro) as f64;
        let remaining = self.remaining_micro? as f64;
        (usable > 0.0).then(|| (self.new_length_micro as f64 - remaining) / usable * 100.0)
    }

    /// Hours until the wear limit at the current rate.
    pub fn hours_to_limit(&self) -> Option<f64> {
        let rate = self.wear_rate_micro_per_h?;
        let left = self.remaining_micro? - self.wear_limit_micro;
        if left <= 0 {
            Some(0.0)
        } else if rate > 0 {
            Some(left as f64 / rate as f64)
        } else {
            None
        }
    }
}

/// Everything known about one device, one variant per upstream collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Fact {
    Seen { ts: u64, machine_id: String },
    Remaining { ts: u64, micro: i64 },
    Device(DeviceAsset),
    Trend(Moments),
    Load(Moments),
    Impacts(Stats),
    Silent,
    Replaced { ts: u64 },
}

/// The part of a telemetry reading the tooth dataflows use, so that fanning a reading out to
/// several operators copies two ids and a few integers, not the whole metric map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reading {
    /// The device.
    pub device_id: String,
    /// Its machine.
    pub machine_id: String,
    /// Event time.
    pub ts: u64,
    /// `remaining_mm` in µmm.
    pub remaining_micro: Option<i64>,
    /// `load_kn` in µkN.
    pub load_micro: Option<i64>,
    /// `impact_g` in µg.
    pub impact_micro: Option<i64>,
}

impl Reading {
    /// Projects a telemetry record.
    pub fn of(t: Telemetry) -> Reading {
        Reading {
            remaining_micro: t.metric("remaining_mm").map(|m| m.0),
            load_micro: t.metric("load_kn").map(|m| m.0),
            impact_micro: t.metric("impact_g").map(|m| m.0),
            device_id: t.device_id,
            machine_id: t.machine_id,
            ts: t.ts.0,
        }
    }
}

/// Builds the per-device state.
pub(crate) fn build<'s>(ctx: &Context<'s>) -> Collection<'s, ToothWear> {
    let cfg = ctx.config.clone();
    let readings = ctx.readings();
    let metric = |pick: fn(&Reading) -> Option<i64>| {
        readings
            .clone()
            .flat_map(move |r| pick(&r).map(|value| (r.device_id, (r.ts, value))))
    };
    let remaining = metric(|r| r.remaining_micro);

    let seen = ctx.device_last_seen();
    let machine_sessions = readings
        .clone()
        .map(|r| (r.machine_id, r.ts))
        .sessions("machine: sessions", cfg.silence_ms);
    let silent = seen
        .clone()
        .silence(machine_sessions, cfg.silence_ms)
        .map(|(device, _)| (device, Fact::Silent));
    let latest_remaining = remaining
        .clone()
        .latest_by_key("tooth: remaining")
        .map(|(device, (ts, micro))| (device, Fact::Remaining { ts, micro }));
    let devices = ctx
        .inputs
        .assets
        .clone()
        .flat_map(|asset| match asset {
            Asset::Device(d) => Some((d.device_id.clone(), (d.ts.map_or(0, |t| t.0), d))),
            _ => None,
        })
        .latest_by_key("tooth: device record")
        .map(|(device, (_, record))| (device, Fact::Device(record)));
    let trend = remaining
        .clone()
        .trend(cfg.trend_window_ms, cfg.window_granularity_ms)
        .map(|(device, m)| (device, Fact::Trend(m)));
    let load = metric(|r| r.load_micro)
        .trend(cfg.stats_window_ms, cfg.window_granularity_ms)
        .map(|(device, m)| (device, Fact::Load(m)));
    let threshold = to_micro(cfg.impact_threshold_g);
    let impacts = metric(|r| r.impact_micro)
        .filter(move |(_, (_, g))| *g >= threshold)
        .window_stats("tooth: impacts", cfg.stats_window_ms)
        .map(|(device, s)| (device, Fact::Impacts(s)));
    let seen = seen.map(|(device, (ts, machine_id))| (device, Fact::Seen { ts, machine_id }));

    let replaced = replacements(ctx);

    seen.concat(silent)
        .concat(latest_remaining)
        .concat(devices)
        .concat(trend)
        .concat(load)
        .concat(impacts)
        .concat(replaced)
        .reduce_named("tooth_wear: combine", move |device, facts, output| {
            if let Some(row) = combine(device, facts, &cfg) {
                output.push((row, 1));
            }
        })
        .map(|(_, row)| row)
}

/// The newest completed work order per device: from then on the device is a new tooth.
fn replacements<'s>(ctx: &Context<'s>) -> Collection<'s, (String, Fact)> {
    replacement_times(ctx).map(|(device, ts)| (device, Fact::Replaced { ts }))
}

/// `(device, time of its newest completed work order)`.
pub(crate) fn replacement_times<'s>(ctx: &Context<'s>) -> Collection<'s, (String, u64)> {
    ctx.inputs
        .orders
        .clone()
        .filter(|o| o.kind == OrderKind::Work && o.status == OrderStatus::Completed)
        .flat_map(|o| o.device_id.clone().map(|d| (d, (o.ts.0, ()))))
        .latest_by_key("tooth: last replacement")
        .map(|(device, (ts, ()))| (device, ts))
}

fn combine(
    device: &str,
    facts: &[(&Fact, isize)],
    cfg: &crate::DataflowConfig,
) -> Option<ToothWear> {
    let mut seen: Option<(u64, &str)> = None;
    let mut replaced_at: Option<u64> = None;
    let mut remaining = None;
    let mut record: Option<&DeviceAsset> = None;
    let mut trend: Option<Moments> = None;
    let mut load: Option<Moments> = None;
    let mut impacts: Option<Stats> = None;
    let mut silent = false;
    for (fact, _) in facts {
        match fact {
            Fact::Replaced { ts } => replaced_at = Some(*ts),
            Fact::Seen { ts, machine_id } => seen = Some((*ts, machine_id.as_str())),
            Fact::Remaining { ts, micro } => remaining = Some((*ts, *micro)),
            Fact::Device(d) => record = Some(d),
            Fact::Trend(m) => trend = Some(*m),
            Fact::Load(m) => load = Some(*m),
            Fact::Impacts(s) => impacts = Some(*s),
            Fact::Silent => silent = true,
        }
    }
    if seen.is_none() && record.is_none() {
        return None;
    }
    let new_length_micro = record
        .and_then(|r| r.new_length_mm)
        .map_or(to_micro(cfg.default_new_length_mm), |m| m.0);
    let wear_limit_micro = record
        .and_then(|r| r.wear_limit_mm)
        .map_or(to_micro(cfg.default_wear_limit_mm), |m| m.0);
    // A trend window that spans a replacement mixes two teeth: a rising slope is not wear.
    let spans_replacement = replaced_at
        .is_some_and(|r| seen.is_some_and(|(ts, _)| ts.saturating_sub(r) < cfg.trend_window_ms));
    let wear_rate_micro_per_h = trend
        .as_ref()
        .and_then(slope_per_hour)
        .filter(|slope| *slope <= 0.0 && !spans_replacement)
        .map(|slope| (-slope).round() as i64);
    // A broken tooth: the newest length lies far below the trend line of the window.
    let dropped = match (
        trend.as_ref().and_then(|m| m.predict(remaining?.0 as i64)),
        remaining,
    ) {
        (Some(predicted), Some((_, r))) => predicted - r as f64 >= cfg.drop_threshold_mm * MICRO,
        _ => false,
    };
    let remaining = remaining.map(|(_, micro)| micro);
    let mut wear = ToothWear {
        device_id: device.to_string(),
        machine_id: seen
            .map(|(_, m)| m.to_string())
            .or_else(|| record.map(|r| r.machine_id.clone())),
        position: record.and_then(|r| r.position),
        sku: record.and_then(|r| r.sku.clone()),
        site: record.and_then(|r| r.site.clone()),
        last_seen_ms: seen.map(|(ts, _)| ts),
        remaining_micro: remaining,
        new_length_micro,
        wear_limit_micro,
        wear_rate_micro_per_h,
        impacts: impacts.map_or(0, |s| s.count()),
        peak_impact_micro: impacts.map(|s| s.max),
        mean_load_micro: load.and_then(|m| m.mean_y()).map(|m| m.round() as i64),
        status: ToothStatus::Ok,
        lost_reason: None,
    };
    // Silence only counts for the current tooth: a reading after the replacement clears it.
    let silent_now = silent && replaced_at.is_none_or(|r| seen.is_none_or(|(ts, _)| r <= ts));
    wear.lost_reason = if silent_now {
        Some(LostReason::Silent)
    } else if dropped {
        Some(LostReason::LengthDrop)
    } else {
        None
    };
    wear.status = if wear.lost_reason.is_some() {
        ToothStatus::Lost
    } else if remaining.is_some_and(|r| r <= wear_limit_micro) {
        ToothStatus::Replace
    } else if wear.hours_to_limit().is_some_and(|h| h <= cfg.watch_hours)
        || wear.wear_pct().is_some_and(|p| p >= 75.0)
    {
        ToothStatus::Watch
    } else {
        ToothStatus::Ok
    };
    Some(wear)
}

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "tooth_wear",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("device_id", Utf8),
            Column::nullable("machine_id", Utf8),
            Column::nullable("position", Int64),
            Column::nullable("sku", Utf8),
            Column::nullable("site", Utf8),
            Column::nullable("last_seen_ms", TimestampMs),
            Column::nullable("remaining_mm", Float64),
            Column::nullable("wear_pct", Float64),
            Column::nullable("wear_rate_mm_per_h", Float64),
            Column::required("impacts_1h", Int64),
            Column::nullable("peak_impact_g_1h", Float64),
            Column::nullable("mean_load_kn", Float64),
            Column::nullable("hours_to_limit", Float64),
            Column::required("status", Utf8),
            Column::nullable("lost_reason", Utf8),
        ],
        "per tooth: length left, wear rate, impacts and load in the last hour, status",
    )
}

/// The view row of a tooth.
pub fn row(t: &ToothWear) -> Row {
    vec![
        Value::str(&t.device_id),
        Value::opt_str(t.machine_id.as_deref()),
        t.position.map_or(Value::Null, Value::Int),
        Value::opt_str(t.sku.as_deref()),
        Value::opt_str(t.site.as_deref()),
        t.last_seen_ms
            .map_or(Value::Null, |ms| Value::Int(ms as i64)),
        Value::opt_float(t.remaining_micro.map(from_micro)),
        Value::opt_float(t.wear_pct()),
        Value::opt_float(t.wear_rate_micro_per_h.map(from_micro)),
        Value::Int(t.impacts),
        Value::opt_float(t.peak_impact_micro.map(from_micro)),
        Value::opt_float(t.mean_load_micro.map(from_micro)),
        Value::opt_float(t.hours_to_limit()),
        Value::str(t.status.name()),
        Value::opt_str(t.lost_reason.map(LostReason::name)),
    ]
}

/// The `tooth_wear` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx| ctx.tooth_wear().map(|t| row(&t)),
    }
}
