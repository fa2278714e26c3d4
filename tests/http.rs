//! The HTTP API over a real socket: reads, paging, errors, probes, metrics and live changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wearflow::http::{self, AS_OF_HEADER, AppState};
use wearflow::metrics::Metrics;
use wearflow_operators::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};
use wearflow_sinks::ServingStore;

const TOOTH_WEAR: usize = 0;
const STOCK: usize = 1;
const ALERTS: usize = 2;
const WAIT: Duration = Duration::from_secs(10);

fn schemas() -> Vec<ViewSchema> {
    let tooth_wear = ViewSchema::new(
        "tooth_wear",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("tooth_id", ColumnType::Utf8),
            Column::required("machine_id", ColumnType::Utf8),
            Column::nullable("remaining_mm", ColumnType::Float64),
        ],
        "remaining wear material per tooth",
    )
    .expect("valid schema");
    let stock = ViewSchema::new(
        "stock_balance",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("site", ColumnType::Utf8),
            Column::required("part_no", ColumnType::Int64),
            Column::required("qty", ColumnType::Int64),
        ],
        "parts on hand per site",
    )
    .expect("valid schema");
    let alerts = ViewSchema::new(
        "alerts",
        ViewKind::Append,
        1,
        vec![
            Column::required("alert_id", ColumnType::Utf8),
            Column::required("severity", ColumnType::Utf8),
            Column::required("at_ms", ColumnType::TimestampMs),
        ],
        "wear alerts",
    )
    .expect("valid schema");
    vec![tooth_wear, stock, alerts]
}

fn tooth(id: usize, remaining_mm: f64) -> Row {
    vec![
        Value::str(format!("t{id:02}")),
        Value::str(format!("ex{}", id % 3)),
        Value::float(remaining_mm),
    ]
}

fn stock(site: &str, part_no: i64, qty: i64) -> Row {
    vec![Value::str(site), Value::Int(part_no), Value::Int(qty)]
}

fn alert(id: usize, at_ms: i64) -> Row {
    vec![
        Value::str(format!("a{id}")),
        Value::str("high"),
        Value::Int(at_ms),
    ]
}

/// A store after three publications: 25 teeth (t07 updated), stock at two sites with one
/// row deleted, 12 alerts.
fn populated_store() -> Arc<ServingStore> {
    let store = ServingStore::new(schemas());
    let mut first = Vec::new();
    for id in 0..25 {
        first.push((TOOTH_WEAR, tooth(id, 40.0 + id as f64), 1));
    }
    for (site, part_no, qty) in [
        ("north", 1, 5),
        ("north", 2, 7),
        ("north", 30, 1),
        ("south", 2, 9),
    ] {
        first.push((STOCK, stock(site, part_no, qty), 1));
    }
    for id in 0..5 {
        first.push((ALERTS, alert(id, 1_000 + id as i64), 1));
    }
    store.publish(1_000, first);
    let mut second = vec![
        (TOOTH_WEAR, tooth(7, 47.0), -1),
        (TOOTH_WEAR, tooth(7, 12.5), 1),
        (STOCK, stock("north", 30, 1), -1),
    ];
    for id in 5..12 {
        second.push((ALERTS, alert(id, 2_000 + id as i64), 1));
    }
    store.publish(2_000, second);
    store.publish(3_000, vec![(STOCK, stock("south", 5, 3), 1)]);
    Arc::new(store)
}

/// A server on a free local port, stopped (and checked to stop) by [`Server::stop`].
struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<ServingStore>,
    ready: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(store: Arc<ServingStore>) -> Server {
        let ready = Arc::new(AtomicBool::new(false));
        let state = AppState {
            store: Arc::clone(&store),
            metrics: Arc::new(Metrics::new()),
            ready: Arc::clone(&ready),
            sql: None,
            dataflows: None,
            models: Default::default(),
            access: Default::default(),
            checkpoints: Default::default(),
        };
        let listener = http::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
            ready,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` and return status, the `x-wearflow-as-of` header and the JSON body; every
    /// answer must carry the header and, when it is JSON, the same `as_of` in the body.
    async fn get(&self, path: &str) -> (StatusCode, u64, Json) {
        self.send(self.client.get(self.url(path))).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, u64, Json) {
        let response = request.send().await.expect("request");
        let status = response.status();
        let as_of = as_of_header(&response);
        let body: Json = response.json().await.expect("json body");
        assert_eq!(
            body["as_of"],
            json!(as_of),
            "body as_of matches the header: {body}"
        );
        (status, as_of, body)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time");
        served.expect("server task").expect("serve");
    }
}

fn as_of_header(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(AS_OF_HEADER)
        .unwrap_or_else(|| panic!("{} has no {AS_OF_HEADER} header", response.url()))
        .to_str()
        .expect("ascii header")
        .parse()
        .expect("numeric as_of")
}

fn error_code(body: &Json) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn lists_views_with_schema_and_as_of() {
    let server = Server::start(populated_store()).await;
    let (status, as_of, body) = server.get("/views").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_of, 3_000);
    assert_eq!(body["version"], json!(3));
    let views = body["views"].as_array().expect("views array");
    let names: Vec<&str> = views.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["tooth_wear", "stock_balance", "alerts"]);
    assert_eq!(views[0]["kind"], "keyed");
    assert_eq!(views[0]["rows"], 25);
    assert_eq!(views[0]["key_columns"], json!(["tooth_id"]));
    assert_eq!(
        views[0]["columns"][2],
        json!({"name": "remaining_mm", "type": "float64", "nullable": true})
    );
    assert_eq!(views[0]["description"], "remaining wear material per tooth");
    assert_eq!(views[1]["key_columns"], json!(["site", "part_no"]));
    assert_eq!(views[1]["rows"], 4);
    assert_eq!(views[2]["kind"], "append");
    assert_eq!(views[2]["rows"], 12);
    server.stop().await;
}

#[tokio::test]
async fn filters_select_rows_by_key_columns() {
    let server = Server::start(populated_store()).await;
    let (status, _, body) = server.get("/views/stock_balance?site=north").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["view"], "stock_balance");
    assert_eq!(
        body["rows"],
        json!([
            {"site": "north", "part_no": 1, "qty": 5},
            {"site": "north", "part_no": 2, "qty": 7},
        ])
    );
    assert_eq!(body["next_cursor"], Json::Null);
    // A filter on a later key column alone scans, still in key order.
    let (_, _, body) = server.get("/views/stock_balance?part_no=2").await;
    let sites: Vec<&str> = rows(&body)
        .iter()
        .filter_map(|r| r["site"].as_str())
        .collect();
    assert_eq!(sites, ["north", "south"]);
    let (_, _, body) = server
        .get("/views/stock_balance?site=south&part_no=5")
        .await;
    assert_eq!(
        body["rows"],
        json!([{"site": "south", "part_no": 5, "qty": 3}])
    );
    let (_, _, body) = server.get("/views/tooth_wear?tooth_id=t07").await;
    assert_eq!(body["rows"][0]["remaining_mm"], json!(12.5));
    let (_, _, body) = server.get("/views/alerts?alert_id=a3").await;
    assert_eq!(
        body["rows"],
        json!([{"alert_id": "a3", "severity": "high", "at_ms": 1003}])
    );
    let (_, _, body) = server.get("/views/tooth_wear?tooth_id=nope").await;
    assert_eq!(body["rows"], json!([]));
    server.stop().await;
}

fn rows(body: &Json) -> &Vec<Json> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {body}"))
}

/// Follows `next_cursor` from `first` until it is null, returning every row.
async fn all_pages(server: &Server, first: &str, limit: usize) -> Vec<Json> {
    let mut collected = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut request = server
            .client
            .get(server.url(first))
            .query(&[("limit", limit.to_string())]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let (status, _, body) = server.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = rows(&body);
        assert!(page.len() <= limit);
        collected.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page.len(), limit, "only the last page is short");
                cursor = Some(next.to_string());
            }
            None => return collected,
        }
    }
    panic!("paging {first} did not end");
}

#[tokio::test]
async fn limit_and_cursor_page_without_repeats_or_gaps() {
    let server = Server::start(populated_store()).await;
    let teeth = all_pages(&server, "/views/tooth_wear", 7).await;
    let ids: Vec<&str> = teeth
        .iter()
        .filter_map(|r| r["tooth_id"].as_str())
        .collect();
    let expected: Vec<String> = (0..25).map(|id| format!("t{id:02}")).collect();
    assert_eq!(ids, expected);
    // Exactly divisible: no empty trailing page.
    assert_eq!(all_pages(&server, "/views/tooth_wear", 5).await.len(), 25);
    let (_, _, body) = server.get("/views/tooth_wear").await;
    assert_eq!(
        rows(&body).len(),
        25,
        "the default limit covers a small view"
    );

    let stock = all_pages(&server, "/views/stock_balance", 1).await;
    let keys: Vec<(String, i64)> = stock
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap_or_default().to_string(),
                r["part_no"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let expected = [("north", 1), ("north", 2), ("south", 2), ("south", 5)];
    assert_eq!(keys, expected.map(|(s, p)| (s.to_string(), p)));
    let north = all_pages(&server, "/views/stock_balance?site=north", 1).await;
    assert_eq!(north.len(), 2);

    let alerts = all_pages(&server, "/views/alerts", 5).await;
    let ids: Vec<&str> = alerts
        .iter()
        .filter_map(|r| r["alert_id"].as_str())
        .collect();
    // Oldest first, in the store's order (which sorts the events of one publication).
    let snapshot = server.store.snapshot();
    let stored: Vec<String> = snapshot.views["alerts"]
        .iter()
        .map(|row| match &row[0] {
            Value::Str(id) => id.clone(),
            other => panic!("alert id {other:?}"),
        })
        .collect();
    assert_eq!(ids, stored, "append views page in arrival order");
    assert_eq!(stored.len(), 12);

    // A cursor keeps working after a new snapshot: the next page follows the last key.
    let (_, _, body) = server.get("/views/tooth_wear?limit=10").await;
    let cursor = body["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    server
        .store
        .publish(4_000, vec![(TOOTH_WEAR, tooth(99, 1.0), 1)]);
    let (_, as_of, body) = server
        .get(&format!("/views/tooth_wear?limit=100&cursor={cursor}"))
        .await;
    assert_eq!(as_of, 4_000);
    assert_eq!(body["rows"][0]["tooth_id"], "t10");
    assert_eq!(rows(&body).len(), 16);
    server.stop().await;
}

#[tokio::test]
async fn single_rows_by_one_and_two_column_keys() {
    let server = Server::start(populated_store()).await;
    let (status, as_of, body) = server.get("/views/tooth_wear/t07").await;
    assert_eq!((status, as_of), (StatusCode::OK, 3_000));
    assert_eq!(body["view"], "tooth_wear");
    assert_eq!(
        body["row"],
        json!({"tooth_id": "t07", "machine_id": "ex1", "remaining_mm": 12.5})
    );
    let (status, _, body) = server.get("/views/stock_balance/south,5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["row"],
        json!({"site": "south", "part_no": 5, "qty": 3})
    );
    let (status, _, body) = server.get("/views/alerts/a11").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["row"]["at_ms"], 2_011);
    server.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let server = Server::start(populated_store()).await;
    let cases = [
        ("/views/nope", StatusCode::NOT_FOUND, "view_not_found"),
        ("/views/nope/x", StatusCode::NOT_FOUND, "view_not_found"),
        (
            "/views/nope/changes",
            StatusCode::NOT_FOUND,
            "view_not_found",
        ),
        (
            "/views/tooth_wear/t99",
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        // Deleted in the second snapshot.
        (
            "/views/stock_balance/north,30",
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "/views/stock_balance/north",
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            "/views/stock_balance/north,1,2",
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            "/views/stock_balance/north,two",
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            "/views/stock_balance?qty=5",
            StatusCode::BAD_REQUEST,
            "bad_filter",
        ),
        (
            "/views/stock_balance?part_no=two",
            StatusCode::BAD_REQUEST,
            "bad_filter",
        ),
        (
            "/views/tooth_wear?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/views/tooth_wear?limit=10001",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/views/tooth_wear?limit=many",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/views/tooth_wear?cursor=not-a-cursor",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        // A valid cursor of another view's key shape.
        (
            "/views/alerts?cursor=5b22743037225d",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        ("/nowhere", StatusCode::NOT_FOUND, "not_found"),
        (
            "/views/tooth_wear/t07/extra",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (path, expected_status, expected_code) in cases {
        let (status, as_of, body) = server.get(path).await;
        assert_eq!(
            (status, error_code(&body)),
            (expected_status, expected_code),
            "{path}: {body}"
        );
        assert_eq!(as_of, 3_000);
        let message = body["error"]["message"].as_str().expect("message");
        assert!(!message.is_empty() && !message.contains('\n'), "{message}");
    }
    let (_, _, body) = server.get("/views/stock_balance?qty=5").await;
    let hint = body["error"]["message"].as_str().expect("message");
    assert!(
        hint.contains("site, part_no"),
        "the hint lists the key columns: {hint}"
    );

    for request in [
        server.client.post(server.url("/views")),
        server.client.delete(server.url("/views/tooth_wear/t07")),
        server.client.put(server.url("/metrics")),
    ] {
        let (status, _, body) = server.send(request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&body), "method_not_allowed");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let server = Server::start(populated_store()).await;
    let (status, _, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, as_of, body) = server.get("/ready").await;
    assert_eq!((status, as_of), (StatusCode::SERVICE_UNAVAILABLE, 3_000));
    assert_eq!(body["ready"], false);
    server.ready.store(true, Ordering::Release);
    let (status, _, body) = server.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);

    let _ = server.get("/views/tooth_wear/t01").await;
    let _ = server.get("/views/tooth_wear/t02").await;
    let _ = server.get("/nowhere/at/all").await;
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(as_of_header(&response), 3_000);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("text/plain; version=0.0.4"));
    let text = response.text().await.expect("metrics text");
    assert!(text.contains("wearflow_http_request_duration_seconds"));
    let by_template = concat!(
        "wearflow_http_request_duration_seconds_count",
        "{method=\"GET\",route=\"/views/{name}/{key}\",status=\"200\"} 2"
    );
    assert!(
        text.contains(by_template),
        "requests are labelled by route template:\n{text}"
    );
    assert!(text.contains("route=\"unmatched\",status=\"404\""));
    assert!(!text.contains("t01"), "raw paths never become labels");
    assert!(text.contains("wearflow_view_rows{view=\"tooth_wear\"} 25"));
    assert!(text.contains("wearflow_view_rows{view=\"alerts\"} 12"));
    assert!(text.contains("wearflow_snapshot_version 3"));
    assert!(text.contains("wearflow_snapshot_as_of_milliseconds 3000"));
    server.stop().await;
}

/// Reads server-sent events from a response body, one `(event, data)` at a time.
struct EventReader<S> {
    body: S,
    buffer: String,
}

impl<S, B> EventReader<S>
where
    S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    async fn next(&mut self) -> (String, Json) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                // Keep-alive comments carry neither.
                if !name.is_empty() {
                    return (name, serde_json::from_str(&data).expect("json event data"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")
                .expect("stream still open")
                .expect("body chunk");
            self.buffer
                .push_str(std::str::from_utf8(chunk.as_ref()).expect("utf-8 events"));
        }
    }
}

#[tokio::test]
async fn changes_stream_a_snapshot_then_each_change() {
    let server = Server::start(populated_store()).await;
    let response = server
        .client
        .get(server.url("/views/stock_balance/changes"))
        .send()
        .await
        .expect("connect");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(as_of_header(&response), 3_000);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("text/event-stream"));
    let mut events = EventReader {
        body: response.bytes_stream(),
        buffer: String::new(),
    };

    let (name, data) = events.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(
        (data["as_of"].as_u64(), data["version"].as_u64()),
        (Some(3_000), Some(3))
    );
    assert_eq!(data["rows"].as_array().map(Vec::len), Some(4));

    // A snapshot that leaves this view alone sends nothing; the next one that changes it does.
    server
        .store
        .publish(4_000, vec![(TOOTH_WEAR, tooth(1, 2.0), 1)]);
    server.store.publish(
        5_000,
        vec![
            (STOCK, stock("north", 1, 5), -1),
            (STOCK, stock("north", 1, 4), 1),
            (STOCK, stock("south", 2, 9), -1),
            (STOCK, stock("west", 8, 1), 1),
        ],
    );
    let (name, data) = events.next().await;
    assert_eq!(name, "changes");
    assert_eq!(
        (data["as_of"].as_u64(), data["version"].as_u64()),
        (Some(5_000), Some(5))
    );
    assert_eq!(
        data["changes"],
        json!([
            {
                "op": "update",
                "key": {"site": "north", "part_no": 1},
                "row": {"site": "north", "part_no": 1, "qty": 4},
            },
            {"op": "delete", "key": {"site": "south", "part_no": 2}, "row": null},
            {
                "op": "insert",
                "key": {"site": "west", "part_no": 8},
                "row": {"site": "west", "part_no": 8, "qty": 1},
            },
        ])
    );
    // Shutdown ends the open stream instead of waiting for it forever.
    server.stop().await;
}

#[tokio::test]
async fn a_lagging_subscriber_gets_a_fresh_snapshot() {
    let server = Server::start(populated_store()).await;
    let response = server
        .client
        .get(server.url("/views/tooth_wear/changes"))
        .send()
        .await
        .expect("connect");
    let mut events = EventReader {
        body: response.bytes_stream(),
        buffer: String::new(),
    };
    assert_eq!(events.next().await.0, "snapshot");
    // More publications than the feed holds, faster than the subscriber is polled.
    let mut last_version = 0;
    for i in 0..600 {
        let update = (TOOTH_WEAR, tooth(50 + i, 1.0), 1);
        last_version = server
            .store
            .publish(10_000 + i as u64, vec![update])
            .version;
    }
    let mut resynced = false;
    for _ in 0..700 {
        let (name, data) = events.next().await;
        if name == "snapshot" {
            resynced = true;
        }
        if data["version"].as_u64() == Some(last_version) {
            let rows = data["rows"].as_array().map(Vec::len);
            assert!(name == "changes" || rows == Some(625));
            break;
        }
    }
    assert!(resynced, "a lagging subscriber is sent a fresh snapshot");
    server.stop().await;
}

#[tokio::test]
async fn models_without_a_model_directory() {
    let server = Server::start(populated_store()).await;
    let (status, _, body) = server.get("/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version"], "physics");
    let (status, _, body) = server
        .send(server.client.post(server.url("/models/reload")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "model_not_configured");
    let (status, _, body) = server
        .send(server.client.get(server.url("/models/reload")))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    server.stop().await;
}
