//! Rows as Arrow: the one mapping from view column types to Arrow types, and column builders
//! from [`Value`] cells. The SQL layer (live tables) and the Parquet archive share it, so a
//! view reads the same in both.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use wearflow_operators::{Column, ColumnType, Value};

/// The time zone every timestamp column carries.
pub const TIME_ZONE: &str = "UTC";

/// The Arrow type of a view column type.
///
/// Timestamps (epoch ms) become `Timestamp(Millisecond, "UTC")` (Postgres `timestamptz`);
/// floats are already `f64` at the edge of the dataflows and stay `Float64`.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::TimestampMs => {
            DataType::Timestamp(TimeUnit::Millisecond, Some(TIME_ZONE.into()))
        }
    }
}

/// The Arrow schema of a list of columns: same names and order, same nullability.
pub fn columns_schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(c.ty), c.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// One Arrow array of `rows` cells of type `ty`. A cell whose value does not match the type
/// becomes NULL (an `Int` in a float column is widened); whether NULL is allowed is checked
/// when the batch is assembled.
pub fn column_array<'a>(
    ty: ColumnType,
    rows: usize,
    cells: impl Iterator<Item = &'a Value>,
) -> ArrayRef {
    match ty {
        ColumnType::Utf8 => {
            let mut builder = StringBuilder::with_capacity(rows, rows * 8);
            for cell in cells {
                match cell {
                    Value::Str(s) => builder.append_value(s),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        ColumnType::Int64 => {
            let mut builder = Int64Builder::with_capacity(rows);
            for cell in cells {
                match cell {
                    Value::Int(i) => builder.append_value(*i),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        ColumnType::Float64 => {
            let mut builder = Float64Builder::with_capacity(rows);
            for cell in cells {
                match cell {
                    Value::Float(f) => builder.append_value(*f),
                    Value::Int(i) => builder.append_value(*i as f64),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        ColumnType::Bool => {
            let mut builder = BooleanBuilder::with_capacity(rows);
            for cell in cells {
                match cell {
                    Value::Bool(b) => builder.append_value(*b),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        ColumnType::TimestampMs => {
            let mut builder = TimestampMillisecondBuilder::with_capacity(rows);
            for cell in cells {
                match cell {
                    Value::Int(i) => builder.append_value(*i),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish().with_timezone(TIME_ZONE))
        }
    }
}
