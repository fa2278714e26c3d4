//! The Postgres wire server: pgwire framing and `datafusion-postgres` session handling, with
//! every query routed through [`SqlEngine`] so that it reads one pinned snapshot and obeys
//! the engine's rules and limits.
//!
//! Simple and extended protocols are both served. Queries, `CREATE VIEW` and `DROP VIEW` run
//! in the engine; session statements (`SET`, `SHOW x`, `BEGIN`, cursors) go to
//! `datafusion-postgres`'s own handlers; everything else is refused with SQLSTATE 42501.
//! Errors carry the engine's SQLSTATE, and a failed statement leaves the connection usable.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;

use crate::Error;
use crate::engine::{Outcome, SqlEngine, StatementKind, classify};

/// Serves the Postgres protocol on `listener` until `shutdown` resolves (open connections are
/// then left to finish on their own tasks).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<SqlEngine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handlers = Arc::new(WearflowHandlers::new(engine));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = Arc::clone(&handlers);
                    tokio::spawn(async move {
                        if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!(%peer, %error, "postgres connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(%error, "cannot accept a postgres connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The handlers of every connection.
struct WearflowHandlers {
    service: Arc<WearflowService>,
    startup: Arc<TrustingStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl WearflowHandlers {
    fn new(engine: Arc<SqlEngine>) -> WearflowHandlers {
        let inner = Arc::new(DfSessionService::new(Arc::clone(engine.context())));
        let manager = Arc::new(ConnectionManager::new());
        WearflowHandlers {
            service: Arc::new(WearflowService {
                engine,
                parser: Arc::new(WearflowParser {
                    inner: inner.query_parser(),
                }),
                inner,
            }),
            startup: Arc::new(TrustingStartup {
                manager: Arc::clone(&manager),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
        }
    }
}

impl PgWireServerHandlers for WearflowHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Accepts every user without a password: the server listens on localhost by default and
/// everything it serves is read-only.
struct TrustingStartup {
    manager: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for TrustingStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.manager))
    }
}

/// Routes statements to the engine or, for session statements, to `datafusion-postgres`.
struct WearflowService {
    engine: Arc<SqlEngine>,
    inner: Arc<DfSessionService>,
    parser: Arc<WearflowParser>,
}

/// An engine error as a Postgres error response.
fn pg_error(error: Error) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        error.sqlstate().to_string(),
        error.to_string(),
    )))
}

/// An outcome as a protocol response, rows in `format` (text or binary per column).
fn respond(outcome: Outcome, format: &Format, client: &impl ClientInfo) -> PgWireResult<Response> {
    match outcome {
        Outcome::Rows(result) => {
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let fields = Arc::new(arrow_schema_to_pg_fields(
                &result.schema,
                format,
                Some(options),
            )?);
            let row_fields = Arc::clone(&fields);
            let rows = result
                .batches
                .into_iter()
                .flat_map(move |batch| encode_recordbatch(Arc::clone(&row_fields), batch));
            Ok(Response::Query(QueryResponse::new(
                fields,
                futures::stream::iter(rows),
            )))
        }
        Outcome::Done { tag, .. } => Ok(Response::Execution(Tag::new(tag))),
    }
}

#[async_trait]
impl SimpleQueryHandler for WearflowService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.engine.parse(query).map_err(pg_error)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            if matches!(classify(&statement), StatementKind::Session) {
                let text = statement.to_string();
                let mut inner =
                    <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, &text)
                        .await?;
                responses.append(&mut inner);
                continue;
            }
            let outcome = self
                .engine
                .execute_statement(statement, None)
                .await
                .map_err(pg_error)?;
            responses.push(respond(outcome, &Format::UnifiedText, client)?);
        }
        Ok(responses)
    }
}

type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
type InnerParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

/// `datafusion-postgres`'s parser, with planning errors carrying our SQLSTATEs (its own
/// report every planning error as XX000).
struct WearflowParser {
    inner: Arc<InnerParser>,
}

/// Maps an opaque protocol error from DataFusion to an engine error, where it is one.
fn map_api_error(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::ApiError(source) => {
            match source.downcast::<datafusion::error::DataFusionError>() {
                Ok(df) => pg_error(Error::from(*df)),
                Err(source) => {
                    match source.downcast::<datafusion::sql::sqlparser::parser::ParserError>() {
                        Ok(parse) => pg_error(Error::Syntax(parse.to_string().to_lowercase())),
                        Err(source) => PgWireError::ApiError(source),
                    }
                }
            }
        }
        other => other,
    }
}

#[async_trait]
impl QueryParser for WearflowParser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.inner
            .parse_sql(client, sql, types)
            .await
            .map_err(map_api_error)
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}

impl WearflowService {
    /// Decodes the portal's parameters with the types the statement description announced.
    fn bind(&self, portal: &Portal<Statement>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
        let wire_types = self
            .inner
            .query_parser()
            .get_parameter_types(&portal.statement.statement)?;
        let mut inferred: Vec<(String, Option<DataType>)> = plan
            .get_parameter_types()
            .map_err(|e| pg_error(Error::from(e)))?
            .into_iter()
            .collect();
        inferred.sort_by_key(|(id, _)| {
            id.trim_start_matches('$')
                .parse::<u32>()
                .unwrap_or(u32::MAX)
        });
        let inferred: Vec<Option<&DataType>> = inferred.iter().map(|(_, t)| t.as_ref()).collect();
        let wire: Vec<Option<&Type>> = wire_types.iter().map(Some).collect();
        deserialize_parameters_with_server_types(portal, &inferred, &wire)
    }
}

#[async_trait]
impl ExtendedQueryHandler for WearflowService {
    type Statement = Statement;
    type QueryParser = WearflowParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        match classify(statement) {
            StatementKind::Session => {
                <DfSessionService as ExtendedQueryHandler>::do_query(
                    &self.inner,
                    client,
                    portal,
                    max_rows,
                )
                .await
            }
            StatementKind::Query => {
                let params = self.bind(portal, plan)?;
                let plan = plan
                    .clone()
                    .replace_params_with_values(&params)
                    .map_err(|e| pg_error(Error::from(e)))?;
                let result = self.engine.run_plan(plan, None).await.map_err(pg_error)?;
                respond(Outcome::Rows(result), &portal.result_column_format, client)
            }
            _ => {
                let outcome = self
                    .engine
                    .execute_statement(statement.clone(), None)
                    .await
                    .map_err(pg_error)?;
                respond(outcome, &portal.result_column_format, client)
            }
        }
    }
}
