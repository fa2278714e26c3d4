//! `machine_health`: per machine, how its teeth are doing.

use wearflow_operators::time::from_micro;
use wearflow_operators::{Column, ColumnType, Row, Value, ViewKind, ViewSchema};

use crate::tooth_wear::{ToothStatus, ToothWear};
use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "machine_health",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("machine_id", Utf8),
            Column::required("teeth_known", Int64),
            Column::required("teeth_reporting", Int64),
            Column::required("teeth_lost", Int64),
            Column::nullable("worst_device_id", Utf8),
            Column::nullable("worst_wear_pct", Float64),
            Column::nullable("min_remaining_mm", Float64),
            Column::nullable("soonest_hours_to_limit", Float64),
            Column::required("open_alerts", Int64),
        ],
        "per machine: teeth reporting and lost, worst tooth, soonest wear limit, open alerts",
    )
}

/// Summarizes the teeth of one machine (given in device order).
fn summarize(machine: &str, teeth: &[&ToothWear]) -> Row {
    let lost = teeth
        .iter()
        .filter(|t| t.status == ToothStatus::Lost)
        .count() as i64;
    let reporting = teeth.iter().filter(|t| t.last_seen_ms.is_some()).count() as i64 - lost;
    let worst = teeth
        .iter()
        .filter_map(|t| t.wear_pct().map(|p| (p, t)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let min_remaining = teeth.iter().filter_map(|t| t.remaining_micro).min();
    let soonest = teeth
        .iter()
        .filter_map(|t| t.hours_to_limit())
        .min_by(f64::total_cmp);
    let open_alerts = teeth
        .iter()
        .filter(|t| matches!(t.status, ToothStatus::Lost | ToothStatus::Replace))
        .count() as i64;
    vec![
        Value::str(machine),
        Value::Int(teeth.len() as i64),
        Value::Int(reporting),
        Value::Int(lost),
        Value::opt_str(worst.map(|(_, t)| t.device_id.as_str())),
        Value::opt_float(worst.map(|(p, _)| p)),
        Value::opt_float(min_remaining.map(from_micro)),
        Value::opt_float(soonest),
        Value::Int(open_alerts),
    ]
}

/// The `machine_health` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            ctx.tooth_wear()
                .flat_map(|t| t.machine_id.clone().map(|m| (m, t)))
                .reduce_named("machine_health: summarize", |machine, teeth, output| {
                    let teeth: Vec<&ToothWear> = teeth.iter().map(|(t, _)| *t).collect();
                    output.push((summarize(machine, &teeth), 1));
                })
                .map(|(_, row)| row)
        },
    }
}
