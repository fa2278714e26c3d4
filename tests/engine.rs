//! End-to-end tests of the engine: files in, views out, through the real runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wearflow::config::{ClockConfig, Config, SourceConfig};
use wearflow::metrics::Metrics;
use wearflow::runtime::{self, RunSummary};
use wearflow_operators::Value;
use wearflow_sinks::{ServingStore, Snapshot};
use wearflow_sources::{SimulatorConfig, simulate, write_jsonl};

use crate::common::render;

struct Run {
    summary: RunSummary,
    final_snapshot: Arc<Snapshot>,
    snapshots: Vec<Arc<Snapshot>>,
}

fn replay(dir: &Path, workers: usize, tick_records: usize) -> Run {
    replay_with(
        dir,
        workers,
        ClockConfig {
            tick_records,
            ..ClockConfig::default()
        },
    )
}

fn replay_with(dir: &Path, workers: usize, clock: ClockConfig) -> Run {
    let data = tempfile::tempdir().expect("data dir");
    let config = Config {
        workers,
        data_dir: data.path().to_path_buf(),
        clock,
        source: SourceConfig::Files {
            dir: dir.to_path_buf(),
            speed: 0.0,
        },
        ..Config::default()
    };
    let store = Arc::new(ServingStore::new(runtime::view_schemas()));
    let mut feed = store.subscribe();
    let (tx, rx) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let mut all = Vec::new();
        loop {
            match feed.blocking_recv() {
                Ok(snapshot) => all.push(snapshot),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
            if rx.try_recv().is_ok() {
                break;
            }
        }
        all
    });
    let summary = runtime::run(
        &config,
        Arc::clone(&store),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(false)),
    )
    .expect("engine run");
    let final_snapshot = store.snapshot();
    tx.send(()).ok();
    // One more publication wakes the collector so it sees the stop signal.
    store.publish(final_snapshot.as_of, Vec::new());
    let snapshots = collector.join().expect("collector");
    Run {
        summary,
        final_snapshot,
        snapshots,
    }
}

fn simulate_files(dir: &Path, seed: u64, machines: usize, hours: u64) -> usize {
    let config = SimulatorConfig {
        seed,
        machines,
        ..SimulatorConfig::default()
    };
    let (events, _) = simulate(config, hours * 3_600_000);
    write_jsonl(dir, &events).expect("write simulator files");
    events.len()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Golden test: a fixed seed replayed from files gives exactly the expected rows of every
/// view. Regenerate the expected files with `WEARFLOW_BLESS=1 cargo test --test engine`.
#[test]
fn golden_views_for_a_fixed_seed() {
    let input = tempfile::tempdir().expect("input dir");
    let events = simulate_files(input.path(), 7, 5, 32);
    let run = replay(input.path(), 2, 2_000);
    assert_eq!(run.summary.records as usize, events);
    assert_eq!(run.summary.bad, 0);
    let rendered = render(&run.final_snapshot);
    let bless = std::env::var_os("WEARFLOW_BLESS").is_some();
    let golden = golden_dir();
    let mut as_of_line = String::new();
    as_of_line.push_str(&format!("{}\n", run.final_snapshot.as_of));
    let mut expected_files = vec![("as_of.txt".to_string(), as_of_line)];
    for (view, text) in rendered {
        expected_files.push((format!("{view}.jsonl"), text));
    }
    for (file, text) in expected_files {
        let path = golden.join(&file);
        if bless {
            std::fs::create_dir_all(&golden).expect("golden dir");
            std::fs::write(&path, &text).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}; run with WEARFLOW_BLESS=1", path.display()));
        assert_eq!(
            text, expected,
            "{file} differs from the golden file (WEARFLOW_BLESS=1 regenerates)"
        );
    }
}

/// Batching a tick's records into few logical times (`clock.batch_ms`, on by default)
/// changes no view at the end of input: every view, the as_of and the record counts equal
/// those of an unbatched run with the same ticks. (Which records are late depends on where
/// ticks end, batched or not: a tick's records are judged against the frontier it began
/// with.)
#[test]
fn batched_stamps_give_the_views_of_an_unbatched_run() {
    let input = tempfile::tempdir().expect("input dir");
    simulate_files(input.path(), 5, 4, 30);
    // Some readings out of order: each moved 400 lines later comes behind the frontier.
    let telemetry = input.path().join("telemetry.jsonl");
    let text = std::fs::read_to_string(&telemetry).expect("telemetry");
    let mut lines: Vec<&str> = text.lines().collect();
    for i in (0..lines.len().saturating_sub(400)).step_by(997) {
        lines.swap(i, i + 400);
    }
    std::fs::write(&telemetry, lines.join("\n") + "\n").expect("write telemetry");
    let run = |batch_ms: u64, tick_records: usize| {
        replay_with(
            input.path(),
            2,
            ClockConfig {
                batch_ms,
                tick_records,
                ..ClockConfig::default()
            },
        )
    };
    for tick_records in [1_000, 50_000] {
        let unbatched = run(0, tick_records);
        let rendered = render(&unbatched.final_snapshot);
        assert!(unbatched.final_snapshot.views["tooth_wear"].len() > 10);
        assert!(unbatched.final_snapshot.views["features"].len() > 10);
        assert!(unbatched.summary.late > 0, "the replay has late records");
        for batch_ms in [60_000, 20_000] {
            let batched = run(batch_ms, tick_records);
            let case = format!("batch {batch_ms} ms, ticks of {tick_records}");
            assert_eq!(
                batched.final_snapshot.as_of, unbatched.final_snapshot.as_of,
                "{case}"
            );
            assert_eq!(batched.summary.records, unbatched.summary.records, "{case}");
            assert_eq!(batched.summary.late, unbatched.summary.late, "{case}");
            let other = render(&batched.final_snapshot);
            for (view, text) in &rendered {
                assert_eq!(other.get(view), Some(text), "view {view}, {case}");
            }
        }
    }
}

/// The views do not depend on the number of workers, at the end and at every `as_of`
/// published by both runs.
#[test]
fn views_do_not_depend_on_worker_count() {
    let input = tempfile::tempdir().expect("input dir");
    simulate_files(input.path(), 11, 4, 30);
    let runs: Vec<Run> = [1, 2, 4]
        .into_iter()
        .map(|w| replay(input.path(), w, 3_000))
        .collect();
    let reference = &runs[0];
    assert!(reference.final_snapshot.views["tooth_wear"].len() > 10);
    for other in &runs[1..] {
        assert_eq!(other.final_snapshot.as_of, reference.final_snapshot.as_of);
        assert_eq!(
            render(&other.final_snapshot),
            render(&reference.final_snapshot)
        );
        let by_time: BTreeMap<u64, &Arc<Snapshot>> =
            reference.snapshots.iter().map(|s| (s.as_of, s)).collect();
        let mut compared = 0;
        for snapshot in &other.snapshots {
            if let Some(expected) = by_time.get(&snapshot.as_of) {
                // Append views accumulate across snapshots; compare keyed views exactly.
                let keyed = |s: &Snapshot| {
                    let mut r = render(s);
                    r.remove("alerts");
                    r.remove("dead_letters");
                    r
                };
                assert_eq!(
                    keyed(snapshot),
                    keyed(expected),
                    "at as_of {}",
                    snapshot.as_of
                );
                compared += 1;
            }
        }
        assert!(compared >= 3, "only {compared} common snapshots to compare");
    }
}

fn int(row: &[Value], i: usize) -> i64 {
    match &row[i] {
        Value::Int(v) => *v,
        other => panic!("column {i} is {other:?}, not an integer"),
    }
}

/// Malformed lines are counted, kept as dead letters with their reason, and lose nothing else.
#[test]
fn bad_input_goes_to_dead_letters_and_the_rest_is_counted() {
    let input = tempfile::tempdir().expect("input dir");
    let good = |device: &str, minute: u64, remaining: f64| {
        format!(
            "{{\"device_id\":\"{device}\",\"machine_id\":\"M1\",\"ts\":{},\"metrics\":{{\"remaining_mm\":{remaining},\"load_kn\":50}}}}",
            1_767_225_600_000u64 + minute * 60_000
        )
    };
    let lines = [
        good("D1", 0, 100.0),
        "{not json".to_string(),
        good("D2", 1, 90.0),
        "{\"device_id\":\"D3\",\"machine_id\":\"M1\",\"ts\":\"yesterday\",\"metrics\":{\"a\":1}}".to_string(),
        good("D1", 2, 99.5),
        "{\"device_id\":\"D3\",\"machine_id\":\"M1\",\"ts\":1767225600000,\"metrics\":{\"remaining_mm\":\"x\"}}".to_string(),
        good("D2", 3, 89.0),
        String::new(),
        good("D1", 4, 99.0),
    ];
    std::fs::write(
        input.path().join("telemetry.jsonl"),
        lines.join("\n") + "\n",
    )
    .expect("write");
    std::fs::write(
        input.path().join("stock.jsonl"),
        "{\"warehouse\":\"W\",\"sku\":\"S\",\"qty_delta\":10,\"reason\":\"receipt\",\"ts\":1767225600000}\n\
         {\"warehouse\":\"W\",\"sku\":\"S\",\"qty_delta\":0,\"reason\":\"issue\",\"ts\":1767225660000}\n\
         {\"warehouse\":\"W\",\"sku\":\"S\",\"qty_delta\":-3,\"reason\":\"issue\",\"ts\":1767225720000}\n",
    )
    .expect("write");
    let run = replay(input.path(), 2, 4);
    assert_eq!(run.summary.records, 11);
    assert_eq!(run.summary.bad, 4);
    let snapshot = &run.final_snapshot;
    let quality = &snapshot.views["data_quality"];
    let telemetry = quality
        .get(&[Value::str("telemetry")])
        .expect("telemetry quality row");
    assert_eq!((int(telemetry, 1), int(telemetry, 2)), (5, 3));
    let stock = quality
        .get(&[Value::str("stock")])
        .expect("stock quality row");
    assert_eq!((int(stock, 1), int(stock, 2)), (2, 1));
    let dead: Vec<String> = snapshot.views["dead_letters"]
        .iter()
        .map(|row| match &row[3] {
            Value::Str(reason) => reason.clone(),
            other => panic!("reason {other:?}"),
        })
        .collect();
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(dead.iter().any(|r| r.contains("timestamp")), "{dead:?}");
    assert!(dead.iter().any(|r| r.contains("qty_delta")), "{dead:?}");
    let teeth = &snapshot.views["tooth_wear"];
    assert_eq!(teeth.len(), 2);
    let d1 = teeth.get(&[Value::str("D1")]).expect("D1");
    assert_eq!(d1[6], Value::Float(99.0));
    let balance = snapshot.views["inventory_balances"]
        .get(&[Value::str("W"), Value::str("S")])
        .expect("balance");
    assert_eq!(int(balance, 2), 7);
}

fn reading(device: &str, machine: &str, second: u64, remaining: f64) -> String {
    format!(
        "{{\"device_id\":\"{device}\",\"machine_id\":\"{machine}\",\"ts\":{},\"metrics\":{{\"remaining_mm\":{remaining}}}}}",
        1_767_254_400_000u64 + second * 1_000
    )
}

/// A tooth that stops reporting while its machine works is lost and raises one alert; teeth
/// of a machine that starts its shift are not; a tooth at its wear limit must be replaced.
#[test]
fn lost_and_worn_teeth_raise_alerts_once() {
    let input = tempfile::tempdir().expect("input dir");
    let mut lines = Vec::new();
    // Shift 1: M1-T1 and M1-T2 report every 10 s for 5 minutes. M1-T3 wears past the limit.
    for i in 0..30 {
        lines.push(reading("M1-T1", "M1", i * 10, 100.0));
        lines.push(reading("M1-T2", "M1", i * 10 + 1, 90.0));
        lines.push(reading("M1-T3", "M1", i * 10 + 2, 41.0 - i as f64 * 0.1));
    }
    // Eight hours later the machine starts again: T1 and T3 report at once, T2 never again.
    for i in 0..120 {
        let second = 8 * 3_600 + i * 10;
        lines.push(reading("M1-T1", "M1", second, 99.0));
        lines.push(reading("M1-T3", "M1", second + 3, 38.0));
    }
    std::fs::write(
        input.path().join("telemetry.jsonl"),
        lines.join("\n") + "\n",
    )
    .expect("write");
    let run = replay(input.path(), 2, 7);
    let snapshot = &run.final_snapshot;
    let teeth = &snapshot.views["tooth_wear"];
    let status = |device: &str| teeth.get(&[Value::str(device)]).expect("tooth row")[13].clone();
    assert_eq!(status("M1-T1"), Value::str("ok"));
    assert_eq!(status("M1-T2"), Value::str("lost"));
    assert_eq!(status("M1-T3"), Value::str("replace"));
    let alerts: Vec<(String, String)> = snapshot.views["alerts"]
        .iter()
        .map(|row| match (&row[1], &row[2]) {
            (Value::Str(kind), Value::Str(subject)) => (kind.clone(), subject.clone()),
            other => panic!("alert row {other:?}"),
        })
        .collect();
    assert_eq!(
        alerts,
        vec![
            ("wear_limit".to_string(), "M1-T3".to_string()),
            ("tooth_lost".to_string(), "M1-T2".to_string())
        ],
        "one alert per episode, none for the shift start"
    );
    let machine = snapshot.views["machine_health"]
        .get(&[Value::str("M1")])
        .expect("machine row");
    assert_eq!(
        (int(machine, 2), int(machine, 3), int(machine, 8)),
        (2, 1, 2)
    );
}

mod oracle {
    //! Random stock, order and SKU events, written out of order (so many are late), checked
    //! against a plain-Rust recomputation of `inventory_balances`, `orders_open` and
    //! `data_quality` on 1, 2 and 4 workers.

    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_767_225_600_000;

    /// (warehouse, sku) → (on hand, reserved, on order, reorder point).
    type Balances = BTreeMap<(String, String), (i64, i64, i64, Option<i64>)>;
    /// order id → (kind, status, warehouse, sku, qty).
    type OpenOrders = BTreeMap<String, (String, String, String, String, i64)>;

    #[derive(Clone, Debug)]
    struct OrderEvent {
        id: u8,
        kind: &'static str,
        status: &'static str,
        warehouse: u8,
        sku: u8,
        qty: i64,
        ts: u64,
    }

    const STATUSES: [&str; 6] = [
        "created",
        "allocated",
        "assigned",
        "shipped",
        "completed",
        "cancelled",
    ];

    fn rank(status: &str) -> usize {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .expect("known status")
    }

    fn order_events() -> impl Strategy<Value = Vec<OrderEvent>> {
        prop::collection::vec(
            (0u8..6, 0usize..6, 0u8..2, 0u8..2, 1i64..5, 0u64..7_200),
            0..25,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .map(|(id, status, warehouse, sku, qty, second)| OrderEvent {
                    id,
                    // One kind per order id, so an order never changes kind.
                    kind: ["sales", "work", "purchase"][id as usize % 3],
                    status: match (id % 3, STATUSES[status]) {
                        (1, "shipped") => "completed",
                        (_, s) => s,
                    },
                    warehouse,
                    sku,
                    qty,
                    ts: T0 + second * 1_000,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        #[test]
        fn views_equal_a_recomputation(
            stock in prop::collection::vec((0u8..2, 0u8..2, -9i64..10, 0u64..7_200), 1..40),
            orders in order_events(),
            reorder in prop::collection::vec((0u8..2, 0i64..30, 0u64..7_200), 0..4),
        ) {
            let input = tempfile::tempdir().expect("input dir");
            let stock_lines: Vec<String> = stock
                .iter()
                .map(|(w, s, q, second)| {
                    let q = if *q == 0 { 1 } else { *q };
                    format!(
                        "{{\"warehouse\":\"W{w}\",\"sku\":\"S{s}\",\"qty_delta\":{q},\"reason\":\"adjustment\",\"ts\":{}}}",
                        T0 + second * 1_000
                    )
                })
                .collect();
            let order_lines: Vec<String> = orders
                .iter()
                .map(|o| {
                    format!(
                        "{{\"order_id\":\"O{}\",\"kind\":\"{}\",\"status\":\"{}\",\"warehouse\":\"W{}\",\"sku\":\"S{}\",\"qty\":{},\"ts\":{}}}",
                        o.id, o.kind, o.status, o.warehouse, o.sku, o.qty, o.ts
                    )
                })
                .collect();
            let asset_lines: Vec<String> = reorder
                .iter()
                .map(|(s, rp, second)| {
                    format!("{{\"kind\":\"sku\",\"sku\":\"S{s}\",\"reorder_point\":{rp},\"ts\":{}}}", T0 + second * 1_000)
                })
                .collect();
            // Files keep the random order: records behind the frontier are late but count.
            std::fs::write(input.path().join("stock.jsonl"), stock_lines.join("\n") + "\n").expect("write");
            std::fs::write(input.path().join("orders.jsonl"), order_lines.join("\n") + "\n").expect("write");
            std::fs::write(input.path().join("assets.jsonl"), asset_lines.join("\n") + "\n").expect("write");

            // The recomputation.
            let mut on_hand: BTreeMap<(u8, u8), i64> = BTreeMap::new();
            for (w, s, q, _) in &stock {
                *on_hand.entry((*w, *s)).or_default() += if *q == 0 { 1 } else { *q };
            }
            let mut by_order: BTreeMap<u8, Vec<&OrderEvent>> = BTreeMap::new();
            for o in &orders {
                by_order.entry(o.id).or_default().push(o);
            }
            let mut open_orders: OpenOrders = BTreeMap::new();
            let mut reserved: BTreeMap<(u8, u8), i64> = BTreeMap::new();
            let mut on_order: BTreeMap<(u8, u8), i64> = BTreeMap::new();
            for (id, mut events) in by_order {
                events.sort_by_key(|e| (e.ts, rank(e.status)));
                let last = events.last().expect("events");
                if rank(last.status) >= 3 {
                    continue;
                }
                open_orders.insert(
                    format!("O{id}"),
                    (last.kind.to_string(), last.status.to_string(), format!("W{}", last.warehouse), format!("S{}", last.sku), last.qty),
                );
                let target = if last.kind == "purchase" { &mut on_order } else { &mut reserved };
                *target.entry((last.warehouse, last.sku)).or_default() += last.qty;
            }
            let mut points: BTreeMap<u8, (u64, i64)> = BTreeMap::new();
            for (s, rp, second) in &reorder {
                let e = points.entry(*s).or_insert((*second, *rp));
                if (*second, *rp) > *e { *e = (*second, *rp); }
            }
            let mut keys: Vec<(u8, u8)> = on_hand.iter().filter(|(_, v)| **v != 0).map(|(k, _)| *k).collect();
            keys.extend(reserved.iter().filter(|(_, v)| **v != 0).map(|(k, _)| *k));
            keys.extend(on_order.iter().filter(|(_, v)| **v != 0).map(|(k, _)| *k));
            keys.sort();
            keys.dedup();
            let expected_balances: Balances = keys
                .into_iter()
                .map(|(w, s)| {
                    let k = (w, s);
                    (
                        (format!("W{w}"), format!("S{s}")),
                        (
                            on_hand.get(&k).copied().unwrap_or(0),
                            reserved.get(&k).copied().unwrap_or(0),
                            on_order.get(&k).copied().unwrap_or(0),
                            points.get(&s).map(|(_, rp)| *rp),
                        ),
                    )
                })
                .collect();

            for workers in [1, 2, 4] {
                let run = replay(input.path(), workers, 5);
                let snapshot = &run.final_snapshot;
                let text = |v: &Value| match v {
                    Value::Str(s) => s.clone(),
                    other => panic!("expected text, got {other:?}"),
                };
                let balances: Balances = snapshot.views
                    ["inventory_balances"]
                    .iter()
                    .map(|row| {
                        let rp = match &row[6] { Value::Int(v) => Some(*v), _ => None };
                        assert_eq!(int(row, 4), int(row, 2) - int(row, 3), "available = on hand - reserved");
                        ((text(&row[0]), text(&row[1])), (int(row, 2), int(row, 3), int(row, 5), rp))
                    })
                    .collect();
                prop_assert_eq!(&balances, &expected_balances, "inventory_balances on {} workers", workers);
                let open: OpenOrders = snapshot.views["orders_open"]
                    .iter()
                    .map(|row| (text(&row[0]), (text(&row[1]), text(&row[2]), text(&row[5]), text(&row[3]), int(row, 4))))
                    .collect();
                prop_assert_eq!(&open, &open_orders, "orders_open on {} workers", workers);
                let quality = &snapshot.views["data_quality"];
                let ok = |source: &str| quality.get(&[Value::str(source)]).map_or(0, |row| int(row, 1));
                prop_assert_eq!(ok("stock") as usize, stock.len());
                prop_assert_eq!(ok("orders") as usize, orders.len());
                prop_assert_eq!(ok("assets") as usize, reorder.len());
            }
        }
    }
}

/// Over its memory budget the engine reads nothing (it does not buffer), counts the paused
/// time, and still stops when asked; under the budget the same input is read in full.
#[test]
fn readers_pause_over_the_memory_budget() {
    let input = tempfile::tempdir().expect("input dir");
    let events = simulate_files(input.path(), 5, 3, 12);
    let run = |budget: u64, stop_after: Option<u64>| {
        let data = tempfile::tempdir().expect("data dir");
        let config = Config {
            workers: 2,
            data_dir: data.path().to_path_buf(),
            clock: ClockConfig {
                tick_records: 1_000,
                ..ClockConfig::default()
            },
            source: SourceConfig::Files {
                dir: input.path().to_path_buf(),
                speed: 0.0,
            },
            backpressure: wearflow::backpressure::BackpressureConfig {
                memory_budget_bytes: budget,
                ..Default::default()
            },
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::new());
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = stop_after.map(|ms| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                stop.store(true, std::sync::atomic::Ordering::Release);
            })
        });
        let store = Arc::new(ServingStore::new(runtime::view_schemas()));
        let summary = runtime::run(&config, store, Arc::clone(&metrics), stop).expect("engine run");
        if let Some(stopper) = stopper {
            stopper.join().expect("stopper");
        }
        let paused = metrics
            .backpressure_seconds
            .with_label_values(&["memory"])
            .get();
        (summary, paused, metrics.rss_bytes.get())
    };
    // 1 MiB: less than any process uses.
    let (summary, paused, rss) = run(1 << 20, Some(1_500));
    assert!(
        summary.records <= 1_000,
        "at most the one tick read on the way out: {}",
        summary.records
    );
    assert!(paused > 0.5, "paused for {paused} s");
    assert!(rss > 1 << 20);
    let (summary, paused, _) = run(1 << 40, None);
    assert_eq!(summary.records as usize, events);
    assert_eq!(paused, 0.0);
}
