//! The SQL layer over real sockets: `psql`, a `tokio-postgres` client (extended protocol,
//! parameters, binary results) and `POST /sql`, plus named views across a restart.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use wearflow::auth::Authenticator;
use wearflow::config::SqlConfig;
use wearflow::config::TlsConfig;
use wearflow::config::{AuthConfig, JwtConfig, Secret};
use wearflow::http::{self, AppState, HttpAccess, TRUNCATED_HEADER};
use wearflow::metrics::Metrics;
use wearflow::sql::SqlServer;
use wearflow::tls::TlsListener;
use wearflow_operators::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};
use wearflow_sinks::ServingStore;
use wearflow_sql::access::Authenticate;
use wearflow_sql::audit::AuditLog;
use wearflow_sql::pg::PgAccess;

const TEETH: usize = 0;
const BALANCES: usize = 1;
const ALERTS: usize = 2;
const TEETH_COUNT: usize = 25;

fn schemas() -> Vec<ViewSchema> {
    let teeth = ViewSchema::new(
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
    let balances = ViewSchema::new(
        "inventory_balances",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("site", ColumnType::Utf8),
            Column::required("machine_id", ColumnType::Utf8),
            Column::required("on_hand", ColumnType::Int64),
        ],
        "teeth on hand per site and machine model",
    )
    .expect("valid schema");
    let alerts = ViewSchema::new(
        "alerts",
        ViewKind::Append,
        1,
        vec![
            Column::required("alert_id", ColumnType::Utf8),
            Column::required("at", ColumnType::TimestampMs),
        ],
        "wear alerts",
    )
    .expect("valid schema");
    vec![teeth, balances, alerts]
}

/// 25 teeth on three machines, balances per machine, two alerts; `as_of` 3 s after the epoch.
fn populated_store() -> Arc<ServingStore> {
    let store = ServingStore::new(schemas());
    let mut updates: Vec<(usize, Row, isize)> = Vec::new();
    for id in 0..TEETH_COUNT {
        let row = vec![
            Value::str(format!("t{id:02}")),
            Value::str(format!("ex{}", id % 3)),
            Value::float(10.0 + id as f64),
        ];
        updates.push((TEETH, row, 1));
    }
    for (site, machine, on_hand) in [
        ("north", "ex0", 4),
        ("north", "ex1", 0),
        ("south", "ex2", 7),
    ] {
        let row = vec![Value::str(site), Value::str(machine), Value::Int(on_hand)];
        updates.push((BALANCES, row, 1));
    }
    for (id, at) in [("a1", 1_500), ("a2", 2_500)] {
        updates.push((ALERTS, vec![Value::str(id), Value::Int(at)], 1));
    }
    store.publish(3_000, updates);
    Arc::new(store)
}

/// HTTP and Postgres on free local ports over one store and one data directory.
struct Server {
    base: String,
    pg_port: u16,
    client: reqwest::Client,
    http_stop: oneshot::Sender<()>,
    http_task: JoinHandle<std::io::Result<()>>,
    sql: SqlServer,
}

impl Server {
    async fn start(store: Arc<ServingStore>, data_dir: &Path) -> Server {
        Server::start_with(
            store,
            data_dir,
            HttpAccess::default(),
            PgAccess::default(),
            None,
        )
        .await
    }

    async fn start_with(
        store: Arc<ServingStore>,
        data_dir: &Path,
        http_access: HttpAccess,
        pg_access: PgAccess,
        https: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let config = SqlConfig {
            pg_addr: "127.0.0.1:0".into(),
            http_row_limit: 10,
            ..SqlConfig::default()
        };
        let sql = wearflow::sql::start(&config, data_dir, Arc::clone(&store), None, pg_access)
            .await
            .expect("sql layer starts");
        let state = AppState {
            store,
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(true)),
            sql: Some(sql.state.clone()),
            dataflows: None,
            models: Default::default(),
            access: http_access,
            checkpoints: Default::default(),
        };
        let listener = http::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (http_stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let http_task = match https {
            Some(acceptor) => {
                let listener = TlsListener::new(listener, acceptor).expect("tls listener");
                tokio::spawn(http::serve(listener, state, shutdown))
            }
            None => tokio::spawn(http::serve(listener, state, shutdown)),
        };
        Server {
            base: format!("http://{addr}"),
            pg_port: sql.pg_addr.port(),
            client: reqwest::Client::new(),
            http_stop,
            http_task,
            sql,
        }
    }

    async fn stop(self) {
        let _ = self.http_stop.send(());
        self.http_task
            .await
            .expect("http task")
            .expect("http server");
        self.sql.stop().await;
    }

    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=wearflow dbname=wearflow sslmode=disable",
            self.pg_port
        )
    }

    /// Runs `psql` with these arguments; returns (success, stdout, stderr).
    async fn psql(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = Command::new("psql");
        command
            .arg(self.conninfo())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("psql task")
            .expect("psql runs (scripts/test installs postgresql-client)");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn post_sql(&self, sql: &str, accept: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/sql", self.base))
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .expect("POST /sql")
    }

    async fn views(&self) -> Json {
        self.client
            .get(format!("{}/views", self.base))
            .send()
            .await
            .expect("GET /views")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_errors_and_catalog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(populated_store(), dir.path()).await;

    let (ok, out, err) = server
        .psql(&[
            "-c",
            "SELECT m.site, count(*) FROM tooth_wear t JOIN inventory_balances m \
             ON t.machine_id = m.machine_id GROUP BY m.site ORDER BY m.site",
        ])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "north|17\nsouth|8");

    let (ok, out, err) = server
        .psql(&["-c", "SELECT as_of() AS at, CAST(as_of() AS BIGINT) AS ms"])
        .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("1970-01-01 00:00:03"), "{out}");
    assert!(out.trim().ends_with("|3000"), "{out}");

    // A syntax error carries its SQLSTATE; the same connection then answers the next query.
    let (_, out, err) = server
        .psql(&[
            "-v",
            "VERBOSITY=verbose",
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "SELEC 1",
            "-c",
            "SELECT 41 + 1",
        ])
        .await;
    // ON_ERROR_STOP off: psql goes on after the error, on the same connection.
    assert!(err.contains("42601"), "{err}");
    assert_eq!(out.trim(), "42");

    for (sql, code) in [
        ("SELECT * FROM no_such_view", "42P01"),
        ("COPY tooth_wear TO '/tmp/wearflow-copy.csv'", "42501"),
        ("CREATE TABLE t (a INT)", "42501"),
    ] {
        let (ok, _, err) = server.psql(&["-v", "VERBOSITY=verbose", "-c", sql]).await;
        assert!(!ok && err.contains(code), "{sql}: {err}");
    }
    assert!(!Path::new("/tmp/wearflow-copy.csv").exists());

    // A new connection still works.
    let (ok, out, err) = server
        .psql(&["-c", "SELECT count(*) FROM tooth_wear"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), TEETH_COUNT.to_string());

    let (ok, out, err) = server.psql(&["-c", "\\d"]).await;
    assert!(ok, "{err}");
    for table in ["tooth_wear", "inventory_balances", "alerts"] {
        assert!(out.contains(table), "\\d lists {table}: {out}");
    }
    let (ok, out, err) = server.psql(&["-c", "\\d inventory_balances"]).await;
    assert!(ok, "{err}");
    for column in ["site", "machine_id", "on_hand"] {
        assert!(out.contains(column), "\\d inventory_balances: {out}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters_and_return_binary_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(populated_store(), dir.path()).await;
    let (client, connection) = tokio_postgres::connect(&server.conninfo(), NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);

    let statement = client
        .prepare(
            "SELECT tooth_id, remaining_mm FROM tooth_wear \
             WHERE machine_id = $1 AND remaining_mm > $2 ORDER BY tooth_id",
        )
        .await
        .expect("prepare");
    let rows = client
        .query(&statement, &[&"ex1", &25.0f64])
        .await
        .expect("query");
    let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("t16".to_string(), 26.0),
            ("t19".to_string(), 29.0),
            ("t22".to_string(), 32.0)
        ]
    );
    // The same statement with other parameters.
    let rows = client
        .query(&statement, &[&"ex0", &30.0f64])
        .await
        .expect("query again");
    assert_eq!(rows.len(), 2, "t21 and t24");

    let rows = client
        .query(
            "SELECT alert_id, at, on_hand FROM alerts, inventory_balances \
             WHERE on_hand = $1 ORDER BY alert_id",
            &[&7i64],
        )
        .await
        .expect("timestamps");
    let at: std::time::SystemTime = rows[1].get(1);
    assert_eq!(
        at.duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
        2_500
    );

    let error = client
        .query("SELECT * FROM no_such_view WHERE x = $1", &[&1i64])
        .await
        .expect_err("unknown table");
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE), "{error}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM tooth_wear", &[])
        .await
        .expect("usable after an error")
        .get(0);
    assert_eq!(count, TEETH_COUNT as i64);
    drop(client);
    let _ = connection.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sql_answers_json_csv_and_arrow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(populated_store(), dir.path()).await;

    let response = server
        .post_sql(
            "SELECT machine_id, count(*) AS teeth, max(remaining_mm) AS most FROM tooth_wear \
             GROUP BY machine_id ORDER BY machine_id",
            "application/json",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[http::AS_OF_HEADER], "3000");
    let body: Json = response.json().await.expect("json");
    assert_eq!(body["as_of"], 3_000);
    assert_eq!(body["truncated"], false);
    assert_eq!(
        body["columns"],
        json!([
            {"name": "machine_id", "type": "utf8"},
            {"name": "teeth", "type": "int64"},
            {"name": "most", "type": "float64"},
        ])
    );
    assert_eq!(
        body["rows"],
        json!([["ex0", 9, 34.0], ["ex1", 8, 32.0], ["ex2", 8, 33.0]])
    );

    let response = server
        .post_sql("SELECT alert_id, at FROM alerts ORDER BY at", "text/csv")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/csv")
    );
    let csv = response.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "alert_id,at");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("a1,1970-01-01T00:00:01.500"), "{csv}");

    // More rows than the row limit (10): cut off and flagged.
    let response = server
        .post_sql("SELECT * FROM tooth_wear", http::ARROW_STREAM)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[TRUNCATED_HEADER], "true");
    let bytes = response.bytes().await.expect("body");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .expect("arrow stream");
    let schema = reader.schema();
    assert_eq!(schema.field(0).name(), "tooth_id");
    let rows: usize = reader.map(|batch| batch.expect("batch").num_rows()).sum();
    assert_eq!(rows, 10);

    for (sql, status, code) in [
        ("SELEC 1", StatusCode::BAD_REQUEST, "bad_sql"),
        (
            "SELECT * FROM no_such_view",
            StatusCode::BAD_REQUEST,
            "unknown_table",
        ),
        (
            "INSERT INTO tooth_wear VALUES ('t', 'm', 1.0)",
            StatusCode::FORBIDDEN,
            "not_allowed",
        ),
    ] {
        let response = server.post_sql(sql, "application/json").await;
        assert_eq!(response.status(), status, "{sql}");
        let body: Json = response.json().await.expect("json error");
        assert_eq!(body["error"]["code"], code, "{sql}: {body}");
        assert_eq!(body["as_of"], 3_000);
    }
    let response = server
        .client
        .post(format!("{}/sql", server.base))
        .header("content-type", "application/json")
        .body("{\"query\": 1}")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_views_survive_a_restart_and_can_be_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = populated_store();
    let server = Server::start(Arc::clone(&store), dir.path()).await;
    let (ok, out, err) = server
        .psql(&[
            "-c",
            "CREATE VIEW worn_teeth AS SELECT tooth_id, remaining_mm FROM tooth_wear \
             WHERE remaining_mm < 13",
        ])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "CREATE VIEW");
    let views = server.views().await;
    let worn = views["views"]
        .as_array()
        .expect("views")
        .iter()
        .find(|v| v["name"] == "worn_teeth")
        .cloned()
        .expect("the named view is listed");
    assert_eq!(worn["kind"], "query");
    assert_eq!(worn["columns"][0]["name"], "tooth_id");
    server.stop().await;

    // Same data directory, new process state: the view is back and computed on read.
    let server = Server::start(Arc::clone(&store), dir.path()).await;
    let (ok, out, err) = server
        .psql(&["-c", "SELECT tooth_id FROM worn_teeth ORDER BY tooth_id"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "t00\nt01\nt02");
    let response = server
        .post_sql("DROP VIEW worn_teeth", "application/json")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Json = response.json().await.expect("json");
    assert_eq!(body["command"], "DROP VIEW");
    let views = server.views().await;
    assert!(
        views["views"]
            .as_array()
            .expect("views")
            .iter()
            .all(|v| v["name"] != "worn_teeth")
    );
    server.stop().await;
    let server = Server::start(store, dir.path()).await;
    let (ok, _, err) = server
        .psql(&["-v", "VERBOSITY=verbose", "-c", "SELECT * FROM worn_teeth"])
        .await;
    assert!(!ok && err.contains("42P01"), "{err}");
    server.stop().await;
}

const JWT_SECRET: &str = "the hmac secret of the access test, 32+ bytes";

fn jwt(user: &str, role: &str, exp_offset_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": user, "role": role, "exp": now + exp_offset_s }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt")
}

/// Runs psql as `user` with `password`; returns (success, stdout, stderr).
async fn psql_as(port: u16, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    let mut command = Command::new("psql");
    command
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=wearflow sslmode=disable user={user}"
        ))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("psql task")
        .expect("psql runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_on_every_door_with_wrong_and_expired_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authenticator = Authenticator::from_config(&AuthConfig {
        inline_tokens: Some(Secret(
            "vera:viewer:viewer-token,ana:analyst:analyst-token,ops:admin:admin-token".into(),
        )),
        jwt: Some(JwtConfig {
            secret: Some(Secret(JWT_SECRET.into())),
            ..JwtConfig::default()
        }),
        ..AuthConfig::default()
    })
    .expect("authenticator");
    let authenticator: Arc<dyn Authenticate> = Arc::new(authenticator);
    let audit_path = dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditLog::open(&audit_path).expect("audit log"));
    let refusals = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let refusals_seen = Arc::clone(&refusals);
    let server = Server::start_with(
        populated_store(),
        dir.path(),
        HttpAccess {
            authenticator: Some(Arc::clone(&authenticator)),
            audit: Some(Arc::clone(&audit)),
        },
        PgAccess {
            authenticator: Some(authenticator),
            audit: Some(audit),
            tls: None,
            on_refused: Some(Arc::new(move |reason| {
                refusals_seen
                    .lock()
                    .expect("refusals")
                    .push(reason.to_string())
            })),
        },
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let call = |method: &str, path: &str, token: Option<&str>, sql: Option<&str>| {
        let mut request = match method {
            "GET" => client.get(format!("{}{path}", server.base)),
            _ => client.post(format!("{}{path}", server.base)),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(sql) = sql {
            request = request.json(&json!({ "sql": sql }));
        }
        let is_metrics = path == "/metrics";
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().expect("ascii").to_string());
            let body: Json = if is_metrics {
                Json::Null
            } else {
                response.json().await.expect("json body")
            };
            (status, body, challenge)
        }
    };

    // The probes and the API document are open.
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        assert_eq!(call("GET", path, None, None).await.0, 200, "{path}");
    }
    // Everything else needs a credential: none, a wrong one, an expired or forged JWT.
    let expired = jwt("ops", "admin", -3600);
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "ops", "role": "admin", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not the server's secret, but 32+ bytes"),
    )
    .expect("jwt");
    for (method, path, sql) in [
        ("GET", "/views", None),
        ("GET", "/views/tooth_wear", None),
        ("GET", "/views/tooth_wear/t01", None),
        ("GET", "/models", None),
        ("GET", "/no/such/path", None),
        ("POST", "/sql", Some("SELECT 1")),
        ("POST", "/models/reload", None),
        ("POST", "/checkpoint", None),
    ] {
        let (status, body, challenge) = call(method, path, None, sql).await;
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"wearflow\""));
        for (token, code) in [
            ("wrong-token", "unauthenticated"),
            (forged.as_str(), "unauthenticated"),
            (expired.as_str(), "token_expired"),
        ] {
            let (status, body, challenge) = call(method, path, Some(token), sql).await;
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
            assert!(
                challenge.is_some_and(|c| c.contains("invalid_token")),
                "{method} {path}"
            );
        }
    }
    // What each role may do: (method, path, sql, viewer, analyst, admin).
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, u16, u16);
    let cases: [Case; 9] = [
        ("GET", "/views", None, 200, 200, 200),
        ("GET", "/views/tooth_wear?limit=2", None, 200, 200, 200),
        ("GET", "/models", None, 200, 200, 200),
        (
            "POST",
            "/sql",
            Some("SELECT count(*) AS n FROM tooth_wear"),
            403,
            200,
            200,
        ),
        (
            "POST",
            "/sql",
            Some("CREATE VIEW worn AS SELECT * FROM tooth_wear"),
            403,
            403,
            200,
        ),
        ("POST", "/sql", Some("DROP VIEW worn"), 403, 403, 200),
        (
            "POST",
            "/sql",
            Some("DELETE FROM tooth_wear"),
            403,
            403,
            403,
        ),
        // No model directory: an admin gets past the door and hears 409.
        ("POST", "/models/reload", None, 403, 403, 409),
        // No Kafka-fed engine behind this server: no checkpoints to take.
        ("POST", "/checkpoint", None, 403, 403, 409),
    ];
    for (method, path, sql, viewer, analyst, admin) in cases {
        for (token, expected) in [
            ("viewer-token", viewer),
            ("analyst-token", analyst),
            ("admin-token", admin),
        ] {
            let (status, body, _) = call(method, path, Some(token), sql).await;
            assert_eq!(status, expected, "{token}: {method} {path} {sql:?}: {body}");
            if status == 403 {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                assert!(matches!(code, "forbidden" | "not_allowed"), "{body}");
            }
        }
    }
    // A JWT carries its role.
    let analyst_jwt = jwt("kim", "analyst", 600);
    let (status, body, _) = call("POST", "/sql", Some(&analyst_jwt), Some("SELECT 1 AS one")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[1]]));
    let (status, _, _) = call("POST", "/models/reload", Some(&analyst_jwt), None).await;
    assert_eq!(status, 403);

    // Postgres: the password is the token (or a JWT whose subject is the user).
    let port = server.pg_port;
    let (ok, out, err) = psql_as(port, "ana", "analyst-token", "SELECT 40 + 2").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "42");
    let (ok, _, err) = psql_as(port, "ana", "wrong-token", "SELECT 1").await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (ok, _, err) = psql_as(port, "ops", "analyst-token", "SELECT 1").await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "another user's token: {err}"
    );
    let (ok, _, err) = psql_as(port, "vera", "viewer-token", "SELECT 1").await;
    assert!(!ok && err.contains("may not use sql"), "{err}");
    let (ok, _, err) = psql_as(port, "ops", &expired, "SELECT 1").await;
    assert!(!ok && err.contains("token expired"), "{err}");
    let (ok, _, err) = psql_as(
        port,
        "ana",
        "analyst-token",
        "CREATE VIEW mine AS SELECT * FROM tooth_wear",
    )
    .await;
    assert!(!ok && err.contains("permission denied"), "{err}");
    let (ok, out, err) = psql_as(port, "kim", &analyst_jwt, "SELECT 'jwt'").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "jwt");
    let admin_jwt = jwt("root", "admin", 600);
    let (ok, _, err) = psql_as(
        port,
        "root",
        &admin_jwt,
        "CREATE VIEW mine AS SELECT * FROM tooth_wear",
    )
    .await;
    assert!(ok, "{err}");

    // Every refused login was counted, by reason.
    let mut counted = refusals.lock().expect("refusals").clone();
    counted.sort();
    assert_eq!(
        counted,
        [
            "forbidden",
            "token_expired",
            "unauthenticated",
            "unauthenticated"
        ],
        "viewer, expired jwt, wrong token, another user's token"
    );

    // The audit log has who did what, and no secret.
    let text = std::fs::read_to_string(&audit_path).expect("audit log");
    for secret in ["analyst-token", "admin-token", "viewer-token", JWT_SECRET] {
        assert!(!text.contains(secret), "a secret in the audit log");
    }
    assert!(!text.contains(&analyst_jwt), "a jwt in the audit log");
    let entries: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let has = |door: &str, user: Option<&str>, action: &str, what: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["door"] == door
                && e["user"].as_str() == user
                && e["action"] == action
                && e["what"].as_str().is_some_and(|w| w.contains(what))
                && e["outcome"] == outcome
        })
    };
    assert!(
        has("http", Some("ana"), "sql", "SELECT count(*)", "ok"),
        "{text}"
    );
    assert!(
        has("http", Some("ana"), "sql", "CREATE VIEW worn", "denied"),
        "{text}"
    );
    assert!(
        has("http", Some("ops"), "sql", "CREATE VIEW worn", "ok"),
        "{text}"
    );
    assert!(
        has("http", Some("ops"), "model_reload", "model", "error"),
        "{text}"
    );
    assert!(
        has(
            "http",
            Some("vera"),
            "model_reload",
            "/models/reload",
            "denied"
        ),
        "{text}"
    );
    assert!(has("http", None, "sql", "/sql", "denied"), "{text}");
    assert!(
        has("pgwire", Some("ana"), "sql", "SELECT 40 + 2", "ok"),
        "{text}"
    );
    assert!(
        has("pgwire", Some("ana"), "sql", "CREATE VIEW mine", "error"),
        "{text}"
    );
    assert!(
        has("pgwire", Some("root"), "sql", "CREATE VIEW mine", "ok"),
        "{text}"
    );
    assert!(has("pgwire", None, "login", "vera", "denied"), "{text}");
    server.stop().await;
}

/// Runs a command; returns (success, stdout, stderr).
async fn run(mut command: Command) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("task")
        .expect("command runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_http_and_postgres_and_nothing_in_the_clear() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut openssl = Command::new("openssl");
    openssl
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let (ok, _, err) = run(openssl).await;
    assert!(ok, "openssl makes a test certificate: {err}");
    let config = TlsConfig {
        cert_file: cert.clone(),
        key_file: key.clone(),
    };
    let https = wearflow::tls::acceptor(&config, &[b"http/1.1"]).expect("http acceptor");
    let pg_tls = wearflow::tls::acceptor(&config, &[b"postgresql"]).expect("pg acceptor");
    // A key that is not a key is refused with the file's name.
    let bad = TlsConfig {
        cert_file: cert.clone(),
        key_file: cert.clone(),
    };
    let error = wearflow::tls::acceptor(&bad, &[]).err().expect("refused");
    assert!(error.to_string().contains("cert.pem"), "{error}");

    let server = Server::start_with(
        populated_store(),
        dir.path(),
        HttpAccess::default(),
        PgAccess {
            tls: Some(pg_tls),
            ..PgAccess::default()
        },
        Some(https),
    )
    .await;
    let https_base = server.base.replace("http://", "https://");
    // HTTPS with the certificate verified.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .arg(format!("{https_base}/views"));
    let (ok, out, err) = run(curl).await;
    assert!(ok, "https: {err}");
    let body: Json = serde_json::from_str(&out).expect("json");
    assert!(
        body["views"].as_array().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    // Plain HTTP to the TLS port gets no answer.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "10"])
        .arg(format!("{}/views", server.base));
    let (ok, out, _) = run(curl).await;
    assert!(!ok && out.is_empty(), "plain http answered: {out}");
    // The server still serves after the failed handshake.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .arg(format!("{https_base}/health"));
    assert!(run(curl).await.0, "https after a plain request");

    // Postgres over TLS, the server certificate verified; without TLS it is refused.
    let conninfo = |sslmode: &str| {
        format!(
            "host=localhost port={} user=wearflow dbname=wearflow sslmode={sslmode} sslrootcert={}",
            server.pg_port,
            cert.display()
        )
    };
    let mut psql = Command::new("psql");
    psql.arg(conninfo("verify-full")).args([
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT ssl FROM (VALUES (1)) AS t(ssl)",
    ]);
    let (ok, out, err) = run(psql).await;
    assert!(ok, "psql over tls: {err}");
    assert_eq!(out.trim(), "1");
    let mut psql = Command::new("psql");
    psql.arg(conninfo("disable"))
        .args(["-X", "-A", "-t", "-c", "SELECT 1"]);
    let (ok, _, err) = run(psql).await;
    assert!(!ok && err.contains("requires tls"), "{err}");
    server.stop().await;
}
