//! The dead-letter sink: rejected records appended to a JSONL file with their reason.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use wearflow_operators::ErrorRecord;

use crate::Error;

/// Appends error records, one JSON object per line, to a file.
pub struct DeadLetterFile {
    path: PathBuf,
    writer: BufWriter<File>,
    written: u64,
}

impl DeadLetterFile {
    /// Opens (creating if needed) the file for appending.
    pub fn open(path: &Path) -> Result<DeadLetterFile, Error> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(DeadLetterFile {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
            written: 0,
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &ErrorRecord) -> Result<(), Error> {
        let line = serde_json::to_string(record).unwrap_or_default();
        writeln!(self.writer, "{line}").map_err(|source| self.error(source))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.writer.flush().map_err(|source| self.error(source))
    }

    /// Records written since opening.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn error(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}
