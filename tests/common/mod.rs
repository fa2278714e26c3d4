//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test module uses a part

pub mod process;

use std::collections::BTreeMap;

use wearflow_sinks::Snapshot;
use wearflow_sinks::json::row_to_json;

/// Every view of a snapshot as sorted JSON lines, one file's worth per view.
pub fn render(snapshot: &Snapshot) -> BTreeMap<String, String> {
    snapshot
        .views
        .iter()
        .map(|(name, view)| {
            let mut lines: Vec<String> = view
                .iter()
                .map(|row| row_to_json(&view.schema, row).to_string())
                .collect();
            lines.sort();
            (name.clone(), lines.join("\n") + "\n")
        })
        .collect()
}
