//! Wires the SQL layer into the process: one [`SqlEngine`] over the serving store, shared by
//! `POST /sql` and the Postgres wire server on `sql.pg_addr`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wearflow_sinks::ServingStore;
use wearflow_sql::{CATALOG_FILE, HistoryConfig, SqlEngine, SqlEngineConfig};

use crate::config::SqlConfig;
use crate::http::SqlState;

/// Why the SQL layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SqlStartError {
    /// The engine could not be built (for example an unreadable view catalog).
    #[error("cannot start the sql engine: {0}")]
    Engine(#[from] wearflow_sql::Error),
    /// The Postgres address could not be bound.
    #[error("cannot listen for postgres on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The running SQL layer.
pub struct SqlServer {
    /// What `POST /sql` needs (put it into [`crate::http::AppState`]).
    pub state: SqlState,
    /// The address the Postgres server is bound to.
    pub pg_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Builds the engine (named views from `<data_dir>/sql_views.json`, history tables over the
/// archive, see [`crate::archive::history`]) and starts the Postgres server. Call inside a
/// Tokio runtime.
pub async fn start(
    config: &SqlConfig,
    data_dir: &Path,
    store: Arc<ServingStore>,
    history: Option<HistoryConfig>,
    access: wearflow_sql::pg::PgAccess,
) -> Result<SqlServer, SqlStartError> {
    let engine = SqlEngine::new(
        store,
        SqlEngineConfig {
            catalog_path: Some(data_dir.join(CATALOG_FILE)),
            statement_timeout: Duration::from_millis(config.statement_timeout_ms),
            memory_limit_bytes: config.memory_limit_bytes,
            history,
        },
    )
    .await?;
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(&config.pg_addr)
        .await
        .map_err(|source| SqlStartError::Bind {
            addr: config.pg_addr.clone(),
            source,
        })?;
    let pg_addr = listener
        .local_addr()
        .map_err(|source| SqlStartError::Bind {
            addr: config.pg_addr.clone(),
            source,
        })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(wearflow_sql::pg::serve(
        listener,
        Arc::clone(&engine),
        access,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(SqlServer {
        state: SqlState {
            engine,
            row_limit: config.http_row_limit,
        },
        pg_addr,
        stop,
        task,
    })
}

impl SqlServer {
    /// Stops accepting Postgres connections and waits for the listener to close.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(Err(error)) = self.task.await {
            tracing::warn!(%error, "the postgres server ended with an error");
        }
    }
}
