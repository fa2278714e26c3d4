//! The business around the fleet: work, sales and purchase orders, and the stock they move.

use wearflow_operators::Time;

use super::Simulator;
use super::agenda::{Action, PurchaseOrder, SalesOrder, WorkOrder};
use super::fleet::{Condition, DAY_MS};
use crate::event::{
    Event, Order, OrderKind, OrderStatus, Stock, StockReason, Timestamp, WorkReason,
};

/// Share of sales orders cancelled before allocation, and again of those after it.
const CANCEL_SHARE: f64 = 0.05;

/// Running order numbers, one sequence per kind.
#[derive(Default)]
pub(super) struct OrderNumbers {
    work: u32,
    sales: u32,
    purchase: u32,
    adjustment: u32,
}

/// Advances a sequence and returns its new number.
fn take_next(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

/// An order event with only the always-present fields set.
fn order(order_id: String, kind: OrderKind, status: OrderStatus, qty: i64, t: Time) -> Order {
    Order {
        order_id,
        kind,
        status,
        sku: None,
        qty,
        warehouse: None,
        customer_id: None,
        machine_id: None,
        device_id: None,
        reason: None,
        ts: Timestamp(t),
    }
}

fn work_id(number: u32) -> String {
    format!("WO-{number:06}")
}

fn sales_id(number: u32) -> String {
    format!("SO-{number:06}")
}

fn purchase_id(number: u32) -> String {
    format!("PO-{number:06}")
}

impl Simulator {
    /// Emits the reference data and the opening stock, and starts the recurring business.
    pub(super) fn open(&mut self, t: Time, out: &mut Vec<Event>) {
        self.fleet.assets(t, out);
        let skus = self.fleet.skus.len();
        for warehouse in 0..self.fleet.warehouses.len() {
            for sku in 0..skus {
                // Mid-cycle: somewhere between the reorder point and a full delivery above it.
                let cycle = self.fleet.purchase_qty[warehouse * skus + sku] as f64
                    * self.noise.uniform(0.2, 0.9);
                let qty = self.fleet.reorder_points[sku] + cycle.round() as i64;
                let reference = "OPENING-BALANCE".to_string();
                self.move_stock(
                    t,
                    (warehouse, sku),
                    qty,
                    StockReason::Receipt,
                    reference,
                    out,
                );
            }
        }
        for warehouse in 0..self.fleet.warehouses.len() as u16 {
            if let Some(at) = self.next_arrival(t, self.config.sales_orders_per_day) {
                self.agenda.schedule(at, Action::SalesArrival { warehouse });
            }
            if let Some(at) = self.next_arrival(t, self.config.adjustments_per_day) {
                self.agenda.schedule(at, Action::Adjustment { warehouse });
            }
        }
    }

    /// The next arrival after `t` of a Poisson process with `per_day` events a day.
    fn next_arrival(&mut self, t: Time, per_day: f64) -> Option<Time> {
        (per_day > 0.0 && per_day.is_finite())
            .then(|| t + 1 + self.noise.exponential(DAY_MS as f64 / per_day) as u64)
    }

    /// Books and emits a stock movement of `(warehouse, sku)`; reorders after an outflow.
    fn move_stock(
        &mut self,
        t: Time,
        (warehouse, sku): (usize, usize),
        qty_delta: i64,
        reason: StockReason,
        reference: String,
        out: &mut Vec<Event>,
    ) {
        self.on_hand[warehouse * self.fleet.skus.len() + sku] += qty_delta;
        out.push(Event::Stock(Stock {
            warehouse: self.fleet.warehouses[warehouse].clone(),
            sku: self.fleet.sku_codes[sku].clone(),
            qty_delta,
            reason,
            reference: Some(reference),
            ts: Timestamp(t),
        }));
        if qty_delta < 0 {
            self.reorder(t, (warehouse, sku), out);
        }
    }

    /// Places a purchase order if stock is at or below the reorder point and none is open.
    fn reorder(&mut self, t: Time, (warehouse, sku): (usize, usize), out: &mut Vec<Event>) {
        let slot = warehouse * self.fleet.skus.len() + sku;
        if self.purchase_open[slot] || self.on_hand[slot] > self.fleet.reorder_points[sku] {
            return;
        }
        self.purchase_open[slot] = true;
        let number = take_next(&mut self.numbers.purchase);
        let qty = self.fleet.purchase_qty[slot];
        out.push(Event::Order(Order {
            sku: Some(self.fleet.sku_codes[sku].clone()),
            warehouse: Some(self.fleet.warehouses[warehouse].clone()),
            ..order(
                purchase_id(number),
                OrderKind::Purchase,
                OrderStatus::Created,
                qty,
                t,
            )
        }));
        let lead_ms = self.fleet.skus[sku].lead_time_days * DAY_MS + self.noise.hours_ms(0.0, 4.0);
        let purchase = PurchaseOrder {
            number,
            warehouse: warehouse as u16,
            sku: sku as u16,
            qty: qty as u32,
        };
        self.agenda
            .schedule(t + lead_ms, Action::PurchaseReceipt(purchase));
    }

    /// A purchase order arrives: completed, and its goods received.
    pub(super) fn receive_purchase(
        &mut self,
        t: Time,
        purchase: PurchaseOrder,
        out: &mut Vec<Event>,
    ) {
        let (warehouse, sku) = (usize::from(purchase.warehouse), usize::from(purchase.sku));
        let qty = i64::from(purchase.qty);
        out.push(Event::Order(Order {
            sku: Some(self.fleet.sku_codes[sku].clone()),
            warehouse: Some(self.fleet.warehouses[warehouse].clone()),
            ..order(
                purchase_id(purchase.number),
                OrderKind::Purchase,
                OrderStatus::Completed,
                qty,
                t,
            )
        }));
        let reference = purchase_id(purchase.number);
        self.move_stock(
            t,
            (warehouse, sku),
            qty,
            StockReason::Receipt,
            reference,
            out,
        );
        self.purchase_open[warehouse * self.fleet.skus.len() + sku] = false;
        // Demand may have outrun the delivery.
        self.reorder(t, (warehouse, sku), out);
    }

    /// A work order reaches its status; returns its next step.
    pub(super) fn work_step(
        &mut self,
        t: Time,
        work: WorkOrder,
        out: &mut Vec<Event>,
    ) -> Option<(Time, Action)> {
        let (number, next_step) = match work.status {
            OrderStatus::Created => (
                take_next(&mut self.numbers.work),
                Some((self.noise.hours_ms(1.0, 4.0), OrderStatus::Assigned)),
            ),
            OrderStatus::Assigned => (
                work.number,
                Some((self.noise.hours_ms(2.0, 12.0), OrderStatus::Completed)),
            ),
            _ => (work.number, None),
        };
        let index = work.tooth as usize;
        let warehouse = self.fleet.warehouse_of(index);
        let tooth = &self.fleet.teeth[index];
        // The crew records what it found: a tooth that broke or fell off while its wear-limit
        // order was open is completed as a failure (the failure label is the completion).
        let reason = if work.status == OrderStatus::Completed && tooth.condition != Condition::Sound
        {
            WorkReason::Failure
        } else {
            work.reason
        };
        out.push(Event::Order(Order {
            sku: Some(self.fleet.sku_codes[tooth.sku].clone()),
            warehouse: Some(self.fleet.warehouses[warehouse].clone()),
            machine_id: Some(self.fleet.machines[tooth.machine].id.clone()),
            device_id: Some(tooth.device_id.clone()),
            reason: Some(reason),
            ..order(work_id(number), OrderKind::Work, work.status, 1, t)
        }));
        if work.status == OrderStatus::Completed {
            let sku = tooth.sku;
            self.move_stock(
                t,
                (warehouse, sku),
                -1,
                StockReason::Issue,
                work_id(number),
                out,
            );
            self.replace_tooth(t, index, out);
        }
        next_step.map(|(after_ms, status)| {
            (
                t + after_ms,
                Action::Work(WorkOrder {
                    number,
                    status,
                    ..work
                }),
            )
        })
    }

    /// Mounts a new tooth at position `index`; a lost one starts reporting again.
    fn replace_tooth(&mut self, t: Time, index: usize, out: &mut Vec<Event>) {
        let fleet = &mut self.fleet;
        let tooth = &mut fleet.teeth[index];
        let was_lost = tooth.condition == Condition::Lost;
        let site = &fleet.sites[fleet.machines[tooth.machine].site];
        tooth.install(
            t,
            site,
            fleet.skus[tooth.sku],
            &self.config,
            &mut self.noise,
        );
        let phase_ms = tooth.phase_ms;
        out.push(self.fleet.device_asset(index, t));
        if was_lost {
            self.agenda.schedule(
                t + phase_ms,
                Action::Reading {
                    tooth: index as u32,
                },
            );
        }
    }

    /// A customer of `warehouse` places a sales order; returns the next arrival.
    pub(super) fn sales_arrival(
        &mut self,
        t: Time,
        warehouse: u16,
        out: &mut Vec<Event>,
    ) -> Option<(Time, Action)> {
        let created = SalesOrder {
            number: take_next(&mut self.numbers.sales),
            warehouse,
            sku: self.noise.index(self.fleet.skus.len()) as u16,
            customer: self.noise.index(self.fleet.customers.len()) as u32,
            qty: self.noise.integer(1, 8) as u16,
            status: OrderStatus::Created,
        };
        let (after_ms, status) = if self.noise.chance(CANCEL_SHARE) {
            (self.noise.hours_ms(1.0, 24.0), OrderStatus::Cancelled)
        } else {
            (self.noise.hours_ms(0.5, 4.0), OrderStatus::Allocated)
        };
        self.sales_step(t, created, out);
        self.agenda.schedule(
            t + after_ms,
            Action::Sales(SalesOrder { status, ..created }),
        );
        self.next_arrival(t, self.config.sales_orders_per_day)
            .map(|at| (at, Action::SalesArrival { warehouse }))
    }

    /// A sales order reaches its status; returns its next step.
    pub(super) fn sales_step(
        &mut self,
        t: Time,
        sales: SalesOrder,
        out: &mut Vec<Event>,
    ) -> Option<(Time, Action)> {
        let (warehouse, sku) = (usize::from(sales.warehouse), usize::from(sales.sku));
        let qty = i64::from(sales.qty);
        out.push(Event::Order(Order {
            sku: Some(self.fleet.sku_codes[sku].clone()),
            warehouse: Some(self.fleet.warehouses[warehouse].clone()),
            customer_id: Some(self.fleet.customers[sales.customer as usize].clone()),
            ..order(
                sales_id(sales.number),
                OrderKind::Sales,
                sales.status,
                qty,
                t,
            )
        }));
        let next_step = match sales.status {
            OrderStatus::Allocated if self.noise.chance(CANCEL_SHARE) => {
                Some((self.noise.hours_ms(1.0, 24.0), OrderStatus::Cancelled))
            }
            OrderStatus::Allocated => Some((self.noise.hours_ms(4.0, 48.0), OrderStatus::Shipped)),
            OrderStatus::Shipped => {
                let reference = sales_id(sales.number);
                self.move_stock(
                    t,
                    (warehouse, sku),
                    -qty,
                    StockReason::Issue,
                    reference,
                    out,
                );
                None
            }
            _ => None,
        };
        next_step
            .map(|(after_ms, status)| (t + after_ms, Action::Sales(SalesOrder { status, ..sales })))
    }

    /// A stock count at `warehouse` corrects a SKU by a few units; returns the next count.
    pub(super) fn adjustment(
        &mut self,
        t: Time,
        warehouse: u16,
        out: &mut Vec<Event>,
    ) -> Option<(Time, Action)> {
        let sku = self.noise.index(self.fleet.skus.len());
        let size = self.noise.integer(1, 3);
        let qty_delta = if self.noise.chance(0.5) { size } else { -size };
        let reference = format!("ADJ-{:06}", take_next(&mut self.numbers.adjustment));
        let slot = (usize::from(warehouse), sku);
        self.move_stock(t, slot, qty_delta, StockReason::Adjustment, reference, out);
        self.next_arrival(t, self.config.adjustments_per_day)
            .map(|at| (at, Action::Adjustment { warehouse }))
    }
}
