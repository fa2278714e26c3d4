//! `orders_open`: every order not yet shipped, completed or cancelled.

use wearflow_operators::{Column, ColumnType, Value, ViewKind, ViewSchema};

use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "orders_open",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("order_id", Utf8),
            Column::required("kind", Utf8),
            Column::required("status", Utf8),
            Column::nullable("sku", Utf8),
            Column::required("qty", Int64),
            Column::nullable("warehouse", Utf8),
            Column::nullable("customer_id", Utf8),
            Column::nullable("machine_id", Utf8),
            Column::nullable("device_id", Utf8),
            Column::required("created_ms", TimestampMs),
            Column::required("updated_ms", TimestampMs),
            Column::required("age_ms", Int64),
        ],
        "open orders with current status; age_ms is from creation to the newest event",
    )
}

/// The `orders_open` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            ctx.order_state()
                .filter(|o| !o.status.is_terminal())
                .map(|o| {
                    vec![
                        Value::str(&o.order_id),
                        Value::str(o.kind.name()),
                        Value::str(o.status.name()),
                        Value::opt_str(o.sku.as_deref()),
                        Value::Int(o.qty),
                        Value::opt_str(o.warehouse.as_deref()),
                        Value::opt_str(o.customer_id.as_deref()),
                        Value::opt_str(o.machine_id.as_deref()),
                        Value::opt_str(o.device_id.as_deref()),
                        Value::Int(o.created_ms as i64),
                        Value::Int(o.updated_ms as i64),
                        Value::Int(o.updated_ms.saturating_sub(o.created_ms) as i64),
                    ]
                })
        },
    }
}
