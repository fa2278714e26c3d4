//! Per-order state folded from its lifecycle events (shared by the order views).

use serde::{Deserialize, Serialize};
use wearflow_operators::Collection;
use wearflow_sources::{Order, OrderKind, OrderStatus, WorkReason};

use crate::Context;

/// One order as of its newest event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order_id: String,
    /// Sales, work or purchase.
    pub kind: OrderKind,
    /// Current status.
    pub status: OrderStatus,
    /// SKU (newest event that names one).
    pub sku: Option<String>,
    /// Quantity.
    pub qty: i64,
    /// Warehouse.
    pub warehouse: Option<String>,
    /// Customer (sales).
    pub customer_id: Option<String>,
    /// Machine (work).
    pub machine_id: Option<String>,
    /// Device (work).
    pub device_id: Option<String>,
    /// Reason (work).
    pub reason: Option<WorkReason>,
    /// Time of the first event.
    pub created_ms: u64,
    /// Time of the newest event.
    pub updated_ms: u64,
}

/// Folds the events of one order, in (time, lifecycle) order.
pub fn fold(order_id: &str, events: &[&Order]) -> Option<OrderState> {
    let mut events: Vec<&Order> = events.to_vec();
    events.sort_by_key(|e| (e.ts, e.status));
    let first = events.first()?;
    let mut state = OrderState {
        order_id: order_id.to_string(),
        kind: first.kind,
        status: first.status,
        sku: None,
        qty: first.qty,
        warehouse: None,
        customer_id: None,
        machine_id: None,
        device_id: None,
        reason: None,
        created_ms: first.ts.0,
        updated_ms: first.ts.0,
    };
    for e in events {
        state.kind = e.kind;
        state.status = e.status;
        state.qty = e.qty;
        state.updated_ms = e.ts.0;
        let keep = |new: &Option<String>, old: &mut Option<String>| {
            if new.is_some() {
                *old = new.clone();
            }
        };
        keep(&e.sku, &mut state.sku);
        keep(&e.warehouse, &mut state.warehouse);
        keep(&e.customer_id, &mut state.customer_id);
        keep(&e.machine_id, &mut state.machine_id);
        keep(&e.device_id, &mut state.device_id);
        if e.reason.is_some() {
            state.reason = e.reason;
        }
    }
    Some(state)
}

/// Builds the per-order state. Orders are kept after they close (order_flow counts them);
/// this state grows with the number of orders, not with telemetry.
pub(crate) fn build<'s>(ctx: &Context<'s>) -> Collection<'s, OrderState> {
    ctx.inputs
        .orders
        .clone()
        .map(|o| (o.order_id.clone(), o))
        .reduce_named("orders: fold lifecycle", |order_id, events, output| {
            let events: Vec<&Order> = events.iter().map(|(e, _)| *e).collect();
            if let Some(state) = fold(order_id, &events) {
                output.push((state, 1));
            }
        })
        .map(|(_, state)| state)
}
