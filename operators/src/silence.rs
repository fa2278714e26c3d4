//! `Silence`: keys that have been quiet for a while although their group is still active.

use differential_dataflow::{ExchangeData, Hashable};

use crate::{Collection, Time};

/// Finds keys that have been quiet for `quiet_ms` while their group was active.
///
/// The receiver holds the newest `(key, (last_ts, group))` per key (see
/// [`LatestByKey`](crate::LatestByKey)); `groups` holds each group's current activity
/// session `(group, (session_start, last_ts))` (see [`Sessions`](crate::Sessions)). Quiet time
/// counts from the later of the key's last record and the start of the group's session, up
/// to the group's last record: a machine that is switched off makes none of its teeth
/// silent, and a machine starting its shift gives every tooth `quiet_ms` to speak. The output
/// is `(key, (key_last_ts, group_last_ts))`.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Silence;
///
/// timely::example(|scope| {
///     let (mut teeth, tooth_last) = scope.new_collection::<(u32, (u64, u32)), isize>();
///     let (mut machines, machine_sessions) = scope.new_collection::<(u32, (u64, u64)), isize>();
///     let _lost = tooth_last.silence(machine_sessions, 600_000);
///     teeth.update_at((1, (0, 9)), 0, 1);
///     machines.update_at((9, (0, 900_000)), 0, 1);
/// });
/// ```
pub trait Silence<'scope, K, G> {
    /// Keys silent for at least `quiet_ms` while their group is active.
    fn silence(
        self,
        groups: Collection<'scope, (G, (Time, Time))>,
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
        groups: Collection<'scope, (G, (Time, Time))>,
        quiet_ms: u64,
    ) -> Collection<'scope, (K, (Time, Time))> {
        self.map(|(key, (last, group))| (group, (key, last)))
            .join_map(
                groups,
                move |_group, (key, last), (session_start, group_last)| {
                    let quiet_since = (*last).max(*session_start);
                    let silent = group_last.saturating_sub(quiet_since) >= quiet_ms;
                    silent.then(|| (key.clone(), (*last, *group_last)))
                },
            )
            .flat_map(|silent| silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};
    use crate::{LatestByKey, Sessions};
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
                let groups = readings.map(|(k, ts)| (k % 2, ts)).sessions("group sessions", QUIET);
                keys.silence(groups, QUIET)
            });
            for q in 0..64 {
                let mut key_last: BTreeMap<u8, u64> = BTreeMap::new();
                let mut group_times: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
                for &(k, ts) in events.iter().filter(|(_, ts)| *ts <= q) {
                    let e = key_last.entry(k).or_insert(ts);
                    *e = (*e).max(ts);
                    group_times.entry(k % 2).or_default().push(ts);
                }
                // Each group's current session: start after the last gap of QUIET or more.
                let sessions: BTreeMap<u8, (u64, u64)> = group_times
                    .into_iter()
                    .map(|(g, mut ts)| {
                        ts.sort();
                        let mut start = ts[0];
                        for pair in ts.windows(2) {
                            if pair[1] - pair[0] >= QUIET { start = pair[1]; }
                        }
                        (g, (start, *ts.last().expect("non-empty")))
                    })
                    .collect();
                let expected: BTreeMap<(u8, (u64, u64)), isize> = key_last
                    .into_iter()
                    .filter_map(|(k, last)| {
                        let (start, g) = sessions[&(k % 2)];
                        (g - last.max(start) >= QUIET).then_some(((k, (last, g)), 1))
                    })
                    .collect();
                prop_assert_eq!(accumulate_at(&out, q), expected, "at time {}", q);
            }
        }
    }
}
