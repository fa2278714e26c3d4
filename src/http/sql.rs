//! `POST /sql`: one SQL statement over one snapshot, answered as JSON, CSV or Arrow IPC.
//!
//! Request: `{"sql": "SELECT ..."}`. The `Accept` header picks the format:
//! - `application/json` (default): `{"columns":[{"name","type"}],"rows":[[...]],
//!   "truncated":bool,"as_of":ms}`, types and values as in `GET /views` (timestamps as epoch
//!   ms, type `timestamp_ms`; types with no JSON counterpart as text);
//! - `text/csv`: a header line and rows;
//! - `application/vnd.apache.arrow.stream`: an Arrow IPC stream.
//!
//! At most `sql.http_row_limit` rows are returned; beyond that the answer is cut and says so
//! (`"truncated": true`, and the `x-wearflow-truncated: true` header for every format).
//! `CREATE VIEW` / `DROP VIEW` answer `{"command": "CREATE VIEW", "as_of"}`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimeUnit, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use wearflow_sql::access::{Principal, Role};
use wearflow_sql::{Error as SqlError, Outcome, QueryResult, SqlEngine};

use super::{ApiError, AppState, json_response, with_as_of};

/// The response header that says rows were cut off at the row limit.
pub const TRUNCATED_HEADER: &str = "x-wearflow-truncated";

/// The media type of Arrow IPC streams.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What `POST /sql` needs: the engine and the row limit.
#[derive(Clone, Debug)]
pub struct SqlState {
    /// The engine shared with the Postgres server.
    pub engine: Arc<SqlEngine>,
    /// Rows returned at most.
    pub row_limit: usize,
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlRequest {
    sql: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

fn format(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    }
}

/// `POST /sql`.
pub(super) async fn post_sql(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = principal.map(|Extension(p)| p);
    let (sql, result) = run(&state, principal.as_ref(), &headers, body).await;
    if let Some(sql) = sql {
        let (status, code) = match &result {
            Ok(response) => (response.status(), None),
            Err(error) => (error.status, Some(error.code)),
        };
        state
            .access
            .record(principal.as_ref(), "sql", &sql, status, code);
    }
    result
}

/// Runs the request's statement; returns it (once the body parsed) and the answer.
async fn run(
    state: &AppState,
    principal: Option<&Principal>,
    headers: &HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> (Option<String>, Result<Response, ApiError>) {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            let as_of = state.store.snapshot().as_of;
            let message = format!(
                "expected a json body {{\"sql\": \"...\"}}: {}",
                rejection.body_text()
            );
            return (
                None,
                Err(ApiError::bad_request(
                    "bad_body",
                    message.to_lowercase(),
                    as_of,
                )),
            );
        }
    };
    let role = principal.map_or(Role::Viewer, |p| p.role);
    let result = answer(state, role, headers, &request.sql).await;
    (Some(request.sql), result)
}

/// Runs `sql` for a caller with `role` and encodes the answer.
async fn answer(
    state: &AppState,
    role: Role,
    headers: &HeaderMap,
    sql_text: &str,
) -> Result<Response, ApiError> {
    let as_of = state.store.snapshot().as_of;
    let Some(sql) = state.sql.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "sql_disabled",
            "sql is not enabled on this server",
            as_of,
        ));
    };
    let outcome = sql
        .engine
        .execute_as(sql_text, Some(sql.row_limit), role)
        .await
        .map_err(|error| sql_error(error, as_of))?;
    let result = match outcome {
        Outcome::Rows(result) => result,
        Outcome::Done { tag, as_of } => {
            return Ok(json_response(
                StatusCode::OK,
                as_of,
                json!({ "command": tag }),
            ));
        }
    };
    let as_of = result.as_of;
    let truncated = result.truncated;
    let mut response = match format(headers) {
        Format::Json => json_response(StatusCode::OK, as_of, json_body(&result)),
        Format::Csv => {
            let bytes = csv_body(&result).map_err(|e| encode_error(e, as_of))?;
            with_as_of(
                ([(CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
                as_of,
            )
        }
        Format::Arrow => {
            let bytes = arrow_body(&result).map_err(|e| encode_error(e, as_of))?;
            with_as_of(
                ([(CONTENT_TYPE, ARROW_STREAM)], bytes).into_response(),
                as_of,
            )
        }
    };
    response.headers_mut().insert(
        HeaderName::from_static(TRUNCATED_HEADER),
        HeaderValue::from_static(if truncated { "true" } else { "false" }),
    );
    Ok(response)
}

fn sql_error(error: SqlError, as_of: u64) -> ApiError {
    let status = match &error {
        SqlError::NotAllowed(_) | SqlError::Permission(_) => StatusCode::FORBIDDEN,
        SqlError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        SqlError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        e if !e.is_client_error() => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.code(), error.to_string(), as_of)
}

fn encode_error(error: arrow::error::ArrowError, as_of: u64) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("cannot encode the result: {error}"),
        as_of,
    )
}

/// The JSON type name of an Arrow type: the `GET /views` names where one fits.
pub(super) fn type_name(ty: &DataType) -> String {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "utf8".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "int64".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "float64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Timestamp(_, _) => "timestamp_ms".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn json_body(result: &QueryResult) -> JsonValue {
    let columns: Vec<JsonValue> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": type_name(f.data_type()) }))
        .collect();
    let mut rows: Vec<JsonValue> = Vec::with_capacity(result.rows());
    for batch in &result.batches {
        let columns: Vec<Vec<JsonValue>> = batch.columns().iter().map(column_json).collect();
        for row in 0..batch.num_rows() {
            rows.push(JsonValue::Array(
                columns
                    .iter()
                    .map(|c| c.get(row).cloned().unwrap_or(JsonValue::Null))
                    .collect(),
            ));
        }
    }
    json!({ "columns": columns, "rows": rows, "truncated": result.truncated })
}

/// One column as JSON values: numbers, booleans and strings natively, timestamps as epoch
/// ms, anything else as its text form.
fn column_json(array: &ArrayRef) -> Vec<JsonValue> {
    let cast = |to: &DataType| arrow::compute::cast(array, to).ok();
    let values: Option<Vec<JsonValue>> = match array.data_type() {
        DataType::Null => Some(vec![JsonValue::Null; array.len()]),
        DataType::Boolean => Some(
            array
                .as_boolean()
                .iter()
                .map(|v| v.map_or(JsonValue::Null, JsonValue::from))
                .collect(),
        ),
        DataType::UInt64 => Some(
            array
                .as_primitive::<UInt64Type>()
                .iter()
                .map(|v| v.map_or(JsonValue::Null, JsonValue::from))
                .collect(),
        ),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => cast(&DataType::Int64).map(|a| {
            a.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map_or(JsonValue::Null, JsonValue::from))
                .collect()
        }),
        DataType::Timestamp(_, _) => cast(&DataType::Timestamp(TimeUnit::Millisecond, None))
            .and_then(|a| cast_to_int(&a))
            .map(|a| {
                a.as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.map_or(JsonValue::Null, JsonValue::from))
                    .collect()
            }),
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => cast(&DataType::Float64).map(|a| {
            a.as_primitive::<Float64Type>()
                .iter()
                .map(|v| {
                    v.and_then(serde_json::Number::from_f64)
                        .map_or(JsonValue::Null, JsonValue::Number)
                })
                .collect()
        }),
        _ => None,
    };
    values.unwrap_or_else(|| text_json(array))
}

fn cast_to_int(array: &ArrayRef) -> Option<ArrayRef> {
    arrow::compute::cast(array, &DataType::Int64).ok()
}

fn text_json(array: &ArrayRef) -> Vec<JsonValue> {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(formatter) => (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    JsonValue::Null
                } else {
                    JsonValue::String(formatter.value(i).to_string())
                }
            })
            .collect(),
        Err(_) => vec![JsonValue::Null; array.len()],
    }
}

fn csv_body(result: &QueryResult) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        if result.batches.is_empty() {
            writer.write(&RecordBatch::new_empty(Arc::clone(&result.schema)))?;
        }
        for batch in &result.batches {
            writer.write(batch)?;
        }
    }
    Ok(out)
}

fn arrow_body(result: &QueryResult) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let schema: &Schema = &result.schema;
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
        for batch in &result.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out)
}
