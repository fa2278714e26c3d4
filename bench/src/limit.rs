//! `wearflow-bench limit`: the engine's ceiling on this machine. The same simulated events as
//! `ingest` go into a minimal differential dataflow that keeps one count and one sum per key
//! (one arrangement), stamped at the same 100 ms resolution, fed one simulated minute per
//! tick like the runtime feeds the simulator, by the same number of workers; the figure is events per second. wearflow's ingest over this is the cost of the
//! whole domain pipeline over a single count.

use std::sync::Arc;
use std::time::Instant;

use differential_dataflow::input::Input;
use serde_json::{Value as Json, json};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use wearflow_sources::{Event, SimulatorConfig, simulate};

/// Events as `(key, value, time)`: telemetry by device (remaining length), orders by order,
/// stock by warehouse and SKU (the move), assets by their id.
fn keyed(events: &[Event]) -> Vec<(String, isize, u64)> {
    events
        .iter()
        .map(|event| {
            let ts = event.ts_ms();
            match event {
                Event::Telemetry(t) => (
                    t.device_id.clone(),
                    t.metric("remaining_mm").map_or(0, |m| m.0 as isize),
                    ts,
                ),
                Event::Order(o) => (o.order_id.clone(), o.qty as isize, ts),
                Event::Stock(s) => (
                    format!("{}/{}", s.warehouse, s.sku),
                    s.qty_delta as isize,
                    ts,
                ),
                Event::Asset(_) => (String::from("asset"), 1, ts),
            }
        })
        .collect()
}

/// Runs the ceiling over `machines` × `hours` of simulated fleet with `workers` workers.
pub fn run(machines: usize, hours: u64, workers: usize) -> anyhow::Result<Json> {
    let (events, _) = simulate(
        SimulatorConfig {
            seed: 1,
            machines,
            ..SimulatorConfig::default()
        },
        hours * 3_600_000,
    );
    let records = Arc::new(keyed(&events));
    let count = records.len();
    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, collection) = scope.new_collection::<(String, isize), isize>();
            collection
                .explode(|(key, value)| Some((key, (1isize, value))))
                .count()
                .inner
                .probe_with(&probe);
            input
        });
        // Each worker feeds its share, in time order, one 100 ms tick at a time.
        // As the runtime does with the simulator: one simulated minute per tick, records
        // stamped at 100 ms, at most one tick in flight behind the input.
        let mut tick_end = 0;
        for (key, value, ts) in records.iter().skip(index).step_by(peers) {
            let stamp = ts.div_ceil(100) * 100;
            if stamp >= tick_end {
                let previous = *input.time();
                tick_end = (stamp / 60_000 + 1) * 60_000;
                input.advance_to(stamp.max(previous));
                input.flush();
                worker.step_while(|| probe.less_than(&previous));
            }
            input.update_at((key.clone(), *value), stamp.max(*input.time()), 1);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    for result in guards.join() {
        result.map_err(|e| anyhow::anyhow!(e))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "benchmark": "limit",
        "machines": machines,
        "simulated_hours": hours,
        "workers": workers,
        "events": count,
        "seconds": seconds,
        "events_per_sec": count as f64 / seconds,
    }))
}
