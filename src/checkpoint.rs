//! Checkpoints and crash recovery.
//!
//! ```text
//!  reader worker ──each tick──► write-ahead log  <data_dir>/checkpoint/wal-p<P>-w<W>.log
//!       │                        (frames: len, crc32, bincode entries: stamped inputs, advances)
//!       └─every interval_ms──► cut: WAL length, frontier, Kafka offsets, archive cut ─┐
//!                                                                                      ▼
//!  checkpointer thread: all readers' cuts of one epoch + archive marks → fsync WALs →
//!      checkpoint-<seq>.json.tmp, fsync, rename, fsync dir (format version, crc32); keep `keep`
//! ```
//!
//! Every update a reader feeds to the dataflow (events at their stamps, quality marks, source
//! times, error records, model versions, input advances) is appended to its write-ahead log,
//! one frame per tick. A checkpoint records, per reader, how many log bytes are durable and
//! the Kafka offsets of the next records after them; the archive finishes that reader's files
//! at the same point. Restart loads the newest checkpoint whose checksum holds (a torn or
//! corrupt one is skipped with a warning), cuts each log back to its recorded length, deletes
//! archive files started after the cut, replays the logs (the same updates at the same
//! logical times, so every view, windowed or folded, comes out as it was), and resumes each
//! Kafka partition at its recorded offset.
//!
//! The simulator and file replays are deterministic and restart from their beginning; only
//! Kafka sources are checkpointed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wearflow_operators::Time;
use wearflow_sinks::archive::ArchiveMark;

/// The checkpoint file format; a file of another version is not loaded.
pub const FORMAT: u32 = 1;
/// The epoch of the cut each reader makes when it stops (end of input or shutdown).
pub const FINAL_EPOCH: u64 = u64::MAX;

/// `[checkpoint]`: when and where checkpoints are taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Checkpoint Kafka-fed runs (the simulator and file replays are never checkpointed).
    pub enabled: bool,
    /// How often a checkpoint is taken, in ms (one is also taken at every clean stop).
    pub interval_ms: u64,
    /// How many checkpoint files are kept (at least 2, so a torn newest one has a
    /// predecessor).
    pub keep: usize,
    /// Where checkpoints and write-ahead logs live (default `<data_dir>/checkpoint`).
    pub dir: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            interval_ms: 10_000,
            keep: 3,
            dir: None,
        }
    }
}

impl CheckpointConfig {
    /// The checkpoint directory for data directory `data_dir`.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("checkpoint"))
    }
}

/// Checkpoint errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A write-ahead log is damaged before the length a checkpoint recorded as durable.
    #[error("{path}: write-ahead log damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The log.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint was taken by a differently shaped cluster.
    #[error(
        "the checkpoint in {dir} was taken with {found}, this run has {expected}; restore needs \
         the same workers and processes (or remove the directory to start over)"
    )]
    Topology {
        /// The checkpoint directory.
        dir: String,
        /// The checkpoint's shape.
        found: String,
        /// This run's shape.
        expected: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One reader worker's position at a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    /// The worker's global index.
    pub worker: usize,
    /// Durable bytes of its write-ahead log.
    pub wal_bytes: u64,
    /// Its input frontier after the last logged tick.
    pub frontier: Time,
    /// `(topic, partition, next offset)` of every partition it had read from.
    pub offsets: Vec<(String, i32, i64)>,
}

/// The archive's files at a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// Each reader's cut of its event files, by worker.
    pub marks: BTreeMap<u32, ArchiveMark>,
    /// View snapshot files started at or after this are deleted on restore.
    pub views: ArchiveMark,
}

/// One consistent position of every reader of a process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: u32,
    /// Increases by one per checkpoint written.
    pub sequence: u64,
    /// Wall clock when it was written, epoch ms.
    pub created_ms: u64,
    /// This process's index in the cluster.
    pub process: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// Workers per process.
    pub threads: usize,
    /// The process's reader workers.
    pub workers: Vec<WorkerState>,
    /// The archive's cut, if the archive is on.
    pub archive: Option<ArchiveState>,
}

impl Checkpoint {
    /// The shape of the cluster, for messages.
    fn shape(processes: usize, threads: usize) -> String {
        format!("{processes} process(es) × {threads} worker(s)")
    }

    /// Refuses a checkpoint of another cluster shape or process.
    pub fn check_topology(
        &self,
        dir: &Path,
        process: usize,
        processes: usize,
        threads: usize,
    ) -> Result<(), CheckpointError> {
        if (self.process, self.processes, self.threads) == (process, processes, threads) {
            return Ok(());
        }
        Err(CheckpointError::Topology {
            dir: dir.display().to_string(),
            found: format!(
                "{} as process {}",
                Checkpoint::shape(self.processes, self.threads),
                self.process
            ),
            expected: format!(
                "{} as process {process}",
                Checkpoint::shape(processes, threads)
            ),
        })
    }

    /// The state of worker `worker`, if it was a reader.
    pub fn worker(&self, worker: usize) -> Option<&WorkerState> {
        self.workers.iter().find(|w| w.worker == worker)
    }

    /// The file's bytes: the JSON body and a line with its CRC-32.
    fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_string(self).unwrap_or_default();
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}\ncrc32 {crc:08x}\n").into_bytes()
    }

    /// Parses a file's bytes; `Err` says why they are not a valid checkpoint.
    fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let (body, trailer) = text
            .trim_end_matches('\n')
            .rsplit_once("\ncrc32 ")
            .ok_or("no checksum line (torn write?)")?;
        let expected = u32::from_str_radix(trailer.trim(), 16).map_err(|_| "bad checksum line")?;
        let actual = crc32fast::hash(body.as_bytes());
        if actual != expected {
            return Err(format!(
                "checksum mismatch: file says {expected:08x}, content is {actual:08x}"
            ));
        }
        let checkpoint: Checkpoint =
            serde_json::from_str(body).map_err(|e| format!("invalid body: {e}"))?;
        if checkpoint.format != FORMAT {
            return Err(format!(
                "format {} (this build reads format {FORMAT})",
                checkpoint.format
            ));
        }
        Ok(checkpoint)
    }
}

/// The checkpoint files of one directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

/// What [`CheckpointStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest valid checkpoint and its file.
    pub checkpoint: Option<(Checkpoint, PathBuf)>,
    /// Newer files that were skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl CheckpointStore {
    /// The store in `dir` (created if missing), keeping the newest `keep` files.
    pub fn open(dir: &Path, keep: usize) -> Result<CheckpointStore, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            keep: keep.max(2),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The write-ahead log of a worker.
    pub fn wal_path(&self, process: usize, worker: usize) -> PathBuf {
        self.dir.join(format!("wal-p{process}-w{worker}.log"))
    }

    /// Checkpoint files, newest first.
    fn files(&self) -> Vec<(u64, PathBuf)> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let sequence = name
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((sequence, entry.path()))
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        files
    }

    /// The newest checkpoint that reads back whole; torn or corrupt newer files are
    /// reported in `skipped` (and logged).
    pub fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        for (_, path) in self.files() {
            let decoded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Checkpoint::decode(&bytes));
            match decoded {
                Ok(checkpoint) => {
                    loaded.checkpoint = Some((checkpoint, path));
                    break;
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "checkpoint skipped");
                    loaded.skipped.push((path, reason));
                }
            }
        }
        loaded
    }

    /// The next sequence number (one past the newest file, valid or not).
    pub fn next_sequence(&self) -> u64 {
        self.files().first().map_or(1, |(s, _)| s + 1)
    }

    /// Writes `checkpoint` atomically (temporary file, fsync, rename, directory fsync) and
    /// deletes all but the newest `keep` files.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let path = self
            .dir
            .join(format!("checkpoint-{:010}.json", checkpoint.sequence));
        let temporary = self
            .dir
            .join(format!(".checkpoint-{:010}.json.tmp", checkpoint.sequence));
        {
            let mut file = File::create(&temporary).map_err(io(&temporary))?;
            file.write_all(&checkpoint.encode())
                .map_err(io(&temporary))?;
            file.sync_all().map_err(io(&temporary))?;
        }
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        for (_, old) in self.files().into_iter().skip(self.keep) {
            let _ = std::fs::remove_file(old);
        }
        Ok(path)
    }
}

/// Appends frames to one worker's write-ahead log.
pub struct WalWriter {
    file: File,
    path: PathBuf,
    bytes: u64,
    frame: Vec<u8>,
}

/// Frame header: payload length and CRC-32, little endian.
const HEADER: usize = 8;

impl WalWriter {
    /// Opens (or creates) the log at `path`, cut back to `durable` bytes: whatever followed
    /// the restored checkpoint is read again from the source.
    pub fn open(path: &Path, durable: u64) -> Result<WalWriter, CheckpointError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(durable).map_err(io(path))?;
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        Ok(WalWriter {
            file,
            path: path.to_path_buf(),
            bytes: durable,
            frame: Vec::new(),
        })
    }

    /// Adds one entry to the current frame.
    pub fn log<T: Serialize>(&mut self, entry: &T) {
        if let Err(e) = bincode::serialize_into(&mut self.frame, entry) {
            tracing::error!(path = %self.path.display(), "cannot encode a log entry: {e}");
        }
    }

    /// Writes the current frame (if it holds anything) with one `write` call. The bytes are
    /// durable once the checkpointer has synced the file.
    pub fn commit(&mut self) -> Result<(), CheckpointError> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(HEADER + self.frame.len());
        out.extend_from_slice(&(self.frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.frame).to_le_bytes());
        out.extend_from_slice(&self.frame);
        self.frame.clear();
        self.file.write_all(&out).map_err(io(&self.path))?;
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the first `durable` bytes of the log at `path`, calling `frame` with the entries of
/// each frame in order. Returns the number of frames.
pub fn replay<E: DeserializeOwned>(
    path: &Path,
    durable: u64,
    mut frame: impl FnMut(Vec<E>),
) -> Result<u64, CheckpointError> {
    if durable == 0 {
        return Ok(0);
    }
    let file = File::open(path).map_err(io(path))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(durable));
    let corrupt = |offset: u64, reason: String| CheckpointError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    };
    let mut offset = 0u64;
    let mut frames = 0;
    let mut payload = Vec::new();
    while offset < durable {
        let mut header = [0u8; HEADER];
        reader
            .read_exact(&mut header)
            .map_err(|e| corrupt(offset, format!("frame header: {e}")))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        payload.resize(len, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| corrupt(offset, format!("frame of {len} bytes: {e}")))?;
        if crc32fast::hash(&payload) != crc {
            return Err(corrupt(offset, "checksum mismatch".into()));
        }
        let mut cursor: &[u8] = &payload;
        let mut entries = Vec::new();
        while !cursor.is_empty() {
            let entry: E = bincode::deserialize_from(&mut cursor)
                .map_err(|e| corrupt(offset, format!("entry: {e}")))?;
            entries.push(entry);
        }
        frame(entries);
        frames += 1;
        offset += (HEADER + len) as u64;
    }
    Ok(frames)
}

/// Checkpoints on demand (`POST /checkpoint`): shared by the HTTP API and the checkpointer of
/// the running engine. Runtime wiring, not configuration.
#[derive(Clone, Default)]
pub struct Trigger {
    inner: Arc<TriggerState>,
}

#[derive(Default)]
struct TriggerState {
    requested: AtomicU64,
    written: AtomicU64,
    active: std::sync::atomic::AtomicBool,
}

impl Trigger {
    /// Asks for a checkpoint as soon as every reader can cut; returns the sequence of the
    /// newest checkpoint before it.
    pub fn request(&self) -> u64 {
        let written = self.written();
        self.inner.requested.fetch_add(1, Ordering::AcqRel);
        written
    }

    /// The sequence of the newest checkpoint written (0: none yet).
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Acquire)
    }

    /// Whether a checkpointer is running (a Kafka-fed run with checkpoints on).
    pub fn active(&self) -> bool {
        self.inner.active.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trigger(active: {})", self.active())
    }
}

impl PartialEq for Trigger {
    /// Runtime wiring, not configuration: any two compare equal.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

/// What a reader hands the checkpointer at a cut.
pub struct Cut {
    /// The epoch (a request number, or [`FINAL_EPOCH`]).
    pub epoch: u64,
    /// The reader's position.
    pub state: WorkerState,
    /// Its log, to sync before the checkpoint is written.
    pub wal: PathBuf,
    /// The archive's mark for the reader's files, once they are finished.
    pub archive: Option<Receiver<ArchiveMark>>,
}

/// The checkpointer thread of one process: requests a checkpoint every interval, collects
/// the readers' cuts and writes the checkpoint once every reader's cut of an epoch is in.
pub struct Checkpointer {
    sender: Sender<Cut>,
    requested: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What the checkpointer reports to its observer after each checkpoint.
#[derive(Clone, Debug)]
pub struct Written {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// How long syncing and writing took.
    pub took: Duration,
}

impl Checkpointer {
    /// Starts the thread for `readers` local reader workers. `template` carries the
    /// topology; `sequence` continues from the newest file.
    pub fn start(
        store: CheckpointStore,
        interval: Duration,
        readers: usize,
        template: Checkpoint,
        archived: bool,
        trigger: Trigger,
        observer: Box<dyn Fn(&Written) + Send>,
    ) -> Checkpointer {
        let (sender, receiver) = crossbeam_channel::unbounded::<Cut>();
        let requested = Arc::new(AtomicU64::new(0));
        let thread_requested = Arc::clone(&requested);
        trigger.inner.active.store(true, Ordering::Release);
        let thread = std::thread::Builder::new()
            .name("wearflow-checkpoint".into())
            .spawn(move || {
                // The newest cut of each reader since the last checkpoint, and each reader's
                // state in the last checkpoint. Cuts of different readers need not be of the
                // same epoch: each is a consistent cut of its own input.
                let mut pending: BTreeMap<usize, Cut> = BTreeMap::new();
                let mut last: BTreeMap<usize, (WorkerState, Option<ArchiveMark>)> = BTreeMap::new();
                let mut sequence = store.next_sequence();
                let mut last_request = Instant::now();
                let mut demanded = trigger.inner.requested.load(Ordering::Acquire);
                loop {
                    // A checkpoint on demand counts as the interval's.
                    let now_demanded = trigger.inner.requested.load(Ordering::Acquire);
                    if now_demanded > demanded {
                        demanded = now_demanded;
                        last_request = Instant::now();
                        thread_requested.fetch_add(1, Ordering::AcqRel);
                    }
                    let wait = interval
                        .saturating_sub(last_request.elapsed())
                        .min(Duration::from_millis(20));
                    match receiver.recv_timeout(wait.max(Duration::from_millis(1))) {
                        Ok(cut) => {
                            let final_cut = cut.epoch == FINAL_EPOCH;
                            pending.insert(cut.state.worker, cut);
                            // A checkpoint once every reader has cut again (or, at the end,
                            // with whatever the last readers to stop handed in).
                            if pending.len() < readers
                                && !(final_cut && pending.len() + last.len() >= readers)
                            {
                                continue;
                            }
                            let cuts = std::mem::take(&mut pending);
                            let began = Instant::now();
                            match finish(&store, &template, sequence, cuts, &mut last, archived) {
                                Ok(checkpoint) => {
                                    sequence += 1;
                                    trigger
                                        .inner
                                        .written
                                        .store(checkpoint.sequence, Ordering::Release);
                                    observer(&Written {
                                        checkpoint,
                                        took: began.elapsed(),
                                    });
                                }
                                Err(e) => tracing::error!("checkpoint not written: {e}"),
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if last_request.elapsed() >= interval {
                                last_request = Instant::now();
                                thread_requested.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            trigger.inner.active.store(false, Ordering::Release);
                            return;
                        }
                    }
                }
            })
            .ok();
        Checkpointer {
            sender,
            requested,
            thread,
        }
    }

    /// A handle for a reader worker.
    pub fn handle(&self) -> CheckpointHandle {
        CheckpointHandle {
            sender: self.sender.clone(),
            requested: Arc::clone(&self.requested),
        }
    }

    /// Once every handle is dropped (the workers have finished), writes what the last cuts
    /// make complete and stops the thread.
    pub fn stop(self) {
        let Checkpointer { sender, thread, .. } = self;
        drop(sender);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// A reader's side of the checkpointer.
#[derive(Clone)]
pub struct CheckpointHandle {
    sender: Sender<Cut>,
    requested: Arc<AtomicU64>,
}

impl CheckpointHandle {
    /// The newest requested epoch: a reader whose last cut is older makes one.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Hands a cut in.
    pub fn cut(&self, cut: Cut) {
        let _ = self.sender.send(cut);
    }
}

/// Syncs the readers' logs, collects the archive marks and writes checkpoint `sequence`:
/// the new cuts, and for readers without one, their state in the last checkpoint.
fn finish(
    store: &CheckpointStore,
    template: &Checkpoint,
    sequence: u64,
    cuts: BTreeMap<usize, Cut>,
    last: &mut BTreeMap<usize, (WorkerState, Option<ArchiveMark>)>,
    archived: bool,
) -> Result<Checkpoint, CheckpointError> {
    let mut checkpoint = Checkpoint {
        format: FORMAT,
        sequence,
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        workers: Vec::new(),
        archive: archived.then(ArchiveState::default),
        ..template.clone()
    };
    for (worker, cut) in cuts {
        File::open(&cut.wal)
            .and_then(|f| f.sync_data())
            .map_err(io(&cut.wal))?;
        // The archive finishes the reader's files before it answers; no answer means the
        // archive has stopped, and the checkpoint would not match it.
        let mark = match cut.archive {
            Some(mark) => Some(mark.recv().map_err(|_| CheckpointError::Io {
                path: "archive".into(),
                source: std::io::Error::other("the archive stopped before the cut"),
            })?),
            None => None,
        };
        last.insert(worker, (cut.state, mark));
    }
    for (state, mark) in last.values() {
        if let (Some(archive), Some(mark)) = (checkpoint.archive.as_mut(), mark) {
            archive.marks.insert(state.worker as u32, *mark);
            archive.views = if archive.marks.len() == 1 {
                *mark
            } else {
                archive.views.min(*mark)
            };
        }
        checkpoint.workers.push(state.clone());
    }
    store.write(&checkpoint)?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(sequence: u64) -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            sequence,
            created_ms: 1,
            process: 0,
            processes: 1,
            threads: 2,
            workers: vec![WorkerState {
                worker: 0,
                wal_bytes: 100 * sequence,
                frontier: 5,
                offsets: vec![("telemetry".into(), 0, 42)],
            }],
            archive: None,
        }
    }

    #[test]
    fn a_torn_newest_checkpoint_is_skipped_for_the_previous_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CheckpointStore::open(dir.path(), 3).expect("store");
        assert!(store.load().checkpoint.is_none());
        for sequence in 1..=4 {
            store.write(&checkpoint(sequence)).expect("write");
        }
        // Only the newest three are kept.
        assert_eq!(store.files().len(), 3);
        let loaded = store.load();
        assert_eq!(loaded.checkpoint.expect("newest").0, checkpoint(4));
        // Tear the newest file in half: it is skipped, with its reason, for number 3.
        let newest = dir.path().join("checkpoint-0000000004.json");
        let bytes = std::fs::read(&newest).expect("read");
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).expect("truncate");
        let loaded = store.load();
        assert_eq!(loaded.checkpoint.expect("previous").0, checkpoint(3));
        assert_eq!(loaded.skipped.len(), 1);
        assert!(loaded.skipped[0].1.contains("torn"), "{:?}", loaded.skipped);
        // A flipped byte fails the checksum.
        let third = dir.path().join("checkpoint-0000000003.json");
        let mut bytes = std::fs::read(&third).expect("read");
        let at = bytes.iter().position(|b| *b == b'4').expect("a digit");
        bytes[at] = b'5';
        std::fs::write(&third, &bytes).expect("write");
        let loaded = store.load();
        assert_eq!(loaded.checkpoint.expect("oldest").0, checkpoint(2));
        assert!(
            loaded.skipped[1].1.contains("checksum"),
            "{:?}",
            loaded.skipped
        );
        // The next number is past every file, valid or not.
        assert_eq!(store.next_sequence(), 5);
    }

    #[test]
    fn the_log_replays_what_was_committed_up_to_the_durable_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.log");
        let mut wal = WalWriter::open(&path, 0).expect("open");
        for frame in 0..3u64 {
            for entry in 0..=frame {
                wal.log(&(frame, entry, format!("e{entry}")));
            }
            wal.commit().expect("commit");
            if frame == 1 {
                assert_eq!(wal.len(), std::fs::metadata(&path).expect("meta").len());
            }
        }
        let durable_two = {
            let mut seen = Vec::new();
            replay::<(u64, u64, String)>(&path, wal.len(), |e| seen.extend(e)).expect("replay");
            assert_eq!(seen.len(), 1 + 2 + 3);
            assert_eq!(seen[5], (2, 2, "e2".to_string()));
            // The length after two frames: header + payload of each.
            let frame_bytes = |n: u64| -> u64 {
                (0..=n)
                    .map(|e| bincode::serialized_size(&(n, e, format!("e{e}"))).expect("size"))
                    .sum::<u64>()
                    + HEADER as u64
            };
            frame_bytes(0) + frame_bytes(1)
        };
        // Reopened at a checkpoint after two frames: the third is cut off and new frames
        // follow the second.
        drop(wal);
        let mut wal = WalWriter::open(&path, durable_two).expect("reopen");
        wal.log(&(9u64, 9u64, "new".to_string()));
        wal.commit().expect("commit");
        let mut seen = Vec::new();
        let mut frames = 0;
        replay::<(u64, u64, String)>(&path, wal.len(), |e| {
            seen.extend(e);
            frames += 1;
        })
        .expect("replay");
        assert_eq!(frames, 3);
        assert_eq!(seen.len(), 1 + 2 + 1);
        assert_eq!(seen[3], (9, 9, "new".to_string()));
        // A damaged byte inside the durable part is an error, not a silent skip.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let error = replay::<(u64, u64, String)>(&path, wal.len(), |_| {}).expect_err("damaged");
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
