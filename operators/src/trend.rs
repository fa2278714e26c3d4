//! `Trend`: least-squares slope of a value over event time, per key, over a window.

use differential_dataflow::{ExchangeData, Hashable};

use differential_dataflow::difference::Multiply;

use crate::time::{MS_PER_HOUR, ceil_to};
use crate::{Collection, HoldUntilDue, Moments, Time};

/// Maintains the regression sums of `value` against `event_ts` per key over a window.
///
/// The result is [`Moments`] with `x` = event time in ms and `y` = value; use
/// [`slope_per_hour`] for units per hour. All sums are exact integers in the difference type.
///
/// A record leaves the window at `max(stamp, ceil(event_ts + window_ms, granularity_ms))`:
/// records of one key expiring in the same granule share one future retraction, which
/// consolidates, so pending state is `O(keys × window / granularity)`, not `O(records)`.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Trend;
///
/// timely::example(|scope| {
///     let (mut input, lengths) = scope.new_collection::<(u32, (u64, i64)), isize>();
///     let _trend = lengths.trend(6 * 3_600_000, 60_000);
///     input.update_at((1, (0, 100)), 0, 1);
/// });
/// ```
pub trait Trend<'scope, K> {
    /// Regression sums of `(key, (event_ts, value))` over the last `window_ms` of event time,
    /// expiring at `granularity_ms` boundaries.
    fn trend(self, window_ms: u64, granularity_ms: u64) -> Collection<'scope, (K, Moments)>;
}

impl<'scope, K: ExchangeData + Hashable> Trend<'scope, K> for Collection<'scope, (K, (Time, i64))> {
    fn trend(self, window_ms: u64, granularity_ms: u64) -> Collection<'scope, (K, Moments)> {
        self.join_function(move |(key, (ts, value))| {
            let moments = Moments::of(ts as i64, value);
            let expiry = ceil_to(ts.saturating_add(window_ms), granularity_ms);
            [
                (key.clone(), 0, moments),
                (key, expiry, moments.multiply(&-1)),
            ]
        })
        .hold_until_due("trend: until due")
        .count()
    }
}

/// The slope in value units per hour, from moments with `x` in milliseconds.
pub fn slope_per_hour(moments: &Moments) -> Option<f64> {
    moments.slope().map(|per_ms| per_ms * MS_PER_HOUR as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};
    use differential_dataflow::difference::Semigroup;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const W: u64 = 15;
    const G: u64 = 4;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_recomputation(
            events in prop::collection::vec((0u8..3, 0u64..50, -100i64..100, 0u64..6), 1..50),
        ) {
            let updates: Vec<_> =
                events.iter().map(|&(k, ts, v, late)| ((k, (ts, v)), ts + late, 1)).collect();
            let out = run(2, updates, |c| c.trend(W, G));
            for q in 0..70 {
                let mut expected: BTreeMap<u8, Moments> = BTreeMap::new();
                for &(k, ts, v, late) in &events {
                    if ts + late <= q && ceil_to(ts + W, G) > q {
                        expected.entry(k).or_default().plus_equals(&Moments::of(ts as i64, v));
                    }
                }
                let got: BTreeMap<u8, Moments> =
                    accumulate_at(&out, q).into_iter().map(|((k, m), _)| (k, m)).collect();
                prop_assert_eq!(got, expected, "at time {}", q);
            }
        }
    }

    #[test]
    fn slope_per_hour_scales() {
        let mut m = Moments::of(0, 10_000);
        m.plus_equals(&Moments::of(MS_PER_HOUR as i64, 7_000));
        assert_eq!(slope_per_hour(&m), Some(-3_000.0));
    }
}
