//! `LatestByKey`: the newest value per key, with state proportional to the number of keys.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, Hashable};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

use crate::{Collection, Diff, Time};

/// Keeps, per key, the observation with the greatest `(order, value)`.
///
/// The input is a stream of observations `(key, (order, value))` (retractions are ignored);
/// the output is a collection holding exactly one `(key, (order, value))` per key seen. A
/// `reduce` would keep every observation forever; this operator keeps one per key. It holds
/// observations until the input frontier passes their time and applies them in time order,
/// so the output at every time equals the newest observation stamped at or before it.
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

type Update<K, V> = ((K, (u64, V)), Time, Diff);
/// Observations waiting for their time to complete.
type Pending<K, V> = BTreeMap<Time, Vec<(K, (u64, V))>>;

impl<'scope, K, V> LatestByKey<'scope, K, V> for Collection<'scope, (K, (u64, V))>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
{
    fn latest_by_key(self, name: &str) -> Collection<'scope, (K, (u64, V))> {
        let exchange = Exchange::new(|((key, _), _, _): &Update<K, V>| key.hashed().into());
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<Update<K, V>>>, _, _, _>(
                exchange,
                name,
                |_capability, _info| {
                    let mut pending: Pending<K, V> = BTreeMap::new();
                    let mut held: Option<Capability<Time>> = None;
                    let mut latest: HashMap<K, (u64, V)> = HashMap::new();
                    move |(input, frontier), output| {
                        input.for_each(|capability, data| {
                            if let Some(least) = capability.retain_least(0)
                                && held.as_ref().is_none_or(|h| least.time() < h.time())
                            {
                                held = Some(least);
                            }
                            for (record, time, diff) in data.drain(..) {
                                if diff > 0 {
                                    pending.entry(time).or_default().push(record);
                                }
                            }
                        });
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier.less_equal(&time) {
                                break;
                            }
                            let Some(held) = held.as_ref() else { break };
                            let capability = held.delayed(&time);
                            let mut newest: BTreeMap<K, (u64, V)> = BTreeMap::new();
                            for (key, observed) in entry.remove() {
                                match newest.get(&key) {
                                    Some(best) if *best >= observed => {}
                                    _ => {
                                        newest.insert(key, observed);
                                    }
                                }
                            }
                            let mut session = output.session(&capability);
                            for (key, observed) in newest {
                                match latest.get(&key) {
                                    Some(old) if *old >= observed => continue,
                                    Some(old) => {
                                        session.give(((key.clone(), old.clone()), time, -1));
                                    }
                                    None => {}
                                }
                                session.give(((key.clone(), observed.clone()), time, 1));
                                latest.insert(key, observed);
                            }
                        }
                        match pending.keys().next() {
                            Some(next) => {
                                if let Some(h) = held.as_mut() {
                                    h.downgrade(next);
                                }
                            }
                            None => held = None,
                        }
                    }
                },
            )
            .as_collection()
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
