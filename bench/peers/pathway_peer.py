"""Pathway peer: wearflow's tooth-wear and inventory-balance answers, maintained incrementally.

Reads the JSONL files written by `wearflow simulate --out DIR` with Pathway's file-system
connector in **streaming** mode and maintains, with Pathway's incremental (differential
dataflow) engine, the same per-tooth and per-(warehouse, sku) answers as wearflow's
`tooth_wear` and `inventory_balances` views (see duckdb_peer.py for the SQL form of the same
semantics).

How it runs, and why this mode. `pw.io.jsonlines.read(..., mode="streaming")` is Pathway's
production ingest path: the files are read and parsed by its Rust connector and pushed into
the dataflow as minibatches (one commit every `--autocommit-ms`), and every operator updates
its state incrementally per minibatch, exactly as it would for a live feed. (On a file that is
already complete the reader outruns the engine, so the backlog arrives in a few large
minibatches; that is how Pathway's streaming ingest behaves on a backlog.) Only the metric the
answers use is taken out of `metrics`, by the connector (`json_field_paths`), which is the
idiomatic and fastest way to read it (about twice as fast as a `pw.Json` column). Its `"static"`
mode instead ingests everything as one commit (a batch job), and a Python `ConnectorSubject`
would put a Python queue and `json.loads` in front of every record, which measures Python, not
Pathway. The streaming connector never ends by itself (it watches the files for more data),
so the run is ended when the answer is complete: a one-row table counts the records ingested,
every output row carries that count (a join with the one-row table, a few hundred rows per
minibatch), and when a closed time of both output subscriptions shows the count equal to the
number of lines in the input files, the answer is final; the peer takes the time, then stops
Pathway with SIGTERM (Pathway's graceful shutdown). Time is measured from just before the
dataflow is built (after imports and after counting the input lines) to the moment the final
answer is seen.

Usage: pathway_peer.py DIR [--out FILE] [--threads N] [--autocommit-ms MS]
Prints one JSON line last on stdout: {"peer":"pathway","events":N,"seconds":S,
"events_per_sec":R,"tooth":[...],"balances":[...]}; with --out the rows go to FILE and the
summary line carries row counts instead.

Input limits: `ts` must be integer epoch milliseconds (what `wearflow simulate` writes); a
record Pathway cannot parse is logged and dropped, the count never completes and the idle
watchdog ends the run with an error.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from time import perf_counter as clock

STREAMS = ("telemetry", "stock", "orders", "assets")


def count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    # A last line without its newline still counts; blank lines do not occur in simulate output.
    return n + (1 if last != b"\n" else 0)


def build(pw, directory: str, autocommit_ms: int):
    class TelemetrySchema(pw.Schema):
        device_id: str
        ts: int
        # Only the metric used, taken out of `metrics` by the connector (json_field_paths).
        remaining_mm: float | None = pw.column_definition(default_value=None)

    class StockSchema(pw.Schema):
        warehouse: str
        sku: str
        qty_delta: int
        ts: int

    class OrderSchema(pw.Schema):
        order_id: str
        kind: str
        status: str
        sku: str | None = pw.column_definition(default_value=None)
        qty: int = pw.column_definition(default_value=1)  # wearflow: `qty` defaults to 1
        warehouse: str | None = pw.column_definition(default_value=None)
        ts: int

    class AssetSchema(pw.Schema):
        kind: str
        device_id: str | None = pw.column_definition(default_value=None)
        sku: str | None = pw.column_definition(default_value=None)
        reorder_point: int | None = pw.column_definition(default_value=None)
        ts: int | None = pw.column_definition(default_value=None)

    schemas = {"telemetry": TelemetrySchema, "stock": StockSchema, "orders": OrderSchema,
               "assets": AssetSchema}
    tables = {}
    for s in STREAMS:
        path = os.path.join(directory, f"{s}.jsonl")
        if os.path.exists(path):
            paths = {"remaining_mm": "/metrics/remaining_mm"} if s == "telemetry" else None
            tables[s] = pw.io.jsonlines.read(path, schema=schemas[s], mode="streaming",
                                             json_field_paths=paths,
                                             autocommit_duration_ms=autocommit_ms, name=s)
        else:
            tables[s] = pw.Table.empty(**schemas[s].typehints())
    tel, stock, orders, assets = (tables[s] for s in STREAMS)

    # ---- tooth_wear: last_seen_ms, remaining_mm (latest by (ts, value)), readings ----------
    seen = tel.groupby(pw.this.device_id).reduce(
        pw.this.device_id,
        last_seen_ms=pw.reducers.max(pw.this.ts),
        readings=pw.reducers.count(),
    )
    rem = (
        tel.select(pw.this.device_id, pw.this.ts, rem=pw.this.remaining_mm)
        .filter(pw.this.rem.is_not_none())
        # micro-units, as wearflow's Micro: round(x * 1e6)
        .select(pw.this.device_id, pw.this.ts,
                micro=pw.cast(int, (pw.unwrap(pw.this.rem) * 1_000_000.0).num.round()))
        .groupby(pw.this.device_id)
        .reduce(pw.this.device_id,
                latest=pw.reducers.max(pw.make_tuple(pw.this.ts, pw.this.micro)))
        .select(pw.this.device_id, remaining_micro=pw.this.latest[1])
    )
    asset_devices = assets.filter(
        (pw.this.kind == "device") & pw.this.device_id.is_not_none()
    ).select(device_id=pw.unwrap(pw.this.device_id))
    devices = (
        pw.Table.concat_reindex(seen.select(pw.this.device_id), asset_devices)
        .groupby(pw.this.device_id)
        .reduce(pw.this.device_id)
    )
    tooth = (
        devices.join_left(seen, pw.left.device_id == pw.right.device_id)
        .select(pw.left.device_id, pw.right.last_seen_ms, pw.right.readings)
        .join_left(rem, pw.left.device_id == pw.right.device_id)
        .select(pw.left.device_id, pw.left.last_seen_ms, pw.left.readings,
                pw.right.remaining_micro)
    )

    # ---- inventory_balances --------------------------------------------------------------
    on_hand = (
        stock.groupby(pw.this.warehouse, pw.this.sku)
        .reduce(pw.this.warehouse, pw.this.sku, on_hand=pw.reducers.sum(pw.this.qty_delta))
        .filter(pw.this.on_hand != 0)  # a ledger has no row for a zero balance
    )
    # Each order folds to its newest event in (ts, lifecycle) order (dataflows/src/order_state.rs).
    st = pw.this.status
    ranked = orders.select(
        pw.this.order_id, pw.this.kind, pw.this.status, pw.this.qty, pw.this.sku,
        pw.this.warehouse, pw.this.ts,
        st=pw.if_else(st == "created", 0, pw.if_else(st == "allocated", 1, pw.if_else(
            st == "assigned", 2, pw.if_else(st == "shipped", 3, pw.if_else(
                st == "completed", 4, 5))))),
    )
    last = ranked.groupby(pw.this.order_id).reduce(
        pw.this.order_id,
        t=pw.reducers.max(pw.make_tuple(pw.this.ts, pw.this.st, pw.this.kind, pw.this.status,
                                        pw.this.qty)),
    ).select(pw.this.order_id, kind=pw.this.t[2], status=pw.this.t[3], qty=pw.this.t[4])

    def newest_named(col: str):
        return (
            ranked.filter(pw.this[col].is_not_none())
            .select(pw.this.order_id, pw.this.ts, pw.this.st, v=pw.unwrap(pw.this[col]))
            .groupby(pw.this.order_id)
            .reduce(pw.this.order_id,
                    t=pw.reducers.max(pw.make_tuple(pw.this.ts, pw.this.st, pw.this.v)))
            .select(pw.this.order_id, v=pw.this.t[2])
        )

    sku_of, wh_of = newest_named("sku"), newest_named("warehouse")
    open_orders = (
        last.join(sku_of, pw.left.order_id == pw.right.order_id)
        .select(*pw.left, sku=pw.right.v)
        .join(wh_of, pw.left.order_id == pw.right.order_id)
        .select(*pw.left, warehouse=pw.right.v)
        .filter((pw.this.status != "shipped") & (pw.this.status != "completed")
                & (pw.this.status != "cancelled"))
    )

    def open_sum(purchase: bool, name: str):
        cond = (pw.this.kind == "purchase") if purchase else (pw.this.kind != "purchase")
        return (
            open_orders.filter(cond)
            .groupby(pw.this.warehouse, pw.this.sku)
            .reduce(pw.this.warehouse, pw.this.sku, **{name: pw.reducers.sum(pw.this.qty)})
        )

    reserved, on_order = open_sum(False, "reserved"), open_sum(True, "on_order")
    keys = (
        pw.Table.concat_reindex(on_hand.select(pw.this.warehouse, pw.this.sku),
                                reserved.select(pw.this.warehouse, pw.this.sku),
                                on_order.select(pw.this.warehouse, pw.this.sku))
        .groupby(pw.this.warehouse, pw.this.sku)
        .reduce(pw.this.warehouse, pw.this.sku)
    )
    points = (
        assets.filter((pw.this.kind == "sku") & pw.this.sku.is_not_none()
                      & pw.this.reorder_point.is_not_none())
        .select(sku=pw.unwrap(pw.this.sku), rp=pw.unwrap(pw.this.reorder_point),
                ts=pw.coalesce(pw.this.ts, 0))
        .groupby(pw.this.sku)
        .reduce(pw.this.sku, t=pw.reducers.max(pw.make_tuple(pw.this.ts, pw.this.rp)))
        .select(pw.this.sku, reorder_point=pw.this.t[1])
    )
    balances = (
        keys.join_left(on_hand, pw.left.warehouse == pw.right.warehouse,
                       pw.left.sku == pw.right.sku)
        .select(*pw.left, on_hand=pw.coalesce(pw.right.on_hand, 0))
        .join_left(reserved, pw.left.warehouse == pw.right.warehouse,
                   pw.left.sku == pw.right.sku)
        .select(*pw.left, reserved=pw.coalesce(pw.right.reserved, 0))
        .join_left(on_order, pw.left.warehouse == pw.right.warehouse,
                   pw.left.sku == pw.right.sku)
        .select(*pw.left, on_order=pw.coalesce(pw.right.on_order, 0))
        .join_left(points, pw.left.sku == pw.right.sku)
        .select(*pw.left, reorder_point=pw.right.reorder_point)
    )

    # ---- completion: every output row carries the number of records ingested --------------
    total = (
        pw.Table.concat_reindex(*[t.reduce(n=pw.reducers.count()) for t in tables.values()])
        .reduce(n=pw.reducers.sum(pw.this.n))
    )
    tooth = tooth.join(total).select(*pw.left, n=pw.right.n)
    balances = balances.join(total).select(*pw.left, n=pw.right.n)
    return tooth, balances, total


class Collector:
    """Keeps the current rows of one subscribed table and says when they are final."""

    def __init__(self, key_cols, expected, on_final):
        self.key_cols, self.expected, self.on_final = key_cols, expected, on_final
        self.rows = {}
        self.final = False

    def on_change(self, key, row, time, is_addition):
        k = tuple(row[c] for c in self.key_cols)
        if is_addition:
            self.rows[k] = row
        elif self.rows.get(k) == row:
            del self.rows[k]

    def on_time_end(self, time):
        if not self.final and self.rows and all(
            r["n"] == self.expected for r in self.rows.values()
        ):
            self.final = True
            self.on_final()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="directory written by `wearflow simulate --out`")
    ap.add_argument("--out", help="write the rows (tooth, balances) here as JSON")
    ap.add_argument("--threads", type=int, default=1, help="Pathway worker threads")
    ap.add_argument("--autocommit-ms", type=int, default=1500,
                    help="connector commit interval (Pathway's default 1500)")
    ap.add_argument("--idle-timeout", type=float, default=900.0,
                    help="give up when the ingested count has not grown for this long")
    args = ap.parse_args()
    os.environ["PATHWAY_THREADS"] = str(args.threads)
    import pathway as pw

    counts = {s: count_lines(os.path.join(args.dir, f"{s}.jsonl")) for s in STREAMS}
    expected = sum(counts.values())

    started = time.perf_counter()
    tooth_t, balances_t, total_t = build(pw, args.dir, args.autocommit_ms)
    done = threading.Event()
    finished_at = [None]
    progress = {"n": 0, "at": time.perf_counter()}

    def check():
        if tooth_c.final and bal_c.final and not done.is_set():
            finished_at[0] = time.perf_counter()
            done.set()
            os.kill(os.getpid(), signal.SIGTERM)  # Pathway's graceful shutdown

    tooth_c = Collector(["device_id"], expected, check)
    bal_c = Collector(["warehouse", "sku"], expected, check)

    def on_total(key, row, time, is_addition):  # noqa: A002 (pathway passes it by name)
        if is_addition:
            progress["n"], progress["at"] = row["n"], clock()

    pw.io.subscribe(tooth_t, on_change=tooth_c.on_change, on_time_end=tooth_c.on_time_end)
    pw.io.subscribe(balances_t, on_change=bal_c.on_change, on_time_end=bal_c.on_time_end)
    pw.io.subscribe(total_t, on_change=on_total)

    def watchdog():
        while not done.wait(1.0):
            if time.perf_counter() - progress["at"] > args.idle_timeout:
                print(f"pathway_peer: stuck at {progress['n']} of {expected} records",
                      file=sys.stderr, flush=True)
                done.set()
                os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    except SystemExit:
        pass  # the SIGTERM above
    if finished_at[0] is None:
        sys.exit(f"pathway_peer: no final answer (ingested {progress['n']} of {expected})")
    seconds = finished_at[0] - started

    tooth = sorted(
        ({"device_id": r["device_id"], "last_seen_ms": r["last_seen_ms"],
          "remaining_mm": None if r["remaining_micro"] is None else r["remaining_micro"] / 1e6,
          "readings": r["readings"] or 0} for r in tooth_c.rows.values()),
        key=lambda r: r["device_id"])
    balances = sorted(
        ({"warehouse": r["warehouse"], "sku": r["sku"], "on_hand": r["on_hand"],
          "reserved": r["reserved"], "available": r["on_hand"] - r["reserved"],
          "on_order": r["on_order"], "reorder_point": r["reorder_point"],
          "below_reorder_point": r["reorder_point"] is not None
          and r["on_hand"] - r["reserved"] < r["reorder_point"]}
         for r in bal_c.rows.values()),
        key=lambda r: (r["warehouse"], r["sku"]))
    result = {"peer": "pathway", "pathway_version": pw.__version__, "threads": args.threads,
              "autocommit_ms": args.autocommit_ms, "events": expected,
              "events_by_stream": counts, "seconds": seconds,
              "events_per_sec": expected / seconds}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tooth": tooth, "balances": balances}, f)
        result.update(tooth_rows=len(tooth), balance_rows=len(balances), rows_file=args.out)
    else:
        result.update(tooth=tooth, balances=balances)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
