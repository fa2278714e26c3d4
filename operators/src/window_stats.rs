//! `WindowStats`: count, sum, mean, stddev, min and max per key over an event-time window.

use differential_dataflow::{ExchangeData, Hashable};
use serde::{Deserialize, Serialize};

use crate::{Collection, Moments, Time, Window};

/// Windowed statistics of one key, in the input's fixed-point units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// Count, sums and power sums (only the `y` fields are used).
    pub moments: Moments,
    /// Smallest value in the window.
    pub min: i64,
    /// Largest value in the window.
    pub max: i64,
}

impl Stats {
    /// Number of values in the window.
    pub fn count(&self) -> i64 {
        self.moments.n
    }
    /// Sum of the values.
    pub fn sum(&self) -> i128 {
        self.moments.sy
    }
    /// Mean of the values.
    pub fn mean(&self) -> Option<f64> {
        self.moments.mean_y()
    }
    /// Population standard deviation of the values.
    pub fn stddev(&self) -> Option<f64> {
        self.moments.stddev_y()
    }
}

/// Maintains [`Stats`] per key over a sliding event-time window.
///
/// Count and sums ride in the difference type ([`Moments`]), so an update costs a
/// consolidation, not a rescan. Min and max are not sums: they reduce per bucket of
/// `window_ms / 16` and then over the buckets, so an update touches one bucket.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::WindowStats;
///
/// timely::example(|scope| {
///     let (mut input, readings) = scope.new_collection::<(u32, (u64, i64)), isize>();
///     let _stats = readings.window_stats("load_kn", 3_600_000);
///     input.update_at((7, (1_000, 42_000_000)), 1_000, 1);
/// });
/// ```
pub trait WindowStats<'scope, K> {
    /// Statistics of `(key, (event_ts, value))` over the last `window_ms` of event time.
    fn window_stats(self, name: &str, window_ms: u64) -> Collection<'scope, (K, Stats)>;
}

impl<'scope, K: ExchangeData + Hashable + std::hash::Hash> WindowStats<'scope, K>
    for Collection<'scope, (K, (Time, i64))>
{
    fn window_stats(self, name: &str, window_ms: u64) -> Collection<'scope, (K, Stats)> {
        let bucket_ms = (window_ms / 16).max(1);
        let windowed = self
            .map(|(key, (ts, value))| ((key, ts, value), ts))
            .window(window_ms);
        let moments = windowed
            .clone()
            .explode(|(key, _ts, value)| Some((key, Moments::of(0, value))))
            .count()
            .map(|(key, moments)| (key, (moments, ())));
        let buckets = windowed
            .map(move |(key, ts, value)| ((key, ts / bucket_ms), value))
            .reduce_named(
                &format!("{name}: bucket extremes"),
                |_key, input, output| {
                    let min = input.iter().map(|(v, _)| **v).min();
                    let max = input.iter().map(|(v, _)| **v).max();
                    if let (Some(min), Some(max)) = (min, max) {
                        output.push(((min, max), 1));
                    }
                },
            )
            .map(|((key, _bucket), extremes)| (key, extremes))
            .reduce_named(
                &format!("{name}: window extremes"),
                |_key, input, output| {
                    let min = input.iter().map(|((lo, _), _)| *lo).min();
                    let max = input.iter().map(|((_, hi), _)| *hi).max();
                    if let (Some(min), Some(max)) = (min, max) {
                        output.push(((min, max), 1));
                    }
                },
            );
        moments.join_map(buckets, |key, (moments, ()), (min, max)| {
            (
                key.clone(),
                Stats {
                    moments: *moments,
                    min: *min,
                    max: *max,
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const W: u64 = 20;

    fn oracle(events: &[(u8, u64, i64, u64)], q: Time) -> BTreeMap<u8, (i64, i128, i64, i64)> {
        let mut out: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
        for &(key, ts, value, stamp) in events {
            if stamp <= q && ts + W > q {
                out.entry(key).or_default().push(value);
            }
        }
        out.into_iter()
            .map(|(k, vs)| {
                let sum: i128 = vs.iter().map(|v| *v as i128).sum();
                let min = *vs.iter().min().expect("non-empty");
                let max = *vs.iter().max().expect("non-empty");
                (k, (vs.len() as i64, sum, min, max))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_recomputation(
            events in prop::collection::vec((0u8..3, 0u64..60, -50i64..50, 0u64..8), 1..60),
            workers in 1usize..3,
        ) {
            // (key, event_ts, value, lateness): the stamp is never before the event time.
            let events: Vec<(u8, u64, i64, u64)> =
                events.into_iter().map(|(k, ts, v, late)| (k, ts, v, ts + late)).collect();
            let updates = events.iter().map(|&(k, ts, v, stamp)| ((k, (ts, v)), stamp, 1)).collect();
            let out = run(workers, updates, |c| c.window_stats("test", W));
            for q in 0..80 {
                let got: BTreeMap<u8, (i64, i128, i64, i64)> = accumulate_at(&out, q)
                    .into_iter()
                    .map(|((k, s), d)| {
                        assert_eq!(d, 1);
                        (k, (s.count(), s.sum(), s.min, s.max))
                    })
                    .collect();
                prop_assert_eq!(got, oracle(&events, q), "at time {}", q);
            }
        }
    }
}
