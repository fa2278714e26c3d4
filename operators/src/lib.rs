//! The core vocabulary of wearflow and its domain-free differential operators.
//!
//! Everything above this crate speaks these types: logical time ([`Time`], event-time
//! milliseconds), the difference type ([`Diff`]), view rows ([`Value`], [`Row`]) and their
//! schemas ([`ViewSchema`]), and errors as data ([`ErrorRecord`]). No I/O lives here.
//!
//! ```text
//!  (key, (event_ts, value))  ──► Window ──► WindowStats   count, sum, mean, stddev, min, max
//!                                      └──► Trend         least-squares slope per hour
//!  (key, value)              ──► FoldByKey                per-key state in time order, O(keys)
//!  (key, (order_ts, value))  ──► LatestByKey              newest value per key (a FoldByKey)
//!  (key, event_ts)           ──► Sessions                 current activity session per key
//!  latest(key) ⋈ sessions(group) ─► Silence               keys quiet while their group works
//!  (key, signed delta)       ──► Ledger                   running balance per key
//!  buckets of Moments        ──► fit_drift                onset, rate and level of a drift
//! ```
//!
//! Operators are extension traits on differential collections, one per file, named by verb.

pub mod drift;
pub mod error;
pub mod fold_by_key;
pub mod hold;
pub mod latest_by_key;
pub mod ledger;
pub mod moments;
pub mod sessions;
pub mod silence;
pub mod time;
pub mod trend;
pub mod value;
pub mod window;
pub mod window_stats;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use drift::{CentredMoments, Drift, fit_drift};
pub use error::{Error, ErrorRecord};
pub use fold_by_key::FoldByKey;
pub use hold::HoldUntilDue;
pub use latest_by_key::LatestByKey;
pub use ledger::Ledger;
pub use moments::Moments;
pub use sessions::Sessions;
pub use silence::Silence;
pub use time::{Diff, Time};
pub use trend::Trend;
pub use value::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};
pub use window::Window;
pub use window_stats::{Stats, WindowStats};

/// A differential collection on wearflow's logical clock.
pub type Collection<'scope, D, R = Diff> = differential_dataflow::VecCollection<'scope, Time, D, R>;
