//! `wearflow-bench cluster`: the cost of crossing process boundaries. The same simulated
//! history (JSONL files) is replayed by the real `wearflow` binary as 1 process × 2 workers
//! and as a 2-process cluster × 1 worker on loopback (the same number of cores); the figure
//! is the ratio of the two throughputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value as Json, json};

/// The `wearflow` binary next to this one (`cargo build --release -p wearflow`).
pub(crate) fn wearflow_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let binary = me.with_file_name("wearflow");
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p wearflow`",
            binary.display()
        );
    }
    Ok(binary)
}

/// One `wearflow run` process over the replay; `cluster` is `(process, hosts file)`.
fn spawn_run(
    binary: &Path,
    replay: &Path,
    data: &Path,
    workers: usize,
    cluster: Option<(usize, &Path)>,
) -> anyhow::Result<std::process::Child> {
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg("--replay")
        .arg(replay)
        .args(["--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
        .env("WEARFLOW_DATA_DIR", data)
        .env("WEARFLOW_WORKERS", workers.to_string())
        .env("RUST_LOG", "warn")
        // `run` needs a credential source; the benchmark makes no authenticated request.
        .env("WEARFLOW_AUTH_TOKENS", "bench:admin:wearflow-bench-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((process, hosts)) = cluster {
        command
            .arg("--process")
            .arg(process.to_string())
            .arg("--hosts")
            .arg(hosts);
    }
    command.spawn().context("start wearflow run")
}

/// Waits for a run and returns the record count of its `engine finished:` line.
fn records_of(child: std::process::Child) -> anyhow::Result<u64> {
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("wearflow run failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("engine finished: "))
        .context("no `engine finished` line")?;
    line.trim_start_matches("engine finished: ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("no record count")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs both layouts over `machines` × `hours` of simulated fleet; returns the figures.
pub fn run(machines: usize, hours: u64, dir: &Path) -> anyhow::Result<Json> {
    let binary = wearflow_binary()?;
    let replay = dir.join("input");
    let status = Command::new(&binary)
        .args([
            "simulate",
            "--seed",
            "1",
            "--machines",
            &machines.to_string(),
        ])
        .args(["--duration", &format!("{hours}h")])
        .arg("--out")
        .arg(&replay)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("simulate failed: {status}");
    }

    let started = Instant::now();
    let single = spawn_run(&binary, &replay, &dir.join("single"), 2, None)?;
    let single_records = records_of(single)?;
    let single_seconds = started.elapsed().as_secs_f64();

    let hosts = dir.join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port()?, free_port()?),
    )?;
    let started = Instant::now();
    let children = (0..2)
        .map(|p| {
            spawn_run(
                &binary,
                &replay,
                &dir.join(format!("process-{p}")),
                1,
                Some((p, &hosts)),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut cluster_records = 0;
    for child in children {
        cluster_records += records_of(child)?;
    }
    let cluster_seconds = started.elapsed().as_secs_f64();
    if cluster_records != single_records {
        bail!("the cluster read {cluster_records} records, one process {single_records}");
    }
    let single_rate = single_records as f64 / single_seconds;
    let cluster_rate = cluster_records as f64 / cluster_seconds;
    Ok(json!({
        "benchmark": "cluster",
        "machines": machines,
        "simulated_hours": hours,
        "events": single_records,
        "one_process_two_workers": { "seconds": single_seconds, "events_per_sec": single_rate },
        "two_processes_one_worker": { "seconds": cluster_seconds, "events_per_sec": cluster_rate },
        "cluster_over_single": cluster_rate / single_rate,
    }))
}
