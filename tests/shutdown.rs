//! Graceful shutdown of the real binary: SIGTERM (what Kubernetes and `docker stop` send)
//! and SIGINT stop the sources, drain the dataflow and exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `wearflow demo` on free ports in a scratch directory; returns it and its HTTP base.
fn start_demo(dir: &std::path::Path) -> (Child, String, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wearflow"))
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
            "--machines",
            "5",
            "--speed",
            "600",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wearflow demo");
    let stdout = child.stdout.take().expect("stdout");
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("wearflow is serving on ") {
                address_tx.send(rest.trim().to_string()).ok();
            }
            seen.push(line);
        }
        seen
    });
    let base = address_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo prints its HTTP address");
    (child, base, lines)
}

fn ready_status(runtime: &tokio::runtime::Runtime, base: &str) -> Option<u16> {
    runtime.block_on(async {
        reqwest::get(format!("{base}/ready"))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    })
}

/// `wearflow_simulator_started_seconds` from `/metrics`.
fn simulator_started(runtime: &tokio::runtime::Runtime, base: &str) -> f64 {
    let text = runtime.block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    });
    text.lines()
        .find_map(|l| l.strip_prefix("wearflow_simulator_started_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the gauge is exported")
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let launched = unix_now();
    let (mut child, base, lines) = start_demo(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_status(&runtime, &base) != Some(200) {
        assert!(Instant::now() < deadline, "the demo never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The paced simulator's start, which observers time arrivals from, is this run's.
    let started = simulator_started(&runtime, &base);
    assert!(
        started >= launched - 1.0 && started <= unix_now(),
        "simulator started at {started}, launched at {launched}"
    );
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("wearflow did not stop within 60 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIG{signal}: {status}");
    let printed = lines.join().expect("stdout reader");
    assert!(
        printed.iter().any(|l| l.starts_with("engine finished:")),
        "the engine drained and reported: {printed:?}"
    );
}

#[test]
fn sigterm_stops_cleanly() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_cleanly() {
    stops_cleanly_on("INT");
}
