//! View rows and schemas: the shape every view publishes to the serving store.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

use crate::Error;

/// One cell of a view row. Floats order by `total_cmp` so rows can live in collections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (also timestamps in epoch milliseconds).
    Int(i64),
    /// A 64-bit float, computed from exact integer state at the edge of a dataflow.
    Float(f64),
    /// A string.
    Str(String),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Str(_) => 4,
        }
    }

    /// A float value, or `Null` when it is not finite.
    pub fn float(value: f64) -> Value {
        if value.is_finite() {
            Value::Float(value)
        } else {
            Value::Null
        }
    }

    /// An optional float value.
    pub fn opt_float(value: Option<f64>) -> Value {
        value.map_or(Value::Null, Value::float)
    }

    /// A string value.
    pub fn str(value: impl Into<String>) -> Value {
        Value::Str(value.into())
    }

    /// An optional string value.
    pub fn opt_str(value: Option<&str>) -> Value {
        value.map_or(Value::Null, Value::str)
    }

    /// Parses a key value given as text into this column's type.
    pub fn parse_as(text: &str, ty: ColumnType) -> Option<Value> {
        match ty {
            ColumnType::Utf8 => Some(Value::str(text)),
            ColumnType::Int64 | ColumnType::TimestampMs => text.parse().ok().map(Value::Int),
            ColumnType::Float64 => text.parse().ok().map(Value::Float),
            ColumnType::Bool => text.parse().ok().map(Value::Bool),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}
impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
        }
    }
}

/// A view row: key columns first, then value columns, in schema order.
pub type Row = Vec<Value>;

/// The type of one column (maps one-to-one onto Arrow types in `wearflow-sql`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text.
    Utf8,
    /// Signed 64-bit integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Bool,
    /// Milliseconds since the Unix epoch.
    TimestampMs,
}

/// One column of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name, with its unit where it has one (`remaining_mm`).
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the column may hold NULL.
    pub nullable: bool,
}

impl Column {
    /// A non-null column.
    pub fn required(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            ty,
            nullable: false,
        }
    }
    /// A nullable column.
    pub fn nullable(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            ty,
            nullable: true,
        }
    }
}

/// Whether a view holds one row per key or a log of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// At most one row per key; updates replace, retractions delete.
    Keyed,
    /// Events: each inserted row is kept (bounded); retractions are ignored.
    Append,
}

/// The declared shape of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSchema {
    /// View name, `snake_case`.
    pub name: String,
    /// Keyed or append.
    pub kind: ViewKind,
    /// How many leading columns form the key.
    pub key_len: usize,
    /// All columns, key columns first.
    pub columns: Vec<Column>,
    /// One line describing the view.
    pub description: String,
}

impl ViewSchema {
    /// Declares a view, checking that the key is a non-empty prefix of the columns.
    pub fn new(
        name: &str,
        kind: ViewKind,
        key_len: usize,
        columns: Vec<Column>,
        description: &str,
    ) -> Result<ViewSchema, Error> {
        if key_len == 0 || key_len > columns.len() {
            return Err(Error::InvalidSchema {
                view: name.to_string(),
                reason: format!(
                    "key length {key_len} does not fit {} columns",
                    columns.len()
                ),
            });
        }
        Ok(ViewSchema {
            name: name.to_string(),
            kind,
            key_len,
            columns,
            description: description.to_string(),
        })
    }

    /// The key columns.
    pub fn key_columns(&self) -> &[Column] {
        &self.columns[..self.key_len]
    }

    /// The index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether a row matches this schema's arity and types.
    pub fn accepts(&self, row: &Row) -> bool {
        row.len() == self.columns.len()
            && row.iter().zip(&self.columns).all(|(v, c)| match (v, c.ty) {
                (Value::Null, _) => c.nullable,
                (Value::Bool(_), ColumnType::Bool) => true,
                (Value::Int(_), ColumnType::Int64 | ColumnType::TimestampMs) => true,
                (Value::Float(_), ColumnType::Float64) => true,
                (Value::Str(_), ColumnType::Utf8) => true,
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_order_totally() {
        let mut vs = [
            Value::Float(f64::NAN),
            Value::Int(3),
            Value::Null,
            Value::Float(1.0),
        ];
        vs.sort();
        assert_eq!(vs[0], Value::Null);
        assert_eq!(vs[1], Value::Int(3));
        assert_eq!(vs[2], Value::Float(1.0));
    }

    #[test]
    fn schema_checks_key_and_rows() {
        let cols = vec![
            Column::required("id", ColumnType::Utf8),
            Column::nullable("x", ColumnType::Float64),
        ];
        assert!(ViewSchema::new("v", ViewKind::Keyed, 0, cols.clone(), "").is_err());
        let schema = ViewSchema::new("v", ViewKind::Keyed, 1, cols, "").expect("valid schema");
        assert!(schema.accepts(&vec![Value::str("a"), Value::Null]));
        assert!(!schema.accepts(&vec![Value::Null, Value::Null]));
        assert!(!schema.accepts(&vec![Value::str("a"), Value::Int(1)]));
        assert_eq!(schema.column_index("x"), Some(1));
    }
}
