//! The audit log: one JSON object per line, appended, for every SQL statement, admin action
//! and refused login: who, when, through which door, what, and the outcome.
//!
//! The file is opened in append mode and never rewritten; each entry is written with one
//! `write` call and flushed, so lines of concurrent writers never interleave and a crash loses
//! at most the entry being written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::access::Principal;

/// Statements longer than this are cut (on a character boundary) in the log.
pub const MAX_STATEMENT_BYTES: usize = 4096;

/// One audited event.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry<'a> {
    /// Wall-clock time, epoch milliseconds.
    pub ts_ms: u64,
    /// `http` or `pgwire`.
    pub door: &'a str,
    /// The caller (`None` when the login itself failed).
    pub user: Option<&'a str>,
    /// The caller's role.
    pub role: Option<&'a str>,
    /// The client's address.
    pub peer: Option<String>,
    /// `sql`, `model_reload`, `login`.
    pub action: &'a str,
    /// The statement or target, cut to [`MAX_STATEMENT_BYTES`].
    pub what: &'a str,
    /// `ok`, `error` or `denied`.
    pub outcome: &'a str,
    /// The error code (SQLSTATE or HTTP API code) when the outcome is not `ok`.
    pub code: Option<&'a str>,
}

/// Builds an entry for `principal`; the clock is read here.
pub fn entry<'a>(
    door: &'a str,
    principal: Option<&'a Principal>,
    action: &'a str,
    what: &'a str,
    outcome: &'a str,
    code: Option<&'a str>,
) -> AuditEntry<'a> {
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    AuditEntry {
        ts_ms,
        door,
        user: principal.map(|p| p.user.as_str()),
        role: principal.map(|p| p.role.name()),
        peer: None,
        action,
        what: cut(what),
        outcome,
        code,
    }
}

/// `text` cut to at most [`MAX_STATEMENT_BYTES`] on a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_STATEMENT_BYTES {
        return text;
    }
    let mut end = MAX_STATEMENT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The append-only log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it and its directory if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry. A failed write is reported in the process log, never to the caller
    /// whose statement already ran.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(%error, "cannot encode an audit entry");
                return;
            }
        };
        line.push(b'\n');
        let mut file = match self.file.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(error) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(%error, path = %self.path.display(), "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;

    #[test]
    fn entries_append_as_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("audit.jsonl");
        let alice = Principal {
            user: "alice".into(),
            role: Role::Analyst,
        };
        AuditLog::open(&path).expect("open").record(&entry(
            "http",
            Some(&alice),
            "sql",
            "SELECT 1",
            "ok",
            None,
        ));
        // A second open appends rather than truncating.
        let long = "é".repeat(MAX_STATEMENT_BYTES);
        AuditLog::open(&path).expect("reopen").record(&entry(
            "pgwire",
            None,
            "login",
            &long,
            "denied",
            Some("28P01"),
        ));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["user"], "alice");
        assert_eq!(lines[0]["role"], "analyst");
        assert_eq!(lines[0]["what"], "SELECT 1");
        assert_eq!(lines[1]["user"], serde_json::Value::Null);
        assert_eq!(lines[1]["code"], "28P01");
        let what = lines[1]["what"].as_str().expect("what");
        assert!(what.len() <= MAX_STATEMENT_BYTES && what.len() > MAX_STATEMENT_BYTES - 4);
    }
}
