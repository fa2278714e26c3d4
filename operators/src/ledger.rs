//! `Ledger`: running signed balances per key.

use differential_dataflow::{ExchangeData, Hashable};

use crate::Collection;

/// Sums signed deltas per key into a balance, carried in the difference type.
///
/// A key whose balance is exactly zero has no row: callers that must show zero balances
/// join against the set of known keys.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Ledger;
///
/// timely::example(|scope| {
///     let (mut input, moves) = scope.new_collection::<(u32, i64), isize>();
///     let _balances = moves.ledger();
///     input.update_at((100, 40), 0, 1);
///     input.update_at((100, -3), 0, 1);
/// });
/// ```
pub trait Ledger<'scope, K> {
    /// The balance per key: the sum of all deltas seen so far.
    fn ledger(self) -> Collection<'scope, (K, i64)>;
}

impl<'scope, K: ExchangeData + Hashable> Ledger<'scope, K> for Collection<'scope, (K, i64)> {
    fn ledger(self) -> Collection<'scope, (K, i64)> {
        self.explode(|(key, delta)| Some((key, delta as isize)))
            .count()
            .map(|(key, balance)| (key, balance as i64))
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
            moves in prop::collection::vec((0u8..4, -20i64..20, 0u64..20), 1..80),
            workers in 1usize..4,
        ) {
            let updates = moves.iter().map(|&(k, d, t)| ((k, d), t, 1)).collect();
            let out = run(workers, updates, |c| c.ledger());
            for q in 0..22 {
                let mut sums: BTreeMap<u8, i64> = BTreeMap::new();
                for &(k, d, _) in moves.iter().filter(|m| m.2 <= q) {
                    *sums.entry(k).or_default() += d;
                }
                let expected: BTreeMap<(u8, i64), isize> =
                    sums.into_iter().filter(|(_, s)| *s != 0).map(|ks| (ks, 1)).collect();
                prop_assert_eq!(accumulate_at(&out, q), expected, "at time {}", q);
            }
        }
    }
}
