//! `alerts`: an append view of conditions as they are raised.
//!
//! Each alert kind is a collection of currently-true conditions with rows that stay the same
//! while the condition holds. The time at which a condition row appears is attached as
//! `raised_at_ms`; the serving store keeps inserted alert rows (retractions are ignored), so a
//! condition that clears and returns raises a new alert.

use differential_dataflow::AsCollection;
use timely::dataflow::operators::vec::Map;
use wearflow_operators::{Collection, Column, ColumnType, Row, Value, ViewKind, ViewSchema};

use crate::tooth_wear::ToothStatus;
use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "alerts",
        ViewKind::Append,
        1,
        vec![
            Column::required("alert_id", Utf8),
            Column::required("kind", Utf8),
            Column::required("subject", Utf8),
            Column::nullable("machine_id", Utf8),
            Column::required("severity", Utf8),
            Column::required("message", Utf8),
            Column::required("raised_at_ms", TimestampMs),
        ],
        "alerts as raised: tooth_lost, wear_limit, negative_stock, stockout_risk, failure_risk, data_quality (model drift)",
    )
}

/// A condition: (kind, subject, machine, severity, message).
type Condition = (&'static str, String, Option<String>, &'static str, String);

fn conditions<'s>(ctx: &Context<'s>) -> Collection<'s, Condition> {
    let teeth = ctx.tooth_wear().flat_map(|t| match t.status {
        ToothStatus::Lost => Some((
            "tooth_lost",
            t.device_id.clone(),
            t.machine_id.clone(),
            "critical",
            format!(
                "tooth {} lost ({})",
                t.device_id,
                t.lost_reason.map_or("unknown", |r| r.name())
            ),
        )),
        ToothStatus::Replace => Some((
            "wear_limit",
            t.device_id.clone(),
            t.machine_id.clone(),
            "warning",
            format!("tooth {} reached its wear limit", t.device_id),
        )),
        _ => None,
    });
    let stock = ctx.balances().flat_map(|b| {
        let subject = format!("{}/{}", b.warehouse, b.sku);
        if b.on_hand < 0 {
            Some((
                "negative_stock",
                subject.clone(),
                None,
                "critical",
                format!("stock of {} at {} is negative", b.sku, b.warehouse),
            ))
        } else if b.available() <= 0 && b.reserved > 0 {
            Some((
                "stockout_risk",
                subject,
                None,
                "warning",
                format!(
                    "no available stock of {} at {} for open orders",
                    b.sku, b.warehouse
                ),
            ))
        } else {
            None
        }
    });
    let risk = crate::predictions::failure_risk(ctx).map(|(device, _)| {
        (
            "failure_risk",
            device.clone(),
            None,
            "warning",
            format!("tooth {device} is likely to fail within the model's horizon"),
        )
    });
    let forecast = ctx.demand().flat_map(|d| {
        (d.due_lead_time > d.available + d.on_order).then(|| {
            (
                "stockout_risk",
                format!("{}/{}", d.warehouse, d.sku),
                None,
                "warning",
                format!(
                    "{} teeth of {} at {} are due within the {}-day lead time; {} available, {} on order",
                    d.due_lead_time, d.sku, d.warehouse, d.lead_time_days, d.available, d.on_order
                ),
            )
        })
    });
    let drift = ctx.drift().flat_map(|(version, feature, psi, _)| {
        (wearflow_operators::time::from_micro(psi) > crate::predictions::DRIFT_PSI).then(|| {
            (
                "data_quality",
                format!("model_drift:{feature}"),
                None,
                "warning",
                format!(
                    "feature {feature} of model {version} drifted from its training distribution"
                ),
            )
        })
    });
    teeth
        .concat(stock)
        .concat(risk)
        .concat(forecast)
        .concat(drift)
}

/// The `alerts` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            conditions(ctx)
                .inner
                .map(
                    |((kind, subject, machine, severity, message), time, diff)| {
                        let row: Row = vec![
                            Value::Str(format!("{kind}:{subject}:{time}")),
                            Value::str(kind),
                            Value::Str(subject),
                            Value::opt_str(machine.as_deref()),
                            Value::str(severity),
                            Value::Str(message),
                            Value::Int(time as i64),
                        ];
                        (row, time, diff)
                    },
                )
                .as_collection()
        },
    }
}
