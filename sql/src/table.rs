//! `LiveViewTable`: a serving-store view as a DataFusion table, read from the snapshot pinned
//! for the running statement.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use wearflow_sinks::{ServingStore, Snapshot};

use crate::batch::BatchCache;

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

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = statement_snapshot(state, &self.store);
        let batch = match snapshot.view(&self.name) {
            Some(view) => self
                .cache
                .batch(&self.name, &self.schema, view)
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
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
