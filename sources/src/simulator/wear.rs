//! One sensor reading: a tooth wears, may break or fall off, and reports its metrics.

use std::collections::BTreeMap;

use wearflow_operators::Time;

use super::agenda::{Action, WorkOrder};
use super::fleet::{Condition, Crack, HOUR_MS, Tooth, rounded};
use super::noise::Noise;
use super::{GroundTruth, Simulator};
use crate::event::{Event, Micro, OrderStatus, Telemetry, Timestamp, WorkReason};

/// Impacts are capped here (sensor range).
const MAX_IMPACT_G: f64 = 200.0;
/// Impacts above this chip the tooth and can break it.
const HEAVY_IMPACT_G: f64 = 12.0;
/// Failure hazard per operating hour of a new tooth; it grows as `exp(3 × wear fraction)`.
const WEAR_HAZARD_PER_H: f64 = 6.0e-5;
/// Failure probability of a heavy impact on a fully worn tooth, per multiple of the heavy
/// threshold and per 10 s of reading interval.
const IMPACT_HAZARD: f64 = 1.0e-4;
/// Wear by a heavy impact, per g above the threshold.
const CHIP_MM_PER_G: f64 = 0.0005;
/// Share of failures where the tooth falls off rather than breaks.
const LOSS_SHARE: f64 = 0.4;
/// The true length never goes below this (the adapter nose is left).
const MIN_REMAINING_MM: f64 = 2.0;
/// Standard deviation of the length measurement.
const LENGTH_NOISE_MM: f64 = 0.1;
/// A crack lives this many operating hours (uniform) before the tooth fails.
const CRACK_LIFE_H: (f64, f64) = (20.0, 44.0);
/// Extra strain of a crack, as a share of the sound strain, when it starts and at failure.
const CRACK_STRAIN: (f64, f64) = (0.04, 0.5);
/// Standard deviation of one strain reading, as a share of the sound strain.
const STRAIN_NOISE: f64 = 0.04;

/// The metrics of a reading, prebuilt once: each reading clones this map (one node and five
/// short strings, no key comparisons) and overwrites the values.
pub(super) struct MetricTemplate {
    metrics: BTreeMap<String, Micro>,
}

impl Default for MetricTemplate {
    fn default() -> MetricTemplate {
        let names = [
            "dig_cycles",
            "impact_g",
            "load_kn",
            "remaining_mm",
            "strain_ue",
            "temp_c",
        ];
        MetricTemplate {
            metrics: names.iter().map(|n| (n.to_string(), Micro(0))).collect(),
        }
    }
}

impl MetricTemplate {
    /// The metrics map with `values` in key order: dig cycles, impact, load, remaining,
    /// strain, temperature.
    fn fill(&self, values: [Micro; 6]) -> BTreeMap<String, Micro> {
        let mut metrics = self.metrics.clone();
        for (slot, value) in metrics.values_mut().zip(values) {
            *slot = value;
        }
        metrics
    }
}

/// A tooth failure found by a reading.
struct Failure {
    lost: bool,
    remaining_mm: f64,
}

/// The crack has gone through: the tooth falls off or breaks.
fn fail(tooth: &mut Tooth, noise: &mut Noise) -> Failure {
    let lost = noise.chance(LOSS_SHARE);
    let failure = Failure {
        lost,
        remaining_mm: tooth.remaining_mm,
    };
    tooth.crack = None;
    if lost {
        tooth.condition = Condition::Lost;
    } else {
        tooth.condition = Condition::Broken;
        let keep = 1.0 - noise.uniform(0.3, 0.6);
        tooth.remaining_mm = (tooth.remaining_mm * keep).max(MIN_REMAINING_MM);
    }
    failure
}

impl Simulator {
    /// Takes tooth `index`'s reading at `t`; returns when its next reading is due (`None` once
    /// it fell off: a replacement schedules it again).
    pub(super) fn reading(&mut self, t: Time, index: u32, out: &mut Vec<Event>) -> Option<Time> {
        let interval_ms = self.config.telemetry_interval_ms;
        let fleet = &mut self.fleet;
        let noise = &mut self.noise;
        let tooth = &mut fleet.teeth[index as usize];
        let machine = &mut fleet.machines[tooth.machine];
        if tooth.condition == Condition::Lost {
            return None;
        }
        if !self.shifts.operating(t, machine.shift_offset_ms) {
            return Some(self.shifts.next_start(t, machine.shift_offset_ms) + tooth.phase_ms);
        }
        let day = self.shifts.day(t, machine.shift_offset_ms);
        if machine.load_day != day {
            machine.load_day = day;
            machine.load_today_kn = machine.model.nominal_load_kn * noise.uniform(0.85, 1.15);
        }
        let site = &fleet.sites[machine.site];
        let sku = fleet.skus[tooth.sku];

        // Operating time since the previous reading (a reading after a pause counts one interval).
        let gap_ms = t.saturating_sub(tooth.last_reading_ms);
        let dt_ms = if gap_ms == 0 || gap_ms > 2 * interval_ms {
            interval_ms
        } else {
            gap_ms
        };
        tooth.last_reading_ms = t;
        let dt_h = dt_ms as f64 / HOUR_MS as f64;

        let load_kn =
            (machine.load_today_kn * tooth.load_factor * (1.0 + 0.12 * noise.bell())).max(0.0);
        let load_ratio = load_kn / machine.model.nominal_load_kn;
        let impact_g = noise.pareto2(site.impact_scale_g).min(MAX_IMPACT_G);
        let broken_factor = if tooth.condition == Condition::Broken {
            1.5
        } else {
            1.0
        };
        let chip_mm = CHIP_MM_PER_G * (impact_g - HEAVY_IMPACT_G).max(0.0);
        let wear_mm = tooth.wear_mm_per_h
            * broken_factor
            * load_ratio
            * dt_h
            * (1.0 + 0.25 * noise.bell()).max(0.0)
            + chip_mm;
        tooth.remaining_mm = (tooth.remaining_mm - wear_mm).max(MIN_REMAINING_MM);
        tooth.dig_cycles += dt_ms as f64 / 1000.0 / machine.model.cycle_s * noise.uniform(0.8, 1.2);

        // Failure: a hazard rising with wear, plus heavy impacts on a worn tooth, starts a
        // fatigue crack; the tooth fails when the crack has grown through it.
        let draw = noise.unit();
        let mut failure = None;
        if tooth.condition == Condition::Sound {
            match &mut tooth.crack {
                Some(crack) => {
                    crack.age_h += dt_h;
                    if crack.age_h >= crack.life_h {
                        failure = Some(fail(tooth, noise));
                    }
                }
                None => {
                    let worn = ((sku.new_length_mm - tooth.remaining_mm) / sku.allowance_mm())
                        .clamp(0.0, 1.5);
                    let mut hazard = WEAR_HAZARD_PER_H * (3.0 * worn).exp() * dt_h;
                    if impact_g > HEAVY_IMPACT_G {
                        let excess = impact_g / HEAVY_IMPACT_G;
                        hazard += IMPACT_HAZARD * worn * worn * excess * (dt_ms as f64 / 10_000.0);
                    }
                    if draw < hazard * tooth.frailty * self.config.failure_rate_scale {
                        tooth.crack = Some(Crack {
                            age_h: 0.0,
                            life_h: noise.uniform(CRACK_LIFE_H.0, CRACK_LIFE_H.1),
                        });
                    }
                }
            }
        }
        let jitter_ms = (interval_ms / 50) as i64;
        let next = (t + interval_ms).saturating_add_signed(noise.integer(-jitter_ms, jitter_ms));

        if tooth.condition != Condition::Lost {
            let remaining_mm = (tooth.remaining_mm + LENGTH_NOISE_MM * noise.bell()).max(0.0);
            let temp_c = site.ambient_c + 12.0 * load_ratio + noise.bell();
            let crack_strain = tooth.crack.map_or(0.0, |c| {
                let grown = (c.age_h / c.life_h).clamp(0.0, 1.0);
                CRACK_STRAIN.0 + (CRACK_STRAIN.1 - CRACK_STRAIN.0) * grown
            });
            let strain_ue = tooth.strain_base_ue
                * (0.8 + 0.2 * load_ratio)
                * (1.0 + crack_strain + STRAIN_NOISE * noise.bell());
            let metrics = self.metric_template.fill([
                Micro(tooth.dig_cycles as i64 * 1_000_000),
                rounded(impact_g, 100),
                rounded(load_kn, 10),
                rounded(remaining_mm, 100),
                rounded(strain_ue.max(0.0), 10),
                rounded(temp_c, 10),
            ]);
            out.push(Event::Telemetry(Telemetry {
                device_id: tooth.device_id.clone(),
                machine_id: machine.id.clone(),
                ts: Timestamp(t),
                metrics,
            }));
        }

        let mut work = None;
        if let Some(failure) = &failure {
            self.ground_truth.push(GroundTruth {
                device_id: tooth.device_id.clone(),
                machine_id: machine.id.clone(),
                ts: t,
                kind: if failure.lost { "lost" } else { "broken" }.to_string(),
                remaining_mm: (failure.remaining_mm * 100.0).round() / 100.0,
            });
            if !tooth.work_open {
                // Someone notices within hours and calls it in.
                work = Some((t + noise.hours_ms(0.5, 6.0), WorkReason::Failure));
            }
        } else if !tooth.work_open && tooth.remaining_mm <= sku.wear_limit_mm {
            work = Some((t + noise.hours_ms(0.0, 2.0), WorkReason::WearLimit));
        }
        if let Some((at, reason)) = work {
            tooth.work_open = true;
            let work = WorkOrder {
                tooth: index,
                number: 0,
                reason,
                status: OrderStatus::Created,
            };
            self.agenda.schedule(at, Action::Work(work));
        }
        if tooth.condition == Condition::Lost {
            None
        } else {
            Some(next)
        }
    }
}
