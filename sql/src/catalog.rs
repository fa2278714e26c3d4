//! The named-view catalog: `CREATE VIEW` definitions kept in one JSON file, written
//! atomically (temporary file, fsync, rename) so a crash leaves the old or the new catalog,
//! never half of one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The catalog's file name inside the data directory.
pub const CATALOG_FILE: &str = "sql_views.json";

/// One named view: its name and the `SELECT` that defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedView {
    /// The view's name (lower case).
    pub name: String,
    /// The defining query, as SQL text.
    pub sql: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    views: Vec<NamedView>,
}

/// Named views by name, mirrored to a file (or only in memory when there is no file).
#[derive(Debug)]
pub struct ViewCatalog {
    path: Option<PathBuf>,
    views: Mutex<BTreeMap<String, String>>,
}

impl ViewCatalog {
    /// A catalog that lives only in memory.
    pub fn in_memory() -> ViewCatalog {
        ViewCatalog {
            path: None,
            views: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads the catalog at `path`; a missing file is an empty catalog.
    pub fn open(path: &Path) -> Result<ViewCatalog, Error> {
        let views = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: CatalogFile =
                    serde_json::from_str(&text).map_err(|e| catalog_error(path, e))?;
                file.views.into_iter().map(|v| (v.name, v.sql)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(catalog_error(path, e)),
        };
        Ok(ViewCatalog {
            path: Some(path.to_path_buf()),
            views: Mutex::new(views),
        })
    }

    /// Every named view, by name.
    pub fn list(&self) -> Vec<NamedView> {
        self.lock()
            .iter()
            .map(|(name, sql)| NamedView {
                name: name.clone(),
                sql: sql.clone(),
            })
            .collect()
    }

    /// The definition of view `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    /// Adds or replaces a view and saves the file.
    pub fn put(&self, name: &str, sql: &str) -> Result<(), Error> {
        let mut views = self.lock();
        let mut next = views.clone();
        next.insert(name.to_string(), sql.to_string());
        self.save(&next)?;
        *views = next;
        Ok(())
    }

    /// Removes a view and saves the file; says whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        let mut views = self.lock();
        if !views.contains_key(name) {
            return Ok(false);
        }
        let mut next = views.clone();
        next.remove(name);
        self.save(&next)?;
        *views = next;
        Ok(true)
    }

    fn save(&self, views: &BTreeMap<String, String>) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = CatalogFile {
            views: views
                .iter()
                .map(|(name, sql)| NamedView {
                    name: name.clone(),
                    sql: sql.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| catalog_error(path, e))?;
        write_atomically(path, text.as_bytes()).map_err(|e| catalog_error(path, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // The map is replaced whole after a successful save, so a poisoned lock holds a
        // consistent map.
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn catalog_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Catalog {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        // Makes the rename itself durable; not every platform allows syncing a directory.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join(CATALOG_FILE);
        let catalog = ViewCatalog::open(&path).expect("empty catalog");
        catalog.put("worn", "SELECT 1").expect("put");
        catalog.put("fresh", "SELECT 2").expect("put");
        assert!(catalog.remove("fresh").expect("remove"));
        assert!(!catalog.remove("fresh").expect("remove twice"));
        let reopened = ViewCatalog::open(&path).expect("reopen");
        assert_eq!(
            reopened.list(),
            vec![NamedView {
                name: "worn".into(),
                sql: "SELECT 1".into()
            }]
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CATALOG_FILE)]);
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(CATALOG_FILE);
        std::fs::write(&path, "{not json").expect("write");
        let error = ViewCatalog::open(&path).expect_err("corrupt");
        assert_eq!(error.sqlstate(), "58030");
    }
}
