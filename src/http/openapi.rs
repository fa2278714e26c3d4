//! `GET /openapi.json`: the HTTP API described as OpenAPI 3.0, with the names of this
//! server's views (built-in and named SQL views are listed by `GET /views`; the path
//! parameter enumerates the built-in ones).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as JsonValue, json};

use super::AppState;

/// The document.
pub(super) async fn openapi(State(state): State<AppState>) -> Response {
    let names: Vec<&str> = state
        .store
        .schemas()
        .iter()
        .map(|schema| schema.name.as_str())
        .collect();
    Json(document(&names)).into_response()
}

fn error_response(description: &str) -> JsonValue {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn ok_object(description: &str, schema: JsonValue) -> JsonValue {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } }
    })
}

/// The OpenAPI 3.0 document for a server whose views are `views`.
pub fn document(views: &[&str]) -> JsonValue {
    let view_name = json!({
        "name": "name",
        "in": "path",
        "required": true,
        "description": "A view name (GET /views lists them).",
        "schema": { "type": "string", "enum": views }
    });
    let as_of = json!({ "type": "integer", "format": "int64", "minimum": 0 });
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "wearflow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Consistent views of a streaming dataflow. Every JSON answer carries `as_of` (epoch ms of the snapshot it was read from) and the `x-wearflow-as-of` header."
        },
        "paths": {
            "/views": { "get": {
                "summary": "Every view's schema and size",
                "operationId": "listViews",
                "responses": {
                    "200": ok_object("The views", json!({
                        "type": "object",
                        "required": ["views", "as_of"],
                        "properties": {
                            "version": { "type": "integer" },
                            "as_of": as_of,
                            "views": { "type": "array", "items": { "type": "object" } }
                        }
                    }))
                }
            }},
            "/views/{name}": { "get": {
                "summary": "A page of a view's rows",
                "operationId": "listRows",
                "parameters": [
                    view_name,
                    { "name": "limit", "in": "query", "required": false,
                      "schema": { "type": "integer", "minimum": 1, "maximum": 10000 } },
                    { "name": "cursor", "in": "query", "required": false,
                      "description": "The next_cursor of the previous page.",
                      "schema": { "type": "string" } }
                ],
                "responses": {
                    "200": ok_object("Rows in key order (keyed views) or arrival order (append views)", json!({
                        "type": "object",
                        "required": ["view", "rows", "as_of"],
                        "properties": {
                            "view": { "type": "string" },
                            "rows": { "type": "array", "items": { "type": "object" } },
                            "next_cursor": { "type": "string", "nullable": true },
                            "as_of": as_of
                        }
                    })),
                    "400": error_response("A bad limit, cursor or filter"),
                    "404": error_response("No such view")
                }
            }},
            "/views/{name}/{key}": { "get": {
                "summary": "The row with this key (key values in key-column order, joined by commas)",
                "operationId": "getRow",
                "parameters": [
                    view_name,
                    { "name": "key", "in": "path", "required": true, "schema": { "type": "string" } }
                ],
                "responses": {
                    "200": ok_object("The row", json!({
                        "type": "object",
                        "required": ["as_of"],
                        "properties": { "view": { "type": "string" }, "row": { "type": "object" }, "as_of": as_of }
                    })),
                    "400": error_response("A key that does not parse as the key columns' types"),
                    "404": error_response("No such view or no row with this key")
                }
            }},
            "/views/{name}/changes": { "get": {
                "summary": "Live changes of a view as server-sent events (a snapshot, then one event per publication that changed it)",
                "operationId": "viewChanges",
                "parameters": [view_name],
                "responses": {
                    "200": { "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "404": error_response("No such view")
                }
            }},
            "/sql": { "post": {
                "summary": "Run one SQL statement over the live views and the history tables",
                "operationId": "postSql",
                "requestBody": {
                    "required": true,
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["sql"],
                        "additionalProperties": false,
                        "properties": { "sql": { "type": "string" } }
                    }}}
                },
                "responses": {
                    "200": {
                        "description": "Rows with column types and as_of (JSON), or CSV, or Arrow IPC by the Accept header",
                        "content": {
                            "application/json": { "schema": { "type": "object" } },
                            "text/csv": { "schema": { "type": "string" } },
                            "application/vnd.apache.arrow.stream": { "schema": { "type": "string", "format": "binary" } }
                        }
                    },
                    "400": error_response("A body that is not {\"sql\": ...} JSON, or a statement that fails to plan or run"),
                    "403": error_response("A statement analysts may not run"),
                    "404": error_response("SQL is not enabled"),
                    "408": error_response("The statement's time limit"),
                    "503": error_response("The statement's memory limit")
                }
            }},
            "/dataflows": { "get": {
                "summary": "Operators, time spent in each and arrangement sizes of the running dataflow",
                "operationId": "dataflows",
                "responses": {
                    "200": ok_object("The dataflow graph", json!({ "type": "object" })),
                    "404": error_response("This server runs no dataflow")
                }
            }},
            "/models": { "get": {
                "summary": "The failure model the predictions use (physics without one)",
                "operationId": "models",
                "responses": { "200": ok_object("The current model", json!({ "type": "object" })) }
            }},
            "/models/reload": { "post": {
                "summary": "Load the model directory again; every device is predicted again with it",
                "operationId": "reloadModel",
                "responses": {
                    "200": ok_object("The model now in use", json!({ "type": "object" })),
                    "409": error_response("No model directory is configured"),
                    "422": error_response("The model file is missing or invalid; the current model stays")
                }
            }},
            "/checkpoint": { "post": {
                "summary": "Take a checkpoint now (Kafka-fed runs); answers once it is on disk",
                "operationId": "checkpoint",
                "responses": {
                    "200": ok_object("The checkpoint written", json!({
                        "type": "object",
                        "required": ["sequence"],
                        "properties": { "sequence": { "type": "integer" } }
                    })),
                    "409": error_response("This run takes no checkpoints"),
                    "503": error_response("The checkpoint was not written in time")
                }
            }},
            "/health": { "get": {
                "summary": "Liveness",
                "operationId": "health",
                "responses": { "200": ok_object("Alive", json!({ "type": "object" })) }
            }},
            "/ready": { "get": {
                "summary": "Readiness: 200 once the first snapshot is published, 503 while starting or draining",
                "operationId": "ready",
                "responses": {
                    "200": ok_object("Ready", json!({ "type": "object" })),
                    "503": ok_object("Not ready", json!({ "type": "object" }))
                }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": { "200": { "description": "Text exposition format", "content": { "text/plain": { "schema": { "type": "string" } } } } }
            }},
            "/openapi.json": { "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": { "200": ok_object("OpenAPI 3.0", json!({ "type": "object" })) }
            }}
        },
        "components": { "schemas": { "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
                },
                "as_of": as_of
            }
        }}}
    });
    secure(&mut document);
    document
}

/// Declares bearer authentication: every operation needs it and may answer 401 and 403, but
/// the probes and this document, which are open.
fn secure(document: &mut JsonValue) {
    document["security"] = json!([{ "bearerAuth": [] }]);
    document["components"]["securitySchemes"] = json!({ "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A static token or a JWT; the role (viewer, analyst, admin) decides what it may do. Off in `wearflow demo`."
    }});
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let open = matches!(
            path.as_str(),
            "/health" | "/ready" | "/metrics" | "/openapi.json"
        );
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            if open {
                operation["security"] = json!([]);
                continue;
            }
            let responses = &mut operation["responses"];
            responses["401"] = error_response("No, an invalid or an expired credential");
            responses["403"] = error_response("The credential's role may not do this");
        }
    }
}
