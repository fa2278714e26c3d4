//! The Parquet archive: raw events and periodic snapshots of chosen views, as Hive-partitioned
//! Parquet files that the SQL layer reads as history tables.
//!
//! ```text
//!  workers ──ArchiveInput::append(table, rows)──► bounded channel ──► writer thread
//!  ServingStore ──every view_snapshot_interval_ms (as_of changed)──────┘   │
//!      <dir>/<table>/date=YYYY-MM-DD[/hour=H]/.part-<run>-<seq>.parquet.tmp │ rows, row groups
//!      roll (size or age) or clean end: footer, fsync, rename to part-<run>-<seq>.parquet, fsync dir
//! ```
//!
//! Readers only ever see whole files: a file is written under a hidden temporary name (a
//! leading `.` and a `.tmp` suffix, which neither DataFusion's listing nor a `*.parquet` glob
//! match) and renamed once its footer is on disk. Temporary files left by a crash are deleted
//! at the next start. The ingest path only hands rows to a channel; when the writer falls
//! behind, the bounded channel holds the workers back rather than dropping history.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{ArrayRef, TimestampMillisecondArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use wearflow_operators::{Column, ColumnType, Row, Time, Value, ViewKind, ViewSchema};

use crate::Error;
use crate::ServingStore;
use crate::arrow_rows::{TIME_ZONE, column_array, columns_schema};

/// The column that stamps each row of a view snapshot with the snapshot's logical time.
pub const AS_OF_COLUMN: &str = "as_of";
/// The suffix of history table names: `telemetry` is archived as `telemetry_history`.
pub const HISTORY_SUFFIX: &str = "_history";
/// Messages the channel to the writer holds (each is one tick's rows of one table).
const CHANNEL_CAPACITY: usize = 256;
/// Rows per Parquet row group (bounds the writer's memory per open file).
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per batch when a view snapshot is written.
const SNAPSHOT_CHUNK_ROWS: usize = 64 * 1024;
/// How often the writer looks at its open files when no rows arrive.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// The archive section of the configuration (`[archive]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Whether raw events and view snapshots are archived at all.
    pub enabled: bool,
    /// The archive directory (none: `<data_dir>/archive`).
    pub dir: Option<PathBuf>,
    /// A file is closed and a new one started once it holds about this many bytes.
    pub roll_bytes: u64,
    /// A file is closed (and becomes visible to queries) at the latest this long after it was
    /// opened, in ms.
    pub roll_interval_ms: u64,
    /// How often the chosen views are snapshotted into the archive, in ms (wall clock); a
    /// snapshot is skipped when nothing was published since the last one.
    pub view_snapshot_interval_ms: u64,
    /// Keyed views to snapshot; `"*"` = every keyed view. Append views are not snapshotted.
    pub views: Vec<String>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            dir: None,
            roll_bytes: 64 * 1024 * 1024,
            roll_interval_ms: 60_000,
            view_snapshot_interval_ms: 60_000,
            views: vec!["*".to_string()],
        }
    }
}

impl ArchiveConfig {
    /// The archive directory for this data directory.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("archive"))
    }

    /// The snapshot tables of the configured views among `schemas`, in registry order.
    pub fn view_tables(&self, schemas: &[Arc<ViewSchema>]) -> Vec<ArchiveTable> {
        schemas
            .iter()
            .filter(|s| s.kind == ViewKind::Keyed)
            .filter(|s| self.views.iter().any(|v| v == "*" || *v == s.name))
            .map(|s| ArchiveTable::view_snapshots(s))
            .collect()
    }
}

/// How a table's files are split into directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// `date=YYYY-MM-DD` (UTC) of the time column.
    Date,
    /// `date=YYYY-MM-DD/hour=H` (UTC, hour 0..23 without a leading zero).
    DateHour,
}

impl Partitioning {
    /// The partition columns, outermost first.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Partitioning::Date => &["date"],
            Partitioning::DateHour => &["date", "hour"],
        }
    }
}

/// What an archive table holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// Rows handed in through [`ArchiveInput::append`] (raw events).
    Appended,
    /// Snapshots of this view of the serving store.
    View(String),
}

/// One archived table: its columns (the partition columns come from the directories), the
/// time column that chooses the partition, and where its rows come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveTable {
    /// The table's directory under the archive; the SQL table is `<name>_history`.
    pub name: String,
    /// The columns stored in the files.
    pub columns: Vec<Column>,
    /// The index of the timestamp column the partition is taken from.
    pub time_column: usize,
    /// How files are split into directories.
    pub partitioning: Partitioning,
    /// Appended rows or view snapshots.
    pub source: TableSource,
}

impl ArchiveTable {
    /// A table of appended rows, partitioned by the column named `time_column` (which must be
    /// a timestamp column).
    pub fn appended(
        name: &str,
        columns: Vec<Column>,
        time_column: &str,
        partitioning: Partitioning,
    ) -> Result<ArchiveTable, Error> {
        let index = columns
            .iter()
            .position(|c| c.name == time_column && c.ty == ColumnType::TimestampMs)
            .ok_or_else(|| {
                Error::Config(format!(
                    "archive table {name} has no timestamp column {time_column}"
                ))
            })?;
        Ok(ArchiveTable {
            name: name.to_string(),
            columns,
            time_column: index,
            partitioning,
            source: TableSource::Appended,
        })
    }

    /// The snapshot table of a view: `as_of` first, then the view's columns, by date.
    pub fn view_snapshots(view: &ViewSchema) -> ArchiveTable {
        let mut columns = vec![Column::required(AS_OF_COLUMN, ColumnType::TimestampMs)];
        columns.extend(view.columns.iter().cloned());
        ArchiveTable {
            name: view.name.clone(),
            columns,
            time_column: 0,
            partitioning: Partitioning::Date,
            source: TableSource::View(view.name.clone()),
        }
    }

    /// The SQL name of the table.
    pub fn sql_name(&self) -> String {
        format!("{}{HISTORY_SUFFIX}", self.name)
    }

    /// The table's directory under the archive directory `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.name)
    }

    /// The Arrow schema of the files (without the partition columns).
    pub fn arrow_schema(&self) -> SchemaRef {
        columns_schema(&self.columns)
    }
}

/// A file that became visible.
#[derive(Clone, Debug)]
pub struct FileWritten {
    /// The archive table.
    pub table: String,
    /// The file.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

/// Called by the writer thread for every file it makes visible (metrics, tests).
pub type FileObserver = Box<dyn Fn(&FileWritten) + Send>;

enum Message {
    Rows {
        table: usize,
        writer: u32,
        rows: Vec<Row>,
    },
    Flush {
        done: Sender<()>,
    },
    Cut {
        writer: u32,
        done: Sender<ArchiveMark>,
    },
    Stop,
}

/// The writer of view snapshot files (event rows name the worker that handed them in).
const VIEWS_WRITER: u32 = u32::MAX;

/// Where one writer's files stood at a checkpoint: every row it handed in before the cut is in
/// a file numbered below `next` of run `run`; every later file is `(run, next)` or after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArchiveMark {
    /// The writer run (its start time in ms) that made the cut.
    pub run: u64,
    /// The first file sequence number after the cut.
    pub next: u64,
}

impl ArchiveMark {
    /// Whether file `(run, sequence)` was started after this mark.
    fn precedes(&self, run: u64, sequence: u64) -> bool {
        (run, sequence) >= (self.run, self.next)
    }
}

/// The running archive: a writer thread fed by [`ArchiveInput`]s.
pub struct Archive {
    sender: Sender<Message>,
    thread: Option<JoinHandle<()>>,
    tables: Arc<[ArchiveTable]>,
    dir: PathBuf,
}

/// A handle the workers hand rows to; cheap to clone.
#[derive(Clone)]
pub struct ArchiveInput {
    sender: Sender<Message>,
    writer: u32,
}

impl ArchiveInput {
    /// Hands one batch of rows of table `table` (its index in [`Archive::tables`]) to the
    /// writer. Blocks only while the writer's queue is full.
    pub fn append(&self, table: usize, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        // A closed archive has ended with the run: there is nothing left to write to.
        let _ = self.sender.send(Message::Rows {
            table,
            writer: self.writer,
            rows,
        });
    }

    /// Row batches waiting for the writer.
    pub fn queued(&self) -> usize {
        self.sender.len()
    }

    /// The same channel for worker `writer`.
    pub fn for_writer(&self, writer: u32) -> ArchiveInput {
        ArchiveInput {
            sender: self.sender.clone(),
            writer,
        }
    }

    /// Cuts this input's files for a checkpoint: every row handed in so far goes into files
    /// that are finished (made visible) before the mark arrives on the returned channel; rows
    /// handed in later go to new files. `None` once the archive has stopped.
    pub fn cut(&self) -> Option<Receiver<ArchiveMark>> {
        let (done, mark) = crossbeam_channel::bounded(1);
        self.sender
            .send(Message::Cut {
                writer: self.writer,
                done,
            })
            .ok()
            .map(|_| mark)
    }
}

impl Archive {
    /// Starts the writer for `tables` in `dir`, deleting temporary files a crash left
    /// behind. View snapshot tables read `store` every `view_snapshot_interval_ms`.
    pub fn start(
        dir: &Path,
        config: &ArchiveConfig,
        tables: Vec<ArchiveTable>,
        store: Option<Arc<ServingStore>>,
        observer: FileObserver,
    ) -> Result<Archive, Error> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for table in &tables {
            let table_dir = table.dir(dir);
            std::fs::create_dir_all(&table_dir).map_err(io(&table_dir))?;
            remove_temporary_files(&table_dir);
        }
        let tables: Arc<[ArchiveTable]> = tables.into();
        let (sender, receiver) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let writer = Writer::new(dir, config, Arc::clone(&tables), store, observer);
        let thread = std::thread::Builder::new()
            .name("wearflow-archive".into())
            .spawn(move || writer.run(receiver))
            .map_err(io(dir))?;
        Ok(Archive {
            sender,
            thread: Some(thread),
            tables,
            dir: dir.to_path_buf(),
        })
    }

    /// The tables, in the order [`ArchiveInput::append`] indexes them.
    pub fn tables(&self) -> &[ArchiveTable] {
        &self.tables
    }

    /// The index of table `name`.
    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// The archive directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle for the workers (writer 0).
    pub fn input(&self) -> ArchiveInput {
        self.input_for(0)
    }

    /// A handle for worker `writer`: its rows go to files of its own, so that a checkpoint
    /// can cut each worker's files at its own position in the input.
    pub fn input_for(&self, writer: u32) -> ArchiveInput {
        ArchiveInput {
            sender: self.sender.clone(),
            writer,
        }
    }

    /// Snapshots the views (if the store moved on) and makes every row handed in so far
    /// visible: open files are closed and renamed. Returns once that is done.
    pub fn flush(&self) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.sender.send(Message::Flush { done }).is_ok() {
            let _ = finished.recv();
        }
    }

    /// Writes a last view snapshot, closes every open file and stops the writer.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the archive writer panicked; open files are lost");
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deletes the files below `dir` that were started after a checkpoint: event files of writer
/// `w` at or after `marks[w]` (at or after `views` when `w` has no mark) and view snapshot
/// files at or after `views`. After a crash, what those files held is read again from the
/// sources and archived anew, so keeping them would duplicate rows. Returns the files deleted.
pub fn discard_after(dir: &Path, marks: &BTreeMap<u32, ArchiveMark>, views: ArchiveMark) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            deleted += discard_after(&path, marks, views);
            continue;
        }
        let name = entry.file_name();
        let Some((run, sequence, writer)) = parse_file_name(&name.to_string_lossy()) else {
            continue;
        };
        let mark = marks.get(&writer).copied().unwrap_or(views);
        if mark.precedes(run, sequence) {
            match std::fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove an archive file written after the checkpoint")
                }
            }
        }
    }
    deleted
}

/// `part-<run>-<seq>[-w<writer>].parquet` → `(run, seq, writer)`.
fn parse_file_name(name: &str) -> Option<(u64, u64, u32)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let run = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    let writer = match parts.next() {
        Some(w) => w.strip_prefix('w')?.parse().ok()?,
        None => VIEWS_WRITER,
    };
    Some((run, sequence, writer))
}

/// Deletes `.part-*.tmp` files below `dir` (left by a crash; never visible to readers).
fn remove_temporary_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            remove_temporary_files(&path);
        } else if name.starts_with(".part-")
            && name.ends_with(".tmp")
            && let Err(error) = std::fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove a temporary archive file");
        }
    }
}

/// A partition directory: the UTC date (and hour) of a time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PartitionKey {
    date: String,
    hour: Option<u32>,
}

impl PartitionKey {
    fn of(ms: i64, partitioning: Partitioning) -> PartitionKey {
        use chrono::Timelike;
        let time = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        PartitionKey {
            date: time.format("%Y-%m-%d").to_string(),
            hour: match partitioning {
                Partitioning::Date => None,
                Partitioning::DateHour => Some(time.hour()),
            },
        }
    }

    fn dir(&self, table_dir: &Path) -> PathBuf {
        let dir = table_dir.join(format!("date={}", self.date));
        match self.hour {
            Some(hour) => dir.join(format!("hour={hour}")),
            None => dir,
        }
    }
}

/// A file being written.
struct OpenFile {
    writer: ArrowWriter<File>,
    temporary: PathBuf,
    path: PathBuf,
    opened: Instant,
    rows: u64,
}

struct TableState {
    table: ArchiveTable,
    schema: SchemaRef,
    /// Open files by writer and partition.
    open: BTreeMap<(u32, PartitionKey), OpenFile>,
}

/// The writer thread's state.
struct Writer {
    root: PathBuf,
    tables: Vec<TableState>,
    roll_bytes: u64,
    roll_interval: Duration,
    store: Option<Arc<ServingStore>>,
    snapshot_interval: Duration,
    last_snapshot: Instant,
    last_as_of: Option<Time>,
    run_id: u64,
    sequence: u64,
    properties: WriterProperties,
    observer: FileObserver,
}

impl Writer {
    fn new(
        root: &Path,
        config: &ArchiveConfig,
        tables: Arc<[ArchiveTable]>,
        store: Option<Arc<ServingStore>>,
        observer: FileObserver,
    ) -> Writer {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        Writer {
            root: root.to_path_buf(),
            tables: tables
                .iter()
                .map(|t| TableState {
                    table: t.clone(),
                    schema: t.arrow_schema(),
                    open: BTreeMap::new(),
                })
                .collect(),
            roll_bytes: config.roll_bytes.max(1),
            roll_interval: Duration::from_millis(config.roll_interval_ms.max(1)),
            store,
            snapshot_interval: Duration::from_millis(config.view_snapshot_interval_ms.max(1)),
            last_snapshot: Instant::now(),
            last_as_of: None,
            // Names stay unique across restarts: the run's start time is part of each name.
            run_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            sequence: 0,
            properties,
            observer,
        }
    }

    fn run(mut self, receiver: Receiver<Message>) {
        loop {
            match receiver.recv_timeout(IDLE_TICK) {
                Ok(Message::Rows {
                    table,
                    writer,
                    rows,
                }) => self.append(table, writer, rows),
                Ok(Message::Cut { writer, done }) => {
                    self.commit_writer(writer);
                    let _ = done.send(ArchiveMark {
                        run: self.run_id,
                        next: self.sequence + 1,
                    });
                }
                Ok(Message::Flush { done }) => {
                    self.snapshot_views();
                    self.commit_all();
                    let _ = done.send(());
                }
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.snapshot_views();
                    self.commit_all();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.maintain();
        }
    }

    /// Rolls files that are big or old enough and takes a view snapshot when one is due.
    fn maintain(&mut self) {
        if self.last_snapshot.elapsed() >= self.snapshot_interval {
            self.snapshot_views();
        }
        for index in 0..self.tables.len() {
            let due: Vec<(u32, PartitionKey)> = self.tables[index]
                .open
                .iter()
                .filter(|(_, f)| {
                    f.opened.elapsed() >= self.roll_interval
                        || (f.writer.bytes_written() + f.writer.in_progress_size()) as u64
                            >= self.roll_bytes
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in due {
                if let Some(file) = self.tables[index].open.remove(&key) {
                    self.commit(index, file);
                }
            }
        }
    }

    fn append(&mut self, index: usize, writer: u32, rows: Vec<Row>) {
        let Some(state) = self.tables.get(index) else {
            tracing::error!(table = index, "rows for an unknown archive table dropped");
            return;
        };
        let time_column = state.table.time_column;
        let partitioning = state.table.partitioning;
        let mut groups: BTreeMap<PartitionKey, Vec<Row>> = BTreeMap::new();
        for row in rows {
            let ms = match row.get(time_column) {
                Some(Value::Int(ms)) => *ms,
                _ => 0,
            };
            groups
                .entry(PartitionKey::of(ms, partitioning))
                .or_default()
                .push(row);
        }
        for (key, rows) in groups {
            let state = &self.tables[index];
            let columns: Vec<ArrayRef> = state
                .table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    column_array(
                        c.ty,
                        rows.len(),
                        rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null)),
                    )
                })
                .collect();
            match RecordBatch::try_new(Arc::clone(&state.schema), columns) {
                Ok(batch) => self.write(index, (writer, key), &batch),
                Err(error) => tracing::error!(
                    table = %state.table.name,
                    %error,
                    "rows that do not fit the archive schema dropped"
                ),
            }
        }
    }

    /// Writes a batch into the open file of its partition, opening one if needed.
    fn write(&mut self, index: usize, key: (u32, PartitionKey), batch: &RecordBatch) {
        if !self.tables[index].open.contains_key(&key) {
            match self.open(index, &key) {
                Ok(file) => {
                    self.tables[index].open.insert(key.clone(), file);
                }
                Err(error) => {
                    tracing::error!(%error, "cannot open an archive file; rows dropped");
                    return;
                }
            }
        }
        let state = &mut self.tables[index];
        let Some(file) = state.open.get_mut(&key) else {
            return;
        };
        if let Err(error) = file.writer.write(batch) {
            tracing::error!(path = %file.temporary.display(), %error, "cannot write to an archive file; the file is abandoned");
            if let Some(file) = state.open.remove(&key) {
                let _ = std::fs::remove_file(&file.temporary);
            }
            return;
        }
        file.rows += batch.num_rows() as u64;
    }

    fn open(&mut self, index: usize, key: &(u32, PartitionKey)) -> Result<OpenFile, Error> {
        let (writer, key) = key;
        let state = &self.tables[index];
        let dir = key.dir(&state.table.dir(&self.root));
        let schema = Arc::clone(&state.schema);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        self.sequence += 1;
        let stem = if *writer == VIEWS_WRITER {
            format!("part-{}-{:06}", self.run_id, self.sequence)
        } else {
            format!("part-{}-{:06}-w{writer}", self.run_id, self.sequence)
        };
        let temporary = dir.join(format!(".{stem}.parquet.tmp"));
        let path = dir.join(format!("{stem}.parquet"));
        let file = File::create(&temporary).map_err(io(&temporary))?;
        let writer =
            ArrowWriter::try_new(file, schema, Some(self.properties.clone())).map_err(|e| {
                Error::Parquet {
                    path: temporary.display().to_string(),
                    message: e.to_string(),
                }
            })?;
        Ok(OpenFile {
            writer,
            temporary,
            path,
            opened: Instant::now(),
            rows: 0,
        })
    }

    /// Finishes every open file of one writer.
    fn commit_writer(&mut self, writer: u32) {
        for index in 0..self.tables.len() {
            let keys: Vec<(u32, PartitionKey)> = self.tables[index]
                .open
                .keys()
                .filter(|(w, _)| *w == writer)
                .cloned()
                .collect();
            for key in keys {
                if let Some(file) = self.tables[index].open.remove(&key) {
                    self.commit(index, file);
                }
            }
        }
    }

    fn commit_all(&mut self) {
        for index in 0..self.tables.len() {
            let open = std::mem::take(&mut self.tables[index].open);
            for (_, file) in open {
                self.commit(index, file);
            }
        }
    }

    /// Finishes a file: footer, fsync, rename to its visible name, fsync the directory.
    fn commit(&self, index: usize, file: OpenFile) {
        let table = &self.tables[index].table.name;
        match finish(file) {
            Ok(Some(written)) => (self.observer)(&FileWritten {
                table: table.clone(),
                ..written
            }),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%table, %error, "cannot finish an archive file; its rows are lost")
            }
        }
    }

    /// Writes one snapshot of every chosen view, if the store published since the last one.
    fn snapshot_views(&mut self) {
        self.last_snapshot = Instant::now();
        let Some(store) = &self.store else {
            return;
        };
        let snapshot = store.snapshot();
        if snapshot.version == 0 || self.last_as_of == Some(snapshot.as_of) {
            return;
        }
        self.last_as_of = Some(snapshot.as_of);
        let as_of = snapshot.as_of as i64;
        for index in 0..self.tables.len() {
            let TableSource::View(view) = &self.tables[index].table.source else {
                continue;
            };
            let view = view.clone();
            let Some(data) = snapshot.view(&view) else {
                continue;
            };
            let key = PartitionKey::of(as_of, self.tables[index].table.partitioning);
            let rows: Vec<&Row> = data.iter().collect();
            for chunk in rows.chunks(SNAPSHOT_CHUNK_ROWS) {
                let state = &self.tables[index];
                let mut columns: Vec<ArrayRef> = Vec::with_capacity(state.table.columns.len());
                columns.push(Arc::new(
                    TimestampMillisecondArray::from(vec![as_of; chunk.len()])
                        .with_timezone(TIME_ZONE),
                ));
                for (i, column) in state.table.columns.iter().enumerate().skip(1) {
                    columns.push(column_array(
                        column.ty,
                        chunk.len(),
                        chunk.iter().map(|r| r.get(i - 1).unwrap_or(&Value::Null)),
                    ));
                }
                match RecordBatch::try_new(Arc::clone(&state.schema), columns) {
                    Ok(batch) => self.write(index, (VIEWS_WRITER, key.clone()), &batch),
                    Err(error) => {
                        tracing::error!(%view, %error, "view snapshot does not fit its archive schema");
                        break;
                    }
                }
            }
        }
    }
}

/// Closes a file and makes it visible; `None` for a file without rows (deleted instead).
fn finish(mut file: OpenFile) -> Result<Option<FileWritten>, Error> {
    let temporary = file.temporary.display().to_string();
    let parquet = |e: parquet::errors::ParquetError| Error::Parquet {
        path: temporary.clone(),
        message: e.to_string(),
    };
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    if file.rows == 0 {
        drop(file.writer);
        let _ = std::fs::remove_file(&file.temporary);
        return Ok(None);
    }
    file.writer.finish().map_err(parquet)?;
    file.writer
        .inner()
        .sync_all()
        .map_err(io(&file.temporary))?;
    let bytes = file.writer.bytes_written() as u64;
    drop(file.writer);
    std::fs::rename(&file.temporary, &file.path).map_err(io(&file.path))?;
    // The rename is durable only once the directory entry is.
    if let Some(dir) = file.path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(Some(FileWritten {
        table: String::new(),
        path: file.path,
        rows: file.rows,
        bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn events_table() -> ArchiveTable {
        ArchiveTable::appended(
            "telemetry",
            vec![
                Column::required("device_id", ColumnType::Utf8),
                Column::required("ts", ColumnType::TimestampMs),
                Column::nullable("remaining_mm", ColumnType::Float64),
            ],
            "ts",
            Partitioning::DateHour,
        )
        .expect("valid table")
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let relative = path.strip_prefix(root).expect("below root");
                    out.push(relative.display().to_string());
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// 2026-01-01T00:00:00Z.
    const DAY: i64 = 1_767_225_600_000;

    #[test]
    fn a_cut_finishes_one_writers_files_and_later_files_are_discarded_on_restore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ArchiveConfig {
            roll_interval_ms: 3_600_000,
            ..ArchiveConfig::default()
        };
        let archive = Archive::start(
            dir.path(),
            &config,
            vec![events_table()],
            None,
            Box::new(|_| {}),
        )
        .expect("archive starts");
        let (first, second) = (archive.input_for(0), archive.input_for(1));
        let row = |id: &str| vec![Value::str(id), Value::Int(DAY), Value::Float(1.0)];
        first.append(0, vec![row("a")]);
        second.append(0, vec![row("b")]);
        let mark_first = first.cut().expect("running").recv().expect("mark");
        // Writer 0's rows are visible at its cut; writer 1's file is still open.
        let visible = files(dir.path());
        let finished: Vec<&String> = visible.iter().filter(|f| f.ends_with(".parquet")).collect();
        assert_eq!(finished.len(), 1, "{visible:?}");
        assert!(finished[0].ends_with("-w0.parquet"), "{visible:?}");
        let mark_second = second.cut().expect("running").recv().expect("mark");
        assert!(mark_second >= mark_first);
        // After the cuts: rows of both writers that a restart would read again.
        first.append(0, vec![row("c")]);
        second.append(0, vec![row("d")]);
        archive.flush();
        assert_eq!(files(dir.path()).len(), 4);
        let marks = BTreeMap::from([(0, mark_first), (1, mark_second)]);
        let deleted = discard_after(dir.path(), &marks, mark_second);
        assert_eq!(deleted, 2);
        let kept = files(dir.path());
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.iter().any(|f| f.ends_with("-w0.parquet")));
        assert!(kept.iter().any(|f| f.ends_with("-w1.parquet")));
        assert_eq!(
            parse_file_name("part-17-000003-w2.parquet"),
            Some((17, 3, 2))
        );
        assert_eq!(
            parse_file_name("part-17-000004.parquet"),
            Some((17, 4, VIEWS_WRITER))
        );
        assert_eq!(parse_file_name(".part-17-000004.parquet.tmp"), None);
        archive.close();
    }

    #[test]
    fn rows_land_in_hive_partitions_only_once_complete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&written);
        let config = ArchiveConfig {
            roll_interval_ms: 3_600_000,
            ..ArchiveConfig::default()
        };
        // A temporary file left by a crash is gone after the start.
        let stale = dir
            .path()
            .join("telemetry/date=2026-01-01/.part-1-000001.parquet.tmp");
        std::fs::create_dir_all(stale.parent().expect("parent")).expect("mkdir");
        std::fs::write(&stale, b"half").expect("write");
        let archive = Archive::start(
            dir.path(),
            &config,
            vec![events_table()],
            None,
            Box::new(move |f| seen.lock().expect("lock").push(f.clone())),
        )
        .expect("archive starts");
        assert!(!stale.exists(), "temporary files of a crash are removed");
        let input = archive.input();
        let row =
            |id: &str, ms: i64, mm: f64| vec![Value::str(id), Value::Int(ms), Value::Float(mm)];
        input.append(
            0,
            vec![
                row("a", DAY + 5 * 3_600_000, 100.0),
                row("b", DAY + 5 * 3_600_000 + 1, 99.0),
                row("a", DAY + 86_400_000 + 13 * 3_600_000, 98.0),
            ],
        );
        // Before a flush, nothing is visible: only hidden temporary files exist.
        std::thread::sleep(Duration::from_millis(100));
        let before = files(dir.path());
        assert!(
            before
                .iter()
                .all(|f| f.contains("/.part-") && f.ends_with(".tmp")),
            "{before:?}"
        );
        archive.flush();
        let after = files(dir.path());
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(
            after[0].starts_with("telemetry/date=2026-01-01/hour=5/part-"),
            "{after:?}"
        );
        assert!(
            after[1].starts_with("telemetry/date=2026-01-02/hour=13/part-"),
            "{after:?}"
        );
        assert!(after.iter().all(|f| f.ends_with(".parquet")));
        let written = written.lock().expect("lock").clone();
        assert_eq!(written.iter().map(|f| f.rows).sum::<u64>(), 3);
        assert!(
            written
                .iter()
                .all(|f| f.table == "telemetry" && f.bytes > 0)
        );
        // The files are valid Parquet with the declared schema.
        let path = dir.path().join(&after[0]);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(path).expect("open"),
        )
        .expect("parquet footer")
        .build()
        .expect("reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert_eq!(batches[0].schema(), events_table().arrow_schema());
        archive.close();
    }

    #[test]
    fn files_roll_by_size_and_views_are_snapshotted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let view = ViewSchema::new(
            "balances",
            ViewKind::Keyed,
            1,
            vec![
                Column::required("k", ColumnType::Utf8),
                Column::required("v", ColumnType::Int64),
            ],
            "test",
        )
        .expect("schema");
        let store = Arc::new(ServingStore::new(vec![view]));
        let config = ArchiveConfig {
            roll_bytes: 1,
            roll_interval_ms: 3_600_000,
            view_snapshot_interval_ms: 3_600_000,
            ..ArchiveConfig::default()
        };
        let mut tables = vec![events_table()];
        tables.extend(config.view_tables(store.schemas()));
        assert_eq!(tables[1].sql_name(), "balances_history");
        let archive = Archive::start(
            dir.path(),
            &config,
            tables,
            Some(Arc::clone(&store)),
            Box::new(|_| {}),
        )
        .expect("archive starts");
        let input = archive.input();
        for i in 0..3 {
            input.append(
                0,
                vec![vec![Value::str("a"), Value::Int(DAY + i), Value::Null]],
            );
            // One byte per file: every batch rolls its file at the next look.
            std::thread::sleep(Duration::from_millis(50));
        }
        store.publish(
            (DAY + 1_000) as Time,
            vec![
                (0, vec![Value::str("x"), Value::Int(1)], 1),
                (0, vec![Value::str("y"), Value::Int(2)], 1),
            ],
        );
        archive.flush();
        // Nothing new was published: the second flush writes no second snapshot.
        archive.flush();
        let all = files(dir.path());
        let events = all.iter().filter(|f| f.starts_with("telemetry/")).count();
        assert_eq!(events, 3, "{all:?}");
        let snapshots: Vec<&String> = all.iter().filter(|f| f.starts_with("balances/")).collect();
        assert_eq!(snapshots.len(), 1, "{all:?}");
        assert!(snapshots[0].starts_with("balances/date=2026-01-01/part-"));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(dir.path().join(snapshots[0])).expect("open"),
        )
        .expect("footer")
        .build()
        .expect("reader");
        let batch = reader.map(|b| b.expect("batch")).next().expect("one batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().field(0).name(), AS_OF_COLUMN);
        archive.close();
    }
}
