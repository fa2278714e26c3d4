//! The fleet's structure: warehouses, SKUs, sites, customers, machines and teeth, and their asset records.

use wearflow_operators::Time;

use super::SimulatorConfig;
use super::noise::Noise;
use crate::event::{
    Asset, DeviceAsset, Event, MachineAsset, Micro, SiteAsset, SkuAsset, Timestamp,
};

/// Milliseconds in a day.
pub(super) const DAY_MS: u64 = 86_400_000;
/// Milliseconds in an hour.
pub(super) const HOUR_MS: u64 = 3_600_000;

/// The warehouses, in the order sites are assigned to them.
const WAREHOUSES: [&str; 3] = ["WH-NORTH", "WH-SOUTH", "WH-EAST"];

/// Mean wear of a tooth in mm per operating hour at nominal load, hardness 1 and
/// abrasiveness factor 1 (a mid-abrasive site).
const BASE_WEAR_MM_PER_H: f64 = 0.55;
/// A sound tooth's strain at nominal load, microstrain (each tooth ±5 %).
const STRAIN_AT_NOMINAL_UE: f64 = 400.0;

/// A tooth product.
pub(super) struct SkuSpec {
    /// The SKU code.
    pub(super) code: &'static str,
    /// Display name.
    name: &'static str,
    /// Length of a new tooth.
    pub(super) new_length_mm: f64,
    /// Length at which it must be replaced.
    pub(super) wear_limit_mm: f64,
    /// Replenishment lead time.
    pub(super) lead_time_days: u64,
    /// Relative wear resistance: wear rates are divided by it.
    hardness: f64,
}

impl SkuSpec {
    /// Wear allowance: new length minus wear limit.
    pub(super) fn allowance_mm(&self) -> f64 {
        self.new_length_mm - self.wear_limit_mm
    }
}

const SKUS: [SkuSpec; 3] = [
    SkuSpec {
        code: "BT-200",
        name: "Bucket tooth 200, compact excavators",
        new_length_mm: 120.0,
        wear_limit_mm: 35.0,
        lead_time_days: 3,
        hardness: 1.0,
    },
    SkuSpec {
        code: "BT-350",
        name: "Bucket tooth 350, wheel loaders",
        new_length_mm: 140.0,
        wear_limit_mm: 40.0,
        lead_time_days: 5,
        hardness: 1.05,
    },
    SkuSpec {
        code: "BT-500",
        name: "Bucket tooth 500, mining excavators",
        new_length_mm: 160.0,
        wear_limit_mm: 45.0,
        lead_time_days: 7,
        hardness: 1.1,
    },
];

/// A machine model.
pub(super) struct ModelSpec {
    /// Model name.
    name: &'static str,
    /// Mean load on one tooth while digging.
    pub(super) nominal_load_kn: f64,
    /// Fewest and most teeth on its bucket.
    teeth: (i64, i64),
    /// Index of the SKU its bucket takes.
    sku: usize,
    /// Mean seconds per dig cycle.
    pub(super) cycle_s: f64,
}

const MODELS: [ModelSpec; 3] = [
    ModelSpec {
        name: "EX-1200",
        nominal_load_kn: 110.0,
        teeth: (4, 6),
        sku: 0,
        cycle_s: 20.0,
    },
    ModelSpec {
        name: "WL-980",
        nominal_load_kn: 90.0,
        teeth: (5, 8),
        sku: 1,
        cycle_s: 28.0,
    },
    ModelSpec {
        name: "EX-2500",
        nominal_load_kn: 180.0,
        teeth: (6, 9),
        sku: 2,
        cycle_s: 25.0,
    },
];

/// A site: where machines dig.
pub(super) struct Site {
    /// Site name.
    pub(super) name: String,
    /// Index of the warehouse that serves it.
    pub(super) warehouse: usize,
    /// Ground abrasiveness, 0.2 (soft) to 1.0 (granite).
    pub(super) abrasiveness: f64,
    /// Ambient temperature.
    pub(super) ambient_c: f64,
    /// Smallest impact of the site's heavy-tailed impact distribution.
    pub(super) impact_scale_g: f64,
}

/// A machine and its operating state.
pub(super) struct Machine {
    /// Machine id.
    pub(super) id: String,
    /// Index of its owner.
    customer: usize,
    /// Index of its site.
    pub(super) site: usize,
    /// Its model.
    pub(super) model: &'static ModelSpec,
    /// Shift offset from the fleet's shift hours.
    pub(super) shift_offset_ms: i64,
    /// The shift day the load level below belongs to.
    pub(super) load_day: i64,
    /// Today's load level per tooth.
    pub(super) load_today_kn: f64,
}

/// Whether a tooth is whole, broken or gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Condition {
    /// Whole.
    Sound,
    /// Broken: shorter, still reporting.
    Broken,
    /// Fell off: silent.
    Lost,
}

/// A tooth position (one device) and the tooth currently mounted there.
pub(super) struct Tooth {
    /// Device id, `M0001-T1`.
    pub(super) device_id: String,
    /// Index of its machine.
    pub(super) machine: usize,
    /// Position on the bucket, 1 = leftmost.
    pub(super) position: usize,
    /// Index of its SKU.
    pub(super) sku: usize,
    /// Offset of its readings from the start of a shift.
    pub(super) phase_ms: u64,
    /// Share of the machine load this position takes (corners take more).
    pub(super) load_factor: f64,
    /// When the current tooth was installed.
    pub(super) installed_ms: Time,
    /// True length left.
    pub(super) remaining_mm: f64,
    /// Wear per operating hour of the current tooth at nominal load.
    pub(super) wear_mm_per_h: f64,
    /// Multiplier of the current tooth's failure hazard (casting quality).
    pub(super) frailty: f64,
    /// Dig cycles counted by the sensor (never reset).
    pub(super) dig_cycles: f64,
    /// Time of its previous reading.
    pub(super) last_reading_ms: Time,
    /// Whole, broken or lost.
    pub(super) condition: Condition,
    /// A work order for this tooth is open.
    pub(super) work_open: bool,
    /// A growing crack: the tooth fails when it has run this long since the crack started.
    pub(super) crack: Option<Crack>,
    /// The strain gauge's reading of this tooth at nominal load, microstrain.
    pub(super) strain_base_ue: f64,
}

/// A fatigue crack: it shows as rising strain for its whole life, then the tooth fails.
#[derive(Clone, Copy, Debug)]
pub(super) struct Crack {
    /// Operating hours since the crack started.
    pub(super) age_h: f64,
    /// Operating hours from start to failure.
    pub(super) life_h: f64,
}

/// Everything that does not move: the catalogue, the sites and the fleet.
pub(super) struct Fleet {
    /// Warehouse names.
    pub(super) warehouses: Vec<String>,
    /// The SKUs.
    pub(super) skus: Vec<&'static SkuSpec>,
    /// SKU codes, parallel to `skus`.
    pub(super) sku_codes: Vec<String>,
    /// Reorder point per SKU.
    pub(super) reorder_points: Vec<i64>,
    /// Purchase quantity per warehouse × SKU (`warehouse * skus + sku`).
    pub(super) purchase_qty: Vec<i64>,
    /// Customer ids.
    pub(super) customers: Vec<String>,
    /// Sites.
    pub(super) sites: Vec<Site>,
    /// Machines.
    pub(super) machines: Vec<Machine>,
    /// Teeth, machine by machine, left to right.
    pub(super) teeth: Vec<Tooth>,
}

impl Fleet {
    /// Builds the fleet of `config` with draws from `noise`.
    pub(super) fn build(config: &SimulatorConfig, shifts: &Shifts, noise: &mut Noise) -> Fleet {
        let site_count = config.machines.div_ceil(5).max(2);
        let warehouses: Vec<String> = WAREHOUSES
            .iter()
            .take(site_count)
            .map(|w| w.to_string())
            .collect();
        let skus: Vec<&'static SkuSpec> = SKUS.iter().collect();
        let sku_codes = skus.iter().map(|s| s.code.to_string()).collect();
        let customer_count = (site_count * 2).div_ceil(3);
        let customers = (1..=customer_count).map(|c| format!("C{c:03}")).collect();
        let sites = (0..site_count)
            .map(|s| {
                let abrasiveness = noise.uniform(0.2, 1.0);
                Site {
                    name: format!("SITE-{:02}", s + 1),
                    warehouse: s % warehouses.len(),
                    abrasiveness,
                    ambient_c: noise.uniform(0.0, 30.0),
                    impact_scale_g: 1.5 + 1.5 * abrasiveness,
                }
            })
            .collect::<Vec<_>>();
        let hours_per_day = shifts.hours_per_day();
        let mut machines = Vec::with_capacity(config.machines);
        let mut teeth = Vec::new();
        for m in 0..config.machines {
            let site = m % site_count;
            let model = &MODELS[noise.index(MODELS.len())];
            let machine = Machine {
                id: format!("M{:04}", m + 1),
                customer: site % customer_count,
                site,
                model,
                shift_offset_ms: noise.integer(-45, 45) * 60_000,
                load_day: i64::MIN,
                load_today_kn: model.nominal_load_kn,
            };
            let count = noise.integer(model.teeth.0, model.teeth.1) as usize;
            for position in 1..=count {
                let corner = position == 1 || position == count;
                let mut tooth = Tooth {
                    device_id: format!("{}-T{position}", machine.id),
                    machine: m,
                    position,
                    sku: model.sku,
                    phase_ms: noise.integer(0, config.telemetry_interval_ms as i64 - 1) as u64,
                    load_factor: if corner {
                        1.12
                    } else {
                        noise.uniform(0.92, 1.02)
                    },
                    installed_ms: config.start_ms,
                    remaining_mm: 0.0,
                    wear_mm_per_h: 0.0,
                    frailty: 1.0,
                    dig_cycles: 0.0,
                    last_reading_ms: 0,
                    condition: Condition::Sound,
                    work_open: false,
                    crack: None,
                    strain_base_ue: 0.0,
                };
                tooth.install(
                    config.start_ms,
                    &sites[site],
                    skus[tooth.sku],
                    config,
                    noise,
                );
                // The fleet is mid-life: spread the teeth over their wear allowance, so that
                // replacements do not all come in one wave.
                let worn = noise.uniform(0.0, 0.85);
                let sku = skus[tooth.sku];
                tooth.remaining_mm = sku.new_length_mm - worn * sku.allowance_mm();
                let age_h = (worn * sku.allowance_mm() / tooth.wear_mm_per_h.max(1e-6))
                    .min(365.0 * hours_per_day);
                tooth.installed_ms = config
                    .start_ms
                    .saturating_sub((age_h / hours_per_day * DAY_MS as f64) as u64);
                tooth.dig_cycles = (age_h * 3600.0 / model.cycle_s).floor();
                teeth.push(tooth);
            }
            machines.push(machine);
        }
        let mut fleet = Fleet {
            warehouses,
            skus,
            sku_codes,
            reorder_points: Vec::new(),
            purchase_qty: Vec::new(),
            customers,
            sites,
            machines,
            teeth,
        };
        fleet.plan_stock(config, hours_per_day);
        fleet
    }

    /// Sets reorder points and purchase quantities from the expected demand.
    fn plan_stock(&mut self, config: &SimulatorConfig, hours_per_day: f64) {
        let skus = self.skus.len();
        // Replacements a day per warehouse × SKU, with some extra for failures.
        let mut demand = vec![0.0; self.warehouses.len() * skus];
        for tooth in &self.teeth {
            let site = &self.sites[self.machines[tooth.machine].site];
            let life_h = self.skus[tooth.sku].allowance_mm()
                / (tooth.wear_mm_per_h * tooth.load_factor).max(1e-6);
            demand[site.warehouse * skus + tooth.sku] += 1.15 * hours_per_day / life_h;
        }
        // Sales: mean quantity 4.5, one in ten cancelled.
        let sales_per_sku = config.sales_orders_per_day.max(0.0) * 4.5 * 0.9 / skus as f64;
        for d in &mut demand {
            *d += sales_per_sku;
        }
        self.reorder_points = (0..skus)
            .map(|s| {
                // Cover the lead time and a day, with margin for lumpy sales.
                let peak = (0..self.warehouses.len())
                    .map(|w| demand[w * skus + s])
                    .fold(0.0, f64::max);
                ((1.5 * peak * (self.skus[s].lead_time_days as f64 + 1.0)).ceil() as i64).max(5)
            })
            .collect();
        self.purchase_qty = demand
            .iter()
            .map(|d| {
                ((d * 14.0).ceil() as i64)
                    .max(i64::from(config.purchase_qty))
                    .max(1)
            })
            .collect();
    }

    /// The reference records of sites, SKUs, machines and devices, at `t`.
    pub(super) fn assets(&self, t: Time, out: &mut Vec<Event>) {
        let ts = Some(Timestamp(t));
        for site in &self.sites {
            out.push(Event::Asset(Asset::Site(SiteAsset {
                site: site.name.clone(),
                warehouse: Some(self.warehouses[site.warehouse].clone()),
                abrasiveness: Some(rounded(site.abrasiveness, 100)),
                ts,
            })));
        }
        for (s, sku) in self.skus.iter().enumerate() {
            out.push(Event::Asset(Asset::Sku(SkuAsset {
                sku: self.sku_codes[s].clone(),
                name: Some(sku.name.to_string()),
                reorder_point: Some(self.reorder_points[s]),
                lead_time_days: Some(sku.lead_time_days as i64),
                ts,
            })));
        }
        for machine in &self.machines {
            out.push(Event::Asset(Asset::Machine(MachineAsset {
                machine_id: machine.id.clone(),
                customer_id: Some(self.customers[machine.customer].clone()),
                site: Some(self.sites[machine.site].name.clone()),
                model: Some(machine.model.name.to_string()),
                ts,
            })));
        }
        for tooth in 0..self.teeth.len() {
            out.push(self.device_asset(tooth, t));
        }
    }

    /// The reference record of a device, at `t`.
    pub(super) fn device_asset(&self, tooth: usize, t: Time) -> Event {
        let tooth = &self.teeth[tooth];
        let machine = &self.machines[tooth.machine];
        let sku = self.skus[tooth.sku];
        Event::Asset(Asset::Device(DeviceAsset {
            device_id: tooth.device_id.clone(),
            machine_id: machine.id.clone(),
            position: Some(tooth.position as i64),
            sku: Some(self.sku_codes[tooth.sku].clone()),
            site: Some(self.sites[machine.site].name.clone()),
            installed_at: Some(Timestamp(tooth.installed_ms)),
            new_length_mm: Some(Micro::from_f64(sku.new_length_mm)),
            wear_limit_mm: Some(Micro::from_f64(sku.wear_limit_mm)),
            ts: Some(Timestamp(t)),
        }))
    }

    /// The warehouse that serves a tooth's site.
    pub(super) fn warehouse_of(&self, tooth: usize) -> usize {
        self.sites[self.machines[self.teeth[tooth].machine].site].warehouse
    }
}

impl Tooth {
    /// Mounts a new tooth at `t`.
    pub(super) fn install(
        &mut self,
        t: Time,
        site: &Site,
        sku: &SkuSpec,
        config: &SimulatorConfig,
        noise: &mut Noise,
    ) {
        self.installed_ms = t;
        self.remaining_mm = sku.new_length_mm;
        self.wear_mm_per_h = BASE_WEAR_MM_PER_H * config.wear_rate_scale / sku.hardness
            * (0.35 + 1.1 * site.abrasiveness)
            * noise.lognormal(0.15);
        self.frailty = noise.lognormal(0.5);
        self.strain_base_ue = STRAIN_AT_NOMINAL_UE * noise.lognormal(0.05);
        self.condition = Condition::Sound;
        self.work_open = false;
        self.crack = None;
    }
}

/// The fleet's shift hours; each machine keeps them with its own offset.
pub(super) struct Shifts {
    start_ms: i64,
    end_ms: i64,
}

impl Shifts {
    /// Shifts from `start_hour` to `end_hour` UTC (equal hours: round the clock; a start after
    /// the end: across midnight).
    pub(super) fn new(start_hour: u32, end_hour: u32) -> Shifts {
        let hour = HOUR_MS as i64;
        Shifts {
            start_ms: i64::from(start_hour % 24) * hour,
            end_ms: i64::from(end_hour % 24) * hour,
        }
    }

    /// Operating hours a day.
    pub(super) fn hours_per_day(&self) -> f64 {
        let ms = (self.end_ms - self.start_ms).rem_euclid(DAY_MS as i64);
        if ms == 0 {
            24.0
        } else {
            ms as f64 / HOUR_MS as f64
        }
    }

    /// Time of day of `t` for a machine with `offset_ms`.
    fn local(t: Time, offset_ms: i64) -> i64 {
        (t as i64 - offset_ms).rem_euclid(DAY_MS as i64)
    }

    /// The shift day of `t` for a machine with `offset_ms`.
    pub(super) fn day(&self, t: Time, offset_ms: i64) -> i64 {
        (t as i64 - offset_ms - self.start_ms).div_euclid(DAY_MS as i64)
    }

    /// Whether a machine with `offset_ms` works at `t`.
    pub(super) fn operating(&self, t: Time, offset_ms: i64) -> bool {
        let local = Shifts::local(t, offset_ms);
        match self.start_ms.cmp(&self.end_ms) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => self.start_ms <= local && local < self.end_ms,
            std::cmp::Ordering::Greater => local >= self.start_ms || local < self.end_ms,
        }
    }

    /// The next shift start at or after `t` for a machine with `offset_ms`.
    pub(super) fn next_start(&self, t: Time, offset_ms: i64) -> Time {
        let wait = (self.start_ms - Shifts::local(t, offset_ms)).rem_euclid(DAY_MS as i64);
        t + wait as u64
    }
}

/// `value` rounded to `1 / steps_per_unit` (a power of ten up to a million).
pub(super) fn rounded(value: f64, steps_per_unit: i64) -> Micro {
    Micro((value * steps_per_unit as f64).round() as i64 * (1_000_000 / steps_per_unit))
}
