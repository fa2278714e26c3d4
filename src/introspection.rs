//! The running dataflow as data, for `GET /dataflows`: operators from timely's operator log,
//! arrangement sizes from differential's arrangement log.
//!
//! Each worker registers two loggers before it builds the dataflow. Their callbacks get
//! events in batches and fold them into one shared [`DataflowLog`]: operator creation
//! (address, name) and arrangement batches (created, merged, dropped: records and batches
//! held per arrangement). Every other timely event is ignored. Operators are keyed by their
//! address, which is the same on every worker, so sizes are summed over workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use serde_json::{Value as Json, json};
use timely::logging::{TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// Records and batches an arrangement holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArrangementSize {
    /// Updates in its batches.
    pub records: i64,
    /// Batches in its trace.
    pub batches: i64,
}

#[derive(Debug, Default)]
struct Operator {
    name: String,
    workers: usize,
    arrangement: Option<ArrangementSize>,
}

#[derive(Debug, Default)]
struct State {
    operators: BTreeMap<Vec<usize>, Operator>,
    /// (worker, worker-local operator id) → address.
    addresses: HashMap<(usize, usize), Vec<usize>>,
    workers: usize,
}

/// The operators and arrangements of the running dataflow, shared by the workers (writers)
/// and the HTTP API (reader).
#[derive(Debug, Default)]
pub struct DataflowLog {
    state: Mutex<State>,
}

impl DataflowLog {
    /// An empty log.
    pub fn new() -> DataflowLog {
        DataflowLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters: a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs this worker's loggers; call before the worker builds its dataflows.
    pub fn register(self: &std::sync::Arc<Self>, worker: &mut Worker) {
        let index = worker.index();
        self.lock().workers = worker.peers();
        let Some(mut registry) = worker.log_register() else {
            return;
        };
        let log = std::sync::Arc::clone(self);
        registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
            let Some(events) = data else { return };
            let operates: Vec<_> = events
                .iter()
                .filter_map(|(_, event)| match event {
                    TimelyEvent::Operates(op) => Some(op),
                    _ => None,
                })
                .collect();
            if operates.is_empty() {
                return;
            }
            let mut state = log.lock();
            for op in operates {
                state.addresses.insert((index, op.id), op.addr.clone());
                let entry = state.operators.entry(op.addr.clone()).or_default();
                entry.name.clone_from(&op.name);
                entry.workers += 1;
            }
        });
        let log = std::sync::Arc::clone(self);
        registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_time, data| {
            let Some(events) = data else { return };
            let mut state = log.lock();
            for (_, event) in events.iter() {
                let (operator, records, batches) = match event {
                    DifferentialEvent::Batch(b) => (b.operator, b.length as i64, 1),
                    DifferentialEvent::Merge(m) => match m.complete {
                        // Two batches became one.
                        Some(merged) => (
                            m.operator,
                            merged as i64 - m.length1 as i64 - m.length2 as i64,
                            -1,
                        ),
                        None => continue,
                    },
                    DifferentialEvent::Drop(d) => (d.operator, -(d.length as i64), -1),
                    _ => continue,
                };
                let Some(address) = state.addresses.get(&(index, operator)).cloned() else {
                    continue;
                };
                let size = state
                    .operators
                    .entry(address)
                    .or_default()
                    .arrangement
                    .get_or_insert_with(ArrangementSize::default);
                size.records += records;
                size.batches += batches;
            }
        });
    }

    /// The size of each arrangement, by operator name (summed over workers and operators of
    /// the same name).
    pub fn arrangements(&self) -> BTreeMap<String, ArrangementSize> {
        let state = self.lock();
        let mut out: BTreeMap<String, ArrangementSize> = BTreeMap::new();
        for op in state.operators.values() {
            if let Some(size) = op.arrangement {
                let total = out.entry(op.name.clone()).or_default();
                total.records += size.records;
                total.batches += size.batches;
            }
        }
        out
    }

    /// `{"workers", "operators": [{"address", "name", "workers", "arrangement"?}],
    /// "arrangements": {"count", "records", "batches"}}`, operators in address order.
    pub fn to_json(&self) -> Json {
        let state = self.lock();
        let mut count = 0;
        let mut records = 0;
        let mut batches = 0;
        let operators: Vec<Json> = state
            .operators
            .iter()
            .filter(|(_, op)| !op.name.is_empty())
            .map(|(address, op)| {
                let mut entry = json!({
                    "address": address,
                    "name": op.name,
                    "workers": op.workers,
                });
                if let Some(size) = op.arrangement {
                    count += 1;
                    records += size.records;
                    batches += size.batches;
                    entry["arrangement"] = json!({"records": size.records, "batches": size.batches});
                }
                entry
            })
            .collect();
        json!({
            "workers": state.workers,
            "operators": operators,
            "arrangements": {"count": count, "records": records, "batches": batches},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::Arc;

    #[test]
    fn operators_and_arrangement_sizes_are_recorded() {
        let log = Arc::new(DataflowLog::new());
        let worker_log = Arc::clone(&log);
        let sizes = timely::execute_directly(move |worker| {
            worker_log.register(worker);
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, numbers) = scope.new_collection::<u64, isize>();
                let _ = numbers.arrange_by_self_named("numbers by value");
                input
            });
            for n in 0..100u64 {
                input.update_at(n, 0, 1);
            }
            input.advance_to(1);
            input.flush();
            for _ in 0..20 {
                worker.step();
            }
            worker_log.arrangements()
        });
        let size = sizes.get("numbers by value").copied().unwrap_or_default();
        assert_eq!(size.records, 100, "{sizes:?}");
        assert!(size.batches >= 1, "{sizes:?}");
        let json = log.to_json();
        let names: Vec<&str> = json["operators"]
            .as_array()
            .expect("operators")
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        assert!(names.contains(&"numbers by value"), "{names:?}");
        assert_eq!(json["workers"], 1);
    }
}
