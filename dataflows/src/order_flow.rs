//! `order_flow`: per order kind and status, how many orders and how long they took.

use wearflow_operators::{Collection, Column, ColumnType, Moments, Value, ViewKind, ViewSchema};
use wearflow_sources::OrderStatus;

use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "order_flow",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("kind", Utf8),
            Column::required("status", Utf8),
            Column::required("orders", Int64),
            Column::nullable("mean_ms_since_created", Float64),
            Column::nullable("fill_rate", Float64),
        ],
        "orders per kind and current status, mean time from creation to that status, fill rate per kind",
    )
}

/// The `order_flow` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            let states = ctx.order_state();
            let per_status: Collection<((String, String), Moments)> = states
                .clone()
                .explode(|o| {
                    let age = o.updated_ms.saturating_sub(o.created_ms) as i64;
                    Some((
                        (o.kind.name().to_string(), o.status.name().to_string()),
                        Moments::of(0, age),
                    ))
                })
                .count();
            // (fulfilled, cancelled) per kind.
            let fill = states
                .explode(|o| {
                    let outcome = match o.status {
                        OrderStatus::Shipped | OrderStatus::Completed => (1isize, 0isize),
                        OrderStatus::Cancelled => (0, 1),
                        _ => (0, 0),
                    };
                    (outcome != (0, 0)).then(|| (o.kind.name().to_string(), outcome))
                })
                .count();
            let with_fill = per_status
                .clone()
                .map(|((kind, status), m)| (kind, (status, m)))
                .join_map(fill.clone(), |kind, (status, m), outcomes| {
                    (kind.clone(), status.clone(), *m, Some(*outcomes))
                });
            let without_fill = per_status
                .map(|((kind, status), m)| (kind, (status, m)))
                .antijoin(fill.map(|(kind, _)| kind))
                .map(|(kind, (status, m))| (kind, status, m, None));
            with_fill
                .concat(without_fill)
                .map(|(kind, status, m, outcomes)| {
                    let rate = outcomes.map(|(done, cancelled): (isize, isize)| {
                        done as f64 / (done + cancelled) as f64
                    });
                    vec![
                        Value::Str(kind),
                        Value::Str(status),
                        Value::Int(m.n),
                        Value::opt_float(m.mean_y()),
                        Value::opt_float(rate),
                    ]
                })
        },
    }
}
