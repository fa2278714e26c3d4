//! Test harness: run a collection-to-collection function on timely workers and read back
//! its updates, to compare them with a recomputation from scratch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::ExchangeData;
use differential_dataflow::input::Input;

use crate::{Collection, Diff, Time};

/// Feeds `updates` (worker 0, in time order, one round per distinct time so every operator
/// sees many incremental steps) through `build` on `workers` threads; returns all output updates.
pub fn run<D, O, F>(workers: usize, updates: Vec<(D, Time, Diff)>, build: F) -> Vec<(O, Time, Diff)>
where
    D: ExchangeData + Send,
    O: ExchangeData + Send,
    F: for<'s> Fn(Collection<'s, D>) -> Collection<'s, O> + Send + Sync + 'static,
{
    let collected = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&collected);
    let updates = Arc::new(Mutex::new(Some(updates)));
    let build = Arc::new(build);
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let build = Arc::clone(&build);
        let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, collection) = scope.new_collection::<D, Diff>();
            let (probe, _) = build(collection)
                .inspect(move |update| sink.lock().expect("sink lock").push(update.clone()))
                .probe();
            (input, probe)
        });
        if worker.index() == 0 {
            let mut updates = updates
                .lock()
                .expect("updates lock")
                .take()
                .unwrap_or_default();
            updates.sort_by_key(|u| u.1);
            for (data, time, diff) in updates {
                if time > *input.time() {
                    input.advance_to(time);
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
                input.update_at(data, time, diff);
            }
        }
        input.close();
        while worker.step() {}
    })
    .expect("timely execution");
    collected.lock().expect("collected lock").clone()
}

/// The accumulated collection at time `q`: every record whose updates at or before `q` do
/// not cancel, with its multiplicity.
pub fn accumulate_at<O: Ord + Clone>(updates: &[(O, Time, Diff)], q: Time) -> BTreeMap<O, Diff> {
    let mut acc: BTreeMap<O, Diff> = BTreeMap::new();
    for (data, time, diff) in updates {
        if *time <= q {
            *acc.entry(data.clone()).or_default() += diff;
        }
    }
    acc.retain(|_, d| *d != 0);
    acc
}
