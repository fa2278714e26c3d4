//! Paging cursors: where the next page starts, as an opaque URL-safe string.
//!
//! A cursor is the hex encoding of a small JSON text: for keyed views the array of the last
//! returned key's values, for append views the offset of the next event. Hex keeps it safe
//! in any query string without escaping; JSON keeps the key's types.

use serde_json::Value as JsonValue;
use wearflow_operators::{ColumnType, Row, Value, ViewKind, ViewSchema};
use wearflow_sinks::json::value_to_json;

/// Where a page starts.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cursor {
    /// Keyed views: the first row after this key.
    AfterKey(Row),
    /// Append views: the event at this offset from the oldest retained one.
    Offset(usize),
}

/// The cursor for the page after `key` (keyed views).
pub(super) fn after_key(key: &[Value]) -> String {
    let values: Vec<JsonValue> = key.iter().map(value_to_json).collect();
    to_hex(JsonValue::Array(values).to_string().as_bytes())
}

/// The cursor for the page starting at event `offset` (append views).
pub(super) fn at_offset(offset: usize) -> String {
    to_hex(offset.to_string().as_bytes())
}

/// Reads a cursor for `schema`'s view; `None` when it is malformed or made for another kind
/// of view or key.
pub(super) fn decode(text: &str, schema: &ViewSchema) -> Option<Cursor> {
    let bytes = from_hex(text)?;
    let json: JsonValue = serde_json::from_slice(&bytes).ok()?;
    match (schema.kind, json) {
        (ViewKind::Keyed, JsonValue::Array(values)) if values.len() == schema.key_len => {
            let key = values
                .iter()
                .zip(schema.key_columns())
                .map(|(value, column)| value_from_json(value, column.ty))
                .collect::<Option<Row>>()?;
            Some(Cursor::AfterKey(key))
        }
        (ViewKind::Append, JsonValue::Number(offset)) => offset
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Cursor::Offset),
        _ => None,
    }
}

/// One key value back from JSON, checked against its column's type.
fn value_from_json(value: &JsonValue, ty: ColumnType) -> Option<Value> {
    match (value, ty) {
        (JsonValue::Null, _) => Some(Value::Null),
        (JsonValue::String(s), ColumnType::Utf8) => Some(Value::str(s.as_str())),
        (JsonValue::Number(n), ColumnType::Int64 | ColumnType::TimestampMs) => {
            n.as_i64().map(Value::Int)
        }
        (JsonValue::Number(n), ColumnType::Float64) => n.as_f64().map(Value::Float),
        (JsonValue::Bool(b), ColumnType::Bool) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearflow_operators::Column;

    fn schema(kind: ViewKind) -> ViewSchema {
        let columns = vec![
            Column::required("site", ColumnType::Utf8),
            Column::required("part_no", ColumnType::Int64),
            Column::required("qty", ColumnType::Int64),
        ];
        ViewSchema::new("stock", kind, 2, columns, "test").expect("valid schema")
    }

    #[test]
    fn keys_and_offsets_round_trip() {
        let keyed = schema(ViewKind::Keyed);
        let key = vec![Value::str("pit \"7\", north"), Value::Int(-42)];
        let text = after_key(&key);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(&text, &keyed), Some(Cursor::AfterKey(key)));
        let append = schema(ViewKind::Append);
        assert_eq!(decode(&at_offset(17), &append), Some(Cursor::Offset(17)));
    }

    #[test]
    fn malformed_or_foreign_cursors_are_refused() {
        let keyed = schema(ViewKind::Keyed);
        for text in [
            "",
            "zz",
            "abc",
            "6869",
            &at_offset(3),
            &after_key(&[Value::str("a")]),
        ] {
            assert_eq!(decode(text, &keyed), None, "{text}");
        }
        let wrong_type = after_key(&[Value::str("a"), Value::str("b")]);
        assert_eq!(decode(&wrong_type, &keyed), None);
        assert_eq!(
            decode(&after_key(&[Value::Int(1)]), &schema(ViewKind::Append)),
            None
        );
    }
}
