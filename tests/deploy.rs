//! `deploy/` against the engine it deploys: every `wearflow.toml` under `deploy/` loads with
//! the engine's own config loader, every `WEARFLOW_*` variable the deploy files set is one the
//! loader honours, and every SQL statement of the Grafana dashboards and the runbook runs
//! over the Postgres endpoint against the real views. The YAML side (compose, Kubernetes,
//! Prometheus) is checked by `deploy/check.py`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;
use tokio_postgres::NoTls;
use wearflow::config::{Config, SourceConfig, SqlConfig};
use wearflow::runtime;
use wearflow_sinks::ServingStore;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable deploy directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

#[test]
fn every_deploy_config_loads_with_the_engine_loader() {
    let configs = files(&deploy_dir(), ".toml");
    assert!(
        configs.len() >= 3,
        "expected the local, compose and k8s configs, found {configs:?}"
    );
    let defaults = Config::default();
    for path in &configs {
        let config = Config::load(Some(path), [])
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        let shown = path.display();
        assert!(
            matches!(config.source, SourceConfig::Kafka(_)),
            "{shown}: deploy configs read Kafka"
        );
        assert!(
            config.kafka_sink.is_some(),
            "{shown}: deploy configs write changelogs"
        );
        // The image exposes and health-checks the default ports: configs must keep them.
        assert_eq!(
            port(&config.http_addr),
            port(&defaults.http_addr),
            "{shown}: http port"
        );
        assert_eq!(
            port(&config.sql.pg_addr),
            port(&defaults.sql.pg_addr),
            "{shown}: postgres port"
        );
        // In a container the listeners must not be loopback-only.
        if !path.starts_with(deploy_dir().join("local")) {
            assert!(
                config.http_addr.starts_with("0.0.0.0:"),
                "{shown}: http_addr must listen on all interfaces in a container"
            );
            assert!(
                config.sql.pg_addr.starts_with("0.0.0.0:"),
                "{shown}: pg_addr must listen on all interfaces in a container"
            );
            assert_eq!(
                config.data_dir,
                PathBuf::from("/var/lib/wearflow"),
                "{shown}: data_dir must be the image's volume"
            );
        }
    }
}

/// `WEARFLOW_*` names in `text` (upper-case letters, digits and underscores after the prefix).
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("WEARFLOW_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        if name.len() > "WEARFLOW_".len() {
            names.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_environment_override_in_deploy_is_honoured() {
    let mut sources = files(&deploy_dir(), ".yaml");
    sources.extend(files(&deploy_dir(), ".yml"));
    sources.extend(files(&deploy_dir(), ".md"));
    sources.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"));
    let mut names = BTreeSet::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).expect("readable deploy file");
        names.extend(env_names(&text));
    }
    // Test-only variables of scripts/test are not engine settings.
    names.retain(|n| !n.starts_with("WEARFLOW_TEST_") && n != "WEARFLOW_KAFKA_HOME");
    assert!(
        names.contains("WEARFLOW_HTTP_ADDR"),
        "the Dockerfile sets WEARFLOW_HTTP_ADDR: {names:?}"
    );
    let base = deploy_dir().join("k8s/wearflow.toml");
    let without = Config::load(Some(&base), []).expect("k8s config loads");
    for name in names {
        let value = if name == "WEARFLOW_WORKERS" {
            "7"
        } else {
            "192.0.2.1:7"
        };
        let with = Config::load(Some(&base), [(name.clone(), value.to_string())])
            .unwrap_or_else(|e| panic!("{name}={value} is refused: {e}"));
        assert_ne!(
            with, without,
            "{name} appears in deploy/ but the config loader ignores it"
        );
    }
}

/// The SQL statements of every Grafana panel on the Postgres datasource.
fn dashboard_statements() -> Vec<(String, String)> {
    let mut statements = Vec::new();
    for path in files(&deploy_dir().join("grafana"), ".json") {
        let text = std::fs::read_to_string(&path).expect("readable dashboard");
        let dashboard: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut panels: Vec<&Json> = dashboard["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .collect();
        while let Some(panel) = panels.pop() {
            if let Some(inner) = panel["panels"].as_array() {
                panels.extend(inner);
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(sql) = target["rawSql"].as_str() {
                    let title = panel["title"].as_str().unwrap_or("?");
                    let file = path.file_name().expect("name").to_string_lossy();
                    statements.push((format!("{file}: {title}"), sql.to_string()));
                }
            }
        }
    }
    statements
}

/// Inline `SELECT ...` statements of the runbook (between backticks).
fn runbook_statements() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_dir().join("RUNBOOK.md")).expect("runbook");
    let mut statements = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("`SELECT ") {
        let tail = &rest[at + 1..];
        let end = tail.find('`').expect("closing backtick");
        statements.push(("RUNBOOK.md".to_string(), tail[..end].to_string()));
        rest = &tail[end..];
    }
    statements
}

#[test]
fn dashboard_and_runbook_sql_runs_against_the_real_views() {
    let statements = dashboard_statements();
    assert!(
        statements.len() >= 5,
        "the fleet dashboard reads wearflow over SQL: {statements:?}"
    );
    for table in ["tooth_wear", "machine_health", "inventory_balances"] {
        assert!(
            statements.iter().any(|(_, sql)| sql.contains(table)),
            "no dashboard statement reads {table}"
        );
    }
    let runbook = runbook_statements();
    assert!(!runbook.is_empty(), "the runbook's SQL examples");

    // A few simulated hours of a small fleet through the real runtime, then the real SQL
    // layer over its serving store.
    let data = tempfile::tempdir().expect("temp dir");
    let config = Config {
        workers: 1,
        data_dir: data.path().to_path_buf(),
        source: SourceConfig::Simulator {
            seed: 7,
            machines: 4,
            speed: 0.0,
            duration_ms: Some(8 * 3_600_000),
            start_ms: None,
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    runtime::run_to_end(&config, Arc::clone(&store)).expect("engine run");

    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    tokio.block_on(async {
        let sql_config = SqlConfig {
            pg_addr: "127.0.0.1:0".into(),
            ..SqlConfig::default()
        };
        let server = wearflow::sql::start(
            &sql_config,
            data.path(),
            Arc::clone(&store),
            None,
            Default::default(),
        )
        .await
        .expect("sql layer starts");
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=wearflow dbname=wearflow",
                server.pg_addr.port()
            ),
            NoTls,
        )
        .await
        .expect("connect over the postgres protocol");
        let connection = tokio::spawn(connection);
        // Grafana's datasource health check.
        client.simple_query("SELECT 1").await.expect("SELECT 1");
        let mut rows_seen = 0;
        for (origin, sql) in statements.iter().chain(&runbook) {
            // Extended protocol (as Grafana's driver) and simple protocol (as psql).
            let rows = client
                .query(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{origin}: `{sql}` fails: {e:?}"));
            client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{origin}: `{sql}` fails (simple protocol): {e:?}"));
            if sql.contains("FROM tooth_wear GROUP BY status") {
                assert!(!rows.is_empty(), "{origin}: the simulated fleet has teeth");
            }
            rows_seen += rows.len();
        }
        assert!(rows_seen > 0, "the statements read rows");
        drop(client);
        connection.abort();
        server.stop().await;
    });
}
