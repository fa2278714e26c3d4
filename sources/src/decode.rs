//! Decoding and validation: bytes in, an [`Event`] or an [`ErrorRecord`] out, never a panic.

use wearflow_operators::ErrorRecord;

use crate::event::{Asset, Event, Order, OrderKind, OrderStatus, Stock, StreamKind, Telemetry};

/// Largest record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Decodes one JSON record of `stream`; `partition` and `position` locate it for the error.
pub fn decode(
    stream: StreamKind,
    partition: u32,
    position: u64,
    bytes: &[u8],
) -> Result<Event, ErrorRecord> {
    let fail = |reason: String| ErrorRecord::new(stream.name(), partition, position, bytes, reason);
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(fail(format!(
            "record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes",
            bytes.len()
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(fail("empty record".to_string()));
    }
    let event = match stream {
        StreamKind::Telemetry => serde_json::from_slice::<Telemetry>(bytes).map(Event::Telemetry),
        StreamKind::Orders => serde_json::from_slice::<Order>(bytes).map(Event::Order),
        StreamKind::Stock => serde_json::from_slice::<Stock>(bytes).map(Event::Stock),
        StreamKind::Assets => serde_json::from_slice::<Asset>(bytes).map(Event::Asset),
    }
    .map_err(|e| fail(format!("invalid {} record: {e}", stream.name())))?;
    validate(&event).map_err(fail)?;
    Ok(event)
}

/// Checks what the types alone cannot: non-empty ids, plausible quantities and values.
fn validate(event: &Event) -> Result<(), String> {
    fn id(name: &str, value: &str) -> Result<(), String> {
        if value.trim().is_empty() {
            Err(format!("`{name}` must not be empty"))
        } else if value.len() > 256 {
            Err(format!("`{name}` is longer than 256 characters"))
        } else {
            Ok(())
        }
    }
    match event {
        Event::Telemetry(t) => {
            id("device_id", &t.device_id)?;
            id("machine_id", &t.machine_id)?;
            if t.metrics.is_empty() {
                return Err("`metrics` must hold at least one metric".to_string());
            }
            for (name, value) in &t.metrics {
                id("metric name", name)?;
                let must_be_non_negative =
                    matches!(name.as_str(), "remaining_mm" | "impact_g" | "dig_cycles");
                if must_be_non_negative && value.0 < 0 {
                    return Err(format!("metric `{name}` must not be negative"));
                }
            }
        }
        Event::Order(o) => {
            id("order_id", &o.order_id)?;
            if o.qty <= 0 {
                return Err(format!("`qty` must be positive, got {}", o.qty));
            }
            if o.kind == OrderKind::Work && o.status == OrderStatus::Shipped {
                return Err("a work order is `completed`, not `shipped`".to_string());
            }
        }
        Event::Stock(s) => {
            id("warehouse", &s.warehouse)?;
            id("sku", &s.sku)?;
            if s.qty_delta == 0 {
                return Err("`qty_delta` must not be zero".to_string());
            }
        }
        Event::Asset(a) => match a {
            Asset::Device(d) => {
                id("device_id", &d.device_id)?;
                id("machine_id", &d.machine_id)?;
            }
            Asset::Sku(s) => id("sku", &s.sku)?,
            Asset::Machine(m) => id("machine_id", &m.machine_id)?,
            Asset::Site(s) => id("site", &s.site)?,
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(stream: StreamKind, json: &str) -> Event {
        match decode(stream, 0, 0, json.as_bytes()) {
            Ok(event) => event,
            Err(e) => panic!("expected {json} to decode: {}", e.reason),
        }
    }

    fn bad(stream: StreamKind, json: &str) -> String {
        match decode(stream, 3, 17, json.as_bytes()) {
            Ok(event) => panic!("expected {json} to fail, got {event:?}"),
            Err(e) => {
                assert_eq!(
                    (e.source.as_str(), e.partition, e.position),
                    (stream.name(), 3, 17)
                );
                e.reason
            }
        }
    }

    #[test]
    fn decodes_every_stream() {
        let t = ok(
            StreamKind::Telemetry,
            r#"{"device_id":"d1","machine_id":"m1","ts":"2026-01-01T00:00:00Z","metrics":{"remaining_mm":81.5,"custom_x":-2}}"#,
        );
        assert_eq!(t.ts_ms(), 1_767_225_600_000);
        let Event::Telemetry(t) = t else {
            panic!("telemetry")
        };
        assert_eq!(t.metric("remaining_mm").map(|m| m.0), Some(81_500_000));
        assert_eq!(t.metric("custom_x").map(|m| m.0), Some(-2_000_000));
        ok(
            StreamKind::Orders,
            r#"{"order_id":"o1","kind":"work","status":"completed","device_id":"d1","reason":"failure","ts":1767225600000}"#,
        );
        ok(
            StreamKind::Stock,
            r#"{"warehouse":"w1","sku":"T1","qty_delta":-2,"reason":"issue","ref":"o1","ts":1767225600000}"#,
        );
        ok(
            StreamKind::Assets,
            r#"{"kind":"site","site":"s1","warehouse":"w1","abrasiveness":0.7}"#,
        );
        ok(
            StreamKind::Assets,
            r#"{"kind":"device","device_id":"d1","machine_id":"m1","position":3}"#,
        );
    }

    #[test]
    fn round_trips_through_json_lines() {
        let json = r#"{"device_id":"d1","machine_id":"m1","ts":1767225600000,"metrics":{"load_kn":12.25,"temp_c":40}}"#;
        let event = ok(StreamKind::Telemetry, json);
        assert_eq!(ok(StreamKind::Telemetry, &event.to_json_line()), event);
    }

    #[test]
    fn rejects_bad_records_with_reasons() {
        let r = bad(StreamKind::Telemetry, "{not json");
        assert!(r.starts_with("invalid telemetry record"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"machine_id":"m","ts":1767225600000,"metrics":{"a":1}}"#,
        );
        assert!(r.contains("missing field `device_id`"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"d","machine_id":"m","ts":1767225600000,"metrics":{"a":"x"}}"#,
        );
        assert!(r.contains("invalid type"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"d","machine_id":"m","ts":"yesterday","metrics":{"a":1}}"#,
        );
        assert!(r.contains("timestamp"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"d","machine_id":"m","ts":5,"metrics":{"a":1}}"#,
        );
        assert!(r.contains("outside"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"","machine_id":"m","ts":1767225600000,"metrics":{"a":1}}"#,
        );
        assert!(r.contains("must not be empty"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"d","machine_id":"m","ts":1767225600000,"metrics":{"a":1e300}}"#,
        );
        assert!(r.contains("out of range"), "{r}");
        let r = bad(
            StreamKind::Telemetry,
            r#"{"device_id":"d","machine_id":"m","ts":1767225600000,"metrics":{"a":1},"x":1}"#,
        );
        assert!(r.contains("unknown field"), "{r}");
        let r = bad(
            StreamKind::Orders,
            r#"{"order_id":"o","kind":"sales","status":"created","qty":0,"ts":1767225600000}"#,
        );
        assert!(r.contains("`qty` must be positive"), "{r}");
        let r = bad(
            StreamKind::Stock,
            r#"{"warehouse":"w","sku":"s","qty_delta":0,"reason":"issue","ts":1767225600000}"#,
        );
        assert!(r.contains("qty_delta"), "{r}");
        let r = bad(StreamKind::Assets, r#"{"kind":"spaceship","id":"x"}"#);
        assert!(r.contains("unknown variant"), "{r}");
        assert_eq!(bad(StreamKind::Stock, "   "), "empty record");
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECORD_BYTES));
        assert!(bad(StreamKind::Stock, &huge).contains("exceeds the limit"));
    }
}
