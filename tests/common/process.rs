//! A `wearflow` binary started by an integration test: its printed lines, its HTTP base,
//! every view's rows over HTTP; killed when the test ends, also when it fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// The admin token every engine started here accepts (user `test`; `wearflow run` needs one).
pub const ADMIN_TOKEN: &str = "wearflow-test-admin-token";
/// The user of [`ADMIN_TOKEN`].
pub const ADMIN_USER: &str = "test";

/// An HTTP client that sends [`ADMIN_TOKEN`].
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// A running `wearflow` process and the lines it printed so far.
pub struct Engine {
    pub child: Child,
    lines: Receiver<String>,
    /// `http://host:port`.
    pub base: String,
}

impl Drop for Engine {
    /// A failing test leaves no engine behind.
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Engine {
    /// Starts `wearflow ARGS` (a subcommand and its options, plus free HTTP and Postgres
    /// ports) with 2 workers in `dir`, its working and data directory; returns once it serves.
    pub fn start(dir: &Path, args: &[&str]) -> Engine {
        Engine::start_with(dir, args, Stdio::null())
    }

    /// [`Engine::start`] with its standard error going to `stderr`.
    pub fn start_with(dir: &Path, args: &[&str], stderr: Stdio) -> Engine {
        std::fs::create_dir_all(dir).expect("engine directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wearflow"))
            .args(args)
            .args(["--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
            .current_dir(dir)
            .env("WEARFLOW_DATA_DIR", dir)
            .env("WEARFLOW_WORKERS", "2")
            .env(
                "WEARFLOW_AUTH_TOKENS",
                format!("{ADMIN_USER}:admin:{ADMIN_TOKEN}"),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start wearflow");
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

    /// Waits for a printed line starting (after indentation) with `prefix`; returns it trimmed.
    pub fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim_start().starts_with(prefix) => {
                    return line.trim().to_string();
                }
                Ok(_) => {}
                Err(_) => {
                    self.child.kill().ok();
                    panic!("no line starting with `{prefix}` within {within:?}");
                }
            }
        }
    }

    /// Every view's rows (all pages) and the snapshot's `as_of`.
    pub fn views(&self, http: &tokio::runtime::Runtime) -> (i64, BTreeMap<String, Vec<String>>) {
        http.block_on(async {
            let client = client();
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

    pub fn stop(mut self) {
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
