//! `LatestByKey`: the newest value per key, with state proportional to the number of keys.

use std::hash::Hash;

use differential_dataflow::{ExchangeData, Hashable};

use crate::{Collection, FoldByKey};

/// Keeps, per key, the observation with the greatest `(order, value)`.
///
/// The input is a stream of observations `(key, (order, value))` (retractions are ignored);
/// the output is a collection holding exactly one `(key, (order, value))` per key seen. A
/// `reduce` would keep every observation forever; this keeps one per key (see
/// [`FoldByKey`]), and the output at every time equals the newest observation stamped at or
/// before it.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::LatestByKey;
///
/// timely::example(|scope| {
///     let (mut input, readings) = scope.new_collection::<(u32, (u64, i64)), isize>();
///     let _latest = readings.latest_by_key("latest reading");
///     input.update_at((1, (10, 99)), 10, 1);
/// });
/// ```
pub trait LatestByKey<'scope, K, V> {
    /// The newest `(order, value)` per key.
    fn latest_by_key(self, name: &str) -> Collection<'scope, (K, (u64, V))>;
}

impl<'scope, K, V> LatestByKey<'scope, K, V> for Collection<'scope, (K, (u64, V))>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
{
    fn latest_by_key(self, name: &str) -> Collection<'scope, (K, (u64, V))> {
        self.fold_by_key(
            name,
            |best: &mut Option<(u64, V)>, observed: &(u64, V)| {
                if best.as_ref().is_none_or(|b| b < observed) {
                    *best = Some(observed.clone());
                }
            },
            |best| best.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_recomputation(
            events in prop::collection::vec((0u8..4, 0u64..30, 0i32..5, 0u64..30), 1..60),
            workers in 1usize..4,
        ) {
            // (key, order, value, stamp): orders arrive out of order relative to stamps.
            let updates = events.iter().map(|&(k, o, v, s)| ((k, (o, v)), s, 1)).collect();
            let out = run(workers, updates, |c| c.latest_by_key("test"));
            for q in 0..32 {
                let mut expected: BTreeMap<(u8, (u64, i32)), isize> = BTreeMap::new();
                let mut best: BTreeMap<u8, (u64, i32)> = BTreeMap::new();
                for &(k, o, v, s) in &events {
                    if s <= q {
                        let e = best.entry(k).or_insert((o, v));
                        if (o, v) > *e { *e = (o, v); }
                    }
                }
                for (k, ov) in best { expected.insert((k, ov), 1); }
                prop_assert_eq!(accumulate_at(&out, q), expected, "at time {}", q);
            }
        }
    }
}
