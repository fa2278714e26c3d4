//! File replay: JSONL files (one per stream) merged by event time, and the matching writer.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::path::{Path, PathBuf};

use wearflow_operators::{ErrorRecord, Time};

use crate::Error;
use crate::decode::decode;
use crate::event::{Event, StreamKind};

/// One record read from a source: where it came from and what it decoded to.
#[derive(Clone, Debug)]
pub struct SourceRecord {
    /// The stream.
    pub stream: StreamKind,
    /// The partition (file index within the replay).
    pub partition: u32,
    /// The position (1-based line number).
    pub position: u64,
    /// The decoded event, or why it was rejected.
    pub event: Result<Event, ErrorRecord>,
    /// A rejected record's original bytes, where the source keeps them for dead letters
    /// (the error record holds only a bounded prefix).
    pub original: Option<Vec<u8>>,
}

struct Partition {
    stream: StreamKind,
    index: u32,
    lines: Lines<BufReader<File>>,
    line_no: u64,
    head: Option<SourceRecord>,
}

impl Partition {
    fn advance(&mut self) {
        self.head = None;
        for line in self.lines.by_ref() {
            self.line_no += 1;
            let event = match line {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => decode(self.stream, self.index, self.line_no, text.as_bytes()),
                Err(e) => Err(ErrorRecord::new(
                    self.stream.name(),
                    self.index,
                    self.line_no,
                    &[],
                    format!("unreadable line: {e}"),
                )),
            };
            self.head = Some(SourceRecord {
                stream: self.stream,
                partition: self.index,
                position: self.line_no,
                event,
                original: None,
            });
            return;
        }
    }

    /// Merge order: errors first (they carry no time), then by event time, then partition.
    fn head_key(&self) -> Option<(Time, u32)> {
        self.head
            .as_ref()
            .map(|r| (r.event.as_ref().map_or(0, Event::ts_ms), self.index))
    }
}

/// Replays JSONL files as one stream of records, merged by event time across files (each
/// file is one partition and is read in its own order), as fast as the reader pulls.
pub struct FileReplay {
    partitions: Vec<Partition>,
}

impl FileReplay {
    /// Opens the standard files of a directory written by `wearflow simulate --out`
    /// (`telemetry.jsonl`, `orders.jsonl`, `stock.jsonl`, `assets.jsonl`; missing ones skipped).
    pub fn open_dir(dir: &Path) -> Result<FileReplay, Error> {
        let files: Vec<(StreamKind, PathBuf)> = StreamKind::ALL
            .into_iter()
            .map(|s| (s, dir.join(format!("{}.jsonl", s.name()))))
            .filter(|(_, p)| p.exists())
            .collect();
        if files.is_empty() {
            return Err(Error::InvalidArgument {
                what: "replay directory".into(),
                reason: format!("{} holds no <stream>.jsonl file", dir.display()),
            });
        }
        FileReplay::open(&files)
    }

    /// Opens the given files, each holding records of one stream.
    pub fn open(files: &[(StreamKind, PathBuf)]) -> Result<FileReplay, Error> {
        let mut partitions = Vec::new();
        for (index, (stream, path)) in files.iter().enumerate() {
            let file = File::open(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            let mut partition = Partition {
                stream: *stream,
                index: index as u32,
                lines: BufReader::with_capacity(1 << 16, file).lines(),
                line_no: 0,
                head: None,
            };
            partition.advance();
            partitions.push(partition);
        }
        Ok(FileReplay { partitions })
    }

    /// The partitions as `(stream, partition index)`.
    pub fn partitions(&self) -> Vec<(StreamKind, u32)> {
        self.partitions
            .iter()
            .map(|p| (p.stream, p.index))
            .collect()
    }

    /// Whether a partition has been read to its end.
    pub fn is_finished(&self, partition: u32) -> bool {
        self.partitions
            .get(partition as usize)
            .is_none_or(|p| p.head.is_none())
    }
}

impl Iterator for FileReplay {
    type Item = SourceRecord;

    fn next(&mut self) -> Option<SourceRecord> {
        let next = self
            .partitions
            .iter_mut()
            .filter_map(|p| p.head_key().map(|k| (k, p)))
            .min_by_key(|(k, _)| *k)?
            .1;
        let record = next.head.take();
        next.advance();
        record
    }
}

/// Writes events to `<dir>/<stream>.jsonl`, one JSON object per line, creating the directory.
pub fn write_jsonl<'a>(
    dir: &Path,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut writers = Vec::new();
    for stream in StreamKind::ALL {
        let path = dir.join(format!("{}.jsonl", stream.name()));
        let file = File::create(&path).map_err(io(&path))?;
        writers.push((path, BufWriter::new(file)));
    }
    for event in events {
        let index = StreamKind::ALL
            .iter()
            .position(|s| *s == event.stream())
            .unwrap_or(0);
        let (path, writer) = &mut writers[index];
        writeln!(writer, "{}", event.to_json_line()).map_err(io(path))?;
    }
    for (path, mut writer) in writers {
        writer.flush().map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_files_by_event_time_and_keeps_errors() {
        let dir = std::env::temp_dir().join(format!("wearflow-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("telemetry.jsonl"),
            "{\"device_id\":\"d\",\"machine_id\":\"m\",\"ts\":1767225600000,\"metrics\":{\"a\":1}}\n\
             garbage\n\
             {\"device_id\":\"d\",\"machine_id\":\"m\",\"ts\":1767225603000,\"metrics\":{\"a\":2}}\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("stock.jsonl"),
            "{\"warehouse\":\"w\",\"sku\":\"s\",\"qty_delta\":5,\"reason\":\"receipt\",\"ts\":1767225601000}\n",
        )
        .expect("write");
        let records: Vec<SourceRecord> = FileReplay::open_dir(&dir).expect("open").collect();
        let summary: Vec<(StreamKind, u64, bool)> = records
            .iter()
            .map(|r| (r.stream, r.position, r.event.is_ok()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (StreamKind::Telemetry, 1, true),
                (StreamKind::Telemetry, 2, false),
                (StreamKind::Stock, 1, true),
                (StreamKind::Telemetry, 3, true),
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
