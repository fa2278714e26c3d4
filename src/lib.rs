//! wearflow: the engine binary's library — configuration, the runtime that wires sources
//! through the dataflows into the serving store, the HTTP API and the metrics registry.
//!
//! ```text
//!  config ─► runtime: timely workers ─ sources ─► dataflows ─► publish ─► ServingStore
//!                                                                     ├─► http (axum), metrics
//!                                                                     └─► sql: POST /sql, postgres wire
//!  raw events, view snapshots ─► archive (Parquet) ─► sql history tables
//! ```

pub mod archive;
pub mod auth;
pub mod backpressure;
pub mod checkpoint;
pub mod config;
pub mod http;
pub mod introspection;
pub mod metrics;
pub mod predict;
pub mod runtime;
pub mod sql;
pub mod tls;
