//! `fleet_kpis`: one row of fleet-wide figures.

use serde::{Deserialize, Serialize};
use wearflow_operators::{
    Collection, Column, ColumnType, LatestByKey, Value, ViewKind, ViewSchema, Window,
};
use wearflow_sources::Asset;

use crate::{Context, ViewDef};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Figure {
    Reporting(isize),
    Known(isize),
    Records(isize, isize, isize),
    LastEvent(u64),
}

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "fleet_kpis",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("fleet", Utf8),
            Column::required("devices_reporting_5m", Int64),
            Column::required("devices_known", Int64),
            Column::nullable("reporting_ratio", Float64),
            Column::required("records_ok", Int64),
            Column::required("records_bad", Int64),
            Column::required("records_late", Int64),
            Column::nullable("last_event_ms", TimestampMs),
        ],
        "fleet-wide: devices reporting in the last 5 minutes over devices known, record counts",
    )
}

/// The `fleet_kpis` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            let window = ctx.config.reporting_window_ms;
            let last_seen = ctx.device_last_seen();
            let reporting = last_seen
                .clone()
                .map(|(device, (ts, _machine))| (device, ts))
                .window(window)
                .map(|_| ())
                .count()
                .map(|((), n)| Figure::Reporting(n));
            let known = last_seen
                .map(|(device, _)| device)
                .concat(ctx.inputs.assets.clone().flat_map(|a| match a {
                    Asset::Device(d) => Some(d.device_id),
                    _ => None,
                }))
                .distinct()
                .map(|_| ())
                .count()
                .map(|((), n)| Figure::Known(n));
            let records = ctx
                .inputs
                .quality
                .clone()
                .explode(|(_, mark)| Some(((), mark.counts())))
                .count()
                .map(|((), (ok, bad, late))| Figure::Records(ok, bad, late));
            let last_event = ctx
                .inputs
                .source_times
                .clone()
                .map(|(_, ts)| ((), (ts, ())))
                .latest_by_key("fleet: last event")
                .map(|((), (ts, ()))| Figure::LastEvent(ts));
            let figures: Collection<Figure> =
                reporting.concat(known).concat(records).concat(last_event);
            figures
                .map(|f| ((), f))
                .reduce_named("fleet_kpis: combine", |_, figures, output| {
                    let (mut reporting, mut known, mut ok, mut bad, mut late) = (0, 0, 0, 0, 0);
                    let mut last = None;
                    for (figure, _) in figures {
                        match figure {
                            Figure::Reporting(n) => reporting = *n,
                            Figure::Known(n) => known = *n,
                            Figure::Records(o, b, l) => (ok, bad, late) = (*o, *b, *l),
                            Figure::LastEvent(ts) => last = Some(*ts),
                        }
                    }
                    let ratio = (known > 0).then(|| reporting as f64 / known as f64);
                    output.push((
                        vec![
                            Value::str("fleet"),
                            Value::Int(reporting as i64),
                            Value::Int(known as i64),
                            Value::opt_float(ratio),
                            Value::Int(ok as i64),
                            Value::Int(bad as i64),
                            Value::Int(late as i64),
                            last.map_or(Value::Null, |ts| Value::Int(ts as i64)),
                        ],
                        1,
                    ));
                })
                .map(|((), row)| row)
        },
    }
}
