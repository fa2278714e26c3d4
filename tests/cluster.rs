//! Cluster mode with real OS processes on loopback: a 2-process timely cluster over the same
//! input publishes exactly the views of a 1-process run, and either process answers every
//! read; Kafka partitions are read by the workers of both processes; a process whose peer
//! dies exits with a clear message instead of hanging.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// A running `wearflow` process and the lines it printed so far.
struct Engine {
    child: Child,
    lines: Receiver<String>,
    base: String,
}

impl Drop for Engine {
    /// A failing test leaves no engine behind.
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Engine {
    /// Starts `wearflow run` with `args` (plus free HTTP and Postgres ports) in `data`.
    fn start(data: &Path, args: &[&str]) -> Engine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wearflow"))
            .arg("run")
            .args(args)
            .args(["--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
            .env("WEARFLOW_DATA_DIR", data)
            .env("WEARFLOW_WORKERS", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wearflow run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut engine = Engine {
            child,
            lines,
            base: String::new(),
        };
        let line = engine.wait_for("wearflow is serving on ", Duration::from_secs(60));
        engine.base = line
            .trim_start_matches("wearflow is serving on ")
            .trim()
            .to_string();
        engine
    }

    /// Waits for a printed line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => {
                    self.child.kill().ok();
                    panic!("no line starting with `{prefix}` within {within:?}");
                }
            }
        }
    }

    /// Every view's rows (all pages) and the snapshot's `as_of`.
    fn views(&self, http: &tokio::runtime::Runtime) -> (i64, BTreeMap<String, Vec<String>>) {
        http.block_on(async {
            let client = reqwest::Client::new();
            let list: Json = client
                .get(format!("{}/views", self.base))
                .send()
                .await
                .expect("GET /views")
                .json()
                .await
                .expect("views json");
            let as_of = list["as_of"].as_i64().expect("as_of");
            let mut views = BTreeMap::new();
            for view in list["views"].as_array().expect("views") {
                if view["kind"] == "query" {
                    continue;
                }
                let name = view["name"].as_str().expect("name").to_string();
                let mut rows = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut url = format!("{}/views/{name}?limit=10000", self.base);
                    if let Some(c) = &cursor {
                        url.push_str(&format!("&cursor={c}"));
                    }
                    let page: Json = client
                        .get(url)
                        .send()
                        .await
                        .expect("GET a view")
                        .json()
                        .await
                        .expect("view json");
                    assert_eq!(page["as_of"].as_i64(), Some(as_of), "one snapshot");
                    for row in page["rows"].as_array().expect("rows") {
                        rows.push(row.to_string());
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_string()),
                        None => break,
                    }
                }
                rows.sort();
                views.insert(name, rows);
            }
            (as_of, views)
        })
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Two free loopback ports for timely's own connections.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    )
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
        &["--replay", replay, "--serve-after-end"],
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

    let (p0, p1) = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{p0}\n127.0.0.1:{p1}\n")).expect("hosts");
    let hosts = hosts.to_str().expect("utf-8 path");
    let cluster: Vec<Engine> = (0..2)
        .map(|process| {
            let process = process.to_string();
            Engine::start(
                &dir.path().join(format!("process-{process}")),
                &[
                    "--replay",
                    replay,
                    "--serve-after-end",
                    "--process",
                    &process,
                    "--hosts",
                    hosts,
                ],
            )
        })
        .collect();
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
    let (p0, p1) = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{p0}\n127.0.0.1:{p1}\n")).expect("hosts");
    let hosts = hosts.to_str().expect("utf-8 path");
    // A live simulator (no end) read by process 0.
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"simulator\"\nmachines = 2\nspeed = 600.0\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let mut engines: Vec<Engine> = (0..2)
        .map(|process| {
            let process = process.to_string();
            Engine::start(
                &dir.path().join(format!("process-{process}")),
                &["--config", config, "--process", &process, "--hosts", hosts],
            )
        })
        .collect();
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
        &["--replay", replay, "--serve-after-end"],
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
    let (p0, p1) = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{p0}\n127.0.0.1:{p1}\n")).expect("hosts");
    let hosts = hosts.to_str().expect("utf-8 path");
    let cluster: Vec<Engine> = (0..2)
        .map(|process| {
            let process = process.to_string();
            Engine::start(
                &dir.path().join(format!("process-{process}")),
                &[
                    "--config",
                    config,
                    "--serve-after-end",
                    "--process",
                    &process,
                    "--hosts",
                    hosts,
                ],
            )
        })
        .collect();
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
