//! The deterministic fleet simulator: teeth that wear, break and fall off, and the business around them.

mod agenda;
mod fleet;
mod noise;
mod orders;
mod pump;
mod wear;

use wearflow_operators::Time;

use self::agenda::{Action, Agenda, Entry};
use self::fleet::{Fleet, Shifts};
use self::noise::Noise;
use self::orders::OrderNumbers;
use self::wear::MetricTemplate;
use crate::event::Event;

pub use self::pump::simulate_pumps;

/// Simulator settings; every field has a default.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Random seed: the same configuration gives the same events.
    pub seed: u64,
    /// Number of machines (4–9 teeth each; one site per five machines, at least two).
    pub machines: usize,
    /// Simulated start time, epoch ms.
    pub start_ms: Time,
    /// Time between two readings of one tooth while its machine works (at least 100 ms).
    pub telemetry_interval_ms: u64,
    /// Hour (UTC) the day shift starts; each machine starts up to 45 minutes off it.
    pub shift_start_hour: u32,
    /// Hour (UTC) the late shift ends (equal to the start: round the clock).
    pub shift_end_hour: u32,
    /// Multiplies every tooth's wear rate (1: a tooth lasts about 100–400 operating hours).
    pub wear_rate_scale: f64,
    /// Multiplies every tooth's breakage and loss hazard.
    pub failure_rate_scale: f64,
    /// Mean sales orders a day per warehouse.
    pub sales_orders_per_day: f64,
    /// Mean stock-count adjustments a day per warehouse.
    pub adjustments_per_day: f64,
    /// Smallest purchase order quantity (larger fleets order more).
    pub purchase_qty: u32,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            seed: 42,
            machines: 20,
            start_ms: 1_767_225_600_000,
            telemetry_interval_ms: 10_000,
            shift_start_hour: 6,
            shift_end_hour: 22,
            wear_rate_scale: 1.0,
            failure_rate_scale: 1.0,
            sales_orders_per_day: 3.0,
            adjustments_per_day: 0.1,
            purchase_qty: 40,
        }
    }
}

/// A true failure or loss, for scoring predictions.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct GroundTruth {
    /// The device whose tooth failed.
    pub device_id: String,
    /// Its machine.
    pub machine_id: String,
    /// When it failed, epoch ms.
    pub ts: Time,
    /// `broken` (shorter, still reporting) or `lost` (fell off, silent).
    pub kind: String,
    /// True length just before the failure.
    pub remaining_mm: f64,
}

/// The deterministic fleet: load generator, test fixture and ground truth for all four streams.
///
/// ```text
///  sites (abrasiveness) ──┐
///  machines (shifts, load) ─► teeth ─► a reading every interval ─► telemetry
///                              ├─ wear limit, failure ─► work order ─► stock issue, new tooth
///                              └─ failure (broken, lost) ─► ground truth
///  customers ─► sales orders ─► stock issue     stock ≤ reorder point ─► purchase ─► receipt
/// ```
///
/// A discrete-event simulation over one agenda (ordered by time, then by scheduling order) and
/// one seeded random stream: a configuration fixes the event sequence byte for byte, however
/// [`Simulator::advance`] is called.
///
/// ```
/// use wearflow_sources::{Simulator, SimulatorConfig};
///
/// let mut sim = Simulator::new(SimulatorConfig { machines: 5, ..SimulatorConfig::default() });
/// let mut events = Vec::new();
/// sim.advance(sim.clock_ms() + 8 * 3_600_000, &mut events);
/// assert!(events.windows(2).all(|w| w[0].ts_ms() <= w[1].ts_ms()));
/// assert!(events.len() > 1_000);
/// ```
pub struct Simulator {
    config: SimulatorConfig,
    clock_ms: Time,
    noise: Noise,
    agenda: Agenda,
    shifts: Shifts,
    fleet: Fleet,
    /// Stock on hand per warehouse × SKU.
    on_hand: Vec<i64>,
    /// An open purchase order per warehouse × SKU.
    purchase_open: Vec<bool>,
    numbers: OrderNumbers,
    metric_template: MetricTemplate,
    ground_truth: Vec<GroundTruth>,
}

impl Simulator {
    /// Builds the fleet of `config`; its reference data is the first output, at `start_ms`.
    pub fn new(config: SimulatorConfig) -> Simulator {
        let mut config = config;
        config.telemetry_interval_ms = config.telemetry_interval_ms.max(100);
        config.wear_rate_scale = config.wear_rate_scale.max(0.0);
        config.failure_rate_scale = config.failure_rate_scale.max(0.0);
        let mut noise = Noise::new(config.seed);
        let shifts = Shifts::new(config.shift_start_hour, config.shift_end_hour);
        let fleet = Fleet::build(&config, &shifts, &mut noise);
        let slots = fleet.warehouses.len() * fleet.skus.len();
        let mut agenda = Agenda::new(
            config.start_ms,
            config.telemetry_interval_ms,
            fleet.teeth.len(),
        );
        agenda.schedule(config.start_ms, Action::Open);
        for (index, tooth) in fleet.teeth.iter().enumerate() {
            agenda.schedule(
                config.start_ms + tooth.phase_ms,
                Action::Reading {
                    tooth: index as u32,
                },
            );
        }
        Simulator {
            clock_ms: config.start_ms,
            config,
            noise,
            agenda,
            shifts,
            fleet,
            on_hand: vec![0; slots],
            purchase_open: vec![false; slots],
            numbers: OrderNumbers::default(),
            metric_template: MetricTemplate::default(),
            ground_truth: Vec::new(),
        }
    }

    /// Every event not yet emitted has a time at or after this.
    pub fn clock_ms(&self) -> Time {
        self.clock_ms
    }

    /// Pushes every event with time before `until_ms`, in non-decreasing time order; the clock
    /// then stands at `until_ms` (or stays, if it was later).
    pub fn advance(&mut self, until_ms: Time, out: &mut Vec<Event>) {
        while let Some(entry) = self.agenda.first() {
            if entry.ts >= until_ms {
                break;
            }
            // Anything `perform` schedules sorts after `entry` (same or later time, later
            // sequence), so `entry` is still first afterwards.
            match self.perform(entry, out) {
                Some((ts, action)) => self.agenda.reschedule_first(ts, action),
                None => self.agenda.remove_first(),
            }
        }
        self.clock_ms = self.clock_ms.max(until_ms);
    }

    /// True failures and losses so far, in time order.
    pub fn ground_truth(&self) -> &[GroundTruth] {
        &self.ground_truth
    }

    /// Carries out one scheduled action; returns what the entry becomes next, if anything.
    fn perform(&mut self, entry: Entry, out: &mut Vec<Event>) -> Option<(Time, Action)> {
        let t = entry.ts;
        match entry.action {
            Action::Reading { tooth } => {
                self.reading(t, tooth, out).map(|next| (next, entry.action))
            }
            Action::Open => {
                self.open(t, out);
                None
            }
            Action::Work(work) => self.work_step(t, work, out),
            Action::SalesArrival { warehouse } => self.sales_arrival(t, warehouse, out),
            Action::Sales(sales) => self.sales_step(t, sales, out),
            Action::PurchaseReceipt(purchase) => {
                self.receive_purchase(t, purchase, out);
                None
            }
            Action::Adjustment { warehouse } => self.adjustment(t, warehouse, out),
        }
    }
}

/// Runs a fresh simulator for `duration_ms` from its start; returns every event in time order
/// and the ground truth of that period.
pub fn simulate(config: SimulatorConfig, duration_ms: Time) -> (Vec<Event>, Vec<GroundTruth>) {
    let end = config.start_ms.saturating_add(duration_ms);
    let mut simulator = Simulator::new(config);
    let mut events = Vec::new();
    simulator.advance(end, &mut events);
    (events, simulator.ground_truth().to_vec())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::OnceLock;

    use super::*;
    use crate::event::{Asset, Order, OrderKind, OrderStatus, StockReason, WorkReason};

    const HOUR: Time = 3_600_000;
    const DAY: Time = 24 * HOUR;

    fn run(config: SimulatorConfig, steps: &[Time]) -> (Vec<Event>, Vec<GroundTruth>) {
        let mut sim = Simulator::new(config);
        let mut out = Vec::new();
        for &until in steps {
            sim.advance(until, &mut out);
        }
        (out, sim.ground_truth().to_vec())
    }

    fn small() -> SimulatorConfig {
        SimulatorConfig {
            machines: 8,
            telemetry_interval_ms: 30_000,
            ..SimulatorConfig::default()
        }
    }

    #[test]
    fn same_config_same_events_however_advanced() {
        let config = SimulatorConfig {
            failure_rate_scale: 20.0,
            ..small()
        };
        let start = config.start_ms;
        let end = start + 4 * DAY;
        let (whole, truth) = run(config.clone(), &[end]);
        // Ragged steps: repeats, steps back, boundaries on exact event times.
        let mut steps = vec![start, start, start + 1];
        let mut until = start + 1;
        let mut stride = 7;
        while until < end {
            stride = (stride * 7919 + 13) % 5_000_000;
            until = (until + stride).min(end);
            steps.push(until);
            steps.push(until - stride / 2);
        }
        let (chunked, chunked_truth) = run(config.clone(), &steps);
        assert!(whole.len() > 10_000, "{} events", whole.len());
        assert!(!truth.is_empty(), "a raised hazard yields failures");
        assert_eq!(whole.len(), chunked.len());
        let lines = |events: &[Event]| events.iter().map(Event::to_json_line).collect::<Vec<_>>();
        assert!(
            lines(&whole) == lines(&chunked),
            "same bytes however advanced"
        );
        assert_eq!(truth, chunked_truth);
        let (other, _) = run(SimulatorConfig { seed: 7, ..config }, &[end]);
        assert_ne!(lines(&whole), lines(&other), "another seed, another fleet");
    }

    #[test]
    fn every_failure_is_completed_as_a_failure() {
        let config = SimulatorConfig {
            failure_rate_scale: 20.0,
            ..small()
        };
        let end = config.start_ms + 4 * DAY;
        let (events, truth) = run(config, &[end]);
        let completions: Vec<(&str, Time, Option<WorkReason>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Order(o)
                    if o.kind == OrderKind::Work && o.status == OrderStatus::Completed =>
                {
                    Some((o.device_id.as_deref()?, o.ts.0, o.reason))
                }
                _ => None,
            })
            .collect();
        let mut checked = 0;
        for failure in &truth {
            // The device's first completed work order after the failure records it.
            let next = completions
                .iter()
                .filter(|(d, ts, _)| *d == failure.device_id && *ts >= failure.ts)
                .min_by_key(|(_, ts, _)| *ts);
            if let Some((_, ts, reason)) = next {
                assert_eq!(
                    *reason,
                    Some(WorkReason::Failure),
                    "{} at {ts}",
                    failure.device_id
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "{checked} failures completed");
    }

    #[test]
    fn every_event_of_a_day_decodes_to_itself() {
        let config = SimulatorConfig::default();
        let (events, _) = run(config.clone(), &[config.start_ms + DAY]);
        assert!(events.len() > 500_000, "{} events", events.len());
        let mut streams = BTreeSet::new();
        for (position, event) in events.iter().enumerate() {
            let line = event.to_json_line();
            match crate::decode::decode(event.stream(), 0, position as u64, line.as_bytes()) {
                Ok(decoded) => assert_eq!(&decoded, event, "{line}"),
                Err(e) => panic!("{line} does not decode: {}", e.reason),
            }
            streams.insert(event.stream());
        }
        assert_eq!(streams.len(), 4, "all four streams within a day");
    }

    #[test]
    fn reference_data_and_opening_stock_come_first() {
        let config = SimulatorConfig::default();
        let (events, _) = run(config.clone(), &[config.start_ms + 1]);
        let count = |pick: fn(&Event) -> bool| events.iter().filter(|e| pick(e)).count();
        assert_eq!(count(|e| matches!(e, Event::Asset(Asset::Site(_)))), 4);
        assert_eq!(count(|e| matches!(e, Event::Asset(Asset::Sku(_)))), 3);
        assert_eq!(count(|e| matches!(e, Event::Asset(Asset::Machine(_)))), 20);
        let devices = count(|e| matches!(e, Event::Asset(Asset::Device(_))));
        assert!((20 * 4..=20 * 9).contains(&devices), "{devices} devices");
        let receipts = count(
            |e| matches!(e, Event::Stock(s) if s.reason == StockReason::Receipt && s.qty_delta > 0),
        );
        assert_eq!(receipts, 3 * 3, "every warehouse × SKU opens with stock");
        assert!(events.iter().all(|e| e.ts_ms() == config.start_ms));
        for event in &events {
            if let Event::Asset(Asset::Device(d)) = event {
                let (new, limit) = (
                    d.new_length_mm.map(|m| m.as_f64()),
                    d.wear_limit_mm.map(|m| m.as_f64()),
                );
                assert!(
                    matches!(new, Some(l) if (120.0..=160.0).contains(&l)),
                    "{d:?}"
                );
                assert!(
                    matches!(limit, Some(l) if (35.0..=45.0).contains(&l)),
                    "{d:?}"
                );
                assert!(d.installed_at.is_some_and(|t| t.0 <= config.start_ms));
                assert!(d.device_id.starts_with(&d.machine_id));
            }
        }
    }

    #[test]
    fn time_never_goes_backwards_across_advance_calls() {
        let config = small();
        let mut sim = Simulator::new(config.clone());
        let mut last_ts = 0;
        let mut until = config.start_ms;
        let mut total = 0;
        for step in 0..400u64 {
            let before = sim.clock_ms();
            until = if step % 5 == 4 {
                until - HOUR
            } else {
                until + (step * 104_729) % (3 * HOUR)
            };
            let mut out = Vec::new();
            sim.advance(until, &mut out);
            assert_eq!(sim.clock_ms(), before.max(until));
            for event in &out {
                let ts = event.ts_ms();
                assert!(
                    ts >= last_ts && ts >= before && ts < until,
                    "{ts} after {last_ts}, in [{before}, {until})"
                );
                last_ts = ts;
            }
            total += out.len();
        }
        assert!(total > 10_000, "{total} events");
    }

    /// Two weeks of thirty machines, summarized once for the tests below.
    struct TwoWeeks {
        config: SimulatorConfig,
        /// Every event but telemetry, with its position in the output.
        others: Vec<(usize, Event)>,
        /// Per device: position, time and remaining length of each reading.
        readings: BTreeMap<String, Vec<(usize, Time, f64)>>,
        ground_truth: Vec<GroundTruth>,
    }

    impl TwoWeeks {
        fn orders(&self) -> impl Iterator<Item = &Order> {
            self.others.iter().filter_map(|(_, e)| match e {
                Event::Order(o) => Some(o),
                _ => None,
            })
        }
    }

    fn two_weeks() -> &'static TwoWeeks {
        static RUN: OnceLock<TwoWeeks> = OnceLock::new();
        RUN.get_or_init(|| {
            let config = SimulatorConfig {
                machines: 30,
                telemetry_interval_ms: 60_000,
                ..SimulatorConfig::default()
            };
            let mut sim = Simulator::new(config.clone());
            let mut run = TwoWeeks {
                config: config.clone(),
                others: Vec::new(),
                readings: BTreeMap::new(),
                ground_truth: Vec::new(),
            };
            let mut out = Vec::new();
            let mut position = 0;
            for hour in 1..=14 * 24 {
                out.clear();
                sim.advance(config.start_ms + hour * HOUR, &mut out);
                for event in out.drain(..) {
                    match event {
                        Event::Telemetry(t) => {
                            let remaining =
                                t.metric("remaining_mm").map_or(f64::NAN, |m| m.as_f64());
                            run.readings
                                .entry(t.device_id)
                                .or_default()
                                .push((position, t.ts.0, remaining));
                        }
                        other => run.others.push((position, other)),
                    }
                    position += 1;
                }
            }
            run.ground_truth = sim.ground_truth().to_vec();
            run
        })
    }

    #[test]
    fn two_weeks_exercise_every_process() {
        let run = two_weeks();
        let count = |kind: OrderKind, status: OrderStatus, reason: Option<WorkReason>| {
            run.orders()
                .filter(|o| o.kind == kind && o.status == status && o.reason == reason)
                .count()
        };
        let wear_limit = Some(WorkReason::WearLimit);
        let failure = Some(WorkReason::Failure);
        assert!(count(OrderKind::Work, OrderStatus::Completed, wear_limit) >= 20);
        assert!(count(OrderKind::Work, OrderStatus::Completed, failure) >= 1);
        assert!(count(OrderKind::Purchase, OrderStatus::Created, None) >= 1);
        assert!(count(OrderKind::Purchase, OrderStatus::Completed, None) >= 1);
        assert!(count(OrderKind::Sales, OrderStatus::Created, None) >= 20);
        assert!(count(OrderKind::Sales, OrderStatus::Shipped, None) >= 10);
        assert!(count(OrderKind::Sales, OrderStatus::Cancelled, None) >= 1);
        assert!(!run.ground_truth.is_empty());
        assert!(run.ground_truth.iter().any(|g| g.kind == "broken"));
        assert!(run.ground_truth.iter().any(|g| g.kind == "lost"));
        assert!(run.ground_truth.windows(2).all(|w| w[0].ts <= w[1].ts));
        let readings: usize = run.readings.values().map(Vec::len).sum();
        assert!(readings > 1_000_000, "{readings} readings");
        // Idle at night: no machine reports between 23:00 and 05:00 UTC.
        let night = run.readings.values().flatten().filter(|(_, ts, _)| {
            let hour = ts % DAY / HOUR;
            !(5..23).contains(&hour)
        });
        assert_eq!(night.count(), 0);
    }

    #[test]
    fn work_orders_step_through_their_lifecycle_and_replace_the_tooth() {
        let run = two_weeks();
        let mut steps: BTreeMap<&str, Vec<&Order>> = BTreeMap::new();
        for order in run.orders().filter(|o| o.kind == OrderKind::Work) {
            steps.entry(&order.order_id).or_default().push(order);
        }
        for (id, steps) in &steps {
            let statuses: Vec<_> = steps.iter().map(|o| o.status).collect();
            let lifecycle = [
                OrderStatus::Created,
                OrderStatus::Assigned,
                OrderStatus::Completed,
            ];
            assert_eq!(statuses[..], lifecycle[..statuses.len()], "{id}");
            assert!(
                steps
                    .iter()
                    .all(|o| o.device_id.is_some() && o.machine_id.is_some() && o.qty == 1)
            );
            assert!(
                steps
                    .iter()
                    .all(|o| o.sku.is_some() && o.warehouse.is_some() && o.reason.is_some())
            );
            if let [created, assigned, completed] = steps[..] {
                let (assign_h, complete_h) =
                    (assigned.ts.0 - created.ts.0, completed.ts.0 - assigned.ts.0);
                assert!((HOUR..=4 * HOUR).contains(&assign_h), "{id}");
                assert!((2 * HOUR..=12 * HOUR).contains(&complete_h), "{id}");
                // The same instant: the part leaves its warehouse and the device gets a new tooth.
                let same_time: Vec<&Event> = run
                    .others
                    .iter()
                    .map(|(_, e)| e)
                    .filter(|e| e.ts_ms() == completed.ts.0)
                    .collect();
                let issued = same_time.iter().any(|e| {
                    matches!(e, Event::Stock(s) if s.reason == StockReason::Issue && s.qty_delta == -1
                        && s.reference.as_deref() == Some(*id) && Some(&s.warehouse) == completed.warehouse.as_ref()
                        && Some(&s.sku) == completed.sku.as_ref())
                });
                let reinstalled = same_time.iter().any(|e| {
                    matches!(e, Event::Asset(Asset::Device(d)) if Some(&d.device_id) == completed.device_id.as_ref()
                        && d.installed_at.map(|t| t.0) == Some(completed.ts.0))
                });
                assert!(
                    issued && reinstalled,
                    "{id}: stock issue {issued}, device upsert {reinstalled}"
                );
            }
        }
        assert!(steps.values().filter(|s| s.len() == 3).count() >= 20);
    }

    #[test]
    fn remaining_length_falls_between_replacements() {
        let run = two_weeks();
        let mut installs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (position, event) in &run.others {
            if let Event::Asset(Asset::Device(d)) = event {
                installs.entry(&d.device_id).or_default().push(*position);
            }
        }
        let mut checked = 0;
        for (device, readings) in &run.readings {
            let cuts = &installs[device.as_str()];
            for segment in readings.chunk_by(|a, b| {
                cuts.partition_point(|&c| c < a.0) == cuts.partition_point(|&c| c < b.0)
            }) {
                let first = segment[0].2;
                let last = segment[segment.len() - 1].2;
                // Measurement noise is 0.1 mm: no reading stands well above the first one.
                let highest = segment.iter().map(|r| r.2).fold(f64::MIN, f64::max);
                assert!(
                    highest <= first + 1.0,
                    "{device}: {highest} after starting at {first}"
                );
                if segment.len() >= 200 {
                    assert!(
                        last < first - 1.0,
                        "{device}: {first} → {last} over {} readings",
                        segment.len()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked} segments checked");
        // A new tooth starts at its SKU's full length.
        let new_lengths: BTreeSet<i64> = run
            .readings
            .iter()
            .filter(|(device, _)| installs[device.as_str()].len() > 1)
            .filter_map(|(device, readings)| {
                let cut = installs[device.as_str()][1];
                readings
                    .iter()
                    .find(|r| r.0 > cut)
                    .map(|r| r.2.round() as i64)
            })
            .collect();
        assert!(
            new_lengths.iter().all(|l| [120, 140, 160].contains(l)),
            "{new_lengths:?}"
        );
    }

    #[test]
    fn lost_teeth_are_silent_until_replaced() {
        let run = two_weeks();
        let mut checked = 0;
        for lost in run.ground_truth.iter().filter(|g| g.kind == "lost") {
            let replaced = run
                .orders()
                .filter(|o| o.kind == OrderKind::Work && o.status == OrderStatus::Completed)
                .find(|o| o.device_id.as_deref() == Some(&lost.device_id) && o.ts.0 >= lost.ts)
                .map(|o| o.ts.0);
            let readings = &run.readings[&lost.device_id];
            let silent_until = replaced.unwrap_or(Time::MAX);
            assert!(
                !readings
                    .iter()
                    .any(|r| r.1 >= lost.ts && r.1 < silent_until),
                "{} reports after it fell off at {}",
                lost.device_id,
                lost.ts
            );
            if let Some(replaced) =
                replaced.filter(|&r| r + 2 * DAY < run.config.start_ms + 14 * DAY)
            {
                assert!(
                    readings.iter().any(|r| r.1 >= replaced),
                    "{} never reports again",
                    lost.device_id
                );
                checked += 1;
            }
            // Its machine kept working meanwhile.
            let sibling_reports = run
                .readings
                .iter()
                .filter(|(d, _)| d.starts_with(&lost.machine_id) && **d != lost.device_id)
                .flat_map(|(_, r)| r)
                .any(|r| r.1 > lost.ts && r.1 < silent_until);
            assert!(sibling_reports || silent_until - lost.ts < 12 * HOUR);
        }
        assert!(checked >= 1, "a lost tooth replaced and reporting again");
    }

    #[test]
    fn purchases_replenish_at_the_reorder_point() {
        let run = two_weeks();
        let mut reorder_points = BTreeMap::new();
        let mut lead_days = BTreeMap::new();
        let mut on_hand: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut created = BTreeMap::new();
        let mut received = 0;
        for (_, event) in &run.others {
            match event {
                Event::Asset(Asset::Sku(s)) => {
                    reorder_points.insert(s.sku.as_str(), s.reorder_point.unwrap_or_default());
                    lead_days.insert(s.sku.as_str(), s.lead_time_days.unwrap_or_default());
                }
                Event::Stock(s) => {
                    *on_hand.entry((&s.warehouse, &s.sku)).or_default() += s.qty_delta
                }
                Event::Order(o) if o.kind == OrderKind::Purchase => {
                    let (warehouse, sku) = (
                        o.warehouse.as_deref().unwrap_or(""),
                        o.sku.as_deref().unwrap_or(""),
                    );
                    match o.status {
                        OrderStatus::Created => {
                            assert!(on_hand[&(warehouse, sku)] <= reorder_points[sku], "{o:?}");
                            created.insert(o.order_id.as_str(), o.ts.0);
                        }
                        OrderStatus::Completed => {
                            let waited_days = (o.ts.0 - created[o.order_id.as_str()]) / DAY;
                            assert_eq!(waited_days as i64, lead_days[sku], "{o:?}");
                            received += 1;
                        }
                        status => panic!("purchase order {status:?}"),
                    }
                }
                _ => {}
            }
        }
        assert!(received >= 1);
        assert!(on_hand.values().all(|&q| q >= 0), "{on_hand:?}");
    }

    #[test]
    fn sales_orders_ship_or_cancel() {
        let run = two_weeks();
        let mut lives: BTreeMap<&str, Vec<&Order>> = BTreeMap::new();
        for order in run.orders().filter(|o| o.kind == OrderKind::Sales) {
            lives.entry(&order.order_id).or_default().push(order);
        }
        for (id, steps) in &lives {
            let statuses: Vec<_> = steps.iter().map(|o| o.status).collect();
            use OrderStatus::*;
            let valid = [
                &[Created][..],
                &[Created, Allocated],
                &[Created, Allocated, Shipped],
                &[Created, Cancelled],
                &[Created, Allocated, Cancelled],
            ];
            assert!(valid.contains(&&statuses[..]), "{id}: {statuses:?}");
            assert!(
                steps
                    .iter()
                    .all(|o| o.customer_id.is_some() && (1..=8).contains(&o.qty))
            );
            if let Some(shipped) = steps.iter().find(|o| o.status == Shipped) {
                let issued = run.others.iter().any(|(_, e)| {
                    matches!(e, Event::Stock(s) if s.reference.as_deref() == Some(*id)
                        && s.qty_delta == -shipped.qty && s.ts == shipped.ts)
                });
                assert!(issued, "{id} shipped without a stock issue");
            }
        }
    }

    /// CPU time of this thread (Linux), so that a busy machine does not skew the rate.
    fn thread_cpu() -> Option<std::time::Duration> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns = stat.split_whitespace().next()?.parse().ok()?;
        Some(std::time::Duration::from_nanos(ns))
    }

    /// Prints the generation rate; run with
    /// `cargo test --release -p wearflow-sources -- --ignored --nocapture generation_rate`.
    ///
    /// Building and dropping the events (eight small allocations each: ids, metric names and
    /// the map node) costs more than simulating them; advancing by a minute of a large fleet at
    /// a time (hundreds of thousands of events per call) also shows what the system allocator
    /// does with batches that large.
    #[test]
    #[ignore]
    fn generation_rate() {
        for (machines, step_ms) in [(20, 10_000), (1_000, 1_000), (1_000, 60_000)] {
            let mut sim = Simulator::new(SimulatorConfig {
                machines,
                ..SimulatorConfig::default()
            });
            let mut out = Vec::with_capacity(100_000);
            // Skip the first night (reference data only; shifts start after 05:15).
            let mut until = sim.clock_ms() + 5 * HOUR;
            sim.advance(until, &mut out);
            let (mut total, mut generating) = (0, std::time::Duration::ZERO);
            let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
            while total < 2_000_000 {
                out.clear();
                until += step_ms;
                let advance = std::time::Instant::now();
                sim.advance(until, &mut out);
                generating += advance.elapsed();
                total += out.len();
            }
            out.clear();
            let rate = |d: std::time::Duration| total as f64 / d.as_secs_f64() / 1e6;
            let cpu = cpu.zip(thread_cpu()).map_or(f64::NAN, |(a, b)| rate(b - a));
            println!(
                "{machines} machines, advance by {step_ms} ms: {total} events; M events/s: \
                 {:.2} in advance (wall), {:.2} with dropping (wall), {cpu:.2} with dropping (thread CPU)",
                rate(generating),
                rate(wall.elapsed()),
            );
        }
    }
}
