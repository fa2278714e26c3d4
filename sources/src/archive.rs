//! Events as archive rows: the columns each stream is archived with, and each event's row.
//!
//! The archive (in `wearflow-sinks`) stores rows of [`Value`]s against declared
//! [`Column`]s and knows nothing of events; this module is the one place that flattens the
//! event model into those rows. Telemetry's known metrics get a column each (so analysts and
//! Parquet statistics see them directly); any other metric goes into `other_metrics`, a JSON
//! object.

use std::collections::BTreeMap;

use wearflow_operators::{Column, ColumnType, Row, Value};

use crate::event::{Event, Order, Stock, StockReason, StreamKind, Telemetry, WorkReason};

/// The metrics of DOMAIN.md that have a column of their own in `telemetry_history`.
pub const KNOWN_METRICS: [&str; 5] = [
    "remaining_mm",
    "load_kn",
    "impact_g",
    "temp_c",
    "dig_cycles",
];

/// The archive's name for a stream's timestamp column.
pub const TIME_COLUMN: &str = "ts";

/// The archived columns of a stream (none for reference data, which is not archived).
pub fn archive_columns(stream: StreamKind) -> Option<Vec<Column>> {
    use ColumnType::{Float64, Int64, TimestampMs, Utf8};
    Some(match stream {
        StreamKind::Telemetry => {
            let mut columns = vec![
                Column::required("device_id", Utf8),
                Column::required("machine_id", Utf8),
                Column::required(TIME_COLUMN, TimestampMs),
            ];
            columns.extend(KNOWN_METRICS.iter().map(|m| Column::nullable(m, Float64)));
            columns.push(Column::nullable("other_metrics", Utf8));
            columns
        }
        StreamKind::Orders => vec![
            Column::required("order_id", Utf8),
            Column::required("kind", Utf8),
            Column::required("status", Utf8),
            Column::nullable("sku", Utf8),
            Column::required("qty", Int64),
            Column::nullable("warehouse", Utf8),
            Column::nullable("customer_id", Utf8),
            Column::nullable("machine_id", Utf8),
            Column::nullable("device_id", Utf8),
            Column::nullable("reason", Utf8),
            Column::required(TIME_COLUMN, TimestampMs),
        ],
        StreamKind::Stock => vec![
            Column::required("warehouse", Utf8),
            Column::required("sku", Utf8),
            Column::required("qty_delta", Int64),
            Column::required("reason", Utf8),
            Column::nullable("ref", Utf8),
            Column::required(TIME_COLUMN, TimestampMs),
        ],
        StreamKind::Assets => return None,
    })
}

impl Event {
    /// The event as a row of [`archive_columns`] of its stream (none for reference data).
    pub fn archive_row(&self) -> Option<Row> {
        match self {
            Event::Telemetry(t) => Some(telemetry_row(t)),
            Event::Order(o) => Some(order_row(o)),
            Event::Stock(s) => Some(stock_row(s)),
            Event::Asset(_) => None,
        }
    }
}

fn ts(ms: u64) -> Value {
    Value::Int(ms as i64)
}

fn telemetry_row(t: &Telemetry) -> Row {
    let mut row = Vec::with_capacity(4 + KNOWN_METRICS.len());
    row.push(Value::str(&t.device_id));
    row.push(Value::str(&t.machine_id));
    row.push(ts(t.ts.0));
    for metric in KNOWN_METRICS {
        row.push(Value::opt_float(t.metric(metric).map(|m| m.as_f64())));
    }
    let others: BTreeMap<&str, f64> = t
        .metrics
        .iter()
        .filter(|(name, _)| !KNOWN_METRICS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_f64()))
        .collect();
    row.push(if others.is_empty() {
        Value::Null
    } else {
        // A map of finite floats always serializes.
        serde_json::to_string(&others).map_or(Value::Null, Value::Str)
    });
    row
}

fn order_row(o: &Order) -> Row {
    vec![
        Value::str(&o.order_id),
        Value::str(o.kind.name()),
        Value::str(o.status.name()),
        Value::opt_str(o.sku.as_deref()),
        Value::Int(o.qty),
        Value::opt_str(o.warehouse.as_deref()),
        Value::opt_str(o.customer_id.as_deref()),
        Value::opt_str(o.machine_id.as_deref()),
        Value::opt_str(o.device_id.as_deref()),
        Value::opt_str(o.reason.map(work_reason)),
        ts(o.ts.0),
    ]
}

fn stock_row(s: &Stock) -> Row {
    vec![
        Value::str(&s.warehouse),
        Value::str(&s.sku),
        Value::Int(s.qty_delta),
        Value::str(stock_reason(s.reason)),
        Value::opt_str(s.reference.as_deref()),
        ts(s.ts.0),
    ]
}

fn work_reason(reason: WorkReason) -> &'static str {
    match reason {
        WorkReason::Failure => "failure",
        WorkReason::WearLimit => "wear_limit",
        WorkReason::Preventive => "preventive",
    }
}

fn stock_reason(reason: StockReason) -> &'static str {
    match reason {
        StockReason::Receipt => "receipt",
        StockReason::Issue => "issue",
        StockReason::Adjustment => "adjustment",
        StockReason::TransferIn => "transfer_in",
        StockReason::TransferOut => "transfer_out",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    #[test]
    fn rows_fit_their_columns() {
        let lines = [
            (
                StreamKind::Telemetry,
                r#"{"device_id":"d1","machine_id":"m1","ts":1767225600000,"metrics":{"remaining_mm":81.5,"custom_x":-2}}"#,
            ),
            (
                StreamKind::Orders,
                r#"{"order_id":"o1","kind":"work","status":"completed","machine_id":"m1","device_id":"d1","reason":"wear_limit","ts":1767225600000}"#,
            ),
            (
                StreamKind::Stock,
                r#"{"warehouse":"w1","sku":"T1","qty_delta":-1,"reason":"transfer_out","ref":"o1","ts":1767225600000}"#,
            ),
        ];
        for (stream, line) in lines {
            let event = decode(stream, 0, 0, line.as_bytes()).expect("valid event");
            let row = event.archive_row().expect("archived stream");
            let columns = archive_columns(stream).expect("columns");
            assert_eq!(row.len(), columns.len(), "{stream}");
            for (value, column) in row.iter().zip(&columns) {
                assert!(
                    column.nullable || *value != Value::Null,
                    "{stream}.{} is null",
                    column.name
                );
            }
        }
        let t = decode(StreamKind::Telemetry, 0, 0, lines[0].1.as_bytes()).expect("valid");
        let row = t.archive_row().expect("row");
        assert_eq!(row[3], Value::Float(81.5));
        assert_eq!(row[4], Value::Null, "load_kn absent");
        assert_eq!(row[8], Value::str(r#"{"custom_x":-2.0}"#));
        assert!(archive_columns(StreamKind::Assets).is_none());
    }
}
