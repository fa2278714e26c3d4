//! The Postgres wire server: pgwire framing and `datafusion-postgres` session handling, with
//! every query routed through [`SqlEngine`] so that it reads one pinned snapshot and obeys
//! the engine's rules and limits.
//!
//! Simple and extended protocols are both served. Queries, `CREATE VIEW` and `DROP VIEW` run
//! in the engine; session statements (`SET`, `SHOW x`, `BEGIN`, cursors) go to
//! `datafusion-postgres`'s own handlers; everything else is refused with SQLSTATE 42501.
//! Errors carry the engine's SQLSTATE, and a failed statement leaves the connection usable.
//!
//! With an [`Authenticate`] in [`PgAccess`], a client logs in with a cleartext password (a
//! static token or a JWT; use TLS or a trusted network): refused logins end with SQLSTATE
//! 28P01, a `viewer` with 28000. Each statement then needs the role [`Role::needed_for`] its
//! kind (42501 otherwise), and every statement and refused login is written to the audit log.

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
use futures::SinkExt;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::api::{PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::PgWireFrontendMessage;
use pgwire::messages::startup::Authentication;
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;

use crate::Error;
use crate::access::{Authenticate, Denied, Principal, Role};
use crate::audit::{AuditLog, entry};
use crate::engine::{Outcome, SqlEngine, StatementKind, classify};

/// Who may connect, and where their statements are recorded.
#[derive(Clone, Default)]
pub struct PgAccess {
    /// Checks login passwords; none: every client is trusted as an admin (`wearflow demo`).
    pub authenticator: Option<Arc<dyn Authenticate>>,
    /// Where statements and refused logins are recorded (none: not recorded).
    pub audit: Option<Arc<AuditLog>>,
    /// TLS: offered to clients, and then required (none: plain TCP only).
    pub tls: Option<pgwire::tokio::TlsAcceptor>,
    /// Told the reason of every refused login (`unauthenticated`, `token_expired`,
    /// `forbidden`, `tls_required`), for the process's metrics.
    pub on_refused: Option<Arc<dyn Fn(&'static str) + Send + Sync>>,
}

/// Serves the Postgres protocol on `listener` until `shutdown` resolves (open connections are
/// then left to finish on their own tasks).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<SqlEngine>,
    access: PgAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = access.tls.clone();
    let handlers = Arc::new(WearflowHandlers::new(engine, access));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = Arc::clone(&handlers);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(error) = pgwire::tokio::process_socket(socket, tls, handlers).await {
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
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl WearflowHandlers {
    fn new(engine: Arc<SqlEngine>, access: PgAccess) -> WearflowHandlers {
        let inner = Arc::new(DfSessionService::new(Arc::clone(engine.context())));
        let manager = Arc::new(ConnectionManager::new());
        WearflowHandlers {
            service: Arc::new(WearflowService {
                engine,
                parser: Arc::new(WearflowParser {
                    inner: inner.query_parser(),
                }),
                inner,
                audit: access.audit.clone(),
            }),
            startup: Arc::new(Startup {
                manager: Arc::clone(&manager),
                access,
                pids: RandomPidSecretKeyGenerator::default(),
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

/// Logs clients in: trusted (no authenticator) or by cleartext password.
struct Startup {
    manager: Arc<ConnectionManager>,
    access: PgAccess,
    pids: RandomPidSecretKeyGenerator,
}

/// A refused login as a fatal protocol error.
fn login_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

impl Startup {
    /// Registers the connection for cancel requests and remembers who it is.
    fn admit<C: ClientInfo>(&self, client: &mut C, principal: Principal) {
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.manager.register(pid, secret_key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        client.session_extensions().insert(principal);
    }

    /// Records a refused login, `reason` for the metrics and `code` (SQLSTATE) for the log.
    fn audit_refusal(&self, user: Option<&str>, peer: String, reason: &'static str, code: &str) {
        if let Some(on_refused) = &self.access.on_refused {
            on_refused(reason);
        }
        if let Some(audit) = &self.access.audit {
            let mut line = entry(
                "pgwire",
                None,
                "login",
                user.unwrap_or(""),
                "denied",
                Some(code),
            );
            line.peer = Some(peer);
            audit.record(&line);
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.access.tls.is_some() && !client.is_secure() {
                    let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
                    self.audit_refusal(
                        user.as_deref(),
                        client.socket_addr().to_string(),
                        "tls_required",
                        "28000",
                    );
                    return Err(login_error(
                        "28000",
                        "this server requires tls: connect with sslmode=require or stricter"
                            .to_string(),
                    ));
                }
                if self.access.authenticator.is_none() {
                    let user = client
                        .metadata()
                        .get(pgwire::api::METADATA_USER)
                        .cloned()
                        .unwrap_or_else(|| "wearflow".to_string());
                    let principal = Principal {
                        user,
                        role: Role::Admin,
                    };
                    self.admit(client, principal);
                    finish_authentication(client, &DefaultServerParameterProvider::default())
                        .await?;
                } else {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let Some(authenticator) = &self.access.authenticator else {
                    return Ok(());
                };
                let password = password.into_password()?;
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
                let peer = client.socket_addr().to_string();
                let principal = match authenticator
                    .authenticate(user.as_deref(), &password.password)
                {
                    Ok(principal) => principal,
                    Err(denied) => {
                        self.audit_refusal(user.as_deref(), peer, denied.code(), "28P01");
                        let message = match denied {
                            Denied::Missing | Denied::Invalid | Denied::WrongUser(_) => format!(
                                "password authentication failed for user \"{}\"",
                                user.as_deref().unwrap_or("")
                            ),
                            Denied::Expired => "token expired".to_string(),
                        };
                        return Err(login_error("28P01", message));
                    }
                };
                if !principal.role.allows(Role::Analyst) {
                    self.audit_refusal(user.as_deref(), peer, "forbidden", "28000");
                    return Err(login_error(
                        "28000",
                        format!(
                            "role {} may not use sql (it needs analyst or admin)",
                            principal.role
                        ),
                    ));
                }
                self.admit(client, principal);
                finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Routes statements to the engine or, for session statements, to `datafusion-postgres`.
struct WearflowService {
    engine: Arc<SqlEngine>,
    inner: Arc<DfSessionService>,
    parser: Arc<WearflowParser>,
    audit: Option<Arc<AuditLog>>,
}

impl WearflowService {
    /// Refuses a statement the client's role may not run (42501). Forbidden statements pass:
    /// the engine refuses them with its own reason.
    fn authorize(&self, client: &impl ClientInfo, kind: &StatementKind) -> PgWireResult<()> {
        let principal = client.session_extensions().get::<Principal>();
        let role = principal.as_ref().map_or(Role::Viewer, |p| p.role);
        role.may_run(kind).map_err(pg_error)
    }

    /// Records a statement and how it ended.
    fn audit<T>(&self, client: &impl ClientInfo, statement: &str, result: &PgWireResult<T>) {
        let Some(audit) = &self.audit else {
            return;
        };
        let principal = client.session_extensions().get::<Principal>();
        let code = match result {
            Ok(_) => None,
            Err(PgWireError::UserError(info)) => Some(info.code.clone()),
            Err(_) => Some("XX000".to_string()),
        };
        let outcome = if code.is_some() { "error" } else { "ok" };
        let mut line = entry(
            "pgwire",
            principal.as_deref(),
            "sql",
            statement,
            outcome,
            code.as_deref(),
        );
        line.peer = Some(client.socket_addr().to_string());
        audit.record(&line);
    }
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
            let text = statement.to_string();
            let kind = classify(&statement);
            let result = match self.authorize(client, &kind) {
                Err(denied) => Err(denied),
                Ok(()) if matches!(kind, StatementKind::Session) => {
                    <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, &text)
                        .await
                }
                Ok(()) => match self.engine.execute_statement(statement, None).await {
                    Ok(outcome) => respond(outcome, &Format::UnifiedText, client).map(|r| vec![r]),
                    Err(error) => Err(pg_error(error)),
                },
            };
            if !matches!(kind, StatementKind::Session) {
                self.audit(client, &text, &result);
            }
            responses.append(&mut result?);
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
        let kind = classify(statement);
        self.authorize(client, &kind)?;
        if matches!(kind, StatementKind::Session) {
            return <DfSessionService as ExtendedQueryHandler>::do_query(
                &self.inner,
                client,
                portal,
                max_rows,
            )
            .await;
        }
        let result = self.run_portal(client, portal, statement, plan, kind).await;
        self.audit(client, &statement.to_string(), &result);
        result
    }
}

impl WearflowService {
    /// Runs a bound query or view statement.
    async fn run_portal<C: ClientInfo>(
        &self,
        client: &C,
        portal: &Portal<Statement>,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        plan: &LogicalPlan,
        kind: StatementKind,
    ) -> PgWireResult<Response> {
        match kind {
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
