//! Cluster mode with real OS processes on loopback: a 2-process timely cluster over the same
//! input publishes exactly the views of a 1-process run, and either process answers every
//! read; Kafka partitions are read by the workers of both processes; a process whose peer
//! dies exits with a clear message instead of hanging.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::Engine;

/// Starts a 2-process cluster on loopback, each process `wearflow run ARGS --process I
/// --hosts FILE` in a directory of its own under `dir`.
fn start_cluster(dir: &Path, args: &[&str]) -> Vec<Engine> {
    // Two free loopback ports for timely's own connections.
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hosts = dir.join("hosts.txt");
    std::fs::write(
        &hosts,
        format!(
            "{}\n{}\n",
            a.local_addr().expect("addr"),
            b.local_addr().expect("addr")
        ),
    )
    .expect("hosts");
    drop((a, b));
    let hosts = hosts.to_str().expect("utf-8 path");
    (0..2)
        .map(|process| {
            let process = process.to_string();
            let mut full = vec!["run"];
            full.extend_from_slice(args);
            full.extend_from_slice(&["--process", &process, "--hosts", hosts]);
            Engine::start(&dir.join(format!("process-{process}")), &full)
        })
        .collect()
}

/// The broker: `$WEARFLOW_TEST_KAFKA`, or one started by `deploy/local/kafka-up`.
fn brokers() -> String {
    if let Ok(brokers) = std::env::var("WEARFLOW_TEST_KAFKA") {
        return brokers;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kafka-up");
    let output = Command::new(script)
        .output()
        .expect("run deploy/local/kafka-up");
    assert!(output.status.success(), "kafka-up failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The record count of an `engine finished: N records, ...` line.
fn records_of(line: &str) -> u64 {
    line.trim_start_matches("engine finished: ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a record count")
}

fn simulate(out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_wearflow"))
        .args([
            "simulate",
            "--seed",
            "11",
            "--machines",
            "3",
            "--duration",
            "1d",
        ])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("run wearflow simulate");
    assert!(status.success(), "simulate failed: {status}");
}

fn http_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn two_processes_publish_the_views_of_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    simulate(&input);
    let replay = input.to_str().expect("utf-8 path");
    let http = http_runtime();

    let mut single = Engine::start(
        &dir.path().join("single"),
        &["run", "--replay", replay, "--serve-after-end"],
    );
    single.wait_for("engine finished:", Duration::from_secs(300));
    let (single_as_of, single_views) = single.views(&http);
    single.stop();
    let sizes: BTreeMap<&String, usize> = single_views.iter().map(|(n, r)| (n, r.len())).collect();
    for view in [
        "tooth_wear",
        "machine_health",
        "inventory_balances",
        "data_quality",
    ] {
        assert!(
            sizes.get(&view.to_string()).copied().unwrap_or(0) > 0,
            "{view} has rows: {sizes:?}"
        );
    }

    let cluster = start_cluster(dir.path(), &["--replay", replay, "--serve-after-end"]);
    let mut answers = Vec::new();
    for mut engine in cluster {
        engine.wait_for("engine finished:", Duration::from_secs(300));
        answers.push((engine.views(&http), engine));
    }
    for (process, ((as_of, views), _)) in answers.iter().enumerate() {
        assert_eq!(*as_of, single_as_of, "process {process}: as_of");
        assert_eq!(
            views.keys().collect::<Vec<_>>(),
            single_views.keys().collect::<Vec<_>>(),
            "process {process}: the same views"
        );
        for (name, rows) in views {
            assert_eq!(
                rows, &single_views[name],
                "process {process}: view {name} differs from the 1-process run"
            );
        }
    }
    for (_, engine) in answers {
        engine.stop();
    }
}

#[test]
fn a_process_that_loses_its_peer_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A live simulator (no end) read by process 0.
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"simulator\"\nmachines = 2\nspeed = 600.0\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let mut engines = start_cluster(dir.path(), &["--config", config]);
    // Both serve once the cluster publishes.
    let http = http_runtime();
    let deadline = Instant::now() + Duration::from_secs(120);
    for engine in &engines {
        loop {
            let status = http.block_on(async {
                reqwest::get(format!("{}/ready", engine.base))
                    .await
                    .ok()
                    .map(|r| r.status().as_u16())
            });
            if status == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut survivor = engines.remove(0);
    let mut victim = engines.remove(0);
    victim.child.kill().expect("kill process 1");
    victim.child.wait().ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = survivor.child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            survivor.child.kill().ok();
            panic!("process 0 kept running 60 s after losing its peer");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(3),
        "exit status after losing the peer: {status}"
    );
}

#[test]
fn a_kafka_cluster_spreads_partitions_and_agrees_with_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    simulate(&input);
    let brokers = brokers();
    let prefix = format!("cluster-{}", std::process::id());
    let status = Command::new(env!("CARGO_BIN_EXE_wearflow"))
        .args([
            "simulate",
            "--seed",
            "11",
            "--machines",
            "3",
            "--duration",
            "1d",
        ])
        .args([
            "--kafka",
            &brokers,
            "--topic-prefix",
            &prefix,
            "--partitions",
            "4",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run wearflow simulate --kafka");
    assert!(status.success(), "simulate --kafka failed: {status}");
    let http = http_runtime();

    let replay = input.to_str().expect("utf-8 path");
    let mut single = Engine::start(
        &dir.path().join("single"),
        &["run", "--replay", replay, "--serve-after-end"],
    );
    let line = single.wait_for("engine finished:", Duration::from_secs(300));
    let total = records_of(&line);
    let (single_as_of, single_views) = single.views(&http);
    single.stop();

    let config = dir.path().join("kafka.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\nstart = \"earliest\"\n\
             stop_at_end = true\ngroup_id = \"{prefix}\"\n\
             [source.topics]\ntelemetry = \"{prefix}.telemetry\"\norders = \"{prefix}.orders\"\n\
             stock = \"{prefix}.stock\"\nassets = \"{prefix}.assets\"\n"
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let cluster = start_cluster(dir.path(), &["--config", config, "--serve-after-end"]);
    let mut read = Vec::new();
    for (process, mut engine) in cluster.into_iter().enumerate() {
        let line = engine.wait_for("engine finished:", Duration::from_secs(300));
        let records = records_of(&line);
        assert!(records > 0, "process {process} read partitions of its own");
        read.push(records);
        let (as_of, views) = engine.views(&http);
        assert_eq!(as_of, single_as_of, "process {process}: as_of");
        for (name, rows) in &single_views {
            assert_eq!(
                views.get(name),
                Some(rows),
                "process {process}: view {name} differs from the file replay"
            );
        }
        engine.stop();
    }
    assert_eq!(
        read.iter().sum::<u64>(),
        total,
        "every record read once: {read:?}"
    );
}
