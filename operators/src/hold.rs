//! `HoldUntilDue`: keeps updates at future times out of the dataflow until they are due.

use std::collections::BTreeMap;

use differential_dataflow::AsCollection;
use differential_dataflow::ExchangeData;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::difference::Semigroup;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

use crate::fold_by_key::hold_at_first;
use crate::{Collection, Time};

/// Passes a collection's updates on unchanged, but each one only once the input frontier has
/// reached its time.
///
/// Windows retract their records at future times (`Window`, `Trend`). An arrangement buffers
/// such updates until its frontier passes them, and differential's merge batcher rescans
/// everything it buffers each time it seals a batch: with a window's worth of retractions
/// pending, every small tick paid for all of them. Held here instead, by time, an update
/// costs one insertion and is touched again only when due. Updates of one time are
/// consolidated as they accumulate, so a granule's retractions of one key stay one update.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::HoldUntilDue;
///
/// timely::example(|scope| {
///     let (mut input, data) = scope.new_collection::<u32, isize>();
///     let _same = data.hold_until_due("hold");
///     input.update_at(7, 5, 1);
/// });
/// ```
pub trait HoldUntilDue<'scope, D, R> {
    /// The same collection, each update released when the frontier reaches its time.
    fn hold_until_due(self, name: &str) -> Collection<'scope, D, R>;
}

/// Updates of one time, and how many there were after their last consolidation.
struct Held<D, R> {
    updates: Vec<(D, R)>,
    consolidated: usize,
}

impl<'scope, D, R> HoldUntilDue<'scope, D, R> for Collection<'scope, D, R>
where
    D: ExchangeData,
    R: Semigroup + 'static,
{
    fn hold_until_due(self, name: &str) -> Collection<'scope, D, R> {
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<(D, Time, R)>>, _, _, _>(
                Pipeline,
                name,
                move |_capability, _info| {
                    let mut held: BTreeMap<Time, Held<D, R>> = BTreeMap::new();
                    // A capability at or before every held time.
                    let mut capability: Option<Capability<Time>> = None;
                    move |(input, frontier), output| {
                        input.for_each(|message, data| {
                            let Some(least) = message.retain_least(0) else {
                                return;
                            };
                            let mut session = output.session(&least);
                            for (record, time, diff) in data.drain(..) {
                                if !frontier.less_than(&time) {
                                    session.give((record, time, diff));
                                    continue;
                                }
                                let entry = held.entry(time).or_insert_with(|| Held {
                                    updates: Vec::new(),
                                    consolidated: 0,
                                });
                                entry.updates.push((record, diff));
                                if entry.updates.len() >= 2 * entry.consolidated.max(64) {
                                    consolidate(&mut entry.updates);
                                    entry.consolidated = entry.updates.len();
                                }
                            }
                            drop(session);
                            if held.keys().next().is_some()
                                && capability.as_ref().is_none_or(|c| least.time() < c.time())
                            {
                                capability = Some(least);
                            }
                        });
                        while let Some(entry) = held.first_entry() {
                            let time = *entry.key();
                            if frontier.less_than(&time) {
                                break;
                            }
                            let Some(at) = capability.as_ref() else { break };
                            let mut updates = entry.remove().updates;
                            consolidate(&mut updates);
                            let at = at.delayed(&time);
                            let mut session = output.session(&at);
                            for (record, diff) in updates {
                                session.give((record, time, diff));
                            }
                        }
                        hold_at_first(&mut capability, &held);
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

    /// Each record at its stamp, and again at its future time `later` (if later than the stamp).
    fn future<'s>(c: Collection<'s, (u8, u64)>) -> Collection<'s, u8> {
        c.join_function(|(key, later)| [(key, 0, 1isize), (key, later, 1)])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Held and released by time, the collection accumulates to the same contents at every
        /// time as without the hold, with 1 and 2 workers.
        #[test]
        fn the_collection_is_unchanged(
            events in prop::collection::vec(((0u8..4, 0u64..40), 0u64..30, -2isize..3), 1..60),
            workers in 1usize..3,
        ) {
            let held = run(workers, events.clone(), |c| future(c).hold_until_due("hold"));
            let direct = run(workers, events, future);
            for q in 0..80 {
                let got: BTreeMap<u8, isize> = accumulate_at(&held, q);
                let want: BTreeMap<u8, isize> = accumulate_at(&direct, q);
                prop_assert_eq!(got, want, "at time {}", q);
            }
        }
    }
}
