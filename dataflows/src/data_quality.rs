//! `data_quality`: per source, records ok, bad and late, and the newest event time.

use wearflow_operators::{Column, ColumnType, LatestByKey, Value, ViewKind, ViewSchema};

use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "data_quality",
        ViewKind::Keyed,
        1,
        vec![
            Column::required("source", Utf8),
            Column::required("records_ok", Int64),
            Column::required("records_bad", Int64),
            Column::required("records_late", Int64),
            Column::nullable("last_event_ms", TimestampMs),
        ],
        "per source: records accepted (late ones included), rejected, late; newest event time",
    )
}

/// The `data_quality` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            let counts = ctx
                .inputs
                .quality
                .clone()
                .explode(|(source, mark)| Some((source, mark.counts())))
                .count();
            let last = ctx
                .inputs
                .source_times
                .clone()
                .map(|(source, ts)| (source, (ts, ())))
                .latest_by_key("data_quality: last event")
                .map(|(source, (ts, ()))| (source, ts));
            let with_time = counts.clone().join_map(last.clone(), |source, counts, ts| {
                (source.clone(), *counts, Some(*ts))
            });
            let without_time = counts
                .antijoin(last.map(|(source, _)| source))
                .map(|(source, counts)| (source, counts, None));
            with_time
                .concat(without_time)
                .map(|(source, (ok, bad, late), ts)| {
                    vec![
                        Value::Str(source),
                        Value::Int(ok as i64),
                        Value::Int(bad as i64),
                        Value::Int(late as i64),
                        ts.map_or(Value::Null, |ts: u64| Value::Int(ts as i64)),
                    ]
                })
        },
    }
}
