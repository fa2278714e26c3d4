//! A second kind of machine: slurry pumps whose bearings degrade before they fail.
//!
//! Nothing here is about teeth: the sensors are `vibration_mm_s`, `bearing_temp_c`,
//! `flow_m3_h`, `pressure_bar` and a `cycles` counter, read every `interval_ms` while the pump
//! runs (pumps run around the clock, stopping for an hour now and then). Only two streams
//! come out: telemetry, and a work order `completed` with reason `failure` when a pump fails
//! (it is repaired and starts a new life). A failure is preceded by bearing degradation that
//! starts 30–80 operating hours before it and raises vibration and bearing temperature.

use std::collections::BTreeMap;

use wearflow_operators::Time;

use super::noise::Noise;
use super::{GroundTruth, SimulatorConfig};
use crate::event::{Event, Micro, Order, OrderKind, OrderStatus, Telemetry, Timestamp, WorkReason};

const HOUR_MS: u64 = 3_600_000;

struct Pump {
    id: String,
    /// Operating hours until the bearing starts to degrade.
    healthy_h: f64,
    /// Operating hours the degradation lasts until failure.
    degrading_h: f64,
    /// Operating hours since the last repair.
    age_h: f64,
    cycles: f64,
    /// The pump's own baseline flow.
    flow: f64,
    /// Stopped until this time.
    stopped_until: Time,
    failures: u32,
}

impl Pump {
    fn new_life(&mut self, noise: &mut Noise, rate_scale: f64) {
        self.healthy_h = noise.exponential(400.0 / rate_scale.max(1e-3));
        self.degrading_h = noise.uniform(30.0, 80.0);
        self.age_h = 0.0;
    }
}

/// Simulates `config.machines` pumps for `duration_ms`: every event in time order and the
/// true failure times.
pub fn simulate_pumps(
    config: &SimulatorConfig,
    duration_ms: Time,
) -> (Vec<Event>, Vec<GroundTruth>) {
    let mut noise = Noise::new(config.seed ^ 0x7075_6d70);
    let interval = config.telemetry_interval_ms.max(1_000);
    let mut pumps: Vec<Pump> = (0..config.machines)
        .map(|i| {
            let mut pump = Pump {
                id: format!("P{:04}", i + 1),
                healthy_h: 0.0,
                degrading_h: 0.0,
                age_h: 0.0,
                cycles: 0.0,
                flow: noise.uniform(80.0, 160.0),
                stopped_until: 0,
                failures: 0,
            };
            pump.new_life(&mut noise, config.failure_rate_scale);
            // Mid-life at the start.
            pump.age_h = noise.uniform(0.0, pump.healthy_h);
            pump
        })
        .collect();
    let mut events = Vec::new();
    let mut truth = Vec::new();
    let mut orders = Vec::new();
    let start = config.start_ms;
    let end = start.saturating_add(duration_ms);
    let dt_h = interval as f64 / HOUR_MS as f64;
    let mut t = start;
    while t < end {
        for pump in pumps.iter_mut() {
            if t < pump.stopped_until {
                continue;
            }
            if noise.chance(dt_h / 50.0) {
                // An unplanned stop of about an hour.
                pump.stopped_until = t + noise.hours_ms(0.5, 1.5);
                continue;
            }
            pump.age_h += dt_h;
            pump.cycles += dt_h * 3600.0 / 20.0 * noise.uniform(0.9, 1.1);
            let degraded = ((pump.age_h - pump.healthy_h) / pump.degrading_h).clamp(0.0, 1.0);
            let vibration = 2.0 + 6.0 * degraded.powf(1.5) + 0.3 * noise.bell();
            let temp = 55.0 + 25.0 * degraded.powi(2) + 1.5 * noise.bell();
            let flow = pump.flow * (1.0 - 0.1 * degraded) * (1.0 + 0.03 * noise.bell());
            let pressure = 4.0 + 0.5 * noise.bell();
            let metrics: BTreeMap<String, Micro> = [
                ("bearing_temp_c", temp),
                ("cycles", pump.cycles.floor()),
                ("flow_m3_h", flow.max(0.0)),
                ("pressure_bar", pressure.max(0.0)),
                ("vibration_mm_s", vibration.max(0.0)),
            ]
            .into_iter()
            .map(|(name, v)| {
                (
                    name.to_string(),
                    Micro::from_f64((v * 100.0).round() / 100.0),
                )
            })
            .collect();
            events.push(Event::Telemetry(Telemetry {
                device_id: pump.id.clone(),
                machine_id: pump.id.clone(),
                ts: Timestamp(t),
                metrics,
            }));
            if pump.age_h >= pump.healthy_h + pump.degrading_h {
                pump.failures += 1;
                truth.push(GroundTruth {
                    device_id: pump.id.clone(),
                    machine_id: pump.id.clone(),
                    ts: t,
                    kind: "failure".to_string(),
                    remaining_mm: 0.0,
                });
                // Down for repair; the work order completes when it runs again.
                let repaired = t + noise.hours_ms(2.0, 8.0);
                pump.stopped_until = repaired;
                orders.push(Event::Order(Order {
                    order_id: format!("WO-{}-{}", pump.id, pump.failures),
                    kind: OrderKind::Work,
                    status: OrderStatus::Completed,
                    sku: None,
                    qty: 1,
                    warehouse: None,
                    customer_id: None,
                    machine_id: Some(pump.id.clone()),
                    device_id: Some(pump.id.clone()),
                    reason: Some(WorkReason::Failure),
                    ts: Timestamp(repaired),
                }));
                pump.new_life(&mut noise, config.failure_rate_scale);
            }
        }
        t += interval;
    }
    orders.retain(|o| o.ts_ms() < end);
    events.extend(orders);
    events.sort_by_key(Event::ts_ms);
    (events, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pumps_degrade_before_they_fail() {
        let config = SimulatorConfig {
            machines: 10,
            telemetry_interval_ms: 300_000,
            ..SimulatorConfig::default()
        };
        let (events, truth) = simulate_pumps(&config, 60 * 24 * HOUR_MS);
        assert!(!truth.is_empty());
        assert_eq!(simulate_pumps(&config, 60 * 24 * HOUR_MS).0, events);
        let vibration = |device: &str, from: Time, to: Time| -> f64 {
            let values: Vec<f64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Telemetry(t)
                        if t.device_id == device && t.ts.0 >= from && t.ts.0 < to =>
                    {
                        t.metric("vibration_mm_s").map(Micro::as_f64)
                    }
                    _ => None,
                })
                .collect();
            values.iter().sum::<f64>() / values.len().max(1) as f64
        };
        let failure = truth
            .iter()
            .find(|g| g.ts >= config.start_ms + 200 * HOUR_MS)
            .expect("a failure after 200 h");
        let before = vibration(&failure.device_id, failure.ts - 6 * HOUR_MS, failure.ts);
        let healthy = vibration(
            &failure.device_id,
            failure.ts.saturating_sub(200 * HOUR_MS),
            failure.ts - 100 * HOUR_MS,
        );
        assert!(before > healthy + 2.0, "{before} vs {healthy}");
        let completed = events.iter().any(|e| {
            matches!(e, Event::Order(o) if o.device_id.as_deref() == Some(&failure.device_id)
                && o.reason == Some(WorkReason::Failure) && o.ts.0 > failure.ts)
        });
        assert!(completed);
    }
}
