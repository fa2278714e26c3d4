//! `Silence`: keys that have been quiet for a while although their group is still active.

use differential_dataflow::{ExchangeData, Hashable};

use crate::{Collection, Time};

/// Finds keys whose last record is at least `quiet_ms` older than their group's last record.
///
/// The receiver holds the newest `(key, (last_ts, group))` per key (see
/// [`LatestByKey`](crate::LatestByKey)); `groups` holds the newest `(group, last_ts)`. A key is
/// silent while its group keeps reporting and the key does not: a machine that is switched
/// off makes none of its teeth silent. The output is `(key, (key_last_ts, group_last_ts))`.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Silence;
///
/// timely::example(|scope| {
///     let (mut teeth, tooth_last) = scope.new_collection::<(u32, (u64, u32)), isize>();
///     let (mut machines, machine_last) = scope.new_collection::<(u32, u64), isize>();
///     let _lost = tooth_last.silence(machine_last, 600_000);
///     teeth.update_at((1, (0, 9)), 0, 1);
///     machines.update_at((9, 900_000), 0, 1);
/// });
/// ```
pub trait Silence<'scope, K, G> {
    /// Keys silent for at least `quiet_ms` while their group is active.
    fn silence(
        self,
        groups: Collection<'scope, (G, Time)>,
        quiet_ms: u64,
    ) -> Collection<'scope, (K, (Time, Time))>;
}

impl<'scope, K, G> Silence<'scope, K, G> for Collection<'scope, (K, (Time, G))>
where
    K: ExchangeData + Hashable,
    G: ExchangeData + Hashable,
{
    fn silence(
        self,
        groups: Collection<'scope, (G, Time)>,
        quiet_ms: u64,
    ) -> Collection<'scope, (K, (Time, Time))> {
        self.map(|(key, (last, group))| (group, (key, last)))
            .join_map(groups, |_group, (key, last), group_last| {
                (key.clone(), (*last, *group_last))
            })
            .filter(move |(_key, (last, group_last))| group_last.saturating_sub(*last) >= quiet_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LatestByKey;
    use crate::testing::{accumulate_at, run};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const QUIET: u64 = 10;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_recomputation(
            events in prop::collection::vec((0u8..6, 0u64..60), 1..60),
        ) {
            // Key k belongs to group k % 2; each event is stamped at its own time.
            let updates = events.iter().map(|&(k, ts)| ((k, ts), ts, 1)).collect();
            let out = run(2, updates, |readings| {
                let keys = readings
                    .clone()
                    .map(|(k, ts)| (k, (ts, k % 2)))
                    .latest_by_key("key last")
                    .map(|(k, (ts, group))| (k, (ts, group)));
                let groups = readings
                    .map(|(k, ts)| (k % 2, (ts, ())))
                    .latest_by_key("group last")
                    .map(|(g, (ts, ()))| (g, ts));
                keys.silence(groups, QUIET)
            });
            for q in 0..64 {
                let mut key_last: BTreeMap<u8, u64> = BTreeMap::new();
                let mut group_last: BTreeMap<u8, u64> = BTreeMap::new();
                for &(k, ts) in events.iter().filter(|(_, ts)| *ts <= q) {
                    let e = key_last.entry(k).or_insert(ts);
                    *e = (*e).max(ts);
                    let g = group_last.entry(k % 2).or_insert(ts);
                    *g = (*g).max(ts);
                }
                let expected: BTreeMap<(u8, (u64, u64)), isize> = key_last
                    .into_iter()
                    .filter_map(|(k, last)| {
                        let g = group_last[&(k % 2)];
                        (g - last >= QUIET).then_some(((k, (last, g)), 1))
                    })
                    .collect();
                prop_assert_eq!(accumulate_at(&out, q), expected, "at time {}", q);
            }
        }
    }
}
