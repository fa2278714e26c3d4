//! The serving store: one immutable snapshot of every view per published time.
//!
//! Publishing builds the next snapshot from the previous one with persistent maps (only the
//! changed paths are copied) and swaps an atomic pointer; readers load that pointer and keep
//! their snapshot as long as they like. Neither side ever waits for the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use imbl::{OrdMap, Vector};
use tokio::sync::broadcast;
use wearflow_operators::{Diff, Row, Time, Value, ViewKind, ViewSchema};

/// How many events an append view keeps (the oldest are dropped first).
pub const DEFAULT_APPEND_CAPACITY: usize = 10_000;

/// What happened to one key in one published snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// A new key.
    Insert,
    /// A key whose row changed.
    Update,
    /// A key that disappeared.
    Delete,
}

/// One key's change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Insert, update or delete.
    pub op: ChangeOp,
    /// The key columns.
    pub key: Row,
    /// The new row (none for a delete).
    pub row: Option<Row>,
}

/// One view's rows in one snapshot.
#[derive(Clone, Debug)]
pub struct ViewData {
    /// The view's schema.
    pub schema: Arc<ViewSchema>,
    /// Keyed views: key → row, in key order.
    pub rows: OrdMap<Row, Row>,
    /// Append views: events in arrival order, bounded.
    pub events: Vector<Row>,
}

impl ViewData {
    fn new(schema: Arc<ViewSchema>) -> ViewData {
        ViewData {
            schema,
            rows: OrdMap::new(),
            events: Vector::new(),
        }
    }

    /// Number of rows (keyed) or retained events (append).
    pub fn len(&self) -> usize {
        match self.schema.kind {
            ViewKind::Keyed => self.rows.len(),
            ViewKind::Append => self.events.len(),
        }
    }

    /// Whether the view holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row for a key (keyed views; append views search their events).
    pub fn get(&self, key: &[Value]) -> Option<&Row> {
        match self.schema.kind {
            ViewKind::Keyed => self.rows.get(key),
            ViewKind::Append => self
                .events
                .iter()
                .rev()
                .find(|row| &row[..self.schema.key_len] == key),
        }
    }

    /// All rows: keyed views in key order, append views oldest first.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Row> + '_> {
        match self.schema.kind {
            ViewKind::Keyed => Box::new(self.rows.values()),
            ViewKind::Append => Box::new(self.events.iter()),
        }
    }
}

/// Every view at one logical time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases by one per publication.
    pub version: u64,
    /// The logical time every view reflects: all input up to and including it.
    pub as_of: Time,
    /// Wall-clock time of publication.
    pub published_at: SystemTime,
    /// Views by name.
    pub views: BTreeMap<String, Arc<ViewData>>,
    /// The changes that turned the previous snapshot into this one, by view.
    pub changes: Arc<BTreeMap<String, Vec<Change>>>,
}

impl Snapshot {
    /// A view by name.
    pub fn view(&self, name: &str) -> Option<&Arc<ViewData>> {
        self.views.get(name)
    }
}

/// The store: the current snapshot behind an atomic pointer, plus a feed of new snapshots.
pub struct ServingStore {
    schemas: Vec<Arc<ViewSchema>>,
    current: ArcSwap<Snapshot>,
    feed: broadcast::Sender<Arc<Snapshot>>,
    append_capacity: usize,
    /// Serializes publishers (normally there is one) so no publication is lost.
    writer: std::sync::Mutex<()>,
    /// Sees every snapshot as it is published, in order, none skipped (batch consumers such
    /// as `wearflow train`; the broadcast feed may drop snapshots for slow readers).
    tap: std::sync::Mutex<Option<Tap>>,
}

/// A function called with every published snapshot.
pub type Tap = Box<dyn FnMut(&Snapshot) + Send>;

impl ServingStore {
    /// An empty store for these views (`as_of` 0, version 0).
    pub fn new(schemas: Vec<ViewSchema>) -> ServingStore {
        let schemas: Vec<Arc<ViewSchema>> = schemas.into_iter().map(Arc::new).collect();
        let views = schemas
            .iter()
            .map(|s| (s.name.clone(), Arc::new(ViewData::new(Arc::clone(s)))))
            .collect();
        let empty = Snapshot {
            version: 0,
            as_of: 0,
            published_at: SystemTime::now(),
            views,
            changes: Arc::new(BTreeMap::new()),
        };
        let (feed, _) = broadcast::channel(256);
        ServingStore {
            schemas,
            current: ArcSwap::from_pointee(empty),
            feed,
            append_capacity: DEFAULT_APPEND_CAPACITY,
            writer: std::sync::Mutex::new(()),
            tap: std::sync::Mutex::new(None),
        }
    }

    /// Calls `tap` with every snapshot published from now on, in order, on the publishing
    /// thread (keep it quick).
    pub fn set_tap(&self, tap: Tap) {
        if let Ok(mut slot) = self.tap.lock() {
            *slot = Some(tap);
        }
    }

    /// The view schemas, in registry order.
    pub fn schemas(&self) -> &[Arc<ViewSchema>] {
        &self.schemas
    }

    /// The current snapshot. Cheap; never blocks.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A feed of every snapshot published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Snapshot>> {
        self.feed.subscribe()
    }

    /// Publishes the snapshot at `as_of`, applying `updates` as `(view index, row, diff)`.
    ///
    /// The caller guarantees that `updates` hold every update at times up to `as_of` not yet
    /// published, and that `as_of` does not go backwards. Returns the new snapshot.
    pub fn publish(&self, as_of: Time, updates: Vec<(usize, Row, Diff)>) -> Arc<Snapshot> {
        // A poisoned lock only means another publisher panicked; the snapshot is still whole.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.snapshot();
        let mut by_view: BTreeMap<usize, Vec<(Row, Diff)>> = BTreeMap::new();
        for (view, row, diff) in updates {
            by_view.entry(view).or_default().push((row, diff));
        }
        let mut views = previous.views.clone();
        let mut changes = BTreeMap::new();
        for (index, mut updates) in by_view {
            let Some(schema) = self.schemas.get(index) else {
                continue;
            };
            consolidate(&mut updates);
            if updates.is_empty() {
                continue;
            }
            let mut data = views
                .get(&schema.name)
                .map_or_else(|| ViewData::new(Arc::clone(schema)), |v| (**v).clone());
            let view_changes = match schema.kind {
                ViewKind::Keyed => apply_keyed(&mut data, updates),
                ViewKind::Append => self.apply_append(&mut data, updates),
            };
            views.insert(schema.name.clone(), Arc::new(data));
            if !view_changes.is_empty() {
                changes.insert(schema.name.clone(), view_changes);
            }
        }
        let next = Arc::new(Snapshot {
            version: previous.version + 1,
            as_of: as_of.max(previous.as_of),
            published_at: SystemTime::now(),
            views,
            changes: Arc::new(changes),
        });
        self.current.store(Arc::clone(&next));
        if let Ok(mut tap) = self.tap.lock()
            && let Some(tap) = tap.as_mut()
        {
            tap(&next);
        }
        // No subscribers is fine: nobody is watching.
        let _ = self.feed.send(Arc::clone(&next));
        next
    }

    fn apply_append(&self, data: &mut ViewData, updates: Vec<(Row, Diff)>) -> Vec<Change> {
        let key_len = data.schema.key_len;
        let mut changes = Vec::new();
        for (row, diff) in updates {
            for _ in 0..diff.max(0) {
                changes.push(Change {
                    op: ChangeOp::Insert,
                    key: row[..key_len].to_vec(),
                    row: Some(row.clone()),
                });
                data.events.push_back(row.clone());
            }
        }
        while data.events.len() > self.append_capacity {
            data.events.pop_front();
        }
        changes
    }
}

/// Sorts and sums diffs of equal rows, dropping rows whose diffs cancel.
fn consolidate(updates: &mut Vec<(Row, Diff)>) {
    updates.sort();
    let mut out: Vec<(Row, Diff)> = Vec::with_capacity(updates.len());
    for (row, diff) in updates.drain(..) {
        match out.last_mut() {
            Some((last, total)) if *last == row => *total += diff,
            _ => out.push((row, diff)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    *updates = out;
}

/// Applies consolidated updates of a keyed view: per key, an added row replaces, a removed
/// row with nothing added deletes.
fn apply_keyed(data: &mut ViewData, updates: Vec<(Row, Diff)>) -> Vec<Change> {
    let key_len = data.schema.key_len;
    let mut per_key: BTreeMap<Row, (Option<Row>, bool)> = BTreeMap::new();
    for (row, diff) in updates {
        let entry = per_key
            .entry(row[..key_len].to_vec())
            .or_insert((None, false));
        if diff > 0 {
            // Two rows for one key would break the view's invariant; keep the greatest so the
            // choice is deterministic.
            if entry.0.as_ref().is_none_or(|r| *r < row) {
                entry.0 = Some(row);
            }
        } else {
            entry.1 = true;
        }
    }
    let mut changes = Vec::with_capacity(per_key.len());
    for (key, (added, removed)) in per_key {
        match added {
            Some(row) => {
                let op = match data.rows.insert(key.clone(), row.clone()) {
                    Some(_) => ChangeOp::Update,
                    None => ChangeOp::Insert,
                };
                changes.push(Change {
                    op,
                    key,
                    row: Some(row),
                });
            }
            None if removed && data.rows.remove(&key).is_some() => {
                changes.push(Change {
                    op: ChangeOp::Delete,
                    key,
                    row: None,
                });
            }
            None => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use wearflow_operators::{Column, ColumnType};

    fn store() -> ServingStore {
        let keyed = ViewSchema::new(
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
        let append = ViewSchema::new(
            "alerts",
            ViewKind::Append,
            1,
            vec![Column::required("id", ColumnType::Utf8)],
            "test",
        )
        .expect("schema");
        ServingStore::new(vec![keyed, append])
    }

    fn row(k: &str, v: i64) -> Row {
        vec![Value::str(k), Value::Int(v)]
    }

    #[test]
    fn snapshots_are_immutable_and_changes_are_reported() {
        let store = store();
        let mut feed = store.subscribe();
        let before = store.snapshot();
        let first = store.publish(10, vec![(0, row("a", 1), 1), (0, row("b", 2), 1)]);
        assert_eq!((first.version, first.as_of), (1, 10));
        assert!(
            before.views["balances"].is_empty(),
            "an old snapshot never changes"
        );
        let second = store.publish(
            20,
            vec![
                (0, row("a", 1), -1),
                (0, row("a", 5), 1),
                (0, row("b", 2), -1),
                (1, vec![Value::str("x")], 1),
            ],
        );
        let balances = &second.views["balances"];
        assert_eq!(balances.get(&[Value::str("a")]), Some(&row("a", 5)));
        assert_eq!(balances.get(&[Value::str("b")]), None);
        assert_eq!(first.views["balances"].len(), 2);
        let ops: Vec<ChangeOp> = second.changes["balances"].iter().map(|c| c.op).collect();
        assert_eq!(ops, vec![ChangeOp::Update, ChangeOp::Delete]);
        assert_eq!(second.views["alerts"].len(), 1);
        assert_eq!(feed.try_recv().expect("first").version, 1);
        assert_eq!(feed.try_recv().expect("second").version, 2);
    }

    #[test]
    fn append_views_ignore_retractions_and_stay_bounded() {
        let mut store = store();
        store.append_capacity = 3;
        for i in 0..5 {
            store.publish(i, vec![(1, vec![Value::str(format!("e{i}"))], 1)]);
        }
        let snapshot = store.publish(9, vec![(1, vec![Value::str("e4")], -1)]);
        let ids: Vec<&Row> = snapshot.views["alerts"].iter().collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], &vec![Value::str("e2")]);
    }

    #[test]
    fn cancelling_updates_change_nothing() {
        let store = store();
        store.publish(1, vec![(0, row("a", 1), 1)]);
        let s = store.publish(2, vec![(0, row("a", 1), -1), (0, row("a", 1), 1)]);
        assert!(s.changes.is_empty());
        assert_eq!(s.views["balances"].len(), 1);
    }
}
