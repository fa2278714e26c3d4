//! Logical time: event-time milliseconds since the Unix epoch, and the difference type.

/// The timely timestamp: event time in milliseconds since the Unix epoch.
pub type Time = u64;

/// The difference type of record-counting collections.
pub type Diff = isize;

/// Milliseconds in one hour.
pub const MS_PER_HOUR: u64 = 3_600_000;

/// Fixed-point scale for measured values carried through collections (micro-units).
pub const MICRO: f64 = 1_000_000.0;

/// Converts a finite measured value to micro-units, saturating at the `i64` range.
pub fn to_micro(value: f64) -> i64 {
    (value * MICRO).round() as i64
}

/// Converts micro-units back to a measured value.
pub fn from_micro(micro: i64) -> f64 {
    micro as f64 / MICRO
}

/// Rounds `ts` up to the next multiple of `resolution_ms` (a resolution of 0 or 1 is exact).
pub fn ceil_to(ts: Time, resolution_ms: u64) -> Time {
    if resolution_ms <= 1 {
        ts
    } else {
        ts.div_ceil(resolution_ms).saturating_mul(resolution_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_round_trips() {
        assert_eq!(to_micro(12.345678), 12_345_678);
        assert_eq!(from_micro(-2_500_000), -2.5);
    }

    #[test]
    fn ceil_rounds_up() {
        assert_eq!(ceil_to(1001, 1000), 2000);
        assert_eq!(ceil_to(2000, 1000), 2000);
        assert_eq!(ceil_to(7, 1), 7);
    }
}
