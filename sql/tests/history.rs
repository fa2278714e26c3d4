//! History tables over a Parquet archive written by the real archive writer: empty tables
//! before any file, new files visible to the next statement, time predicates pruning
//! partitions (seen in `EXPLAIN`), live and history tables in one query.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use wearflow_operators::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};
use wearflow_sinks::ServingStore;
use wearflow_sinks::archive::{Archive, ArchiveConfig, ArchiveTable, Partitioning};
use wearflow_sql::{HistoryConfig, Outcome, QueryResult, SqlEngine, SqlEngineConfig};

/// 2026-01-01T00:00:00Z.
const DAY: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

fn telemetry() -> ArchiveTable {
    ArchiveTable::appended(
        "telemetry",
        vec![
            Column::required("device_id", ColumnType::Utf8),
            Column::required("ts", ColumnType::TimestampMs),
            Column::nullable("remaining_mm", ColumnType::Float64),
        ],
        "ts",
        Partitioning::DateHour,
    )
    .expect("valid table")
}

fn store() -> Arc<ServingStore> {
    let teeth = ViewSchema::new(
        "tooth_wear",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("device_id", ColumnType::Utf8),
            Column::nullable("remaining_mm", ColumnType::Float64),
        ],
        "teeth",
    )
    .expect("schema");
    let store = Arc::new(ServingStore::new(vec![teeth]));
    store.publish(
        1_000,
        vec![
            (0, vec![Value::str("d1"), Value::float(50.0)], 1),
            (0, vec![Value::str("d2"), Value::float(60.0)], 1),
        ],
    );
    store
}

fn reading(device: &str, ms: i64, mm: f64) -> Row {
    vec![Value::str(device), Value::Int(ms), Value::float(mm)]
}

async fn rows(engine: &SqlEngine, sql: &str) -> QueryResult {
    match engine.execute(sql, None).await.expect(sql) {
        Outcome::Rows(result) => result,
        other => panic!("{sql}: {other:?}"),
    }
}

fn first_int(result: &QueryResult) -> i64 {
    let batch = result
        .batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .expect("a row");
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64")
        .value(0)
}

/// The text of an `EXPLAIN`'s physical plan.
fn physical_plan(result: &QueryResult) -> String {
    let mut text = String::new();
    for batch in &result.batches {
        let types = batch.column(0).as_any().downcast_ref::<StringArray>();
        let plans = batch.column(1).as_any().downcast_ref::<StringArray>();
        if let (Some(types), Some(plans)) = (types, plans) {
            for i in 0..batch.num_rows() {
                if types.value(i) == "physical_plan" {
                    text.push_str(plans.value(i));
                }
            }
        }
    }
    text
}

#[tokio::test]
async fn history_tables_read_the_archive_and_prune_by_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store();
    let config = ArchiveConfig {
        roll_interval_ms: 3_600_000,
        ..ArchiveConfig::default()
    };
    let mut tables = vec![telemetry()];
    tables.extend(config.view_tables(store.schemas()));
    let engine = SqlEngine::new(
        Arc::clone(&store),
        SqlEngineConfig {
            history: Some(HistoryConfig {
                dir: dir.path().to_path_buf(),
                tables: tables.clone(),
            }),
            ..SqlEngineConfig::default()
        },
    )
    .await
    .expect("engine");

    // Before the archive wrote anything, the tables exist and are empty.
    let empty = rows(&engine, "SELECT count(*) FROM telemetry_history").await;
    assert_eq!(first_int(&empty), 0);
    let columns = rows(&engine, "SELECT * FROM tooth_wear_history").await;
    let names: Vec<&str> = columns
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["as_of", "device_id", "remaining_mm", "date"]);

    let archive = Archive::start(
        dir.path(),
        &config,
        tables,
        Some(Arc::clone(&store)),
        Box::new(|_| {}),
    )
    .expect("archive");
    let input = archive.input();
    // Hours 5 and 6 of day 1, hour 13 of day 2.
    input.append(
        0,
        vec![
            reading("d1", DAY + 5 * HOUR, 70.0),
            reading("d1", DAY + 6 * HOUR + 1, 69.0),
            reading("d2", DAY + 6 * HOUR + 2, 80.0),
            reading("d1", DAY + 24 * HOUR + 13 * HOUR, 55.0),
        ],
    );
    archive.flush();

    // The new files are visible to the next statement.
    let all = rows(&engine, "SELECT count(*) FROM telemetry_history").await;
    assert_eq!(first_int(&all), 4);
    let day_two = rows(
        &engine,
        "SELECT count(*) FROM telemetry_history WHERE date = '2026-01-02'",
    )
    .await;
    assert_eq!(first_int(&day_two), 1);
    let hour_six = rows(
        &engine,
        "SELECT count(*) FROM telemetry_history \
         WHERE ts >= '2026-01-01T06:00:00Z' AND ts < '2026-01-01T07:00:00Z'",
    )
    .await;
    assert_eq!(first_int(&hour_six), 2);

    // The time predicate prunes: only the hour-6 file is listed in the plan.
    let all_plan = physical_plan(&rows(&engine, "EXPLAIN SELECT * FROM telemetry_history").await);
    assert_eq!(all_plan.matches(".parquet").count(), 3, "{all_plan}");
    let pruned = physical_plan(
        &rows(
            &engine,
            "EXPLAIN SELECT * FROM telemetry_history \
             WHERE ts >= '2026-01-01T06:00:00Z' AND ts < '2026-01-01T07:00:00Z'",
        )
        .await,
    );
    assert_eq!(pruned.matches(".parquet").count(), 1, "{pruned}");
    assert!(pruned.contains("date=2026-01-01/hour=6/"), "{pruned}");
    let open_ended = physical_plan(
        &rows(
            &engine,
            "EXPLAIN SELECT * FROM telemetry_history WHERE ts > '2026-01-01T12:00:00Z'",
        )
        .await,
    );
    assert_eq!(open_ended.matches(".parquet").count(), 1, "{open_ended}");
    assert!(
        open_ended.contains("date=2026-01-02/hour=13/"),
        "{open_ended}"
    );

    // Live and history in one statement: each tooth's first archived reading beside its
    // live value.
    let joined = rows(
        &engine,
        "SELECT t.device_id, min(h.remaining_mm) - t.remaining_mm AS worn \
         FROM tooth_wear t JOIN telemetry_history h ON h.device_id = t.device_id \
         GROUP BY t.device_id, t.remaining_mm ORDER BY t.device_id",
    )
    .await;
    let batch = arrow::compute::concat_batches(&joined.schema, &joined.batches).expect("concat");
    assert_eq!(batch.num_rows(), 2);
    let worn = batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .expect("float");
    assert_eq!((worn.value(0), worn.value(1)), (5.0, 20.0));

    // The view snapshot written at the flush equals the live view.
    let snapshot = rows(
        &engine,
        "SELECT count(*) FROM tooth_wear_history h JOIN tooth_wear t \
         ON h.device_id = t.device_id AND h.remaining_mm = t.remaining_mm \
         WHERE h.as_of = as_of()",
    )
    .await;
    assert_eq!(first_int(&snapshot), 2);
    archive.close();
}

#[tokio::test]
async fn history_tables_are_read_only_and_not_replaceable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = SqlEngine::new(
        store(),
        SqlEngineConfig {
            history: Some(HistoryConfig {
                dir: dir.path().to_path_buf(),
                tables: vec![telemetry()],
            }),
            ..SqlEngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let replace = engine
        .execute("CREATE VIEW telemetry_history AS SELECT 1", None)
        .await
        .expect_err("a history table is built in");
    assert_eq!(replace.sqlstate(), "42P07", "{replace}");
    let drop = engine
        .execute("DROP VIEW telemetry_history", None)
        .await
        .expect_err("a history table cannot be dropped");
    assert_eq!(drop.sqlstate(), "42501", "{drop}");
    let insert = engine
        .execute(
            "INSERT INTO telemetry_history VALUES ('x', now(), 1.0)",
            None,
        )
        .await
        .expect_err("history is read-only");
    assert_eq!(insert.sqlstate(), "42501", "{insert}");
    let external = engine
        .execute(
            &format!(
                "SELECT * FROM '{}/telemetry/x.parquet'",
                dir.path().display()
            ),
            None,
        )
        .await
        .expect_err("file paths are not tables");
    assert_eq!(external.sqlstate(), "42P01", "{external}");
}
