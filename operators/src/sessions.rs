//! `Sessions`: per key, when its current session of activity began and its newest record.

use std::hash::Hash;

use differential_dataflow::{ExchangeData, Hashable};

use crate::{Collection, FoldByKey, Time};

/// Splits each key's records into sessions separated by gaps of at least `gap_ms` and keeps
/// `(key, (session_start, last))` for the current session.
///
/// Records older than the newest one seen are ignored (they cannot end a gap).
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Sessions;
///
/// timely::example(|scope| {
///     let (mut input, machine_readings) = scope.new_collection::<(u32, u64), isize>();
///     let _active_since = machine_readings.sessions("machine sessions", 600_000);
///     input.update_at((9, 1_000), 1_000, 1);
/// });
/// ```
pub trait Sessions<'scope, K> {
    /// The current session `(start, last)` per key of `(key, event_ts)` records.
    fn sessions(self, name: &str, gap_ms: u64) -> Collection<'scope, (K, (Time, Time))>;
}

impl<'scope, K: ExchangeData + Hashable + Hash> Sessions<'scope, K>
    for Collection<'scope, (K, Time)>
{
    fn sessions(self, name: &str, gap_ms: u64) -> Collection<'scope, (K, (Time, Time))> {
        self.fold_by_key(
            name,
            move |session: &mut Option<(Time, Time)>, ts: &Time| match session {
                None => *session = Some((*ts, *ts)),
                Some((start, last)) if *ts > *last => {
                    if *ts - *last >= gap_ms {
                        *start = *ts;
                    }
                    *last = *ts;
                }
                Some(_) => {}
            },
            |session| *session,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const GAP: u64 = 5;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_recomputation(
            events in prop::collection::vec((0u8..3, 0u64..40), 1..40),
            workers in 1usize..3,
        ) {
            // In-order records (stamp = event time), so sessions are well defined.
            let updates = events.iter().map(|&(k, ts)| ((k, ts), ts, 1)).collect();
            let out = run(workers, updates, |c| c.sessions("test", GAP));
            for q in 0..42 {
                let mut per_key: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
                for &(k, ts) in events.iter().filter(|e| e.1 <= q) {
                    per_key.entry(k).or_default().push(ts);
                }
                let expected: BTreeMap<(u8, (u64, u64)), isize> = per_key
                    .into_iter()
                    .map(|(k, mut ts)| {
                        ts.sort();
                        ts.dedup();
                        let mut start = ts[0];
                        for pair in ts.windows(2) {
                            if pair[1] - pair[0] >= GAP { start = pair[1]; }
                        }
                        ((k, (start, *ts.last().expect("non-empty"))), 1)
                    })
                    .collect();
                prop_assert_eq!(accumulate_at(&out, q), expected, "at time {}", q);
            }
        }
    }
}
