//! The simulator's agenda: scheduled actions, earliest first, ties in scheduling order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;

use wearflow_operators::Time;

use crate::event::{OrderStatus, WorkReason};

/// Something that happens at a point of simulated time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Action {
    /// Emit the reference data and opening stock, and start the recurring business.
    Open,
    /// A tooth's next sensor reading (repeats while the tooth is on its bucket).
    Reading { tooth: u32 },
    /// A work order reaches its status.
    Work(WorkOrder),
    /// A customer of `warehouse` places a sales order (repeats).
    SalesArrival { warehouse: u16 },
    /// A sales order reaches its status.
    Sales(SalesOrder),
    /// A purchase order is received.
    PurchaseReceipt(PurchaseOrder),
    /// A stock count at `warehouse` finds a discrepancy (repeats).
    Adjustment { warehouse: u16 },
}

/// A work order replacing one tooth, at one step of its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct WorkOrder {
    /// Index of the tooth.
    pub(super) tooth: u32,
    /// Order number (assigned on creation; 0 before).
    pub(super) number: u32,
    /// Why it was raised.
    pub(super) reason: WorkReason,
    /// The status this step emits.
    pub(super) status: OrderStatus,
}

/// A sales order, at one step of its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SalesOrder {
    /// Order number.
    pub(super) number: u32,
    /// Index of the warehouse.
    pub(super) warehouse: u16,
    /// Index of the SKU.
    pub(super) sku: u16,
    /// Index of the customer.
    pub(super) customer: u32,
    /// Teeth ordered.
    pub(super) qty: u16,
    /// The status this step emits.
    pub(super) status: OrderStatus,
}

/// An open purchase order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct PurchaseOrder {
    /// Order number.
    pub(super) number: u32,
    /// Index of the warehouse.
    pub(super) warehouse: u16,
    /// Index of the SKU.
    pub(super) sku: u16,
    /// Teeth ordered.
    pub(super) qty: u32,
}

/// One scheduled action.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    /// When it happens.
    pub(super) ts: Time,
    /// Scheduling order, to break ties deterministically.
    seq: u64,
    /// What happens.
    pub(super) action: Action,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed (later is smaller), so that a max-heap yields the earliest entry.
    fn cmp(&self, other: &Entry) -> Ordering {
        (other.ts, other.seq).cmp(&(self.ts, self.seq))
    }
}

/// A calendar queue of actions: a ring of time buckets over the next few reading intervals
/// (O(1) to schedule, a small sort per bucket), and a heap for anything further out.
pub(super) struct Agenda {
    /// The bucket being worked off, latest first (the earliest entry is last).
    current: Vec<Entry>,
    /// Start of the current bucket, a multiple of `width_ms`; `current` holds every entry
    /// before `cursor_ms + width_ms`.
    cursor_ms: Time,
    /// Time span of a bucket.
    width_ms: u64,
    /// Later buckets: entries in `[cursor_ms + width_ms, cursor_ms + ring.len() × width_ms)`
    /// at index `ts / width_ms % ring.len()`.
    ring: Vec<Vec<Entry>>,
    /// Entries in `ring`.
    in_ring: usize,
    /// Entries beyond the ring when they were scheduled.
    overflow: BinaryHeap<Entry>,
    next_seq: u64,
}

impl Agenda {
    /// An empty agenda starting at `start_ms`, sized so that `load` entries recurring every
    /// `period_ms` fill a bucket with a few entries each.
    pub(super) fn new(start_ms: Time, period_ms: u64, load: usize) -> Agenda {
        let width_ms =
            (period_ms.saturating_mul(4) / load.max(1) as u64).clamp(1, period_ms.max(1));
        let buckets = (2 * period_ms.div_ceil(width_ms) + 2).next_power_of_two() as usize;
        Agenda {
            current: Vec::new(),
            cursor_ms: start_ms - start_ms % width_ms,
            width_ms,
            ring: (0..buckets).map(|_| Vec::new()).collect(),
            in_ring: 0,
            overflow: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Schedules `action` at `ts`, which must not be before the earliest entry taken so far.
    pub(super) fn schedule(&mut self, ts: Time, action: Action) {
        debug_assert!(ts >= self.cursor_ms, "scheduled into the past");
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry { ts, seq, action };
        let horizon_ms = self.cursor_ms + self.width_ms * self.ring.len() as u64;
        if ts < self.cursor_ms + self.width_ms {
            // Latest first; the new entry has the highest sequence, so it goes before its equals.
            let at = self.current.partition_point(|e| e.ts > ts);
            self.current.insert(at, entry);
        } else if ts < horizon_ms {
            let bucket = (ts / self.width_ms) as usize % self.ring.len();
            self.ring[bucket].push(entry);
            self.in_ring += 1;
        } else {
            self.overflow.push(entry);
        }
    }

    /// The earliest entry.
    pub(super) fn first(&mut self) -> Option<Entry> {
        while self.current.is_empty() {
            if self.in_ring == 0 {
                // Nothing near: jump to the bucket of the earliest far entry.
                let next = self.overflow.peek()?.ts;
                self.cursor_ms = next - next % self.width_ms;
            } else {
                self.cursor_ms += self.width_ms;
            }
            let bucket = (self.cursor_ms / self.width_ms) as usize % self.ring.len();
            // Swap, so that bucket vectors keep their capacity.
            std::mem::swap(&mut self.current, &mut self.ring[bucket]);
            self.in_ring -= self.current.len();
            let end_ms = self.cursor_ms + self.width_ms;
            while let Some(far) = self.overflow.peek_mut().filter(|e| e.ts < end_ms) {
                self.current.push(PeekMut::pop(far));
            }
            // Descending by (ts, seq): `Entry`'s order is reversed, so ascending `Ord` does it.
            self.current.sort_unstable();
        }
        self.current.last().copied()
    }

    /// Moves the earliest entry to `ts` as `action`.
    pub(super) fn reschedule_first(&mut self, ts: Time, action: Action) {
        self.current.pop();
        self.schedule(ts, action);
    }

    /// Drops the earliest entry.
    pub(super) fn remove_first(&mut self) {
        self.current.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::noise::Noise;

    /// The agenda against a plain sort: random schedules, near and far, interleaved with takes.
    #[test]
    fn yields_entries_in_time_then_scheduling_order() {
        let mut noise = Noise::new(3);
        for (period_ms, load) in [(10_000, 1), (10_000, 500), (100, 50_000), (1, 10)] {
            let mut agenda = Agenda::new(1_000, period_ms, load);
            let mut reference: Vec<(Time, u32)> = Vec::new();
            let mut taken = Vec::new();
            let mut now = 1_000;
            for tooth in 0..2_000u32 {
                if noise.chance(0.4) {
                    let Some(first) = agenda.first() else {
                        continue;
                    };
                    now = first.ts;
                    if let Action::Reading { tooth } = first.action {
                        taken.push((first.ts, tooth));
                    }
                    agenda.remove_first();
                    continue;
                }
                // Same time, near, a few periods out, or far beyond the ring.
                let ts = match noise.index(4) {
                    0 => now,
                    1 => now + noise.integer(0, period_ms as i64) as u64,
                    2 => now + noise.integer(0, 5 * period_ms as i64) as u64,
                    _ => now + noise.integer(0, 1_000 * period_ms as i64) as u64,
                };
                agenda.schedule(ts, Action::Reading { tooth });
                reference.push((ts, tooth));
            }
            while let Some(first) = agenda.first() {
                if let Action::Reading { tooth } = first.action {
                    taken.push((first.ts, tooth));
                }
                agenda.remove_first();
            }
            // Teeth were numbered in scheduling order, so (ts, tooth) is (ts, seq).
            let mut sorted = taken.clone();
            sorted.sort();
            assert_eq!(taken, sorted, "period {period_ms}, load {load}");
            reference.sort();
            assert_eq!(taken, reference, "every entry comes out once");
        }
    }
}
