//! The running dataflow as data, for `GET /dataflows`: operators from timely's operator log,
//! arrangement sizes from differential's arrangement log.
//!
//! Each worker registers two loggers before it builds the dataflow. Their callbacks get
//! events in batches and fold them into one shared [`DataflowLog`]: operator creation
//! (address, name), scheduling (start and stop, summed into time spent per operator) and
//! arrangement batches (created, merged, dropped: records and batches held per
//! arrangement). Every other timely event is ignored. Operators are keyed by their address,
//! which is the same on every worker, so sizes and times are summed over workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use serde_json::{Value as Json, json};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
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
}

#[derive(Debug, Default)]
struct State {
    operators: BTreeMap<Vec<usize>, Operator>,
    /// (worker, worker-local operator id) → address.
    addresses: HashMap<(usize, usize), Vec<usize>>,
    /// By (worker, operator id): the two logs flush independently, so an arrangement's
    /// events may come before its operator's; they are joined when read.
    arrangements: HashMap<(usize, usize), ArrangementSize>,
    /// By (worker, operator id): when the running call started, if one is running.
    running: HashMap<(usize, usize), Duration>,
    /// By (worker, operator id): time spent in the operator's calls, its children's included.
    elapsed: HashMap<(usize, usize), Duration>,
    workers: usize,
}

impl State {
    /// Arrangement sizes by operator address, summed over workers.
    fn sizes(&self) -> BTreeMap<Vec<usize>, ArrangementSize> {
        let mut out: BTreeMap<Vec<usize>, ArrangementSize> = BTreeMap::new();
        for (id, size) in &self.arrangements {
            if let Some(address) = self.addresses.get(id) {
                let total = out.entry(address.clone()).or_default();
                total.records += size.records;
                total.batches += size.batches;
            }
        }
        out
    }

    /// Time spent per operator address, summed over workers: (with children, own).
    /// A scope's own time is its time less its direct children's.
    fn times(&self) -> BTreeMap<Vec<usize>, (Duration, Duration)> {
        let mut total: BTreeMap<Vec<usize>, Duration> = BTreeMap::new();
        for (id, spent) in &self.elapsed {
            if let Some(address) = self.addresses.get(id) {
                *total.entry(address.clone()).or_default() += *spent;
            }
        }
        let mut out: BTreeMap<Vec<usize>, (Duration, Duration)> =
            total.iter().map(|(a, t)| (a.clone(), (*t, *t))).collect();
        for (address, spent) in &total {
            if let Some((_, parent)) = address.split_last()
                && let Some(entry) = out.get_mut(parent)
            {
                entry.1 = entry.1.saturating_sub(*spent);
            }
        }
        out
    }
}

/// Time spent in one operator, summed over workers.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorTime {
    /// Its address in the dataflow (the same on every worker).
    pub address: Vec<usize>,
    /// Its name.
    pub name: String,
    /// Time in its own code: for a scope, less the time of the operators inside it.
    pub own: Duration,
    /// Time including the operators inside it.
    pub total: Duration,
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
            let mut state = log.lock();
            for (at, event) in events.iter() {
                match event {
                    TimelyEvent::Operates(op) => {
                        state.addresses.insert((index, op.id), op.addr.clone());
                        let entry = state.operators.entry(op.addr.clone()).or_default();
                        entry.name.clone_from(&op.name);
                        entry.workers += 1;
                    }
                    TimelyEvent::Schedule(schedule) => {
                        let id = (index, schedule.id);
                        match schedule.start_stop {
                            StartStop::Start => {
                                state.running.insert(id, *at);
                            }
                            StartStop::Stop => {
                                if let Some(start) = state.running.remove(&id) {
                                    *state.elapsed.entry(id).or_default() +=
                                        at.saturating_sub(start);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        let log = std::sync::Arc::clone(self);
        registry.insert::<DifferentialEventBuilder, _>(
            "differential/arrange",
            move |_time, data| {
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
                    let size = state.arrangements.entry((index, operator)).or_default();
                    size.records += records;
                    size.batches += batches;
                }
            },
        );
    }

    /// The size of each arrangement, by operator name (summed over workers and operators of
    /// the same name).
    pub fn arrangements(&self) -> BTreeMap<String, ArrangementSize> {
        let state = self.lock();
        let mut out: BTreeMap<String, ArrangementSize> = BTreeMap::new();
        for (address, size) in state.sizes() {
            let name = state
                .operators
                .get(&address)
                .map_or_else(String::new, |op| op.name.clone());
            let total = out.entry(name).or_default();
            total.records += size.records;
            total.batches += size.batches;
        }
        out
    }

    /// Time spent per operator, summed over workers, the most own time first.
    pub fn operator_times(&self) -> Vec<OperatorTime> {
        let state = self.lock();
        let mut out: Vec<OperatorTime> = state
            .times()
            .into_iter()
            .map(|(address, (total, own))| OperatorTime {
                name: state
                    .operators
                    .get(&address)
                    .map_or_else(String::new, |op| op.name.clone()),
                address,
                own,
                total,
            })
            .collect();
        out.sort_by(|a, b| b.own.cmp(&a.own).then_with(|| a.address.cmp(&b.address)));
        out
    }

    /// `{"workers", "operators": [{"address", "name", "workers", "arrangement"?,
    /// "seconds", "own_seconds"}],
    /// "arrangements": {"count", "records", "batches"}}`, operators in address order.
    pub fn to_json(&self) -> Json {
        let state = self.lock();
        let sizes = state.sizes();
        let times = state.times();
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
                if let Some(size) = sizes.get(address) {
                    count += 1;
                    records += size.records;
                    batches += size.batches;
                    entry["arrangement"] =
                        json!({"records": size.records, "batches": size.batches});
                }
                if let Some((total, own)) = times.get(address) {
                    entry["seconds"] = json!(total.as_secs_f64());
                    entry["own_seconds"] = json!(own.as_secs_f64());
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
        // `execute` (unlike `execute_directly`) gives workers a log registry, as the runtime's.
        let guards = timely::execute(timely::Config::thread(), move |worker| {
            worker_log.register(worker);
            let (mut input, _trace) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, numbers) = scope.new_collection::<u64, isize>();
                // A held trace keeps the arrangement's batches (and its readers) alive.
                let trace = numbers.arrange_by_self_named("numbers by value").trace;
                (input, trace)
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
        })
        .expect("timely runs");
        let sizes = guards
            .join()
            .pop()
            .expect("one worker")
            .expect("the worker finishes");
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
        let times = log.operator_times();
        let named = times
            .iter()
            .find(|t| t.name == "numbers by value")
            .expect("the arrangement was scheduled");
        assert!(named.total > Duration::ZERO, "{times:?}");
        for t in &times {
            assert!(t.own <= t.total, "{t:?}");
            // A scope's time covers each operator inside it.
            if let Some((_, parent)) = t.address.split_last()
                && let Some(p) = times.iter().find(|p| p.address == parent)
            {
                assert!(p.total >= t.total, "{p:?} < {t:?}");
            }
        }
        let sum_own: Duration = times.iter().map(|t| t.own).sum();
        let roots: Duration = times
            .iter()
            .filter(|t| t.address.len() == 1)
            .map(|t| t.total)
            .sum();
        assert_eq!(sum_own, roots, "own times add up to the dataflows' totals");
    }
}
