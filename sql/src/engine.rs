//! `SqlEngine`: one DataFusion context over the serving store, statement classification
//! (what analysts may run), the per-statement snapshot pin, limits and named views.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::execution::SessionState;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, ObjectType, Statement};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use wearflow_operators::Time;
use wearflow_sinks::archive::ArchiveTable;
use wearflow_sinks::{ServingStore, Snapshot};

use crate::Error;
use crate::access::Role;
use crate::as_of::{AsOfFunction, pin_as_of};
use crate::batch::{BatchCache, arrow_schema};
use crate::catalog::{NamedView, ViewCatalog};
use crate::history::HistoryTable;
use crate::table::{LiveViewTable, PinnedSnapshot};

/// The catalog (Postgres database) name every table lives in.
pub const CATALOG: &str = "wearflow";
/// The schema every table lives in.
pub const SCHEMA: &str = "public";

/// Limits and files of the SQL engine.
#[derive(Clone, Debug)]
pub struct SqlEngineConfig {
    /// Where named views are kept (none: in memory only).
    pub catalog_path: Option<PathBuf>,
    /// The longest a statement may run, planning included.
    pub statement_timeout: Duration,
    /// The memory all running statements may use together for sorts, joins and aggregates.
    pub memory_limit_bytes: usize,
    /// The Parquet archive read by the history tables (none: no history tables).
    pub history: Option<HistoryConfig>,
}

/// Where the archive is and which tables it holds.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The archive directory.
    pub dir: PathBuf,
    /// Its tables; each becomes `<name>_history`.
    pub tables: Vec<ArchiveTable>,
}

impl Default for SqlEngineConfig {
    fn default() -> Self {
        SqlEngineConfig {
            catalog_path: None,
            statement_timeout: Duration::from_secs(30),
            memory_limit_bytes: 512 * 1024 * 1024,
            history: None,
        }
    }
}

/// The answer to a query: the batches of one snapshot.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// The logical time of the snapshot every table was read at.
    pub as_of: Time,
    /// The snapshot's version.
    pub version: u64,
    /// The result schema.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Whether rows beyond the row limit were dropped.
    pub truncated: bool,
}

impl QueryResult {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What running one statement produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Rows.
    Rows(QueryResult),
    /// A command without rows (`CREATE VIEW`, `DROP VIEW`), with its Postgres command tag.
    Done {
        /// The command tag.
        tag: &'static str,
        /// The store's `as_of` when it ran.
        as_of: Time,
    },
}

/// How the engine treats a parsed statement.
#[derive(Debug)]
pub enum StatementKind {
    /// A read: `SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW TABLES`-style queries.
    Query,
    /// `CREATE [OR REPLACE] VIEW`.
    CreateView,
    /// `DROP VIEW`.
    DropView,
    /// Session housekeeping clients send (`SET`, `SHOW x`, `BEGIN`, `COMMIT`, cursors).
    Session,
    /// Anything else: rejected with this reason.
    Forbidden(String),
}

/// Sorts a statement into what analysts may run.
pub fn classify(statement: &Statement) -> StatementKind {
    match statement {
        Statement::Query(_) | Statement::Explain { .. } | Statement::ExplainTable { .. } => {
            StatementKind::Query
        }
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } => StatementKind::Query,
        Statement::CreateView(_) => StatementKind::CreateView,
        Statement::Drop {
            object_type: ObjectType::View,
            ..
        } => StatementKind::DropView,
        Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => StatementKind::Session,
        Statement::Copy { .. } => StatementKind::Forbidden(
            "copy is not allowed: wearflow is read-only; select from the views instead".into(),
        ),
        other => {
            let text = other.to_string();
            let verb = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            StatementKind::Forbidden(format!(
                "{verb} is not allowed: analysts may run queries and create or drop views"
            ))
        }
    }
}

/// DataFusion over the serving store, shared by the Postgres server and `POST /sql`.
pub struct SqlEngine {
    store: Arc<ServingStore>,
    context: Arc<SessionContext>,
    cache: Arc<BatchCache>,
    catalog: ViewCatalog,
    builtin: BTreeSet<String>,
    parser: PostgresCompatibilityParser,
    statement_timeout: Duration,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("builtin", &self.builtin)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl SqlEngine {
    /// An engine over `store`: every view is a table in `wearflow.public`, `pg_catalog` and
    /// `information_schema` answer client introspection, and named views are loaded from
    /// the catalog file (a view that no longer plans is skipped with a warning).
    pub async fn new(
        store: Arc<ServingStore>,
        config: SqlEngineConfig,
    ) -> Result<SqlEngine, Error> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(config.memory_limit_bytes)))
            // No spilling: analysts never make the engine write files, and a statement over
            // its memory budget fails cleanly instead.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            // No cached file listings: a file the archive finishes is visible to the next
            // statement (a listing is one directory walk; the archive rolls files by size).
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let session = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        let context = Arc::new(SessionContext::new_with_config_rt(session, runtime));
        let cache = Arc::new(BatchCache::new());
        let mut builtin = BTreeSet::new();
        for schema in store.schemas() {
            let table = LiveViewTable::new(
                &schema.name,
                arrow_schema(schema),
                Arc::clone(&store),
                Arc::clone(&cache),
            );
            context.register_table(schema.name.as_str(), Arc::new(table))?;
            builtin.insert(schema.name.clone());
        }
        if let Some(history) = &config.history {
            for table in &history.tables {
                let name = table.sql_name();
                let provider = HistoryTable::new(&table.dir(&history.dir), table)?;
                context.register_table(name.as_str(), Arc::new(provider))?;
                builtin.insert(name);
            }
        }
        context.register_udf(AsOfFunction::udf(Arc::clone(&store)));
        setup_pg_catalog(&context, CATALOG, EmptyContextProvider).map_err(|e| Error::from(*e))?;
        let catalog = match &config.catalog_path {
            Some(path) => ViewCatalog::open(path)?,
            None => ViewCatalog::in_memory(),
        };
        let engine = SqlEngine {
            store,
            context,
            cache,
            catalog,
            builtin,
            parser: PostgresCompatibilityParser::new(),
            statement_timeout: config.statement_timeout,
        };
        engine.load_named_views().await;
        Ok(engine)
    }

    async fn load_named_views(&self) {
        for view in self.catalog.list() {
            if let Err(error) = self.load_named_view(&view).await {
                tracing::warn!(view = %view.name, %error, "named view skipped: it no longer plans");
            }
        }
    }

    async fn load_named_view(&self, view: &NamedView) -> Result<(), Error> {
        let mut statements = self.parse(&view.sql)?;
        let query = match (statements.pop(), statements.is_empty()) {
            (Some(query @ Statement::Query(_)), true) => query,
            _ => return Err(Error::Plan("the definition is not a single query".into())),
        };
        let plan = plan_statement(&self.context.state(), query).await?;
        self.register_view(&view.name, plan, &view.sql)
    }

    /// The shared DataFusion context (with `pg_catalog`), for protocol handlers.
    pub fn context(&self) -> &Arc<SessionContext> {
        &self.context
    }

    /// The serving store.
    pub fn store(&self) -> &Arc<ServingStore> {
        &self.store
    }

    /// The batch cache (its build count shows how often views were converted to Arrow).
    pub fn cache(&self) -> &BatchCache {
        &self.cache
    }

    /// The named views.
    pub fn named_views(&self) -> Vec<NamedView> {
        self.catalog.list()
    }

    /// The schema of named view `name`, planned now.
    pub async fn named_view_schema(&self, name: &str) -> Option<SchemaRef> {
        let table = self.context.table_provider(name).await.ok()?;
        Some(table.schema())
    }

    /// The statement time limit.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// Parses SQL text in the Postgres dialect (with the client-compatibility rewrites).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, Error> {
        self.parser
            .parse(sql)
            .map_err(|e| Error::Syntax(e.to_string().to_lowercase()))
    }

    /// Runs one SQL text holding exactly one statement; `row_limit` caps the rows returned
    /// (one more is computed to tell whether the answer was truncated).
    pub async fn execute(&self, sql: &str, row_limit: Option<usize>) -> Result<Outcome, Error> {
        self.execute_as(sql, row_limit, Role::Admin).await
    }

    /// [`SqlEngine::execute`] for a caller with `role`: a statement the role may not run is
    /// refused with [`Error::Permission`] before it runs.
    pub async fn execute_as(
        &self,
        sql: &str,
        row_limit: Option<usize>,
        role: Role,
    ) -> Result<Outcome, Error> {
        let mut statements = self.parse(sql)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => statement,
            (None, _) => return Err(Error::Syntax("empty statement".into())),
            (Some(_), false) => {
                return Err(Error::NotSupported(
                    "one statement per request; send statements separately".into(),
                ));
            }
        };
        role.may_run(&classify(&statement))?;
        self.execute_statement(statement, row_limit).await
    }

    /// Runs one parsed statement (queries and view DDL; session statements are refused here
    /// because only a protocol session can hold their state).
    pub async fn execute_statement(
        &self,
        statement: Statement,
        row_limit: Option<usize>,
    ) -> Result<Outcome, Error> {
        match classify(&statement) {
            StatementKind::Query => self.query(statement, row_limit).await.map(Outcome::Rows),
            StatementKind::CreateView => self.create_view(statement).await,
            StatementKind::DropView => self.drop_view(&statement),
            StatementKind::Session => Err(Error::NotSupported(
                "session statements (set, show, begin, cursors) need a postgres connection".into(),
            )),
            StatementKind::Forbidden(reason) => Err(Error::NotAllowed(reason)),
        }
    }

    /// Runs a query statement against one pinned snapshot.
    pub async fn query(
        &self,
        statement: Statement,
        row_limit: Option<usize>,
    ) -> Result<QueryResult, Error> {
        let work = async {
            let (state, snapshot) = self.pinned_state();
            let plan = plan_statement(&state, statement).await?;
            run_plan(&state, &snapshot, plan, row_limit).await
        };
        self.with_timeout(work).await
    }

    /// Runs an already planned query (a bound prepared statement) against one pinned
    /// snapshot.
    pub async fn run_plan(
        &self,
        plan: LogicalPlan,
        row_limit: Option<usize>,
    ) -> Result<QueryResult, Error> {
        read_only().verify_plan(&plan)?;
        let work = async {
            let (state, snapshot) = self.pinned_state();
            run_plan(&state, &snapshot, plan, row_limit).await
        };
        self.with_timeout(work).await
    }

    async fn with_timeout<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.statement_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.statement_timeout)),
        }
    }

    /// A copy of the session state that reads the current snapshot and only it.
    fn pinned_state(&self) -> (SessionState, Arc<Snapshot>) {
        let snapshot = self.store.snapshot();
        let mut state = self.context.state();
        state
            .config_mut()
            .set_extension(Arc::new(PinnedSnapshot(Arc::clone(&snapshot))));
        (state, snapshot)
    }

    async fn create_view(&self, statement: Statement) -> Result<Outcome, Error> {
        let Statement::CreateView(create) = statement else {
            return Err(Error::Internal(
                "create_view called on another statement".into(),
            ));
        };
        if create.materialized {
            return Err(Error::NotSupported(
                "materialized views; every view is computed on read".into(),
            ));
        }
        if !create.columns.is_empty() {
            return Err(Error::NotSupported(
                "a column list on create view; name the columns with as in the select".into(),
            ));
        }
        let name = view_name(&create.name)?;
        if self.builtin.contains(&name) {
            return Err(Error::DuplicateView(format!(
                "{name} is a built-in view and cannot be replaced"
            )));
        }
        let exists = self.catalog.get(&name).is_some();
        if exists && create.if_not_exists {
            return Ok(Outcome::Done {
                tag: "CREATE VIEW",
                as_of: self.store.snapshot().as_of,
            });
        }
        if exists && !create.or_replace {
            return Err(Error::DuplicateView(format!(
                "view {name} already exists; use create or replace view"
            )));
        }
        if !exists && self.context.table_exist(name.as_str())? {
            return Err(Error::DuplicateView(format!(
                "a table named {name} already exists"
            )));
        }
        let sql = create.query.to_string();
        let plan = self
            .with_timeout(async {
                let state = self.context.state();
                plan_statement(&state, Statement::Query(create.query)).await
            })
            .await?;
        self.register_view(&name, plan, &sql)?;
        if let Err(error) = self.catalog.put(&name, &sql) {
            self.context.deregister_table(name.as_str())?;
            return Err(error);
        }
        Ok(Outcome::Done {
            tag: "CREATE VIEW",
            as_of: self.store.snapshot().as_of,
        })
    }

    fn register_view(&self, name: &str, plan: LogicalPlan, sql: &str) -> Result<(), Error> {
        let table: Arc<dyn TableProvider> = Arc::new(ViewTable::new(plan, Some(sql.to_string())));
        self.context.register_table(name, table)?;
        Ok(())
    }

    fn drop_view(&self, statement: &Statement) -> Result<Outcome, Error> {
        let Statement::Drop {
            names, if_exists, ..
        } = statement
        else {
            return Err(Error::Internal(
                "drop_view called on another statement".into(),
            ));
        };
        for name in names {
            let name = view_name(name)?;
            if self.builtin.contains(&name) {
                return Err(Error::NotAllowed(format!(
                    "{name} is a built-in view and cannot be dropped"
                )));
            }
            if self.catalog.get(&name).is_none() {
                if *if_exists {
                    continue;
                }
                return Err(Error::UnknownTable(format!("view {name} does not exist")));
            }
            self.catalog.remove(&name)?;
            self.context.deregister_table(name.as_str())?;
        }
        Ok(Outcome::Done {
            tag: "DROP VIEW",
            as_of: self.store.snapshot().as_of,
        })
    }
}

/// What analysts may plan: queries only; views go through the engine's own DDL path.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans a statement, refusing anything but a read.
async fn plan_statement(state: &SessionState, statement: Statement) -> Result<LogicalPlan, Error> {
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await?;
    read_only().verify_plan(&plan)?;
    Ok(plan)
}

/// Optimizes, pins `as_of()`, caps the rows and runs a plan in `state` (which reads
/// `snapshot`).
async fn run_plan(
    state: &SessionState,
    snapshot: &Snapshot,
    plan: LogicalPlan,
    row_limit: Option<usize>,
) -> Result<QueryResult, Error> {
    let plan = pin_as_of(state.optimize(&plan)?, snapshot.as_of)?;
    let limited = match row_limit {
        // EXPLAIN and DESCRIBE are small and keep their own shape.
        Some(limit)
            if !matches!(
                plan,
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
            ) =>
        {
            LogicalPlanBuilder::from(plan)
                .limit(0, Some(limit.saturating_add(1)))?
                .build()?
        }
        _ => plan,
    };
    let schema: SchemaRef = Arc::clone(limited.schema().inner());
    let physical = state.create_physical_plan(&limited).await?;
    let mut batches = collect(physical, state.task_ctx()).await?;
    let mut truncated = false;
    if let Some(limit) = row_limit {
        let mut kept = 0;
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches.drain(..) {
            if kept + batch.num_rows() > limit {
                truncated = true;
                let take = limit - kept;
                if take > 0 {
                    out.push(batch.slice(0, take));
                }
                break;
            }
            kept += batch.num_rows();
            out.push(batch);
        }
        batches = out;
    }
    Ok(QueryResult {
        as_of: snapshot.as_of,
        version: snapshot.version,
        schema,
        batches,
        truncated,
    })
}

/// A view name: one identifier, folded to lower case unless quoted (as Postgres does).
fn view_name(name: &ObjectName) -> Result<String, Error> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|part| part.as_ident())
        .map(|ident| {
            if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                ident.value.to_lowercase()
            }
        })
        .collect();
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == SCHEMA => Ok(name.clone()),
        [catalog, schema, name] if catalog == CATALOG && schema == SCHEMA => Ok(name.clone()),
        _ => Err(Error::NotAllowed(format!(
            "views live in {CATALOG}.{SCHEMA}; cannot use the name {name}"
        ))),
    }
}
