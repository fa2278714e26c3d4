//! The SQL engine over a hand-published serving store: snapshot pinning, the batch cache,
//! the safety rules, limits and named views.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use wearflow_operators::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};
use wearflow_sinks::ServingStore;
use wearflow_sql::{Outcome, PinnedSnapshot, QueryResult, SqlEngine, SqlEngineConfig};

const TEETH: usize = 0;
const MACHINES: usize = 1;

fn store() -> Arc<ServingStore> {
    let teeth = ViewSchema::new(
        "tooth_wear",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("tooth_id", ColumnType::Utf8),
            Column::required("machine_id", ColumnType::Utf8),
            Column::nullable("remaining_mm", ColumnType::Float64),
        ],
        "teeth",
    )
    .expect("schema");
    let machines = ViewSchema::new(
        "machines",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("machine_id", ColumnType::Utf8),
            Column::required("site", ColumnType::Utf8),
            Column::nullable("last_seen", ColumnType::TimestampMs),
        ],
        "machines",
    )
    .expect("schema");
    Arc::new(ServingStore::new(vec![teeth, machines]))
}

fn tooth(id: &str, machine: &str, remaining_mm: f64) -> Row {
    vec![
        Value::str(id),
        Value::str(machine),
        Value::float(remaining_mm),
    ]
}

fn machine(id: &str, site: &str, last_seen: i64) -> Row {
    vec![Value::str(id), Value::str(site), Value::Int(last_seen)]
}

fn populated() -> Arc<ServingStore> {
    let store = store();
    store.publish(
        1_000,
        vec![
            (TEETH, tooth("t1", "ex1", 40.0), 1),
            (TEETH, tooth("t2", "ex1", 30.0), 1),
            (TEETH, tooth("t3", "ex2", 20.0), 1),
            (MACHINES, machine("ex1", "north", 900), 1),
            (MACHINES, machine("ex2", "south", 950), 1),
        ],
    );
    store
}

async fn engine(store: &Arc<ServingStore>) -> SqlEngine {
    SqlEngine::new(Arc::clone(store), SqlEngineConfig::default())
        .await
        .expect("engine")
}

async fn rows(engine: &SqlEngine, sql: &str) -> QueryResult {
    match engine.execute(sql, None).await.expect(sql) {
        Outcome::Rows(result) => result,
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

fn concat(result: &QueryResult) -> RecordBatch {
    arrow::compute::concat_batches(&result.schema, &result.batches).expect("concat")
}

fn strings(batch: &RecordBatch, column: usize) -> Vec<String> {
    let array = batch
        .column(column)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8 column");
    (0..array.len())
        .map(|i| array.value(i).to_string())
        .collect()
}

fn int(batch: &RecordBatch, column: usize) -> i64 {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64 column")
        .value(0)
}

#[tokio::test]
async fn a_join_reads_one_snapshot_and_reports_its_as_of() {
    let store = populated();
    let engine = engine(&store).await;
    let result = rows(
        &engine,
        "SELECT m.site, sum(t.remaining_mm) AS mm, as_of() AS at \
         FROM tooth_wear t JOIN machines m ON t.machine_id = m.machine_id \
         GROUP BY m.site, at ORDER BY m.site",
    )
    .await;
    assert_eq!((result.as_of, result.version), (1_000, 1));
    let batch = concat(&result);
    assert_eq!(strings(&batch, 0), vec!["north", "south"]);
    let mm = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("float");
    assert_eq!((mm.value(0), mm.value(1)), (70.0, 20.0));
    let at = batch
        .column(2)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("timestamp");
    assert_eq!(at.value(0), 1_000);
    assert_eq!(at.timezone(), Some("UTC"));
}

#[tokio::test]
async fn every_table_of_a_statement_reads_the_pinned_snapshot() {
    let store = populated();
    let engine = engine(&store).await;
    let old = store.snapshot();
    // After the pin, both views change and time moves on.
    store.publish(
        2_000,
        vec![
            (TEETH, tooth("t4", "ex3", 10.0), 1),
            (MACHINES, machine("ex3", "east", 1_900), 1),
        ],
    );
    let mut state = engine.context().state();
    state
        .config_mut()
        .set_extension(Arc::new(PinnedSnapshot(Arc::clone(&old))));
    let plan = state
        .create_logical_plan(
            "SELECT (SELECT count(*) FROM tooth_wear) AS teeth, \
                    (SELECT count(*) FROM machines) AS machines",
        )
        .await
        .expect("plan");
    let batches = DataFrame::new(state, plan).collect().await.expect("run");
    assert_eq!((int(&batches[0], 0), int(&batches[0], 1)), (3, 2));
    // Unpinned, the engine reads the newest snapshot for both.
    let result = rows(
        &engine,
        "SELECT (SELECT count(*) FROM tooth_wear) AS teeth, (SELECT count(*) FROM machines) AS m",
    )
    .await;
    let batch = concat(&result);
    assert_eq!(
        (int(&batch, 0), int(&batch, 1), result.as_of),
        (4, 3, 2_000)
    );
}

#[tokio::test]
async fn batches_are_built_once_per_view_change() {
    let store = populated();
    let engine = engine(&store).await;
    rows(&engine, "SELECT count(*) FROM tooth_wear").await;
    rows(&engine, "SELECT * FROM tooth_wear WHERE remaining_mm < 35").await;
    assert_eq!(engine.cache().builds(), 1, "same version: one build");
    // A publication that leaves tooth_wear alone keeps its batch.
    store.publish(2_000, vec![(MACHINES, machine("ex3", "east", 1_900), 1)]);
    rows(&engine, "SELECT count(*) FROM tooth_wear").await;
    assert_eq!(engine.cache().builds(), 1, "unchanged view: no rebuild");
    store.publish(3_000, vec![(TEETH, tooth("t9", "ex3", 5.0), 1)]);
    let result = rows(&engine, "SELECT count(*) FROM tooth_wear").await;
    assert_eq!(engine.cache().builds(), 2, "changed view: rebuilt");
    assert_eq!(int(&concat(&result), 0), 4);
}

#[tokio::test]
async fn forbidden_statements_are_refused_with_sqlstates() {
    let store = populated();
    let engine = engine(&store).await;
    for sql in [
        "COPY tooth_wear TO '/tmp/out.csv'",
        "CREATE TABLE t (a INT)",
        "INSERT INTO tooth_wear VALUES ('t', 'm', 1.0)",
        "DELETE FROM tooth_wear",
        "DROP TABLE tooth_wear",
        "DROP VIEW tooth_wear",
    ] {
        let error = engine.execute(sql, None).await.expect_err(sql);
        assert_eq!(error.sqlstate(), "42501", "{sql}: {error}");
    }
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let error = engine.execute(sql, None).await.expect_err(sql);
        assert!(error.is_client_error(), "{sql}: {error}");
    }
    let syntax = engine.execute("SELEC 1", None).await.expect_err("typo");
    assert_eq!(syntax.sqlstate(), "42601", "{syntax}");
    let unknown = engine
        .execute("SELECT * FROM no_such_view", None)
        .await
        .expect_err("unknown table");
    assert_eq!(unknown.sqlstate(), "42P01", "{unknown}");
    let column = engine
        .execute("SELECT no_such_column FROM tooth_wear", None)
        .await
        .expect_err("unknown column");
    assert_eq!(column.sqlstate(), "42703", "{column}");
}

#[tokio::test]
async fn limits_end_statements_cleanly() {
    let store = populated();
    let slow = SqlEngine::new(
        Arc::clone(&store),
        SqlEngineConfig {
            statement_timeout: Duration::from_millis(100),
            ..SqlEngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let error = slow
        .execute(
            // Ten billion rows in small batches: each poll is short, so the timeout can fire.
            "SELECT sum(value) FROM generate_series(1, 10000000000) WHERE value % 7 = 3",
            None,
        )
        .await
        .expect_err("ten billion rows cannot finish in 100 ms");
    assert_eq!(error.sqlstate(), "57014", "{error}");
    let small = SqlEngine::new(
        Arc::clone(&store),
        SqlEngineConfig {
            memory_limit_bytes: 64 * 1024,
            ..SqlEngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let error = small
        .execute(
            "SELECT value, count(*) FROM generate_series(1, 2000000) GROUP BY value ORDER BY value",
            None,
        )
        .await
        .expect_err("two million groups exceed 64 KiB");
    assert_eq!(error.sqlstate(), "53200", "{error}");
    // The engines still answer afterwards.
    assert_eq!(
        int(
            &concat(&rows(&small, "SELECT count(*) FROM machines").await),
            0
        ),
        2
    );
    let limited = match slow
        .execute("SELECT * FROM tooth_wear ORDER BY tooth_id", Some(2))
        .await
        .expect("limited")
    {
        Outcome::Rows(result) => result,
        other => panic!("{other:?}"),
    };
    assert_eq!((limited.rows(), limited.truncated), (2, true));
}

#[tokio::test]
async fn named_views_persist_and_drop() {
    let store = populated();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqlEngineConfig {
        catalog_path: Some(dir.path().join("sql_views.json")),
        ..SqlEngineConfig::default()
    };
    let first = SqlEngine::new(Arc::clone(&store), config.clone())
        .await
        .expect("engine");
    let created = first
        .execute(
            "CREATE VIEW worn AS SELECT tooth_id, remaining_mm FROM tooth_wear WHERE remaining_mm < 35",
            None,
        )
        .await
        .expect("create view");
    assert!(matches!(
        created,
        Outcome::Done {
            tag: "CREATE VIEW",
            ..
        }
    ));
    let duplicate = first
        .execute("CREATE VIEW worn AS SELECT 1", None)
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.sqlstate(), "42P07");
    let builtin = first
        .execute("CREATE VIEW machines AS SELECT 1", None)
        .await
        .expect_err("built-in name");
    assert_eq!(builtin.sqlstate(), "42P07");
    drop(first);

    let second = SqlEngine::new(Arc::clone(&store), config.clone())
        .await
        .expect("reopened");
    assert_eq!(second.named_views().len(), 1);
    let schema = second.named_view_schema("worn").await.expect("schema");
    assert_eq!(schema.field(0).name(), "tooth_id");
    // Rows are computed on read: a new worn tooth shows up.
    store.publish(2_000, vec![(TEETH, tooth("t5", "ex2", 1.0), 1)]);
    let result = rows(&second, "SELECT tooth_id FROM worn ORDER BY tooth_id").await;
    assert_eq!(strings(&concat(&result), 0), vec!["t2", "t3", "t5"]);
    assert_eq!(result.as_of, 2_000);
    second
        .execute("DROP VIEW worn", None)
        .await
        .expect("drop view");
    let gone = second
        .execute("SELECT * FROM worn", None)
        .await
        .expect_err("dropped");
    assert_eq!(gone.sqlstate(), "42P01");
    let third = SqlEngine::new(Arc::clone(&store), config)
        .await
        .expect("reopened again");
    assert!(third.named_views().is_empty());
}

#[tokio::test]
async fn a_key_equality_is_a_point_read() {
    let store = populated();
    let engine = engine(&store).await;
    let builds = engine.cache().builds();
    let one = concat(
        &rows(
            &engine,
            "SELECT tooth_id, machine_id FROM tooth_wear WHERE tooth_id = 't2'",
        )
        .await,
    );
    assert_eq!(strings(&one, 1), vec!["ex1"]);
    let none = rows(&engine, "SELECT * FROM tooth_wear WHERE 't9' = tooth_id").await;
    assert_eq!(none.rows(), 0);
    // Other predicates still apply on top of the point read.
    let filtered = rows(
        &engine,
        "SELECT * FROM tooth_wear WHERE tooth_id = 't2' AND remaining_mm > 35",
    )
    .await;
    assert_eq!(filtered.rows(), 0);
    assert_eq!(
        engine.cache().builds(),
        builds,
        "no whole-view batch was built"
    );
    // A range is not a point read, and sees every row.
    let range = rows(&engine, "SELECT * FROM tooth_wear WHERE tooth_id >= 't2'").await;
    assert_eq!(range.rows(), 2);
}
