//! Event-time watermarks per partition, and the input frontier they allow.

use std::time::{Duration, Instant};

use wearflow_operators::Time;

#[derive(Clone, Debug)]
struct PartitionMark {
    max_ts: Option<Time>,
    last_activity: Instant,
    finished: bool,
}

/// Tracks the largest event time per partition and derives the input frontier: the minimum
/// over active partitions, less the allowed lateness, rounded down to the time resolution.
/// A partition idle longer than the idle timeout, or finished, stops holding it back.
#[derive(Clone, Debug)]
pub struct Watermarks {
    partitions: Vec<PartitionMark>,
    allowed_lateness_ms: u64,
    idle_timeout: Duration,
    resolution_ms: u64,
    frontier: Time,
}

impl Watermarks {
    /// Watermarks for `partitions` partitions.
    pub fn new(
        partitions: usize,
        allowed_lateness_ms: u64,
        idle_timeout: Duration,
        resolution_ms: u64,
    ) -> Self {
        let now = Instant::now();
        Watermarks {
            partitions: vec![
                PartitionMark {
                    max_ts: None,
                    last_activity: now,
                    finished: false
                };
                partitions
            ],
            allowed_lateness_ms,
            idle_timeout,
            resolution_ms: resolution_ms.max(1),
            frontier: 0,
        }
    }

    /// Notes a record of `partition` with event time `ts`.
    pub fn observe(&mut self, partition: usize, ts: Time, now: Instant) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
            p.last_activity = now;
        }
    }

    /// Notes that `partition` will send nothing before `ts` (a heartbeat, e.g. a simulator clock).
    pub fn heartbeat(&mut self, partition: usize, ts: Time, now: Instant) {
        self.observe(partition, ts, now);
    }

    /// Notes that `partition` has, or may have, records waiting to be read (a known backlog,
    /// or an end not known yet): it is busy, not idle, however long it has been since it last
    /// delivered a record. Without this, a reader starved of CPU, fed one partition's large
    /// fetch at a time, or restarted and still waiting for its first fetch, would take a
    /// lagging partition for an idle one and stamp its records late.
    pub fn hold(&mut self, partition: usize, now: Instant) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.last_activity = now;
        }
    }

    /// Marks a partition as read to its end.
    pub fn finish(&mut self, partition: usize) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.finished = true;
        }
    }

    /// The largest event time seen on a partition.
    pub fn max_ts(&self, partition: usize) -> Option<Time> {
        self.partitions.get(partition).and_then(|p| p.max_ts)
    }

    /// Whether no partition holds the frontier back at `now`: every one is finished or idle
    /// (also when there are none). A reader in that state may follow other readers' frontier.
    pub fn quiet(&self, now: Instant) -> bool {
        self.partitions
            .iter()
            .all(|p| p.finished || now.duration_since(p.last_activity) >= self.idle_timeout)
    }

    /// The current frontier: never decreases.
    pub fn frontier(&self) -> Time {
        self.frontier
    }

    /// Recomputes the frontier at wall-clock `now`; returns it.
    ///
    /// When no partition is active (all idle or finished), nothing is in flight: the frontier
    /// moves just past the newest event seen, so that the last records become readable
    /// instead of waiting for more input. A record that arrives later behind it is late.
    pub fn advance(&mut self, now: Instant) -> Time {
        let active: Vec<&PartitionMark> = self
            .partitions
            .iter()
            .filter(|p| !p.finished && now.duration_since(p.last_activity) < self.idle_timeout)
            .collect();
        if active.is_empty() {
            if let Some(newest) = self.partitions.iter().filter_map(|p| p.max_ts).max() {
                // Records are stamped at their time rounded up; the frontier must pass that.
                let past =
                    newest.div_ceil(self.resolution_ms) * self.resolution_ms + self.resolution_ms;
                self.frontier = self.frontier.max(past);
            }
            return self.frontier;
        }
        // An active partition that has seen nothing yet holds the frontier where it is.
        if active.iter().any(|p| p.max_ts.is_none()) {
            return self.frontier;
        }
        if let Some(mark) = active.iter().filter_map(|p| p.max_ts).min() {
            let lowered = mark.saturating_sub(self.allowed_lateness_ms);
            let rounded = lowered - lowered % self.resolution_ms;
            self.frontier = self.frontier.max(rounded);
        }
        self.frontier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_with_a_backlog_is_never_idle() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, 0, Duration::from_secs(5), 10);
        w.observe(0, 1_000, t0);
        w.observe(1, 1_000, t0);
        let later = t0 + Duration::from_secs(6);
        // Partition 0 keeps delivering; partition 1 delivers nothing but has a backlog.
        w.observe(0, 9_000, later);
        w.hold(1, later);
        assert_eq!(
            w.advance(later),
            1_000,
            "the lagging partition holds the frontier"
        );
        assert!(!w.quiet(later));
        // Without the backlog it would have counted as idle.
        let mut idle = Watermarks::new(2, 0, Duration::from_secs(5), 10);
        idle.observe(0, 1_000, t0);
        idle.observe(1, 1_000, t0);
        idle.observe(0, 9_000, later);
        assert_eq!(idle.advance(later), 9_000);
    }

    #[test]
    fn frontier_is_the_slowest_active_partition_less_lateness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, 100, Duration::from_secs(5), 10);
        w.observe(0, 5_000, t0);
        assert_eq!(w.advance(t0), 0, "partition 1 has not spoken yet");
        w.observe(1, 3_055, t0);
        assert_eq!(w.advance(t0), 2_950);
        // Partition 1 goes idle: partition 0 alone sets the frontier.
        let later = t0 + Duration::from_secs(6);
        w.observe(0, 6_000, later);
        assert_eq!(w.advance(later), 5_900);
        // Frontiers never go back, even when the idle partition speaks again.
        w.observe(1, 4_000, later);
        assert_eq!(w.advance(later), 5_900);
        assert!(!w.quiet(later));
        w.finish(1);
        w.finish(0);
        // Nothing in flight: the frontier passes the stamp of the newest event.
        assert_eq!(w.advance(later), 6_010);
        w.observe(0, 6_015, later);
        w.finish(0);
        assert_eq!(w.advance(later), 6_030, "6_015 is stamped 6_020");
        assert!(w.quiet(later));
    }
}
