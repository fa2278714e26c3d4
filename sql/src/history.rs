//! `HistoryTable`: an archive table (Hive-partitioned Parquet written by
//! `wearflow_sinks::archive`) as a DataFusion table, with time predicates turned into
//! partition predicates.
//!
//! The table is a DataFusion `ListingTable` over `<archive>/<table>/` with the partition
//! columns `date` (`Date32`) and, for hourly tables, `hour` (`Int32`), and the file schema
//! declared up front, so an empty archive is an empty table rather than an error. Files are
//! listed at every scan (the engine turns DataFusion's listing cache off), so a file the
//! archive finishes is visible to the next statement.
//!
//! A predicate on the time column (`ts >= '2026-01-01T10:00:00Z'`, `ts BETWEEN a AND b`) is
//! also handed to the listing as a predicate on `date` (and `hour`): only the partitions that
//! can hold matching rows are listed and read. The original predicate is still applied.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use wearflow_sinks::archive::{ArchiveTable, Partitioning};

use crate::Error;

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// One archive table as a table.
#[derive(Debug)]
pub struct HistoryTable {
    inner: ListingTable,
    time_column: String,
    partitioning: Partitioning,
}

impl HistoryTable {
    /// The table over `dir` (created if missing) holding files of `table`.
    pub fn new(dir: &std::path::Path, table: &ArchiveTable) -> Result<HistoryTable, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Internal(format!(
                "cannot create archive directory {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            Error::Internal(format!(
                "cannot resolve archive directory {}: {e}",
                dir.display()
            ))
        })?;
        // A trailing separator makes the URL a directory (a prefix to list).
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        let partition_columns: Vec<(String, DataType)> = table
            .partitioning
            .columns()
            .iter()
            .map(|name| {
                let ty = if *name == "date" {
                    DataType::Date32
                } else {
                    DataType::Int32
                };
                (name.to_string(), ty)
            })
            .collect();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_columns);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(table.arrow_schema());
        Ok(HistoryTable {
            inner: ListingTable::try_new(config)?,
            time_column: table
                .columns
                .get(table.time_column)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            partitioning: table.partitioning,
        })
    }
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut filters = filters.to_vec();
        if let Some(range) = time_range(&filters, &self.time_column) {
            filters.extend(partition_filters(range, self.partitioning));
        }
        self.inner.scan(state, projection, &filters, limit).await
    }
}

/// Inclusive bounds in epoch ms on the time column implied by the conjunction `filters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// No row before this.
    pub from_ms: Option<i64>,
    /// No row after this.
    pub to_ms: Option<i64>,
}

impl TimeRange {
    fn lower(&mut self, ms: i64) {
        self.from_ms = Some(self.from_ms.map_or(ms, |v| v.max(ms)));
    }
    fn upper(&mut self, ms: i64) {
        self.to_ms = Some(self.to_ms.map_or(ms, |v| v.min(ms)));
    }
}

/// The bounds the conjunction of `filters` puts on `column`, if any. Bounds are widened to
/// whole milliseconds, so they never exclude a matching row.
pub fn time_range(filters: &[Expr], column: &str) -> Option<TimeRange> {
    let mut range = TimeRange::default();
    for filter in filters {
        collect_bounds(filter, column, &mut range);
    }
    (range != TimeRange::default()).then_some(range)
}

fn collect_bounds(expr: &Expr, column: &str, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                collect_bounds(left, column, range);
                collect_bounds(right, column, range);
                return;
            }
            let (op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) if c.name == column => (*op, v),
                (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => match op.swap() {
                    Some(op) => (op, v),
                    None => return,
                },
                _ => return,
            };
            let Some((floor, ceil)) = literal_ms(value) else {
                return;
            };
            match op {
                Operator::Eq => {
                    range.lower(floor);
                    range.upper(ceil);
                }
                Operator::Gt | Operator::GtEq => range.lower(floor),
                Operator::Lt | Operator::LtEq => range.upper(ceil),
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            if let (Expr::Column(c), Expr::Literal(low, _), Expr::Literal(high, _)) =
                (expr.as_ref(), low.as_ref(), high.as_ref())
                && c.name == column
                && let (Some((low, _)), Some((_, high))) = (literal_ms(low), literal_ms(high))
            {
                range.lower(low);
                range.upper(high);
            }
        }
        _ => {}
    }
}

/// A timestamp literal as epoch ms, rounded down and up.
fn literal_ms(value: &ScalarValue) -> Option<(i64, i64)> {
    let (value, per_ms) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => return v.checked_mul(1000).map(|v| (v, v)),
        ScalarValue::TimestampMillisecond(Some(v), _) => return Some((*v, *v)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000),
        _ => return None,
    };
    Some((
        value.div_euclid(per_ms),
        (value + per_ms - 1).div_euclid(per_ms),
    ))
}

/// Predicates on the partition columns that keep every partition `range` touches.
fn partition_filters(range: TimeRange, partitioning: Partitioning) -> Vec<Expr> {
    let day = |ms: i64| ms.div_euclid(MS_PER_DAY);
    let hour = |ms: i64| ms.rem_euclid(MS_PER_DAY) / MS_PER_HOUR;
    let date_lit = |ms: i64| lit(ScalarValue::Date32(i32::try_from(day(ms)).ok()));
    let hour_lit = |ms: i64| lit(ScalarValue::Int32(i32::try_from(hour(ms)).ok()));
    let mut out = Vec::new();
    // One day (and hour): an equality lets the listing start below `date=…/hour=…`.
    if let (Some(from), Some(to)) = (range.from_ms, range.to_ms)
        && day(from) == day(to)
    {
        out.push(col("date").eq(date_lit(from)));
        if partitioning == Partitioning::DateHour {
            if hour(from) == hour(to) {
                out.push(col("hour").eq(hour_lit(from)));
            } else {
                out.push(col("hour").gt_eq(hour_lit(from)));
                out.push(col("hour").lt_eq(hour_lit(to)));
            }
        }
        return out;
    }
    if let Some(from) = range.from_ms {
        out.push(match partitioning {
            Partitioning::Date => col("date").gt_eq(date_lit(from)),
            Partitioning::DateHour => col("date").gt(date_lit(from)).or(col("date")
                .eq(date_lit(from))
                .and(col("hour").gt_eq(hour_lit(from)))),
        });
    }
    if let Some(to) = range.to_ms {
        out.push(match partitioning {
            Partitioning::Date => col("date").lt_eq(date_lit(to)),
            Partitioning::DateHour => col("date").lt(date_lit(to)).or(col("date")
                .eq(date_lit(to))
                .and(col("hour").lt_eq(hour_lit(to)))),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_predicates_become_bounds() {
        let filters = vec![col("ts").gt_eq(ts(10)), ts(50).gt(col("ts"))];
        assert_eq!(
            time_range(&filters, "ts"),
            Some(TimeRange {
                from_ms: Some(10),
                to_ms: Some(50)
            })
        );
        let between = col("ts").between(ts(5), ts(7));
        assert_eq!(
            time_range(&[between.and(col("x").eq(lit(1)))], "ts"),
            Some(TimeRange {
                from_ms: Some(5),
                to_ms: Some(7)
            })
        );
        assert_eq!(time_range(&[col("ts").not_eq(ts(1))], "ts"), None);
        assert_eq!(time_range(&[col("other").gt(ts(1))], "ts"), None);
        let micros = lit(ScalarValue::TimestampMicrosecond(Some(1_500), None));
        assert_eq!(
            time_range(&[col("ts").lt_eq(micros)], "ts"),
            Some(TimeRange {
                from_ms: None,
                to_ms: Some(2)
            })
        );
    }

    #[test]
    fn bounds_become_partition_predicates() {
        // 2026-01-01T05:30Z .. 2026-01-01T07:10Z: one day, hours 5..=7.
        let day = 1_767_225_600_000;
        let range = TimeRange {
            from_ms: Some(day + 5 * MS_PER_HOUR + 30 * 60_000),
            to_ms: Some(day + 7 * MS_PER_HOUR + 10 * 60_000),
        };
        let text: Vec<String> = partition_filters(range, Partitioning::DateHour)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            text,
            vec![
                "date = Date32(\"2026-01-01\")",
                "hour >= Int32(5)",
                "hour <= Int32(7)"
            ]
        );
        let open = TimeRange {
            from_ms: Some(day),
            to_ms: None,
        };
        assert_eq!(partition_filters(open, Partitioning::Date).len(), 1);
    }
}
