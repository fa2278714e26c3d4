//! `inventory_balances`: per warehouse and SKU, stock on hand, reserved, available, on order.

use serde::{Deserialize, Serialize};
use wearflow_operators::{
    Collection, Column, ColumnType, LatestByKey, Ledger, Value, ViewKind, ViewSchema,
};
use wearflow_sources::{Asset, OrderKind};

use crate::{Context, ViewDef};

/// One (warehouse, sku) balance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Balance {
    /// Warehouse.
    pub warehouse: String,
    /// SKU.
    pub sku: String,
    /// Sum of all stock movements.
    pub on_hand: i64,
    /// Quantity of open sales and work orders.
    pub reserved: i64,
    /// Quantity of open purchase orders.
    pub on_order: i64,
    /// The SKU's reorder point, if known.
    pub reorder_point: Option<i64>,
}

impl Balance {
    /// On hand less reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
    /// Whether available stock is below the reorder point.
    pub fn below_reorder_point(&self) -> bool {
        self.reorder_point.is_some_and(|rp| self.available() < rp)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    OnHand(i64),
    Reserved(i64),
    OnOrder(i64),
    ReorderPoint(i64),
}

type Key = (String, String);

/// Builds the balances.
pub(crate) fn build<'s>(ctx: &Context<'s>) -> Collection<'s, Balance> {
    let on_hand = ctx
        .inputs
        .stock
        .clone()
        .map(|s| ((s.warehouse, s.sku), s.qty_delta))
        .ledger()
        .map(|(key, q)| (key, Part::OnHand(q)));
    let open = ctx
        .order_state()
        .filter(|o| !o.status.is_terminal())
        .flat_map(|o| {
            let key = (o.warehouse.clone()?, o.sku.clone()?);
            Some(((key, o.kind == OrderKind::Purchase), o.qty))
        });
    let open = open.ledger();
    let reserved = open
        .clone()
        .filter(|((_, purchase), _)| !*purchase)
        .map(|((key, _), q)| (key, Part::Reserved(q)));
    let on_order = open
        .filter(|((_, purchase), _)| *purchase)
        .map(|((key, _), q)| (key, Part::OnOrder(q)));
    let movements: Collection<'s, (Key, Part)> = on_hand.concat(reserved).concat(on_order);
    let keys = movements.clone().map(|(key, _)| key).distinct();
    let reorder_points = ctx
        .inputs
        .assets
        .clone()
        .flat_map(|a| match a {
            Asset::Sku(s) => {
                let rp = s.reorder_point?;
                Some((s.sku, (s.ts.map_or(0, |t| t.0), rp)))
            }
            _ => None,
        })
        .latest_by_key("inventory: reorder point")
        .map(|(sku, (_, rp))| (sku, rp));
    let points = keys
        .map(|(warehouse, sku)| (sku, warehouse))
        .join_map(reorder_points, |sku, warehouse, rp| {
            ((warehouse.clone(), sku.clone()), Part::ReorderPoint(*rp))
        });
    movements
        .concat(points)
        .reduce_named("inventory: combine", |(warehouse, sku), parts, output| {
            let mut balance = Balance {
                warehouse: warehouse.clone(),
                sku: sku.clone(),
                on_hand: 0,
                reserved: 0,
                on_order: 0,
                reorder_point: None,
            };
            for (part, _) in parts {
                match part {
                    Part::OnHand(q) => balance.on_hand = *q,
                    Part::Reserved(q) => balance.reserved = *q,
                    Part::OnOrder(q) => balance.on_order = *q,
                    Part::ReorderPoint(rp) => balance.reorder_point = Some(*rp),
                }
            }
            output.push((balance, 1));
        })
        .map(|(_, balance)| balance)
}

fn schema() -> ViewSchema {
    use ColumnType::*;
    crate::schema(
        "inventory_balances",
        ViewKind::Keyed,
        2,
        vec![
            Column::required("warehouse", Utf8),
            Column::required("sku", Utf8),
            Column::required("on_hand", Int64),
            Column::required("reserved", Int64),
            Column::required("available", Int64),
            Column::required("on_order", Int64),
            Column::nullable("reorder_point", Int64),
            Column::required("below_reorder_point", Bool),
        ],
        "stock per warehouse and sku: on hand, reserved by open orders, available, on order",
    )
}

/// The `inventory_balances` view.
pub fn view() -> ViewDef {
    ViewDef {
        schema,
        build: |ctx: &Context| {
            ctx.balances().map(|b| {
                vec![
                    Value::str(&b.warehouse),
                    Value::str(&b.sku),
                    Value::Int(b.on_hand),
                    Value::Int(b.reserved),
                    Value::Int(b.available()),
                    Value::Int(b.on_order),
                    b.reorder_point.map_or(Value::Null, Value::Int),
                    Value::Bool(b.below_reorder_point()),
                ]
            })
        },
    }
}
