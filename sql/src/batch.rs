//! Views as Arrow: the schema mapping, rows → one `RecordBatch`, and the cache that builds a
//! view's batch once per change of the view rather than once per query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use wearflow_operators::{ColumnType, Value, ViewSchema};
use wearflow_sinks::ViewData;

use crate::Error;

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

/// The Arrow schema of a view: same column names and order, same nullability.
pub fn arrow_schema(schema: &ViewSchema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(c.ty), c.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Builds one batch holding every row of a view (keyed views in key order, append views
/// oldest first). A value whose type does not match its column becomes NULL; in a
/// non-nullable column that is an internal error.
pub fn view_batch(schema: SchemaRef, view: &ViewData) -> Result<RecordBatch, Error> {
    let rows = view.len();
    let columns: Vec<ArrayRef> = view
        .schema
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let cells = view
                .iter()
                .map(move |row| row.get(index).unwrap_or(&Value::Null));
            column_array(column.ty, rows, cells)
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| {
        Error::Internal(format!(
            "view {} does not fit its arrow schema: {e}",
            view.schema.name
        ))
    })
}

fn column_array<'a>(
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

/// One batch per view, rebuilt only when the view's data changed.
///
/// An entry remembers the `Arc<ViewData>` it was built from. The serving store replaces a
/// view's `Arc` exactly when a publication changes that view, so pointer identity is a
/// precise "same data" test: a view untouched by the last ten publications keeps its batch.
/// Holding the `Arc` keeps the old rows alive until the next rebuild (one version per view).
#[derive(Debug, Default)]
pub struct BatchCache {
    entries: Mutex<HashMap<String, (Arc<ViewData>, RecordBatch)>>,
    builds: AtomicU64,
}

impl BatchCache {
    /// An empty cache.
    pub fn new() -> BatchCache {
        BatchCache::default()
    }

    /// The batch of `view` (named `name`), from the cache when it holds this very data.
    pub fn batch(
        &self,
        name: &str,
        schema: &SchemaRef,
        view: &Arc<ViewData>,
    ) -> Result<RecordBatch, Error> {
        if let Some((data, batch)) = self.lock().get(name)
            && Arc::ptr_eq(data, view)
        {
            return Ok(batch.clone());
        }
        // Built outside the lock: two racing queries may both build, which is harmless.
        let batch = view_batch(Arc::clone(schema), view)?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(name.to_string(), (Arc::clone(view), batch.clone()));
        Ok(batch)
    }

    /// How many batches have been built so far (for tests and metrics).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<ViewData>, RecordBatch)>> {
        // A panic while holding the lock cannot leave a half-written entry behind.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
