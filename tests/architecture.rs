//! The crates import only in the direction docs/architecture.md allows (read from `cargo metadata`).

use std::collections::{BTreeMap, BTreeSet};

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let all = [
        "wearflow-operators",
        "wearflow-sources",
        "wearflow-dataflows",
        "wearflow-sinks",
        "wearflow-sql",
        "wearflow",
    ];
    BTreeMap::from([
        ("wearflow-operators", BTreeSet::new()),
        ("wearflow-sources", BTreeSet::from(["wearflow-operators"])),
        (
            "wearflow-dataflows",
            BTreeSet::from(["wearflow-operators", "wearflow-sources"]),
        ),
        ("wearflow-sinks", BTreeSet::from(["wearflow-operators"])),
        (
            "wearflow-sql",
            BTreeSet::from(["wearflow-operators", "wearflow-sinks"]),
        ),
        ("wearflow", all[..5].iter().copied().collect()),
        ("wearflow-bench", all.into_iter().collect()),
    ])
}

#[test]
fn workspace_crates_import_only_downward() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metadata json");
    let packages = metadata["packages"].as_array().expect("packages");
    let allowed = allowed();
    let ours: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        ours.len(),
        allowed.len(),
        "every workspace crate has a row: {ours:?}"
    );
    for package in packages {
        let name = package["name"].as_str().expect("name");
        let permitted = allowed
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the table"));
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let dep = dependency["name"].as_str().expect("dependency name");
            let is_dev = dependency["kind"].as_str() == Some("dev");
            if ours.contains(dep) && !is_dev {
                assert!(permitted.contains(dep), "{name} must not import {dep}");
            }
        }
    }
}
