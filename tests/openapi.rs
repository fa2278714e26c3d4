//! The HTTP API against its own OpenAPI document: schemathesis (pip) generates requests from
//! `GET /openapi.json` for every operation of a running `wearflow run` (authentication on:
//! schemathesis sends an admin token, and its `ignored_auth` check sends none and a wrong one)
//! and checks that no answer is a server error and every answer matches the documented status
//! codes, content types and schemas. `scripts/test` installs schemathesis.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::process::{ADMIN_TOKEN, Engine};

#[test]
fn the_api_conforms_to_its_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"simulator\"\nmachines = 3\nspeed = 600.0\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let mut engine = Engine::start(&dir.path().join("data"), &["run", "--config", config]);
    let base = engine.base.clone();
    let http = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let get =
        |path: &str| http.block_on(async { reqwest::get(format!("{base}{path}")).await.ok() });
    let deadline = Instant::now() + Duration::from_secs(60);
    while get("/ready").map(|r| r.status().as_u16()) != Some(200) {
        assert!(Instant::now() < deadline, "the engine never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let document: serde_json::Value = http
        .block_on(async {
            reqwest::get(format!("{base}/openapi.json"))
                .await
                .expect("GET /openapi.json")
                .json()
                .await
        })
        .expect("a JSON document");
    assert_eq!(document["openapi"], "3.0.3");
    let views = &document["paths"]["/views/{name}"]["get"]["parameters"][0]["schema"]["enum"];
    assert!(
        views
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n == "tooth_wear")),
        "the view names are enumerated: {views}"
    );

    // The live change stream never ends, so it is left out; positive-data acceptance is off
    // because well-typed values can still be wrong (an empty statement, a malformed cursor)
    // and those answer 400 by design.
    let output = Command::new("schemathesis")
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--exclude-operation-id", "viewChanges"])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "100",
            "--request-timeout",
            "10",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis (pip install schemathesis==4.32.5; scripts/test does)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains("passed"),
        "schemathesis ran test cases:\n{report}"
    );

    // The engine kept serving through the onslaught.
    assert_eq!(get("/health").map(|r| r.status().as_u16()), Some(200));
    assert_eq!(
        engine.child.try_wait().expect("wait"),
        None,
        "the engine is still running"
    );
    drop(engine);
}
