//! `GET /views/{name}/changes`: a view's rows, then every change to them, as server-sent events.
//!
//! ```text
//!  event: snapshot   data: {"as_of","version","rows":[…]}          first, and after a lag
//!  event: changes    data: {"as_of","version","changes":[{"op","key","row"}]}  per snapshot
//! ```
//!
//! Each event's `id` is the snapshot version. A subscriber too slow for the store's feed
//! skips ahead to a fresh `snapshot` event instead of holding the publisher back.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use futures::stream;
use serde_json::{Value as JsonValue, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use wearflow_sinks::json::{key_to_json, row_to_json};
use wearflow_sinks::{ServingStore, Snapshot};

use super::views::view_name;
use super::{ApiError, AppState, ShutdownSignal, with_as_of};

/// Opens the stream: 404 for an unknown view, otherwise events until the client leaves or
/// the server shuts down.
pub(super) async fn changes(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, ApiError> {
    // Subscribe before reading the snapshot so nothing published in between is missed.
    let feed = state.store.subscribe();
    let snapshot = state.store.snapshot();
    let as_of = snapshot.as_of;
    let name = view_name(name, as_of)?;
    let first =
        snapshot_event(&snapshot, &name).ok_or_else(|| ApiError::view_not_found(&name, as_of))?;
    let live = LiveView {
        store: Arc::clone(&state.store),
        view: name,
        feed,
        version: snapshot.version,
        pending: Some(first),
        shutdown: shutdown.map(|Extension(ShutdownSignal(signal))| signal),
    };
    let response = Sse::new(events(live))
        .keep_alive(KeepAlive::default())
        .into_response();
    Ok(with_as_of(response, as_of))
}

/// One subscriber's position in the feed.
struct LiveView {
    store: Arc<ServingStore>,
    view: String,
    feed: Receiver<Arc<Snapshot>>,
    /// The newest snapshot version already sent; older feed entries are skipped.
    version: u64,
    /// An event to send before reading the feed again.
    pending: Option<Event>,
    shutdown: Option<watch::Receiver<bool>>,
}

fn events(live: LiveView) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(live, |mut live| async move {
        let event = next_event(&mut live).await?;
        Some((Ok(event), live))
    })
}

/// The next event to send, or `None` when the stream ends.
async fn next_event(live: &mut LiveView) -> Option<Event> {
    if let Some(event) = live.pending.take() {
        return Some(event);
    }
    loop {
        let received = tokio::select! {
            received = live.feed.recv() => received,
            () = shutdown_requested(&mut live.shutdown) => return None,
        };
        match received {
            Ok(snapshot) => {
                if snapshot.version <= live.version {
                    continue;
                }
                live.version = snapshot.version;
                if let Some(event) = changes_event(&snapshot, &live.view) {
                    return Some(event);
                }
            }
            Err(RecvError::Lagged(_)) => {
                let snapshot = live.store.snapshot();
                live.version = snapshot.version;
                return snapshot_event(&snapshot, &live.view);
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Resolves once the server shuts down; never without a signal.
async fn shutdown_requested(signal: &mut Option<watch::Receiver<bool>>) {
    match signal {
        // An error means the server is gone altogether: stop too.
        Some(signal) => drop(signal.wait_for(|stopping| *stopping).await),
        None => std::future::pending().await,
    }
}

/// The `snapshot` event: every row of the view; `None` if the snapshot lacks the view.
fn snapshot_event(snapshot: &Snapshot, view: &str) -> Option<Event> {
    let data = snapshot.view(view)?;
    let rows: Vec<JsonValue> = data
        .iter()
        .map(|row| row_to_json(&data.schema, row))
        .collect();
    let body = json!({ "as_of": snapshot.as_of, "version": snapshot.version, "rows": rows });
    Some(event("snapshot", snapshot.version, &body))
}

/// The `changes` event for the view; `None` if this snapshot did not change it.
fn changes_event(snapshot: &Snapshot, view: &str) -> Option<Event> {
    let changes = snapshot
        .changes
        .get(view)
        .filter(|changes| !changes.is_empty())?;
    let schema = &snapshot.view(view)?.schema;
    let changes: Vec<JsonValue> = changes
        .iter()
        .map(|change| {
            json!({
                "op": change.op,
                "key": key_to_json(schema, &change.key),
                "row": change.row.as_ref().map(|row| row_to_json(schema, row)),
            })
        })
        .collect();
    let body = json!({ "as_of": snapshot.as_of, "version": snapshot.version, "changes": changes });
    Some(event("changes", snapshot.version, &body))
}

fn event(name: &str, version: u64, body: &JsonValue) -> Event {
    Event::default()
        .event(name)
        .id(version.to_string())
        .data(body.to_string())
}
