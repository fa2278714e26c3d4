//! `FoldByKey`: per-key state folded from observations in time order, one output row per key.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, Hashable};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

use crate::{Collection, Diff, Time};

/// Folds a stream of observations `(key, value)` into one state per key, and maintains the
/// collection of `(key, present(state))`.
///
/// Observations are held until the input frontier passes their time, then folded in time
/// order (observations of one key at one time in value order, so the result does not depend
/// on batching or the number of workers). State is one `S` per key: bounded by the number of
/// keys, not by the number of observations. The input is a stream of facts, not a collection
/// to maintain: at each time its updates are consolidated, an observation with a positive
/// net count is folded that many times, and net retractions are ignored. So an input that
/// changes several times within one time (a value replaced by another, as an upstream
/// collection's update shows it) is observed only in its net change.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::FoldByKey;
///
/// timely::example(|scope| {
///     let (mut input, readings) = scope.new_collection::<(u32, i64), isize>();
///     // The running maximum per key.
///     let _max = readings.fold_by_key("max", |m: &mut Option<i64>, v: &i64| {
///         *m = Some(m.map_or(*v, |m| m.max(*v)));
///     }, |m| *m);
///     input.update_at((1, 10), 0, 1);
/// });
/// ```
pub trait FoldByKey<'scope, K, V> {
    /// Folds observations per key with `fold`, presenting each key's state with `present`
    /// (`None` = no row for the key).
    fn fold_by_key<S, O, F, P>(self, name: &str, fold: F, present: P) -> Collection<'scope, (K, O)>
    where
        S: Default + 'static,
        O: ExchangeData,
        F: FnMut(&mut S, &V) + 'static,
        P: Fn(&S) -> Option<O> + 'static;
}

type Pending<K, V> = BTreeMap<Time, Vec<((K, V), Diff)>>;

impl<'scope, K, V> FoldByKey<'scope, K, V> for Collection<'scope, (K, V)>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
{
    fn fold_by_key<S, O, F, P>(
        self,
        name: &str,
        mut fold: F,
        present: P,
    ) -> Collection<'scope, (K, O)>
    where
        S: Default + 'static,
        O: ExchangeData,
        F: FnMut(&mut S, &V) + 'static,
        P: Fn(&S) -> Option<O> + 'static,
    {
        let exchange = Exchange::new(|((key, _), _, _): &((K, V), Time, Diff)| key.hashed().into());
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<((K, O), Time, Diff)>>, _, _, _>(
                exchange,
                name,
                move |_capability, _info| {
                    let mut pending: Pending<K, V> = BTreeMap::new();
                    let mut held: Option<Capability<Time>> = None;
                    let mut states: HashMap<K, (S, Option<O>)> = HashMap::new();
                    move |(input, frontier), output| {
                        input.for_each(|capability, data| {
                            if let Some(least) = capability.retain_least(0)
                                && held.as_ref().is_none_or(|h| least.time() < h.time())
                            {
                                held = Some(least);
                            }
                            for (record, time, diff) in data.drain(..) {
                                pending.entry(time).or_default().push((record, diff));
                            }
                        });
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier.less_equal(&time) {
                                break;
                            }
                            let Some(held) = held.as_ref() else { break };
                            let capability = held.delayed(&time);
                            let mut observations = entry.remove();
                            // Sorts by (key, value) and sums the counts of equal observations.
                            consolidate(&mut observations);
                            observations.retain(|(_, count)| *count > 0);
                            let mut session = output.session(&capability);
                            let mut index = 0;
                            while index < observations.len() {
                                let key = observations[index].0.0.clone();
                                let (state, shown) = states.entry(key.clone()).or_default();
                                while index < observations.len() && observations[index].0.0 == key {
                                    let ((_, value), count) = &observations[index];
                                    for _ in 0..*count {
                                        fold(state, value);
                                    }
                                    index += 1;
                                }
                                let next = present(state);
                                if next != *shown {
                                    if let Some(old) = shown.take() {
                                        session.give(((key.clone(), old), time, -1));
                                    }
                                    if let Some(new) = &next {
                                        session.give(((key.clone(), new.clone()), time, 1));
                                    }
                                    *shown = next;
                                }
                            }
                        }
                        hold_at_first(&mut held, &pending);
                    }
                },
            )
            .as_collection()
    }
}

/// Moves `capability` to the first time of `pending`, or drops it when nothing is pending.
/// It must be at or before every pending time already.
pub(crate) fn hold_at_first<V>(
    capability: &mut Option<Capability<Time>>,
    pending: &BTreeMap<Time, V>,
) {
    match pending.keys().next() {
        Some(next) => {
            if let Some(c) = capability.as_mut() {
                c.downgrade(next);
            }
        }
        None => *capability = None,
    }
}
