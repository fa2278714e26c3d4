//! `Window`: keeps each record in an event-time window by a future retraction.

use differential_dataflow::ExchangeData;

use crate::{Collection, Diff, HoldUntilDue, Time};

/// Restricts a stream of timestamped records to a sliding event-time window.
///
/// A record `(data, event_ts)` stamped at logical time `t` is inserted at `t` and retracted at
/// `max(t, event_ts + window_ms)`: a differential update at a future time, so no timer is
/// needed and state stays bounded under a steady stream.
///
/// ```
/// use differential_dataflow::input::Input;
/// use wearflow_operators::Window;
///
/// timely::example(|scope| {
///     let (mut input, events) = scope.new_collection::<(u32, u64), isize>();
///     let _recent = events.window(1_000); // each record is visible for one second of event time
///     input.update_at((7, 5), 5, 1);
/// });
/// ```
pub trait Window<'scope, D> {
    /// Keeps `(data, event_ts)` records for `window_ms` of event time.
    fn window(self, window_ms: u64) -> Collection<'scope, D>;
}

impl<'scope, D: ExchangeData> Window<'scope, D> for Collection<'scope, (D, Time)> {
    fn window(self, window_ms: u64) -> Collection<'scope, D> {
        self.join_function(move |(data, event_ts)| {
            let expiry = event_ts.saturating_add(window_ms);
            [(data.clone(), 0, 1 as Diff), (data, expiry, -1)]
        })
        .hold_until_due("window: until due")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accumulate_at, run};

    #[test]
    fn records_leave_after_the_window() {
        let updates = vec![
            ((1u8, 10u64), 10, 1),
            ((2u8, 12u64), 30, 1),
            ((3u8, 0u64), 5, 1),
        ];
        let out = run(1, updates, |c| c.window(10));
        assert_eq!(
            accumulate_at(&out, 10).into_keys().collect::<Vec<_>>(),
            vec![1u8]
        );
        assert!(accumulate_at(&out, 20).is_empty());
        // 2 arrived after its window had already closed: inserted and retracted at once.
        assert!(accumulate_at(&out, 30).is_empty());
        assert_eq!(
            accumulate_at(&out, 9).into_keys().collect::<Vec<_>>(),
            vec![3u8]
        );
        assert!(accumulate_at(&out, 4).is_empty());
    }
}
