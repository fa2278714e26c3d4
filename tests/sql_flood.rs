//! SQL limits under a flood: many expensive statements at once (endless series, big
//! distinct counts, cross joins) over HTTP and the Postgres protocol against a live engine.
//! Each ends within its time or memory limit with a clean error (or its rows); none is a
//! server error; ingestion keeps publishing meanwhile; and the engine answers afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::common::process::{ADMIN_TOKEN, ADMIN_USER, Engine, client};

const EXPENSIVE: [&str; 4] = [
    "SELECT count(*) AS n FROM generate_series(1, 3000000000)",
    "SELECT count(DISTINCT value) AS n FROM generate_series(1, 300000000)",
    "SELECT value FROM generate_series(1, 50000000) ORDER BY value DESC",
    "SELECT count(*) AS n FROM tooth_wear a, tooth_wear b, tooth_wear c, tooth_wear d, tooth_wear e, tooth_wear f",
];

#[test]
fn a_flood_of_expensive_statements_ends_cleanly_and_ingestion_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("flood.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"simulator\"\nmachines = 3\nspeed = 600.0\n\n\
         [sql]\npg_addr = \"127.0.0.1:0\"\nstatement_timeout_ms = 2000\n\
         memory_limit_bytes = 33554432\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let mut engine = Engine::start(&dir.path().join("data"), &["run", "--config", config]);
    let base = engine.base.clone();
    let printed = engine.wait_for("postgres: psql \"", Duration::from_secs(60));
    let host_port = printed
        .trim_start_matches("postgres: psql \"")
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string();
    let conninfo = format!("{host_port} user={ADMIN_USER} password={ADMIN_TOKEN}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = client();
        let as_of = || async {
            let answer: Json = client
                .get(format!("{base}/health"))
                .send()
                .await
                .expect("GET /health")
                .json()
                .await
                .expect("json");
            answer["as_of"].as_i64().expect("as_of")
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while client
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(Instant::now() < deadline, "the engine never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = as_of().await;

        let mut requests = Vec::new();
        for i in 0..24 {
            let client = client.clone();
            let url = format!("{base}/sql");
            let sql = EXPENSIVE[i % EXPENSIVE.len()];
            requests.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({ "sql": sql }))
                    .send()
                    .await
                    .expect("an answer, not a dropped connection");
                let status = response.status().as_u16();
                let body: Json = response.json().await.unwrap_or(Json::Null);
                (sql, status, body)
            }));
        }
        let mut psqls = Vec::new();
        for i in 0..6 {
            let sql = EXPENSIVE[i % EXPENSIVE.len()];
            let conninfo = conninfo.clone();
            psqls.push(tokio::task::spawn_blocking(move || {
                let output = Command::new("psql")
                    .arg(&conninfo)
                    .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", sql])
                    .output()
                    .expect("run psql");
                (sql, output)
            }));
        }
        let mut limited = 0;
        for request in requests {
            let (sql, status, body) = request.await.expect("request task");
            assert!(
                matches!(status, 200 | 408 | 503),
                "{sql}: status {status}: {body}"
            );
            if status != 200 {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                assert!(!code.is_empty(), "{sql}: a clean error code: {body}");
                limited += 1;
            }
        }
        for psql in psqls {
            let (sql, output) = psql.await.expect("psql task");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() || stderr.contains("ERROR"),
                "{sql}: psql ended with a Postgres error, not a broken connection: {stderr}"
            );
            assert!(
                !stderr.contains("server closed the connection"),
                "{sql}: {stderr}"
            );
        }
        assert!(
            limited >= 12,
            "the limits stopped the endless statements ({limited})"
        );
        // Ingestion went on during the flood, and the engine still answers.
        let after = as_of().await;
        assert!(after > before, "as_of advanced from {before} to {after}");
        let response = client
            .post(format!("{base}/sql"))
            .json(&json!({ "sql": "SELECT count(*) AS n FROM tooth_wear" }))
            .send()
            .await
            .expect("a cheap query after the flood");
        assert_eq!(response.status().as_u16(), 200);
    });
    drop(engine);
}
