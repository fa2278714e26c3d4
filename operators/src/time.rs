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

/// Appends `from_micro(micro)` as Rust's `Display` of that `f64` writes it, without the float
/// formatter: below 10¹⁵ µ-units the shortest round-trip decimal of the `f64` nearest to
/// `micro / 10⁶` is that decimal itself (every decimal of at most 15 significant digits
/// round-trips through `f64`), so integer digits give the same text at a fraction of the cost.
///
/// ```
/// use wearflow_operators::time::{from_micro, write_micro};
/// let mut out = String::new();
/// write_micro(&mut out, -2_500_000);
/// assert_eq!(out, "-2.5");
/// assert_eq!(out, from_micro(-2_500_000).to_string());
/// ```
pub fn write_micro(out: &mut String, micro: i64) {
    const EXACT_BELOW: u64 = 1_000_000_000_000_000;
    let magnitude = micro.unsigned_abs();
    if magnitude >= EXACT_BELOW {
        use std::fmt::Write;
        let _ = write!(out, "{}", from_micro(micro));
        return;
    }
    if micro < 0 {
        out.push('-');
    }
    // `itoa` rather than `write!`: this runs for every value of every features row.
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(magnitude / 1_000_000));
    let mut fraction = magnitude % 1_000_000;
    if fraction > 0 {
        let mut width = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let text = digits.format(fraction);
        out.push('.');
        for _ in text.len()..width {
            out.push('0');
        }
        out.push_str(text);
    }
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

    proptest::proptest! {
        #[test]
        fn write_micro_matches_float_display(micro in proptest::prelude::any::<i64>()) {
            let mut out = String::new();
            write_micro(&mut out, micro);
            proptest::prop_assert_eq!(out, from_micro(micro).to_string());
        }

        #[test]
        fn write_micro_matches_float_display_for_small_values(micro in -10_000_000_000i64..10_000_000_000) {
            let mut out = String::new();
            write_micro(&mut out, micro);
            proptest::prop_assert_eq!(out, from_micro(micro).to_string());
        }
    }

    #[test]
    fn write_micro_edges() {
        for micro in [
            0,
            1,
            -1,
            10,
            999_999,
            1_000_000,
            -1_000_000,
            123_456_789,
            999_999_999_999_999,
            -999_999_999_999_999,
            1_000_000_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = String::new();
            write_micro(&mut out, micro);
            assert_eq!(out, from_micro(micro).to_string(), "{micro}");
        }
    }

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
