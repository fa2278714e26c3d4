//! SQL over the serving store: DataFusion tables over live views, the Postgres wire server
//! and the engine `POST /sql` uses.
//!
//! ```text
//!  psql / DBeaver / Grafana ─► pg (pgwire + datafusion-postgres) ─┐
//!  POST /sql (root package) ──────────────────────────────────────┼─► SqlEngine
//!                                                                  │    ├ parse (Postgres dialect), classify: query / view DDL / session / forbidden
//!                                                                  │    ├ pin ONE snapshot per statement (PinnedSnapshot)
//!                                                                  │    └ DataFusion: LiveViewTable per view ─► BatchCache ─► Snapshot
//!                                                                  │    └ HistoryTable per archive table ─► Parquet (ListingTable)
//!                                                                  └─► ViewCatalog (named views, JSON file)
//! ```
//!
//! Main types: [`SqlEngine`] (what a statement may do and how it runs), [`LiveViewTable`]
//! (a view as a `TableProvider`), [`BatchCache`] (one Arrow batch per view change),
//! [`ViewCatalog`] (named views on disk), [`HistoryTable`] (an archive table, with time
//! predicates turned into partition pruning), [`pg::serve`] (the Postgres server).

pub mod access;
mod as_of;
pub mod audit;
mod batch;
mod catalog;
mod engine;
mod error;
mod history;
pub mod pg;
mod table;

pub use as_of::{AS_OF, AsOfFunction, as_of_value, pin_as_of};
pub use batch::{BatchCache, TIME_ZONE, arrow_schema, arrow_type, rows_batch, view_batch};
pub use catalog::{CATALOG_FILE, NamedView, ViewCatalog};
pub use engine::{
    CATALOG, HistoryConfig, Outcome, QueryResult, SCHEMA, SqlEngine, SqlEngineConfig,
    StatementKind, classify,
};
pub use error::Error;
pub use history::{HistoryTable, TimeRange, time_range};
pub use table::{LiveViewTable, PinnedSnapshot, statement_snapshot};
