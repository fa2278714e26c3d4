//! `GET /views`, `GET /views/{name}` and `GET /views/{name}/{key}`: reads of one snapshot.

use std::ops::Bound;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value as JsonValue, json};
use wearflow_operators::{Column, ColumnType, Row, Time, Value, ViewKind, ViewSchema};
use wearflow_sinks::ViewData;
use wearflow_sinks::json::row_to_json;

use super::cursor::{self, Cursor};
use super::{ApiError, AppState, json_response};

/// Rows per page when `limit` is not given.
pub(super) const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` a client may ask for.
pub(super) const MAX_LIMIT: usize = 10_000;

const BAD_CURSOR_MESSAGE: &str =
    "malformed cursor; pass the next_cursor of a previous page of this view unchanged";

/// `GET /views`: every view's schema and size, in registry order.
pub(super) async fn list_views(State(state): State<AppState>) -> Response {
    let snapshot = state.store.snapshot();
    let views: Vec<JsonValue> = state
        .store
        .schemas()
        .iter()
        .map(|schema| {
            let rows = snapshot.view(&schema.name).map_or(0, |view| view.len());
            let key_columns: Vec<&str> = schema
                .key_columns()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let columns: Vec<JsonValue> = schema.columns.iter().map(column_json).collect();
            json!({
                "name": schema.name,
                "kind": kind_name(schema.kind),
                "key_columns": key_columns,
                "columns": columns,
                "description": schema.description,
                "rows": rows,
            })
        })
        .collect();
    let mut views = views;
    if let Some(sql) = &state.sql {
        views.extend(named_views(&sql.engine).await);
    }
    let body = json!({ "version": snapshot.version, "views": views });
    json_response(StatusCode::OK, snapshot.as_of, body)
}

/// Named SQL views: kind `query`, rows computed on read (so no row count), with their SQL.
async fn named_views(engine: &wearflow_sql::SqlEngine) -> Vec<JsonValue> {
    let mut out = Vec::new();
    for view in engine.named_views() {
        let columns: Vec<JsonValue> = match engine.named_view_schema(&view.name).await {
            Some(schema) => schema
                .fields()
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name(),
                        "type": super::sql::type_name(f.data_type()),
                        "nullable": f.is_nullable(),
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        out.push(json!({
            "name": view.name,
            "kind": "query",
            "key_columns": [],
            "columns": columns,
            "description": "named sql view, computed on read",
            "sql": view.sql,
            "rows": null,
        }));
    }
    out
}

/// `GET /views/{name}`: rows in key order (append views: oldest first), one page at a time.
///
/// Query parameters:
/// - a key column's name: keep rows whose key column equals the value (parsed as the column's
///   type); filters on a leading run of key columns narrow a range scan;
/// - `limit`: rows per page, 1 to 10 000, default 100;
/// - `cursor`: the `next_cursor` of the previous page. Keyed views page by key, so a page
///   follows on from its predecessor's last key even across snapshots. Append views page by
///   offset from the oldest retained event; once a view is full its oldest events are dropped,
///   and a cursor taken before the drop skips as many events as were dropped.
///
/// `limit` and `cursor` are reserved: a key column with either name cannot be filtered on.
pub(super) async fn list_rows(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let snapshot = state.store.snapshot();
    let as_of = snapshot.as_of;
    let name = view_name(name, as_of)?;
    let view = snapshot
        .view(&name)
        .ok_or_else(|| ApiError::view_not_found(&name, as_of))?;
    let Query(params) = query.map_err(|rejection| {
        let message = format!("cannot read the query string: {}", rejection.body_text());
        ApiError::bad_request("bad_filter", message.to_lowercase(), as_of)
    })?;
    let request = PageRequest::parse(&view.schema, params).map_err(|e| e.at(as_of))?;
    let (rows, next_cursor) = page(view, &request);
    let body = json!({
        "view": name,
        "rows": rows.iter().map(|row| row_to_json(&view.schema, row)).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    });
    Ok(json_response(StatusCode::OK, as_of, body))
}

/// `GET /views/{name}/{key}`: the row with this key.
///
/// The key segment is the key's values in key-column order joined by `,`
/// (`/views/stock_balance/pit-7,40117`), each parsed as its column's type. A single-column
/// key takes the whole segment, commas included; a multi-column key whose values contain
/// commas, or a key literally named `changes` (that path is the live stream), can be read
/// with the filter form `/views/{name}?col=value`. Append views answer with the newest event
/// carrying the key.
pub(super) async fn get_row(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let snapshot = state.store.snapshot();
    let as_of = snapshot.as_of;
    let Path((name, key_text)) = path.map_err(|rejection| {
        let message = format!("cannot read the path: {}", rejection.body_text());
        ApiError::bad_request("bad_key", message.to_lowercase(), as_of)
    })?;
    let view = snapshot
        .view(&name)
        .ok_or_else(|| ApiError::view_not_found(&name, as_of))?;
    let schema = &view.schema;
    let key = parse_key(schema, &key_text).map_err(|e| e.at(as_of))?;
    let row = view.get(&key).ok_or_else(|| {
        let message = format!("view {name:?} has no row with key {key_text:?}");
        ApiError::new(StatusCode::NOT_FOUND, "key_not_found", message, as_of)
    })?;
    let body = json!({ "view": name, "row": row_to_json(schema, row) });
    Ok(json_response(StatusCode::OK, as_of, body))
}

/// The view name from the path; a name that does not even decode names no view.
pub(super) fn view_name(
    path: Result<Path<String>, PathRejection>,
    as_of: Time,
) -> Result<String, ApiError> {
    match path {
        Ok(Path(name)) => Ok(name),
        Err(_) => Err(ApiError::view_not_found("<undecodable>", as_of)),
    }
}

/// A bad request found before the snapshot's time is at hand.
struct BadRequest {
    code: &'static str,
    message: String,
}

impl BadRequest {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        BadRequest {
            code,
            message: message.into(),
        }
    }

    fn at(self, as_of: Time) -> ApiError {
        ApiError::bad_request(self.code, self.message, as_of)
    }
}

/// A parsed `GET /views/{name}` query.
#[derive(Debug)]
struct PageRequest {
    /// Per key column, the value it must equal.
    filters: Vec<Option<Value>>,
    limit: usize,
    cursor: Option<Cursor>,
}

impl PageRequest {
    fn parse(schema: &ViewSchema, params: Vec<(String, String)>) -> Result<Self, BadRequest> {
        let mut filters: Vec<Option<Value>> = vec![None; schema.key_len];
        let mut limit = None;
        let mut cursor = None;
        for (param, text) in params {
            match param.as_str() {
                "limit" => {
                    if limit.replace(parse_limit(&text)?).is_some() {
                        return Err(BadRequest::new(
                            "bad_limit",
                            "limit is given more than once",
                        ));
                    }
                }
                "cursor" => {
                    let decoded = cursor::decode(&text, schema)
                        .ok_or_else(|| BadRequest::new("bad_cursor", BAD_CURSOR_MESSAGE))?;
                    if cursor.replace(decoded).is_some() {
                        return Err(BadRequest::new(
                            "bad_cursor",
                            "cursor is given more than once",
                        ));
                    }
                }
                _ => {
                    let (index, value) = parse_filter(schema, &param, &text)?;
                    if filters[index].replace(value).is_some() {
                        let message = format!("filter {param:?} is given more than once");
                        return Err(BadRequest::new("bad_filter", message));
                    }
                }
            }
        }
        Ok(PageRequest {
            filters,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            cursor,
        })
    }

    /// Whether a key passes every filter.
    fn matches(&self, key: &[Value]) -> bool {
        self.filters
            .iter()
            .zip(key)
            .all(|(filter, value)| filter.as_ref().is_none_or(|f| f == value))
    }
}

fn parse_limit(text: &str) -> Result<usize, BadRequest> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            let message = format!("limit must be an integer from 1 to {MAX_LIMIT}, got {text:?}");
            BadRequest::new("bad_limit", message)
        })
}

/// A key-column filter: the column's index and the value it must equal.
fn parse_filter(
    schema: &ViewSchema,
    param: &str,
    text: &str,
) -> Result<(usize, Value), BadRequest> {
    let Some(index) = schema.key_columns().iter().position(|c| c.name == param) else {
        let keys = key_column_list(schema);
        let message = format!(
            "unknown filter {param:?}; filter on key columns ({keys}), or limit and cursor"
        );
        return Err(BadRequest::new("bad_filter", message));
    };
    let value = parse_value(&schema.columns[index], text)
        .map_err(|message| BadRequest::new("bad_filter", message))?;
    Ok((index, value))
}

/// One page of rows and the cursor of the next page (none after the last page).
fn page<'a>(view: &'a ViewData, request: &PageRequest) -> (Vec<&'a Row>, Option<String>) {
    let key_len = view.schema.key_len;
    match view.schema.kind {
        ViewKind::Keyed => {
            // Rows whose key starts with the filtered leading key columns form one range.
            let prefix: Row = request.filters.iter().map_while(Clone::clone).collect();
            let start = match &request.cursor {
                Some(Cursor::AfterKey(after)) if *after >= prefix => Bound::Excluded(after.clone()),
                _ => Bound::Included(prefix.clone()),
            };
            let mut matching = view
                .rows
                .range((start, Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(&prefix))
                .filter(|(key, _)| request.matches(key))
                .map(|(_, row)| row);
            let rows: Vec<&Row> = matching.by_ref().take(request.limit).collect();
            let more = matching.next().is_some();
            let next = rows
                .last()
                .filter(|_| more)
                .map(|row| cursor::after_key(&row[..key_len]));
            (rows, next)
        }
        ViewKind::Append => {
            let offset = match request.cursor {
                Some(Cursor::Offset(offset)) => offset,
                _ => 0,
            };
            let mut matching = view
                .events
                .iter()
                .enumerate()
                .skip(offset)
                .filter(|(_, row)| request.matches(&row[..key_len]));
            let rows: Vec<(usize, &Row)> = matching.by_ref().take(request.limit).collect();
            let more = matching.next().is_some();
            let next = rows
                .last()
                .filter(|_| more)
                .map(|(index, _)| cursor::at_offset(index + 1));
            (rows.into_iter().map(|(_, row)| row).collect(), next)
        }
    }
}

/// A key from its path segment: values in key-column order joined by `,`.
fn parse_key(schema: &ViewSchema, text: &str) -> Result<Row, BadRequest> {
    let parts: Vec<&str> = if schema.key_len == 1 {
        vec![text]
    } else {
        text.split(',').collect()
    };
    if parts.len() != schema.key_len {
        let message = format!(
            "key {text:?} has {} part(s), view {:?} needs {} joined by ',' ({})",
            parts.len(),
            schema.name,
            schema.key_len,
            key_column_list(schema)
        );
        return Err(BadRequest::new("bad_key", message));
    }
    parts
        .iter()
        .zip(schema.key_columns())
        .map(|(part, column)| parse_value(column, part).map_err(|m| BadRequest::new("bad_key", m)))
        .collect()
}

/// A key value given as text, parsed as its column's type.
fn parse_value(column: &Column, text: &str) -> Result<Value, String> {
    Value::parse_as(text, column.ty).ok_or_else(|| {
        format!(
            "cannot read {text:?} as {} for key column {:?}",
            type_name(column.ty),
            column.name
        )
    })
}

fn key_column_list(schema: &ViewSchema) -> String {
    schema
        .key_columns()
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_json(column: &Column) -> JsonValue {
    json!({ "name": column.name, "type": type_name(column.ty), "nullable": column.nullable })
}

/// The name a view kind has in JSON.
pub(super) fn kind_name(kind: ViewKind) -> &'static str {
    match kind {
        ViewKind::Keyed => "keyed",
        ViewKind::Append => "append",
    }
}

/// The name a column type has in JSON (as `ColumnType` serializes).
fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Utf8 => "utf8",
        ColumnType::Int64 => "int64",
        ColumnType::Float64 => "float64",
        ColumnType::Bool => "bool",
        ColumnType::TimestampMs => "timestamp_ms",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn stock(kind: ViewKind) -> ViewSchema {
        let columns = vec![
            Column::required("site", ColumnType::Utf8),
            Column::required("part_no", ColumnType::Int64),
            Column::required("qty", ColumnType::Int64),
        ];
        ViewSchema::new("stock", kind, 2, columns, "test").expect("valid schema")
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn code(result: Result<PageRequest, BadRequest>) -> &'static str {
        result.err().map_or("ok", |e| e.code)
    }

    #[test]
    fn queries_are_checked() {
        let schema = stock(ViewKind::Keyed);
        let parse = |pairs: &[(&str, &str)]| PageRequest::parse(&schema, params(pairs));
        assert_eq!(
            code(parse(&[("site", "a"), ("part_no", "7"), ("limit", "5")])),
            "ok"
        );
        assert_eq!(code(parse(&[("qty", "1")])), "bad_filter");
        assert_eq!(code(parse(&[("part_no", "x")])), "bad_filter");
        assert_eq!(code(parse(&[("site", "a"), ("site", "b")])), "bad_filter");
        assert_eq!(code(parse(&[("limit", "0")])), "bad_limit");
        assert_eq!(code(parse(&[("limit", "10001")])), "bad_limit");
        assert_eq!(code(parse(&[("cursor", "nothex")])), "bad_cursor");
    }

    #[test]
    fn keys_split_on_commas_only_when_composite() {
        let schema = stock(ViewKind::Keyed);
        assert_eq!(
            parse_key(&schema, "pit,7").ok(),
            Some(vec![Value::str("pit"), Value::Int(7)])
        );
        assert!(parse_key(&schema, "pit").is_err());
        assert!(parse_key(&schema, "pit,x").is_err());
        let single = ViewSchema::new(
            "s",
            ViewKind::Keyed,
            1,
            vec![Column::required("id", ColumnType::Utf8)],
            "test",
        )
        .expect("valid schema");
        assert_eq!(
            parse_key(&single, "a,b").ok(),
            Some(vec![Value::str("a,b")])
        );
    }

    #[test]
    fn pages_cover_a_prefix_range_exactly_once() {
        let store = wearflow_sinks::ServingStore::new(vec![stock(ViewKind::Keyed)]);
        let mut updates = Vec::new();
        for site in ["a", "b", "c"] {
            for part in 0..10 {
                updates.push((
                    0,
                    vec![Value::str(site), Value::Int(part), Value::Int(part * 2)],
                    1,
                ));
            }
        }
        let snapshot = store.publish(1, updates);
        let view: &Arc<ViewData> = snapshot.view("stock").expect("view");
        let schema = &view.schema;
        let mut cursor_text: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let mut pairs = vec![("site", "b".to_string()), ("limit", "3".to_string())];
            if let Some(c) = &cursor_text {
                pairs.push(("cursor", c.clone()));
            }
            let pairs: Vec<(String, String)> =
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let request = PageRequest::parse(schema, pairs)
                .map_err(|e| e.message)
                .expect("valid");
            let (rows, next) = page(view, &request);
            seen.extend(rows.iter().map(|r| r[1].clone()));
            match next {
                Some(next) => cursor_text = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..10).map(Value::Int).collect::<Vec<_>>());
    }
}
