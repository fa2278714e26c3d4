//! Configuration: one `wearflow.toml`, `WEARFLOW_*` environment overrides, typed and checked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wearflow_dataflows::DataflowConfig;
use wearflow_operators::Time;
use wearflow_operators::time::ceil_to;
use wearflow_sinks::archive::ArchiveConfig;
use wearflow_sinks::kafka::KafkaSinkConfig;
use wearflow_sources::KafkaSourceConfig;

use crate::backpressure::{BackpressureConfig, parse_size};
use crate::checkpoint::CheckpointConfig;

/// The whole engine configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Timely worker threads.
    pub workers: usize,
    /// Where the engine writes files (dead letters).
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_addr: String,
    /// The event-time clock.
    pub clock: ClockConfig,
    /// The input source.
    pub source: SourceConfig,
    /// Thresholds of the domain dataflows.
    pub dataflow: DataflowConfig,
    /// Kafka outputs: view changelogs, alerts, dead letters (none = no Kafka output).
    pub kafka_sink: Option<KafkaSinkConfig>,
    /// The SQL layer: Postgres listener and limits.
    pub sql: SqlConfig,
    /// The Parquet archive of raw events and view snapshots (the SQL history tables).
    pub archive: ArchiveConfig,
    /// Checkpoints and the write-ahead log of Kafka-fed runs (`[checkpoint]`).
    pub checkpoint: CheckpointConfig,
    /// Checkpoints on demand (runtime wiring, not configuration).
    #[serde(skip)]
    pub checkpoint_trigger: crate::checkpoint::Trigger,
    /// When readers pause: the memory budget and the Kafka producer's queue limit.
    pub backpressure: BackpressureConfig,
    /// A timely cluster of several processes (none = this process alone).
    pub cluster: Option<ClusterConfig>,
    /// The failure model directory (`wearflow train --out`), loaded at start and on
    /// `POST /models/reload`; none = predictions from physics (hours to the wear limit).
    pub model_dir: Option<PathBuf>,
    /// The loaded model (runtime wiring, not configuration).
    #[serde(skip)]
    pub models: wearflow_dataflows::model::ModelSlot,
    /// Who may use the HTTP API and the Postgres server, and the audit log.
    pub auth: AuthConfig,
    /// TLS for the HTTP API and the Postgres server (none: plain TCP).
    pub tls: Option<TlsConfig>,
}

/// TLS (`[tls]`, or `WEARFLOW_TLS_CERT_FILE` and `WEARFLOW_TLS_KEY_FILE`): HTTP is served as
/// HTTPS only, and Postgres clients must negotiate TLS (`sslmode=require` or stricter).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A secret from the environment: kept out of `Debug` output, logs and config files.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Authentication and audit (`[auth]`). `wearflow run` refuses to start without at least one
/// credential source; only `wearflow demo` runs open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static tokens: a TOML file of `[[token]]` entries with `user`, `role` and either
    /// `token` or its hex `sha256` (`WEARFLOW_AUTH_TOKENS_FILE`).
    pub tokens_file: Option<PathBuf>,
    /// Static tokens from `WEARFLOW_AUTH_TOKENS`: `user:role:token`, comma-separated.
    #[serde(skip)]
    pub inline_tokens: Option<Secret>,
    /// JWT verification (`[auth.jwt]`; `WEARFLOW_AUTH_JWT_SECRET` alone enables HS256).
    pub jwt: Option<JwtConfig>,
    /// The append-only audit log (default `<data_dir>/audit.jsonl`).
    pub audit_log: Option<PathBuf>,
}

/// How bearer JWTs are verified. The subject (`sub`) is the user, `role_claim` the role;
/// `exp` is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `ES256`, `ES384`, `EdDSA`.
    pub algorithm: String,
    /// The HMAC secret for `HS*`, in a file (or `WEARFLOW_AUTH_JWT_SECRET`).
    pub secret_file: Option<PathBuf>,
    /// The HMAC secret from `WEARFLOW_AUTH_JWT_SECRET`.
    #[serde(skip)]
    pub secret: Option<Secret>,
    /// The PEM public key for `RS*`, `PS*`, `ES*` and `EdDSA`.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// The claim holding the role name (or a list of names; the most allowed wins).
    pub role_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: "HS256".to_string(),
            secret_file: None,
            secret: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            role_claim: "role".to_string(),
            leeway_s: 30,
        }
    }
}

/// Cluster mode (`[cluster]`, or `wearflow run --process I --hosts FILE`): this process is
/// process `process` of a static timely cluster whose processes listen on `hosts`, in order;
/// every process runs `workers` workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's index in `hosts`.
    pub process: usize,
    /// `host:port` of every process, in process order (timely's own connections).
    pub hosts: Vec<String>,
}

impl ClusterConfig {
    /// Reads a hosts file: one `host:port` per line; blank lines and `#` comments skipped.
    pub fn from_hosts_file(process: usize, path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let hosts = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let cluster = ClusterConfig { process, hosts };
        cluster.check()?;
        Ok(cluster)
    }

    /// The process index must name one of the hosts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.hosts.is_empty() || self.process >= self.hosts.len() {
            return Err(ConfigError::Env {
                name: "cluster".into(),
                message: format!(
                    "process {} is not one of the {} hosts",
                    self.process,
                    self.hosts.len()
                ),
            });
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 2,
            data_dir: PathBuf::from("data"),
            http_addr: "127.0.0.1:8080".to_string(),
            clock: ClockConfig::default(),
            source: SourceConfig::default(),
            dataflow: DataflowConfig::default(),
            kafka_sink: None,
            sql: SqlConfig::default(),
            archive: ArchiveConfig::default(),
            checkpoint: CheckpointConfig::default(),
            checkpoint_trigger: Default::default(),
            backpressure: BackpressureConfig::default(),
            cluster: None,
            model_dir: None,
            models: Default::default(),
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

/// The SQL layer (`[sql]`): where the Postgres protocol listens and what a statement may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Postgres wire-protocol listen address (`WEARFLOW_PG_ADDR`); port 0 picks a free port.
    pub pg_addr: String,
    /// The longest a statement may run, planning included, in ms.
    pub statement_timeout_ms: u64,
    /// Memory all running statements may use together for sorts, joins and aggregates.
    pub memory_limit_bytes: usize,
    /// Rows `POST /sql` returns at most; more are cut off and the answer says `truncated`.
    pub http_row_limit: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            pg_addr: "127.0.0.1:6875".to_string(),
            statement_timeout_ms: 30_000,
            memory_limit_bytes: 512 * 1024 * 1024,
            http_row_limit: 10_000,
        }
    }
}

/// The event-time clock of ARCHITECTURE.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// How far behind the slowest partition's newest event the frontier stays, in ms.
    pub allowed_lateness_ms: u64,
    /// A partition silent this long (wall clock) stops holding the frontier back, in ms.
    pub idle_timeout_ms: u64,
    /// Logical times are multiples of this, in ms (fewer distinct times, bigger batches).
    pub resolution_ms: u64,
    /// Records per ingest tick at most.
    pub tick_records: usize,
    /// Batching of a tick's records, in ms (0 = off): each record read in one tick is
    /// stamped at its stamp rounded up to a multiple of this, but no later than the tick's
    /// newest stamp. A reader catching up (replay, backlog) then feeds few distinct times,
    /// which differential processes far faster; a reader that keeps up reads small ticks and
    /// is barely affected. Views at multiples of this and at the end of input are those of an
    /// unbatched run. Must be a multiple of `resolution_ms` and divide
    /// `dataflow.window_granularity_ms`.
    pub batch_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            allowed_lateness_ms: 0,
            idle_timeout_ms: 5_000,
            resolution_ms: 100,
            tick_records: 50_000,
            batch_ms: 60_000,
        }
    }
}

impl ClockConfig {
    /// `batch_ms` keeps views at its multiples equal to those of an unbatched run only if
    /// stamps round to it exactly and granules are made of whole batches.
    pub fn check(&self, window_granularity_ms: u64) -> Result<(), ConfigError> {
        let batch = self.batch_ms;
        let resolution = self.resolution_ms.max(1);
        if batch > 0
            && (!batch.is_multiple_of(resolution)
                || window_granularity_ms == 0
                || !window_granularity_ms.is_multiple_of(batch))
        {
            return Err(ConfigError::Invalid {
                field: "clock.batch_ms".into(),
                message: format!(
                    "must be 0 or a multiple of clock.resolution_ms ({resolution}) that divides \
                     dataflow.window_granularity_ms ({window_granularity_ms}); got {batch}"
                ),
            });
        }
        Ok(())
    }

    /// The stamp of a record stamped `stamp` in a tick whose newest stamp is `tick_max`.
    pub fn batched(&self, stamp: Time, tick_max: Time) -> Time {
        // `ceil_to` leaves a stamp as it is for a batch of 0 (off).
        ceil_to(stamp, self.batch_ms).min(tick_max).max(stamp)
    }
}

/// Where events come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The embedded fleet simulator.
    Simulator {
        /// Random seed.
        #[serde(default = "default_seed")]
        seed: u64,
        /// Machines in the fleet.
        #[serde(default = "default_machines")]
        machines: usize,
        /// Simulated seconds per wall-clock second; 0 = as fast as possible.
        #[serde(default = "default_speed")]
        speed: f64,
        /// Stop after this much simulated time, in ms (none = run until stopped).
        #[serde(default)]
        duration_ms: Option<u64>,
        /// Simulated start time, epoch ms (none = now for real-time runs, 2026-01-01 otherwise).
        #[serde(default)]
        start_ms: Option<u64>,
    },
    /// JSONL files as written by `wearflow simulate --out`.
    Files {
        /// The directory holding `<stream>.jsonl`.
        dir: PathBuf,
        /// Simulated seconds per wall-clock second; 0 = as fast as possible.
        #[serde(default)]
        speed: f64,
    },
    /// The stream topics of a Kafka cluster.
    Kafka(KafkaSourceConfig),
}

fn default_seed() -> u64 {
    42
}
fn default_machines() -> usize {
    50
}
fn default_speed() -> f64 {
    1.0
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Simulator {
            seed: default_seed(),
            machines: default_machines(),
            speed: default_speed(),
            duration_ms: None,
            start_ms: None,
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Settings that are each valid but do not fit together.
    #[error("invalid config: {field} {message}")]
    Invalid {
        /// The setting at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is not valid.
    #[error("invalid environment variable {name}: {message}")]
    Env {
        /// Variable.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads the file (if given), then applies `WEARFLOW_*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.message().to_string(),
                })?
            }
            None => Config::default(),
        };
        for (name, value) in env {
            let bad = |message: String| ConfigError::Env {
                name: name.clone(),
                message,
            };
            match name.as_str() {
                "WEARFLOW_WORKERS" => {
                    config.workers = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "WEARFLOW_HTTP_ADDR" => config.http_addr = value,
                "WEARFLOW_DATA_DIR" => config.data_dir = PathBuf::from(value),
                "WEARFLOW_KAFKA_BROKERS" => {
                    if let SourceConfig::Kafka(kafka) = &mut config.source {
                        kafka.brokers = value.clone();
                    }
                    if let Some(sink) = &mut config.kafka_sink {
                        sink.brokers = value;
                    }
                }
                "WEARFLOW_PG_ADDR" => config.sql.pg_addr = value,
                "WEARFLOW_MEMORY_BUDGET" => {
                    config.backpressure.memory_budget_bytes = parse_size(&value).map_err(bad)?
                }
                "WEARFLOW_CHECKPOINT_INTERVAL_MS" => {
                    config.checkpoint.interval_ms =
                        value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "WEARFLOW_AUTH_TOKENS" => config.auth.inline_tokens = Some(Secret(value)),
                "WEARFLOW_AUTH_TOKENS_FILE" => config.auth.tokens_file = Some(PathBuf::from(value)),
                "WEARFLOW_AUTH_JWT_SECRET" => {
                    config
                        .auth
                        .jwt
                        .get_or_insert_with(JwtConfig::default)
                        .secret = Some(Secret(value))
                }
                "WEARFLOW_AUTH_JWT_PUBLIC_KEY_FILE" => {
                    config
                        .auth
                        .jwt
                        .get_or_insert_with(JwtConfig::default)
                        .public_key_file = Some(PathBuf::from(value))
                }
                "WEARFLOW_AUTH_AUDIT_LOG" => config.auth.audit_log = Some(PathBuf::from(value)),
                "WEARFLOW_TLS_CERT_FILE" => {
                    config.tls.get_or_insert_with(TlsConfig::default).cert_file =
                        PathBuf::from(value)
                }
                "WEARFLOW_TLS_KEY_FILE" => {
                    config.tls.get_or_insert_with(TlsConfig::default).key_file =
                        PathBuf::from(value)
                }
                _ => {}
            }
        }
        if let Some(cluster) = &config.cluster {
            cluster.check()?;
        }
        if let Some(tls) = &config.tls
            && (tls.cert_file.as_os_str().is_empty() || tls.key_file.as_os_str().is_empty())
        {
            return Err(ConfigError::Env {
                name: "tls".into(),
                message: "needs both cert_file and key_file (WEARFLOW_TLS_CERT_FILE, WEARFLOW_TLS_KEY_FILE)".into(),
            });
        }
        config.clock.check(config.dataflow.window_granularity_ms)?;
        if config.workers == 0 {
            return Err(ConfigError::Env {
                name: "workers".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_must_fit_the_resolution_and_the_granules() {
        let clock = |batch_ms, resolution_ms| ClockConfig {
            batch_ms,
            resolution_ms,
            ..ClockConfig::default()
        };
        assert!(clock(60_000, 100).check(60_000).is_ok());
        assert!(clock(20_000, 100).check(60_000).is_ok());
        assert!(clock(0, 100).check(60_000).is_ok());
        let err = clock(45_000, 100)
            .check(60_000)
            .expect_err("45 s does not divide 60 s");
        assert!(err.to_string().contains("clock.batch_ms"), "{err}");
        assert!(
            clock(60_050, 100).check(60_050).is_err(),
            "not a multiple of 100 ms"
        );
        // Stamps round up to the batch, but never past the tick's newest stamp or below their own.
        let c = clock(60_000, 100);
        assert_eq!(c.batched(1_000, 200_000), 60_000);
        assert_eq!(c.batched(1_000, 30_000), 30_000);
        assert_eq!(c.batched(60_000, 200_000), 60_000);
        assert_eq!(c.batched(60_100, 200_000), 120_000);
        assert_eq!(clock(0, 100).batched(1_000, 200_000), 1_000);
    }

    #[test]
    fn loads_file_and_env_overrides() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wearflow.toml");
        std::fs::write(
            &path,
            "workers = 3\n[clock]\nallowed_lateness_ms = 500\n[source]\nkind = \"files\"\ndir = \"x\"\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&path),
            [
                ("WEARFLOW_WORKERS".to_string(), "4".to_string()),
                ("WEARFLOW_PG_ADDR".to_string(), "0.0.0.0:5433".to_string()),
            ],
        )
        .expect("valid config");
        assert_eq!(config.workers, 4);
        assert_eq!(config.sql.pg_addr, "0.0.0.0:5433");
        assert_eq!(config.sql.http_row_limit, 10_000);
        assert_eq!(config.clock.allowed_lateness_ms, 500);
        assert_eq!(
            config.source,
            SourceConfig::Files {
                dir: "x".into(),
                speed: 0.0
            }
        );
    }

    #[test]
    fn kafka_source_and_sink_sections() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wearflow.toml");
        std::fs::write(
            &path,
            "[source]\nkind = \"kafka\"\nbrokers = \"h:1\"\nstart = \"latest\"\n\
             [source.topics]\ntelemetry = \"t\"\n[source.options]\n\"fetch.min.bytes\" = \"1\"\n\
             [kafka_sink]\nviews = [\"tooth_wear\"]\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&path),
            [("WEARFLOW_KAFKA_BROKERS".to_string(), "k:9".to_string())],
        )
        .expect("valid config");
        let SourceConfig::Kafka(kafka) = &config.source else {
            panic!("kafka source expected: {:?}", config.source);
        };
        assert_eq!(kafka.brokers, "k:9");
        assert_eq!(kafka.topics.telemetry, "t");
        assert_eq!(kafka.topics.orders, "wearflow.orders");
        assert_eq!(kafka.start, wearflow_sources::StartPosition::Latest);
        assert_eq!(
            kafka.options.get("fetch.min.bytes").map(String::as_str),
            Some("1")
        );
        let sink = config.kafka_sink.as_ref().expect("sink section");
        assert_eq!(sink.views, vec!["tooth_wear".to_string()]);
        assert_eq!(sink.brokers, "k:9");
        std::fs::write(&path, "[source]\nkind = \"kafka\"\nbrokerz = \"x\"\n").expect("write");
        assert!(
            Config::load(Some(&path), []).is_err(),
            "typos in the kafka section fail"
        );
    }

    #[test]
    fn the_shipped_kafka_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kafka.toml");
        let config = Config::load(Some(&path), []).expect("deploy/local/kafka.toml is valid");
        assert!(matches!(config.source, SourceConfig::Kafka(_)));
        assert!(config.kafka_sink.is_some());
    }

    #[test]
    fn archive_section() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wearflow.toml");
        let config = Config::load(None, []).expect("defaults");
        assert!(config.archive.enabled, "the archive is on by default");
        assert_eq!(
            config.archive.dir_in(&config.data_dir),
            PathBuf::from("data/archive")
        );
        std::fs::write(
            &path,
            "[archive]\nroll_bytes = 1000\nviews = [\"tooth_wear\"]\ndir = \"/tmp/a\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path), []).expect("valid config");
        assert_eq!(config.archive.roll_bytes, 1000);
        assert_eq!(config.archive.views, vec!["tooth_wear".to_string()]);
        assert_eq!(
            config.archive.dir_in(Path::new("x")),
            PathBuf::from("/tmp/a")
        );
        assert_eq!(config.archive.roll_interval_ms, 60_000);
        std::fs::write(&path, "[archive]\nroll_byte = 1\n").expect("write");
        assert!(Config::load(Some(&path), []).is_err(), "typos fail");
    }

    #[test]
    fn rejects_unknown_fields() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wearflow.toml");
        std::fs::write(&path, "wrokers = 3\n").expect("write");
        let err = Config::load(Some(&path), []).expect_err("typo must fail");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
