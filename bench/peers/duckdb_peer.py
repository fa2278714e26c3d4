"""DuckDB peer: wearflow's tooth-wear and inventory-balance answers, recomputed from scratch.

Loads the JSONL files written by `wearflow simulate --out DIR` into DuckDB tables (numbers
become micro-units, `round(x * 1e6)`, as wearflow's `Micro` does) and answers with one SQL
query over the whole history (`TOOTH_SQL`, `BALANCES_SQL`). There is no incremental state:
every answer is a full recompute, which is the baseline the benchmark compares against.

Usage:
  duckdb_peer.py DIR [--out FILE]
      load + query once; prints one JSON line (timings, and the rows unless --out is given,
      in which case the rows go to FILE and stdout carries only the summary).
  duckdb_peer.py DIR --update-latency [--history 1000000,10000000] [--batch 1000] [--reps 5]
      for each history size N (skipped when the input holds fewer than N + reps * batch
      events): tables hold the first N events (in event-time order across the four streams),
      then each repetition appends the next `batch` events and re-runs the full query; prints
      one JSON line with the median append and recompute times per N.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import duckdb

STREAMS = ("telemetry", "stock", "orders", "assets")

# `ts` is RFC 3339 text or integer epoch milliseconds on the wire (sources/src/event.rs).
def ts_ms(col: str) -> str:
    return (
        f"CASE WHEN {col} IS NULL THEN NULL "
        f"WHEN regexp_full_match({col}, '-?[0-9]+') THEN CAST({col} AS BIGINT) "
        f"ELSE epoch_ms(CAST({col} AS TIMESTAMPTZ)) END"
    )


def micro(expr: str) -> str:
    # wearflow: (value * 1e6).round() as i64; DuckDB's round also rounds half away from zero.
    return f"CAST(round({expr} * 1e6) AS BIGINT)"


def load_sql(directory: str) -> dict[str, str]:
    """One `CREATE TABLE raw_<stream>` per stream: parsed, with the line number as `line`."""
    p = lambda s: os.path.join(directory, f"{s}.jsonl").replace("'", "''")
    return {
        "telemetry": f"""
            CREATE OR REPLACE TABLE raw_telemetry AS
            SELECT row_number() OVER () AS line, device_id, machine_id, {ts_ms('ts')} AS ts,
                   {micro('metrics.remaining_mm')} AS remaining_micro
            FROM read_json('{p('telemetry')}', format = 'newline_delimited',
                           columns = {{device_id: 'VARCHAR', machine_id: 'VARCHAR',
                                       ts: 'VARCHAR', metrics: 'STRUCT(remaining_mm DOUBLE)'}})
        """,
        "stock": f"""
            CREATE OR REPLACE TABLE raw_stock AS
            SELECT row_number() OVER () AS line, warehouse, sku, qty_delta, {ts_ms('ts')} AS ts
            FROM read_json('{p('stock')}', format = 'newline_delimited',
                           columns = {{warehouse: 'VARCHAR', sku: 'VARCHAR',
                                       qty_delta: 'BIGINT', ts: 'VARCHAR'}})
        """,
        "orders": f"""
            CREATE OR REPLACE TABLE raw_orders AS
            SELECT row_number() OVER () AS line, order_id, kind, status, sku,
                   coalesce(qty, 1) AS qty, warehouse, {ts_ms('ts')} AS ts
            FROM read_json('{p('orders')}', format = 'newline_delimited',
                           columns = {{order_id: 'VARCHAR', kind: 'VARCHAR', status: 'VARCHAR',
                                       sku: 'VARCHAR', qty: 'BIGINT', warehouse: 'VARCHAR',
                                       ts: 'VARCHAR'}})
        """,
        "assets": f"""
            CREATE OR REPLACE TABLE raw_assets AS
            SELECT row_number() OVER () AS line, kind, device_id, sku, reorder_point,
                   {ts_ms('ts')} AS ts
            FROM read_json('{p('assets')}', format = 'newline_delimited',
                           columns = {{kind: 'VARCHAR', device_id: 'VARCHAR', sku: 'VARCHAR',
                                       reorder_point: 'BIGINT', ts: 'VARCHAR'}})
        """,
    }


# Per tooth: newest reading time, the remaining_mm of the greatest (ts, value) among readings
# that carry it (operators/src/latest_by_key.rs), and the reading count. A device known only
# from its asset record still has a row (dataflows/src/tooth_wear.rs `combine`).
TOOTH_SQL = """
WITH seen AS (
    SELECT device_id, max(ts) AS last_seen_ms, count(*) AS readings,
           max({'ts': ts, 'v': remaining_micro})
               FILTER (WHERE remaining_micro IS NOT NULL) AS latest
    FROM telemetry GROUP BY device_id
), devices AS (
    SELECT device_id FROM seen
    UNION
    SELECT device_id FROM assets WHERE kind = 'device' AND device_id IS NOT NULL
)
SELECT d.device_id, s.last_seen_ms, s.latest.v / 1e6 AS remaining_mm,
       coalesce(s.readings, 0) AS readings
FROM devices d LEFT JOIN seen s USING (device_id)
ORDER BY d.device_id
"""

# Per (warehouse, sku): on_hand = sum of stock movements; each order folded to its newest
# event in (ts, lifecycle) order (dataflows/src/order_state.rs: status, kind and qty of the
# newest event, sku and warehouse of the newest event naming one); reserved = qty of open
# (non-terminal) sales and work orders, on_order = qty of open purchase orders. Ledgers drop
# zero balances, so a key has a row only when one of its three sums is not zero
# (dataflows/src/inventory_balances.rs). reorder_point: the SKU record's, newest (ts, value).
BALANCES_SQL = """
WITH ranked AS (
    SELECT order_id, kind, status, qty, sku, warehouse,
           {'ts': ts, 'st': CASE status WHEN 'created' THEN 0 WHEN 'allocated' THEN 1
                                        WHEN 'assigned' THEN 2 WHEN 'shipped' THEN 3
                                        WHEN 'completed' THEN 4 ELSE 5 END} AS o
    FROM orders
), folded AS (
    SELECT order_id,
           arg_max(kind, o) AS kind, arg_max(status, o) AS status, arg_max(qty, o) AS qty,
           arg_max(sku, o) FILTER (WHERE sku IS NOT NULL) AS sku,
           arg_max(warehouse, o) FILTER (WHERE warehouse IS NOT NULL) AS warehouse
    FROM ranked GROUP BY order_id
), open AS (
    SELECT warehouse, sku,
           CAST(coalesce(sum(qty) FILTER (WHERE kind <> 'purchase'), 0) AS BIGINT) AS reserved,
           CAST(coalesce(sum(qty) FILTER (WHERE kind = 'purchase'), 0) AS BIGINT) AS on_order
    FROM folded
    WHERE status NOT IN ('shipped', 'completed', 'cancelled')
      AND warehouse IS NOT NULL AND sku IS NOT NULL
    GROUP BY warehouse, sku
), hand AS (
    SELECT warehouse, sku, CAST(sum(qty_delta) AS BIGINT) AS on_hand
    FROM stock GROUP BY warehouse, sku
), points AS (
    SELECT sku, max({'ts': coalesce(ts, 0), 'rp': reorder_point}).rp AS reorder_point
    FROM assets WHERE kind = 'sku' AND reorder_point IS NOT NULL GROUP BY sku
), bal AS (
    SELECT coalesce(h.warehouse, o.warehouse) AS warehouse, coalesce(h.sku, o.sku) AS sku,
           coalesce(h.on_hand, 0) AS on_hand, coalesce(o.reserved, 0) AS reserved,
           coalesce(o.on_order, 0) AS on_order
    FROM hand h FULL OUTER JOIN open o ON h.warehouse = o.warehouse AND h.sku = o.sku
)
SELECT b.warehouse, b.sku, b.on_hand, b.reserved, b.on_hand - b.reserved AS available,
       b.on_order, p.reorder_point,
       coalesce(b.on_hand - b.reserved < p.reorder_point, false) AS below_reorder_point
FROM bal b LEFT JOIN points p USING (sku)
WHERE b.on_hand <> 0 OR b.reserved <> 0 OR b.on_order <> 0
ORDER BY b.warehouse, b.sku
"""


def query(con) -> tuple[list[dict], list[dict]]:
    cur = con.execute(TOOTH_SQL)
    cols = [d[0] for d in cur.description]
    tooth = [dict(zip(cols, r)) for r in cur.fetchall()]
    cur = con.execute(BALANCES_SQL)
    cols = [d[0] for d in cur.description]
    balances = [dict(zip(cols, r)) for r in cur.fetchall()]
    return tooth, balances


def views_over(con, prefix: str) -> None:
    """Points the names the queries use (telemetry, stock, orders, assets) at `<prefix><s>`."""
    for s in STREAMS:
        con.execute(f"CREATE OR REPLACE VIEW {s} AS SELECT * FROM {prefix}{s}")


def connect():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def load(con, directory: str) -> None:
    with tempfile.TemporaryDirectory() as empty:
        for s in STREAMS:
            # A missing stream file loads as an empty table.
            where = directory if os.path.exists(os.path.join(directory, f"{s}.jsonl")) else empty
            if where is empty:
                open(os.path.join(empty, f"{s}.jsonl"), "w").close()
            con.execute(load_sql(where)[s])


def once(args) -> dict:
    con = connect()
    started = time.perf_counter()
    load(con, args.dir)
    loaded = time.perf_counter()
    views_over(con, "raw_")
    tooth, balances = query(con)
    done = time.perf_counter()
    events = sum(con.execute(f"SELECT count(*) FROM raw_{s}").fetchone()[0] for s in STREAMS)
    seconds = done - started
    return {
        "peer": "duckdb",
        "duckdb_version": duckdb.__version__,
        "events": events,
        "seconds": seconds,
        "load_seconds": loaded - started,
        "query_seconds": done - loaded,
        "events_per_sec": events / seconds,
        "tooth": tooth,
        "balances": balances,
    }


def update_latency(args) -> dict:
    con = connect()
    started = time.perf_counter()
    load(con, args.dir)
    # One global order over all streams: event time, then stream, then line (wearflow's file
    # replay also merges the four files by event time).
    con.execute(
        "CREATE OR REPLACE TABLE seq AS SELECT stream, line, "
        "row_number() OVER (ORDER BY coalesce(ts, 0), stream, line) AS g FROM ("
        + " UNION ALL ".join(f"SELECT {i} AS stream, line, ts FROM raw_{s}"
                             for i, s in enumerate(STREAMS))
        + ")"
    )
    for i, s in enumerate(STREAMS):
        con.execute(
            f"CREATE OR REPLACE TABLE g_{s} AS SELECT r.*, q.g FROM raw_{s} r "
            f"JOIN seq q ON q.stream = {i} AND q.line = r.line ORDER BY q.g"
        )
        con.execute(f"DROP TABLE raw_{s}")
    total = con.execute("SELECT count(*) FROM seq").fetchone()[0]
    con.execute("DROP TABLE seq")
    prepared = time.perf_counter() - started
    results = []
    for n in args.history:
        if total < n + args.reps * args.batch:
            results.append({"history": n, "skipped": f"input holds only {total} events"})
            continue
        for s in STREAMS:
            con.execute(f"CREATE OR REPLACE TABLE h_{s} AS SELECT * FROM g_{s} WHERE g <= {n}")
        views_over(con, "h_")
        t0 = time.perf_counter()
        query(con)  # warm: the state before the first batch
        warm = time.perf_counter() - t0
        appends, recomputes = [], []
        upto = n
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for s in STREAMS:
                con.execute(f"INSERT INTO h_{s} SELECT * FROM g_{s} "
                            f"WHERE g > {upto} AND g <= {upto + args.batch}")
            t1 = time.perf_counter()
            tooth, balances = query(con)
            t2 = time.perf_counter()
            upto += args.batch
            appends.append((t1 - t0) * 1000)
            recomputes.append((t2 - t1) * 1000)
        results.append({
            "history": n,
            "batch": args.batch,
            "reps": args.reps,
            "first_full_query_ms": warm * 1000,
            "append_ms_median": statistics.median(appends),
            "recompute_ms_median": statistics.median(recomputes),
            "update_latency_ms_median": statistics.median(a + r for a, r in zip(appends, recomputes)),
            "recompute_ms": recomputes,
            "tooth_rows": len(tooth),
            "balance_rows": len(balances),
        })
    return {"peer": "duckdb", "mode": "update-latency", "duckdb_version": duckdb.__version__,
            "events": total, "prepare_seconds": prepared,
            "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
            "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="directory written by `wearflow simulate --out`")
    ap.add_argument("--out", help="write the rows (tooth, balances) here as JSON")
    ap.add_argument("--update-latency", action="store_true")
    ap.add_argument("--history", default="1000000,10000000",
                    type=lambda s: [int(x) for x in s.split(",") if x],
                    help="comma-separated history sizes N (events)")
    ap.add_argument("--batch", type=int, default=1000, help="events per appended batch")
    ap.add_argument("--reps", type=int, default=5, help="batches appended per history size")
    args = ap.parse_args()
    if args.update_latency:
        print(json.dumps(update_latency(args)))
        return
    result = once(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tooth": result["tooth"], "balances": result["balances"]}, f)
        result["tooth_rows"] = len(result.pop("tooth"))
        result["balance_rows"] = len(result.pop("balances"))
        result["rows_file"] = args.out
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
