//! Wires the Parquet archive into the process: which tables it holds (the event streams from
//! `wearflow-sources`, the configured views from the serving store), its metrics, and the
//! history tables the SQL layer reads from the same directory.

use std::path::PathBuf;
use std::sync::Arc;

use wearflow_sinks::ServingStore;
use wearflow_sinks::archive::{Archive, ArchiveTable, Partitioning};
use wearflow_sources::StreamKind;
use wearflow_sources::archive::{TIME_COLUMN, archive_columns};
use wearflow_sql::HistoryConfig;

use crate::config::Config;
use crate::metrics::Metrics;

/// The archived event streams: telemetry by date and hour (it is by far the biggest), orders
/// and stock by date.
pub fn event_tables() -> Vec<ArchiveTable> {
    [
        (StreamKind::Telemetry, Partitioning::DateHour),
        (StreamKind::Orders, Partitioning::Date),
        (StreamKind::Stock, Partitioning::Date),
    ]
    .into_iter()
    .filter_map(|(stream, partitioning)| {
        let columns = archive_columns(stream)?;
        // The columns are constants of `wearflow-sources`, all with a timestamp `ts`.
        ArchiveTable::appended(stream.name(), columns, TIME_COLUMN, partitioning).ok()
    })
    .collect()
}

/// Every archive table: the event streams, then a snapshot table per configured view (a view
/// named like an event stream is left out rather than mixed into its directory).
pub fn tables(config: &Config, store: &ServingStore) -> Vec<ArchiveTable> {
    let mut tables = event_tables();
    for view in config.archive.view_tables(store.schemas()) {
        if tables.iter().any(|t| t.name == view.name) {
            tracing::warn!(view = %view.name, "view not archived: its name is an event stream's");
            continue;
        }
        tables.push(view);
    }
    tables
}

/// The archive directory of this configuration.
pub fn dir(config: &Config) -> PathBuf {
    config.archive.dir_in(&config.data_dir)
}

/// The history tables for the SQL layer (none when the archive is off).
pub fn history(config: &Config, store: &ServingStore) -> Option<HistoryConfig> {
    config.archive.enabled.then(|| HistoryConfig {
        dir: dir(config),
        tables: tables(config, store),
    })
}

/// Starts the archive writer (none when the archive is off); every finished file is counted
/// in `wearflow_archive_{files,rows,bytes}_total{table}`.
pub fn start(
    config: &Config,
    store: &Arc<ServingStore>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Archive>, wearflow_sinks::Error> {
    if !config.archive.enabled {
        return Ok(None);
    }
    let metrics = Arc::clone(metrics);
    let archive = Archive::start(
        &dir(config),
        &config.archive,
        tables(config, store),
        Some(Arc::clone(store)),
        Box::new(move |file| {
            let table = [file.table.as_str()];
            metrics.archive_files.with_label_values(&table).inc();
            metrics
                .archive_rows
                .with_label_values(&table)
                .inc_by(file.rows);
            metrics
                .archive_bytes
                .with_label_values(&table)
                .inc_by(file.bytes);
        }),
    )?;
    Ok(Some(archive))
}
