//! The fleet simulator (placeholder: being written).

use crate::event::Event;
use wearflow_operators::Time;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Random seed: the same seed gives the same events.
    pub seed: u64,
    /// Number of machines.
    pub machines: usize,
    /// Simulated start time, epoch ms.
    pub start_ms: Time,
}

/// A true failure or loss, for scoring predictions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroundTruth {
    /// The device.
    pub device_id: String,
    /// When it failed.
    pub ts: Time,
}

/// The deterministic fleet.
pub struct Simulator {
    clock_ms: Time,
}

impl Simulator {
    /// Builds the fleet.
    pub fn new(config: SimulatorConfig) -> Simulator {
        Simulator { clock_ms: config.start_ms }
    }
    /// Every event not yet emitted has a time at or after this.
    pub fn clock_ms(&self) -> Time {
        self.clock_ms
    }
    /// Emits all events with time before `until_ms`, in time order.
    pub fn advance(&mut self, until_ms: Time, _out: &mut Vec<Event>) {
        self.clock_ms = self.clock_ms.max(until_ms);
    }
}
