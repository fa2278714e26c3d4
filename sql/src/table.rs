//! `LiveViewTable`: a serving-store view as a DataFusion table, read from the snapshot pinned
//! for the running statement.
//!
//! A statement that fixes every key column of a keyed view with an equality
//! (`WHERE device_id = 'x'`) is answered by a point read of the view's persistent map: a
//! one-row batch instead of a scan of the whole view.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use wearflow_operators::{Value, ViewKind};
use wearflow_sinks::{ServingStore, Snapshot, ViewData};

use crate::batch::{BatchCache, rows_batch};

/// Rows per partition of a scan (a view bigger than this is read by several threads).
const ROWS_PER_PARTITION: usize = 65_536;

/// The snapshot a statement reads, stored in its `SessionConfig` extensions.
///
/// Every table of one statement reads this one snapshot, so a join of two views sees a
/// single `as_of`.
#[derive(Debug)]
pub struct PinnedSnapshot(pub Arc<Snapshot>);

/// One view of the serving store as a table.
pub struct LiveViewTable {
    name: String,
    schema: SchemaRef,
    store: Arc<ServingStore>,
    cache: Arc<BatchCache>,
}

impl LiveViewTable {
    /// The table for view `name`.
    pub fn new(
        name: &str,
        schema: SchemaRef,
        store: Arc<ServingStore>,
        cache: Arc<BatchCache>,
    ) -> LiveViewTable {
        LiveViewTable {
            name: name.to_string(),
            schema,
            store,
            cache,
        }
    }
}

impl std::fmt::Debug for LiveViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveViewTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The snapshot pinned for this statement, or (outside a pinned statement) the current one.
pub fn statement_snapshot(session: &dyn Session, store: &ServingStore) -> Arc<Snapshot> {
    session
        .config()
        .get_extension::<PinnedSnapshot>()
        .map_or_else(|| store.snapshot(), |pinned| Arc::clone(&pinned.0))
}

#[async_trait]
impl TableProvider for LiveViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Key equalities are used for point reads; the filter still runs above the scan.
        Ok(filters
            .iter()
            .map(|filter| match key_equality(filter, &self.schema) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = statement_snapshot(state, &self.store);
        let external = |e: crate::Error| DataFusionError::External(Box::new(e));
        let batch = match snapshot.view(&self.name) {
            Some(view) => match point_key(view, filters, &self.schema) {
                Some(key) => {
                    let rows: Vec<&wearflow_operators::Row> =
                        view.rows.get(&key).into_iter().collect();
                    rows_batch(Arc::clone(&self.schema), &view.schema, &rows).map_err(external)?
                }
                None => self
                    .cache
                    .batch(&self.name, &self.schema, view)
                    .map_err(external)?,
            },
            None => RecordBatch::new_empty(Arc::clone(&self.schema)),
        };
        let partitions = partition(&batch, state.config().target_partitions());
        let exec = MemorySourceConfig::try_new_exec(
            &partitions,
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// `(column index, value)` of a filter `key column = literal`.
fn key_equality(filter: &Expr, schema: &SchemaRef) -> Option<(usize, Value)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = filter
    else {
        return None;
    };
    let (column, literal) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let index = schema.index_of(&column.name).ok()?;
    let value = match literal {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Value::Str(s.clone()),
        ScalarValue::Int64(Some(i)) => Value::Int(*i),
        ScalarValue::TimestampMillisecond(Some(i), _) => Value::Int(*i),
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        _ => return None,
    };
    // Only a value of the column's own type can match a key exactly.
    let fits = matches!(
        (schema.field(index).data_type(), &value),
        (DataType::Utf8, Value::Str(_))
            | (DataType::Int64, Value::Int(_))
            | (DataType::Timestamp(_, _), Value::Int(_))
            | (DataType::Boolean, Value::Bool(_))
    );
    fits.then_some((index, value))
}

/// The full key of a keyed view when `filters` fix every key column with an equality.
fn point_key(view: &ViewData, filters: &[Expr], schema: &SchemaRef) -> Option<Vec<Value>> {
    if view.schema.kind != ViewKind::Keyed {
        return None;
    }
    let mut key: Vec<Option<Value>> = vec![None; view.schema.key_len];
    for filter in filters {
        if let Some((index, value)) = key_equality(filter, schema)
            && index < key.len()
        {
            // Two different equalities on one key column match nothing; a scan says so.
            if key[index].as_ref().is_some_and(|v| *v != value) {
                return None;
            }
            key[index] = Some(value);
        }
    }
    key.into_iter().collect()
}

/// Zero-copy slices of `batch`, at most `max` of them and none under `ROWS_PER_PARTITION`
/// rows (except the last).
fn partition(batch: &RecordBatch, max: usize) -> Vec<Vec<RecordBatch>> {
    let rows = batch.num_rows();
    let parts = rows.div_ceil(ROWS_PER_PARTITION).clamp(1, max.max(1));
    let per_part = rows.div_ceil(parts).max(1);
    let mut out = Vec::with_capacity(parts);
    let mut offset = 0;
    while offset < rows {
        let len = per_part.min(rows - offset);
        out.push(vec![batch.slice(offset, len)]);
        offset += len;
    }
    if out.is_empty() {
        out.push(vec![batch.clone()]);
    }
    out
}
