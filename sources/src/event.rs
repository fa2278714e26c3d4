//! The events wearflow ingests, exactly as DOMAIN.md names their fields.
//!
//! Measured values are [`Micro`] (fixed-point micro-units, JSON numbers on the wire) so that
//! events can live in differential collections and sums cancel exactly. Timestamps are
//! [`Timestamp`] (epoch ms; RFC 3339 strings or integers on the wire).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wearflow_operators::Time;
use wearflow_operators::time::{MICRO, from_micro, to_micro};

/// The four input streams; each is one Kafka topic or one JSONL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Device telemetry.
    Telemetry,
    /// Order lifecycle events.
    Orders,
    /// Inventory movements.
    Stock,
    /// Reference data (devices, SKUs, machines, sites).
    Assets,
}

impl StreamKind {
    /// All streams, in file order.
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Telemetry,
        StreamKind::Orders,
        StreamKind::Stock,
        StreamKind::Assets,
    ];

    /// The stream's name (also its default topic and file stem).
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Telemetry => "telemetry",
            StreamKind::Orders => "orders",
            StreamKind::Stock => "stock",
            StreamKind::Assets => "assets",
        }
    }

    /// Parses a stream name.
    pub fn from_name(name: &str) -> Option<StreamKind> {
        StreamKind::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A measured value in micro-units; a finite JSON number on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micro(pub i64);

impl Micro {
    /// From a value in natural units.
    pub fn from_f64(value: f64) -> Micro {
        Micro(to_micro(value))
    }
    /// In natural units.
    pub fn as_f64(self) -> f64 {
        from_micro(self.0)
    }
}

impl Serialize for Micro {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            // Between timely processes (bincode): the exact micro-units.
            return s.serialize_i64(self.0);
        }
        if self.0 % (MICRO as i64) == 0 {
            s.serialize_i64(self.0 / MICRO as i64)
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Micro {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Micro, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Micro);
        }
        let value = f64::deserialize(d)?;
        // ±9.2e12 is the range that fits i64 micro-units.
        if !value.is_finite() || value.abs() > 9.0e12 {
            return Err(serde::de::Error::custom(format!(
                "number {value} is out of range"
            )));
        }
        Ok(Micro::from_f64(value))
    }
}

/// Earliest accepted event time: 2000-01-01T00:00:00Z.
pub const MIN_EVENT_MS: u64 = 946_684_800_000;
/// Latest accepted event time: 2200-01-01T00:00:00Z.
pub const MAX_EVENT_MS: u64 = 7_258_118_400_000;

/// Event time in epoch milliseconds; RFC 3339 text or an integer on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub Time);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        if !d.is_human_readable() {
            // Between timely processes (bincode): already validated epoch milliseconds.
            return u64::deserialize(d).map(Timestamp);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Int(i64),
            Text(String),
        }
        let ms = match Wire::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "timestamp must be RFC 3339 text or integer epoch milliseconds",
            )
        })? {
            Wire::Int(ms) => ms,
            Wire::Text(text) => chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|e| {
                    serde::de::Error::custom(format!("invalid RFC 3339 timestamp `{text}`: {e}"))
                })?
                .timestamp_millis(),
        };
        if ms < MIN_EVENT_MS as i64 || ms > MAX_EVENT_MS as i64 {
            return Err(serde::de::Error::custom(format!(
                "timestamp {ms} is outside 2000-01-01..2200-01-01"
            )));
        }
        Ok(Timestamp(ms as u64))
    }
}

/// One reading of one tooth sensor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The sensor (tooth).
    pub device_id: String,
    /// The machine carrying it.
    pub machine_id: String,
    /// Event time.
    pub ts: Timestamp,
    /// Metric name → value: `remaining_mm`, `load_kn`, `impact_g`, `temp_c`, `dig_cycles`, …
    pub metrics: BTreeMap<String, Micro>,
}

impl Telemetry {
    /// A metric's value, if present.
    pub fn metric(&self, name: &str) -> Option<Micro> {
        self.metrics.get(name).copied()
    }
}

/// Order kinds: DOMAIN.md's `sales` and `work`, plus `purchase` (replenishment, wearflow's
/// extension: an open purchase order is stock on order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A customer buys teeth.
    Sales,
    /// A maintenance job that replaces a tooth.
    Work,
    /// Replenishment of a warehouse.
    Purchase,
}

impl OrderKind {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            OrderKind::Sales => "sales",
            OrderKind::Work => "work",
            OrderKind::Purchase => "purchase",
        }
    }
}

/// Order lifecycle states, in lifecycle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed.
    Created,
    /// Stock allocated (sales, purchase).
    Allocated,
    /// Technician assigned (work).
    Assigned,
    /// Shipped (sales, purchase): terminal.
    Shipped,
    /// Completed (work; purchase received): terminal.
    Completed,
    /// Cancelled: terminal.
    Cancelled,
}

impl OrderStatus {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Allocated => "allocated",
            OrderStatus::Assigned => "assigned",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }
    /// Whether the order is closed in this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Shipped | OrderStatus::Completed | OrderStatus::Cancelled
        )
    }
}

/// Why a work order was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkReason {
    /// The tooth broke or fell off: the failure label.
    Failure,
    /// The tooth reached its wear limit.
    WearLimit,
    /// Planned replacement.
    Preventive,
}

/// One order lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The order.
    pub order_id: String,
    /// Sales, work or purchase.
    pub kind: OrderKind,
    /// New status.
    pub status: OrderStatus,
    /// The tooth SKU.
    #[serde(default)]
    pub sku: Option<String>,
    /// Quantity (teeth), positive.
    #[serde(default = "one")]
    pub qty: i64,
    /// The warehouse that fulfils it.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The buying customer (sales).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// The machine (work).
    #[serde(default)]
    pub machine_id: Option<String>,
    /// The replaced tooth (work).
    #[serde(default)]
    pub device_id: Option<String>,
    /// Why (work).
    #[serde(default)]
    pub reason: Option<WorkReason>,
    /// Event time.
    pub ts: Timestamp,
}

fn one() -> i64 {
    1
}

/// Why stock moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockReason {
    /// Goods received.
    Receipt,
    /// Goods issued (to a sale or a work order).
    Issue,
    /// Stock count correction.
    Adjustment,
    /// Arrived from another warehouse.
    TransferIn,
    /// Left for another warehouse.
    TransferOut,
}

/// One inventory movement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stock {
    /// The warehouse.
    pub warehouse: String,
    /// The SKU.
    pub sku: String,
    /// Signed quantity change.
    pub qty_delta: i64,
    /// Why.
    pub reason: StockReason,
    /// Reference (order id, transfer id).
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// Event time.
    pub ts: Timestamp,
}

/// A tooth sensor's reference record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAsset {
    /// The device (key).
    pub device_id: String,
    /// The machine it is mounted on.
    pub machine_id: String,
    /// Position on the bucket (1 = leftmost).
    #[serde(default)]
    pub position: Option<i64>,
    /// The tooth SKU.
    #[serde(default)]
    pub sku: Option<String>,
    /// The site.
    #[serde(default)]
    pub site: Option<String>,
    /// When the current tooth was installed.
    #[serde(default)]
    pub installed_at: Option<Timestamp>,
    /// Length of a new tooth.
    #[serde(default)]
    pub new_length_mm: Option<Micro>,
    /// Length at which the tooth must be replaced.
    #[serde(default)]
    pub wear_limit_mm: Option<Micro>,
    /// Event time of the record (defaults to the start of time: reference data).
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// A SKU's reference record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuAsset {
    /// The SKU (key).
    pub sku: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Reorder when available stock falls below this.
    #[serde(default)]
    pub reorder_point: Option<i64>,
    /// Replenishment lead time.
    #[serde(default)]
    pub lead_time_days: Option<i64>,
    /// Event time of the record.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// A machine's reference record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineAsset {
    /// The machine (key).
    pub machine_id: String,
    /// Its owner.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Where it works.
    #[serde(default)]
    pub site: Option<String>,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Event time of the record.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// A site's reference record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteAsset {
    /// The site (key).
    pub site: String,
    /// The warehouse that serves it.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Ground abrasiveness, 0 (soft) to 1 (granite).
    #[serde(default)]
    pub abrasiveness: Option<Micro>,
    /// Event time of the record.
    #[serde(default)]
    pub ts: Option<Timestamp>,
}

/// Reference data, upserted by key; `kind` says which record it is.
///
/// JSON carries the variant in a `kind` field (internally tagged); the binary form timely
/// uses between processes (bincode, which cannot read internally tagged enums) names it
/// outside the record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// A tooth sensor.
    Device(DeviceAsset),
    /// A SKU.
    Sku(SkuAsset),
    /// A machine.
    Machine(MachineAsset),
    /// A site.
    Site(SiteAsset),
}

/// The wire forms of [`Asset`]: `Tagged` for JSON, `Plain` for bincode.
mod asset_wire {
    use super::{DeviceAsset, MachineAsset, SiteAsset, SkuAsset};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum TaggedRef<'a> {
        Device(&'a DeviceAsset),
        Sku(&'a SkuAsset),
        Machine(&'a MachineAsset),
        Site(&'a SiteAsset),
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum Tagged {
        Device(DeviceAsset),
        Sku(SkuAsset),
        Machine(MachineAsset),
        Site(SiteAsset),
    }

    #[derive(Serialize)]
    pub enum PlainRef<'a> {
        Device(&'a DeviceAsset),
        Sku(&'a SkuAsset),
        Machine(&'a MachineAsset),
        Site(&'a SiteAsset),
    }

    #[derive(Deserialize)]
    pub enum Plain {
        Device(DeviceAsset),
        Sku(SkuAsset),
        Machine(MachineAsset),
        Site(SiteAsset),
    }
}

impl Serialize for Asset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use asset_wire::{PlainRef, TaggedRef};
        if s.is_human_readable() {
            match self {
                Asset::Device(a) => TaggedRef::Device(a),
                Asset::Sku(a) => TaggedRef::Sku(a),
                Asset::Machine(a) => TaggedRef::Machine(a),
                Asset::Site(a) => TaggedRef::Site(a),
            }
            .serialize(s)
        } else {
            match self {
                Asset::Device(a) => PlainRef::Device(a),
                Asset::Sku(a) => PlainRef::Sku(a),
                Asset::Machine(a) => PlainRef::Machine(a),
                Asset::Site(a) => PlainRef::Site(a),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Asset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Asset, D::Error> {
        use asset_wire::{Plain, Tagged};
        Ok(if d.is_human_readable() {
            match Tagged::deserialize(d)? {
                Tagged::Device(a) => Asset::Device(a),
                Tagged::Sku(a) => Asset::Sku(a),
                Tagged::Machine(a) => Asset::Machine(a),
                Tagged::Site(a) => Asset::Site(a),
            }
        } else {
            match Plain::deserialize(d)? {
                Plain::Device(a) => Asset::Device(a),
                Plain::Sku(a) => Asset::Sku(a),
                Plain::Machine(a) => Asset::Machine(a),
                Plain::Site(a) => Asset::Site(a),
            }
        })
    }
}

impl Asset {
    /// The record's event time, if it has one.
    pub fn ts(&self) -> Option<Timestamp> {
        match self {
            Asset::Device(a) => a.ts,
            Asset::Sku(a) => a.ts,
            Asset::Machine(a) => a.ts,
            Asset::Site(a) => a.ts,
        }
    }
}

/// Any input event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A telemetry reading.
    Telemetry(Telemetry),
    /// An order event.
    Order(Order),
    /// A stock movement.
    Stock(Stock),
    /// A reference record.
    Asset(Asset),
}

impl Event {
    /// The stream this event belongs to.
    pub fn stream(&self) -> StreamKind {
        match self {
            Event::Telemetry(_) => StreamKind::Telemetry,
            Event::Order(_) => StreamKind::Orders,
            Event::Stock(_) => StreamKind::Stock,
            Event::Asset(_) => StreamKind::Assets,
        }
    }

    /// Event time; reference data without a time is at time 0 (it lands at the frontier).
    pub fn ts_ms(&self) -> Time {
        match self {
            Event::Telemetry(t) => t.ts.0,
            Event::Order(o) => o.ts.0,
            Event::Stock(s) => s.ts.0,
            Event::Asset(a) => a.ts().map_or(0, |t| t.0),
        }
    }

    /// The event as one line of JSON, in the wire format [`crate::decode`] reads.
    pub fn to_json_line(&self) -> String {
        // Absent optional fields are left out rather than written as `null`.
        fn without_nulls(
            value: serde_json::Result<serde_json::Value>,
        ) -> serde_json::Result<String> {
            let mut value = value?;
            if let serde_json::Value::Object(map) = &mut value {
                map.retain(|_, v| !v.is_null());
            }
            serde_json::to_string(&value)
        }
        let result = match self {
            Event::Telemetry(t) => serde_json::to_string(t),
            Event::Order(o) => without_nulls(serde_json::to_value(o)),
            Event::Stock(s) => without_nulls(serde_json::to_value(s)),
            Event::Asset(a) => without_nulls(serde_json::to_value(a)),
        };
        // Serializing these plain structs cannot fail: no maps with non-string keys, no floats
        // that are not finite (Micro is an integer).
        result.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Simulator, SimulatorConfig};

    /// Timely sends events between the processes of a cluster with bincode: every event kind
    /// must come back equal (JSON conveniences such as internally tagged enums, skipped
    /// fields or integer-or-float numbers do not survive bincode unless handled).
    #[test]
    fn events_survive_bincode() {
        let mut sim = Simulator::new(SimulatorConfig {
            machines: 2,
            ..SimulatorConfig::default()
        });
        let mut events = Vec::new();
        sim.advance(
            SimulatorConfig::default().start_ms + 86_400_000,
            &mut events,
        );
        events.push(Event::Order(Order {
            order_id: "o-1".into(),
            kind: OrderKind::Work,
            status: OrderStatus::Created,
            sku: None,
            qty: 1,
            warehouse: None,
            customer_id: None,
            machine_id: None,
            device_id: Some("d".into()),
            reason: None,
            ts: Timestamp(MIN_EVENT_MS + 1),
        }));
        if let Some(Event::Telemetry(t)) = events
            .iter_mut()
            .find(|e| e.stream() == StreamKind::Telemetry)
        {
            t.metrics.insert("odd".into(), Micro(-1_234_567));
        }
        let kinds: std::collections::BTreeSet<StreamKind> =
            events.iter().map(Event::stream).collect();
        assert_eq!(
            kinds.len(),
            StreamKind::ALL.len(),
            "every stream is covered"
        );
        for event in &events {
            let bytes = bincode::serialize(event).expect("serialize");
            let back: Event = bincode::deserialize(&bytes).expect("deserialize");
            assert_eq!(&back, event);
        }
    }

    #[test]
    fn json_lines_leave_out_absent_fields() {
        let line = Event::Stock(Stock {
            warehouse: "W1".into(),
            sku: "T-1".into(),
            qty_delta: -2,
            reason: StockReason::Issue,
            reference: None,
            ts: Timestamp(MIN_EVENT_MS),
        })
        .to_json_line();
        assert!(!line.contains("null") && !line.contains("ref"), "{line}");
        let back = crate::decode::decode(StreamKind::Stock, 0, 0, line.as_bytes());
        assert!(back.is_ok(), "{line}: {back:?}");
    }
}
