//! `dead_letters`: rejected records with where they came from and why (append view).

use wearflow_operators::{Column, ColumnType, Value, ViewKind, ViewSchema};

use crate::{Context, ViewDef};

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "dead_letters",
        ViewKind::Append,
        3,
        vec![
            Column::required("source", Utf8),
            Column::required("partition", Int64),
            Column::required("position", Int64),
            Column::required("reason", Utf8),
            Column::required("raw", Utf8),
        ],
        "records that could not be used: source, partition, position, reason, raw bytes (bounded)",
    )
}

/// The `dead_letters` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            ctx.inputs.errors.clone().map(|e| {
                vec![
                    Value::Str(e.source),
                    Value::Int(e.partition as i64),
                    Value::Int(e.position as i64),
                    Value::Str(e.reason),
                    Value::Str(e.raw),
                ]
            })
        },
    }
}
