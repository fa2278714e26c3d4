//! View rows as JSON objects, the one JSON shape every output (HTTP, files, Kafka) uses.

use serde_json::{Map, Value as Json};
use wearflow_operators::{Row, Value, ViewSchema};

/// One cell as JSON.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
    }
}

/// A row as a JSON object keyed by column name.
pub fn row_to_json(schema: &ViewSchema, row: &Row) -> Json {
    let mut object = Map::with_capacity(row.len());
    for (column, value) in schema.columns.iter().zip(row) {
        object.insert(column.name.clone(), value_to_json(value));
    }
    Json::Object(object)
}

/// A key as a JSON object keyed by key-column name.
pub fn key_to_json(schema: &ViewSchema, key: &[Value]) -> Json {
    let mut object = Map::with_capacity(key.len());
    for (column, value) in schema.key_columns().iter().zip(key) {
        object.insert(column.name.clone(), value_to_json(value));
    }
    Json::Object(object)
}
