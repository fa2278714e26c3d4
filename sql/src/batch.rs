//! Views as Arrow: the schema mapping, rows → one `RecordBatch`, and the cache that builds a
//! view's batch once per change of the view rather than once per query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use wearflow_operators::{Row, Value, ViewSchema};
use wearflow_sinks::ViewData;
pub use wearflow_sinks::arrow_rows::{TIME_ZONE, arrow_type};
use wearflow_sinks::arrow_rows::{column_array, columns_schema};

use crate::Error;

/// The Arrow schema of a view: same column names and order, same nullability.
pub fn arrow_schema(schema: &ViewSchema) -> SchemaRef {
    columns_schema(&schema.columns)
}

/// Builds one batch holding every row of a view (keyed views in key order, append views
/// oldest first). A value whose type does not match its column becomes NULL; in a
/// non-nullable column that is an internal error.
pub fn view_batch(schema: SchemaRef, view: &ViewData) -> Result<RecordBatch, Error> {
    let rows: Vec<&Row> = view.iter().collect();
    rows_batch(schema, &view.schema, &rows)
}

/// Builds one batch of some rows of a view, in the given order.
pub fn rows_batch(
    schema: SchemaRef,
    view: &ViewSchema,
    rows: &[&Row],
) -> Result<RecordBatch, Error> {
    let columns: Vec<ArrayRef> = view
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let cells = rows
                .iter()
                .map(move |row| row.get(index).unwrap_or(&Value::Null));
            column_array(column.ty, rows.len(), cells)
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| {
        Error::Internal(format!(
            "view {} does not fit its arrow schema: {e}",
            view.name
        ))
    })
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
