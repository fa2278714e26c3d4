//! The HTTP API: JSON reads of the serving store, live changes as server-sent events, probes.
//!
//! ```text
//!  GET /views                       every view's schema and row count
//!  GET /views/{name}?k=v&limit&cursor  rows in key order, filtered by key columns, paged
//!  GET /views/{name}/changes        server-sent events: a snapshot, then every change
//!  GET /views/{name}/{key}          one row by key (multi-column keys joined by `,`)
//!  POST /sql                        one SQL statement: JSON, CSV or Arrow IPC (see `sql`)
//!  GET /dataflows                   the running dataflow: operators, arrangement sizes
//!  GET /health  GET /ready  GET /metrics
//! ```
//!
//! Access: `/health`, `/ready`, `/metrics` and `/openapi.json` are open; every other route
//! needs `authorization: bearer <token or jwt>` (unless the server runs open, as `demo`
//! does) and a role: `viewer` for reads, `analyst` for `POST /sql` (view DDL needs `admin`),
//! `admin` for `POST /models/reload` and `POST /checkpoint`. A missing or bad credential gets 401
//! (`unauthenticated`, `token_expired`) with `www-authenticate`, too small a role 403
//! (`forbidden`). SQL statements and admin actions go to the audit log.
//!
//! Every request reads one [`Snapshot`](wearflow_sinks::Snapshot) and answers only from it;
//! its logical time is in the body as `"as_of"` (epoch ms) and in the `x-wearflow-as-of`
//! header. Errors are `{"error":{"code","message"},"as_of"}` with a stable snake_case code.

mod changes;
mod cursor;
pub mod openapi;
mod sql;
mod views;

pub use sql::{ARROW_STREAM, SqlState, TRUNCATED_HEADER};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::{Value as JsonValue, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wearflow_operators::Time;
use wearflow_sinks::ServingStore;

use wearflow_sql::access::{Authenticate, Denied, Principal, Role};
use wearflow_sql::audit::{AuditLog, entry};

use crate::introspection::DataflowLog;
use crate::metrics::Metrics;

/// The response header carrying the answering snapshot's `as_of` (epoch milliseconds).
pub const AS_OF_HEADER: &str = "x-wearflow-as-of";

/// The `route` label of requests that matched no route (raw paths would explode the label).
const UNMATCHED_ROUTE: &str = "unmatched";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The serving store every read is answered from.
    pub store: Arc<ServingStore>,
    /// The process's metrics; `/metrics` renders them.
    pub metrics: Arc<Metrics>,
    /// Whether the engine has caught up and `/ready` should say so.
    pub ready: Arc<AtomicBool>,
    /// The SQL engine behind `POST /sql` and the named views of `GET /views` (none: no SQL).
    pub sql: Option<SqlState>,
    /// The operators and arrangements of the running dataflow (none: `GET /dataflows` is 404).
    pub dataflows: Option<Arc<DataflowLog>>,
    /// The engine's failure model (`GET /models`, `POST /models/reload`).
    pub models: wearflow_dataflows::model::ModelSlot,
    /// Who may call what, and the audit log.
    pub access: HttpAccess,
    /// Checkpoints on demand (`POST /checkpoint`).
    pub checkpoints: crate::checkpoint::Trigger,
}

/// Credential checks and the audit log of the API.
#[derive(Clone, Default)]
pub struct HttpAccess {
    /// Checks bearer credentials; none: the API is open and every caller is an admin.
    pub authenticator: Option<Arc<dyn Authenticate>>,
    /// Where SQL statements and admin actions are recorded (none: not recorded).
    pub audit: Option<Arc<AuditLog>>,
}

impl HttpAccess {
    /// Records an audited action of `principal`.
    fn record(
        &self,
        principal: Option<&Principal>,
        action: &str,
        what: &str,
        status: StatusCode,
        code: Option<&str>,
    ) {
        if let Some(audit) = &self.audit {
            let outcome = match status.as_u16() {
                200..=299 => "ok",
                401 | 403 => "denied",
                _ => "error",
            };
            audit.record(&entry("http", principal, action, what, outcome, code));
        }
    }
}

/// The least role a route needs; `None` for the open probes and documents.
fn needed_role(route: Option<&str>) -> Option<Role> {
    match route {
        Some("/health" | "/ready" | "/metrics" | "/openapi.json") => None,
        Some("/sql") => Some(Role::Analyst),
        Some("/models/reload" | "/checkpoint") => Some(Role::Admin),
        // Reads, and paths without a route: strangers learn nothing about what exists.
        _ => Some(Role::Viewer),
    }
}

/// The credential of an `authorization: bearer ...` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// Authenticates and authorizes a request; the handler finds the [`Principal`] in the
/// request's extensions.
async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = matched.as_ref().map(MatchedPath::as_str);
    let Some(needed) = needed_role(route) else {
        return next.run(request).await;
    };
    let audited = match route {
        Some("/sql") => Some("sql"),
        Some("/models/reload") => Some("model_reload"),
        Some("/checkpoint") => Some("checkpoint"),
        _ => None,
    };
    let principal = match &state.access.authenticator {
        None => Principal {
            user: "anonymous".to_string(),
            role: Role::Admin,
        },
        Some(authenticator) => {
            let checked = match bearer(request.headers()) {
                Some(credential) => authenticator.authenticate(None, credential),
                None => Err(Denied::Missing),
            };
            match checked {
                Ok(principal) => principal,
                Err(denied) => {
                    let code = denied.code();
                    state
                        .metrics
                        .auth_failures
                        .with_label_values(&["http", code])
                        .inc();
                    if let Some(action) = audited {
                        state.access.record(
                            None,
                            action,
                            request.uri().path(),
                            StatusCode::UNAUTHORIZED,
                            Some(code),
                        );
                    }
                    let as_of = state.store.snapshot().as_of;
                    let mut response =
                        ApiError::new(StatusCode::UNAUTHORIZED, code, denied.to_string(), as_of)
                            .into_response();
                    let challenge = if matches!(denied, Denied::Missing) {
                        "Bearer realm=\"wearflow\""
                    } else {
                        "Bearer realm=\"wearflow\", error=\"invalid_token\""
                    };
                    response.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                    return response;
                }
            }
        }
    };
    if !principal.role.allows(needed) {
        state
            .metrics
            .auth_failures
            .with_label_values(&["http", "forbidden"])
            .inc();
        if let Some(action) = audited {
            state.access.record(
                Some(&principal),
                action,
                request.uri().path(),
                StatusCode::FORBIDDEN,
                Some("forbidden"),
            );
        }
        let as_of = state.store.snapshot().as_of;
        let message = format!(
            "role {} may not use {} (it needs {needed})",
            principal.role,
            route.unwrap_or("this path")
        );
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message, as_of).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The API's routes, with JSON fallbacks for unknown paths (404) and methods (405) and the
/// request-duration middleware.
///
/// Served through [`serve`], live change streams end at shutdown; served otherwise, they end
/// only when the client goes away.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/views", get(views::list_views))
        .route("/views/{name}", get(views::list_rows))
        // A static segment outranks a capture, so this wins over `/views/{name}/{key}`.
        .route("/views/{name}/changes", get(changes::changes))
        .route("/views/{name}/{key}", get(views::get_row))
        .route("/sql", post(sql::post_sql))
        .route("/dataflows", get(dataflows))
        .route("/models", get(models))
        .route("/models/reload", post(reload_model))
        .route("/checkpoint", post(checkpoint))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // `Router::layer` wraps each route after routing, so the matched path is known; the
        // last layer added runs first, so failed logins are timed too.
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// Binds a TCP listener (`"127.0.0.1:0"` picks a free port; ask the listener which).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the API on `listener` until `shutdown` resolves, then ends live change streams,
/// lets in-flight requests finish and returns.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stop, stopped) = watch::channel(false);
    let app = router(state).layer(Extension(ShutdownSignal(stopped)));
    let signal = async move {
        shutdown.await;
        // Streams hold their connection open forever; graceful shutdown would wait for them.
        let _ = stop.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

/// Tells live streams that the server is shutting down (`true` once it is).
#[derive(Clone)]
struct ShutdownSignal(watch::Receiver<bool>);

/// A JSON error answer with a stable code.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    as_of: Time,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        as_of: Time,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            as_of,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>, as_of: Time) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message, as_of)
    }

    fn view_not_found(name: &str, as_of: Time) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "view_not_found",
            format!("no view named {name:?}; GET /views lists them"),
            as_of,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        json_response(self.status, self.as_of, body)
    }
}

/// A JSON answer from the snapshot at `as_of`: the body object gains `"as_of"`, the response
/// the `x-wearflow-as-of` header.
fn json_response(status: StatusCode, as_of: Time, mut body: JsonValue) -> Response {
    if let JsonValue::Object(object) = &mut body {
        object.insert("as_of".to_string(), JsonValue::from(as_of));
    }
    with_as_of((status, Json(body)).into_response(), as_of)
}

/// Sets the `x-wearflow-as-of` header.
fn with_as_of(mut response: Response, as_of: Time) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(AS_OF_HEADER),
        HeaderValue::from(as_of),
    );
    response
}

/// Records `wearflow_http_request_duration_seconds` by route template, method and status.
///
/// For a live change stream the duration ends when the stream starts, not when it closes.
async fn record_request(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| UNMATCHED_ROUTE.to_string(), |m| m.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let mut response = next.run(request).await;
    state
        .metrics
        .http_request_seconds
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    // Answers built outside this module (extractor rejections, if any slip through) still
    // say which snapshot the server was at.
    if !response.headers().contains_key(AS_OF_HEADER) {
        response = with_as_of(response, state.store.snapshot().as_of);
    }
    response
}

/// The method as a label: standard methods by name, anything else as `OTHER` so that clients
/// cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `GET /dataflows`: the operators of the running dataflow and the size of each arrangement.
async fn dataflows(State(state): State<AppState>) -> Response {
    let as_of = state.store.snapshot().as_of;
    match &state.dataflows {
        Some(log) => json_response(StatusCode::OK, as_of, log.to_json()),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server runs no dataflow",
            as_of,
        )
        .into_response(),
    }
}

/// The current model as JSON (`physics` without one).
fn model_json(slot: &wearflow_dataflows::model::ModelSlot) -> JsonValue {
    match slot.current() {
        Some(m) => json!({
            "model_version": m.version,
            "horizon_h": m.horizon_h,
            "threshold": m.threshold,
            "features": m.features.len(),
        }),
        None => json!({ "model_version": wearflow_dataflows::model::PHYSICS }),
    }
}

/// `GET /models`: the model the predictions use.
async fn models(State(state): State<AppState>) -> Response {
    let as_of = state.store.snapshot().as_of;
    json_response(StatusCode::OK, as_of, model_json(&state.models))
}

/// `POST /models/reload`: loads the model directory again; the dataflow predicts every device
/// again with it at its next tick. A missing or invalid file leaves the current model in place.
async fn reload_model(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let response = reload(&state).await;
    let code = (!response.status().is_success()).then(|| response.status().as_str().to_string());
    let what = format!("model {}", state.models.version());
    state.access.record(
        principal.as_ref().map(|Extension(p)| p),
        "model_reload",
        &what,
        response.status(),
        code.as_deref(),
    );
    response
}

/// `POST /checkpoint`: takes a checkpoint now and answers once it is on disk.
async fn checkpoint(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let as_of = state.store.snapshot().as_of;
    let trigger = &state.checkpoints;
    let response = if !trigger.active() {
        ApiError::new(
            StatusCode::CONFLICT,
            "checkpoints_off",
            "no checkpoints are taken: only Kafka-fed runs with [checkpoint] enabled take them, \
             and only while they read"
                .to_string(),
            as_of,
        )
        .into_response()
    } else {
        let before = trigger.request();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let written = trigger.written();
            if written > before {
                break json_response(StatusCode::OK, as_of, json!({ "sequence": written }));
            }
            if std::time::Instant::now() > deadline || !trigger.active() {
                break ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "checkpoint_timeout",
                    "the checkpoint was not written within 60 s (see the engine's log)".to_string(),
                    as_of,
                )
                .into_response();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let code = (!response.status().is_success()).then(|| response.status().as_str().to_string());
    state.access.record(
        principal.as_ref().map(|Extension(p)| p),
        "checkpoint",
        "/checkpoint",
        response.status(),
        code.as_deref(),
    );
    response
}

/// Reloads the model; the answer `POST /models/reload` gives.
async fn reload(state: &AppState) -> Response {
    use wearflow_dataflows::model::ModelError;
    let as_of = state.store.snapshot().as_of;
    let slot = state.models.clone();
    let result = tokio::task::spawn_blocking(move || slot.reload()).await;
    match result {
        Ok(Ok(_)) => {
            tracing::info!(version = %state.models.version(), "model reloaded");
            json_response(StatusCode::OK, as_of, model_json(&state.models))
        }
        Ok(Err(ModelError::NotConfigured)) => ApiError::new(
            StatusCode::CONFLICT,
            "model_not_configured",
            ModelError::NotConfigured.to_string(),
            as_of,
        )
        .into_response(),
        Ok(Err(e)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "model_invalid",
            e.to_string(),
            as_of,
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            as_of,
        )
        .into_response(),
    }
}

/// `GET /health`: the process is up.
async fn health(State(state): State<AppState>) -> Response {
    let as_of = state.store.snapshot().as_of;
    json_response(StatusCode::OK, as_of, json!({ "status": "ok" }))
}

/// `GET /ready`: 200 once the engine has caught up with its inputs, 503 before.
async fn ready(State(state): State<AppState>) -> Response {
    let as_of = state.store.snapshot().as_of;
    let ready = state.ready.load(Ordering::Acquire);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, as_of, json!({ "ready": ready }))
}

/// `GET /metrics`: Prometheus text, with the view and snapshot gauges refreshed first.
async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.store.snapshot();
    let metrics = &state.metrics;
    for (name, view) in &snapshot.views {
        let rows = i64::try_from(view.len()).unwrap_or(i64::MAX);
        metrics
            .view_rows
            .with_label_values(&[name.as_str()])
            .set(rows);
    }
    metrics
        .snapshot_version
        .set(i64::try_from(snapshot.version).unwrap_or(i64::MAX));
    metrics
        .snapshot_as_of_ms
        .set(i64::try_from(snapshot.as_of).unwrap_or(i64::MAX));
    let body = metrics.render();
    let response = ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response();
    with_as_of(response, snapshot.as_of)
}

/// Any path without a route.
async fn not_found(State(state): State<AppState>, request: Request) -> Response {
    let as_of = state.store.snapshot().as_of;
    let message = format!(
        "no route for {}; GET /views lists the views",
        request.uri().path()
    );
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message, as_of).into_response()
}

/// A known path with a method it does not serve.
async fn method_not_allowed(State(state): State<AppState>, method: Method) -> Response {
    let as_of = state.store.snapshot().as_of;
    let message = format!("method {method} is not allowed here; the api is read-only, use GET");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
        as_of,
    )
    .into_response()
}
