"""Checks that the peers' answers equal wearflow's for the same input.

Usage: compare.py (--wearflow http://ADDR | --wearflow-rows FILE) PEER_ROWS.json [...]

--wearflow reads `GET /views/tooth_wear` and `GET /views/inventory_balances` (all pages, by
`next_cursor`) from a running `wearflow run --replay DIR --serve-after-end --http ADDR`;
--wearflow-rows reads a file in the peers' rows format instead. Each PEER_ROWS file is the
`--out` file of pathway_peer.py or duckdb_peer.py (or a peer's full stdout JSON line).
Compared columns: tooth (device_id, last_seen_ms, remaining_mm); balances (warehouse, sku,
on_hand, reserved, available, on_order, reorder_point, below_reorder_point). `readings` is a
peers-only column, compared between peers. Exits 1 on any difference.
"""

import argparse
import json
import sys
import os
import urllib.parse
import urllib.request

TOOTH_COLS = ["device_id", "last_seen_ms", "remaining_mm"]
BAL_COLS = ["warehouse", "sku", "on_hand", "reserved", "available", "on_order",
            "reorder_point", "below_reorder_point"]


def fetch_view(base: str, name: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        query = {"limit": "10000"}
        if cursor:
            query["cursor"] = cursor
        url = f"{base.rstrip('/')}/views/{name}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url)
        token = os.environ.get("WEARFLOW_TOKEN")
        if token:  # `wearflow run` needs one; `wearflow demo` does not
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=60) as resp:
            body = json.load(resp)
        rows.extend(body["rows"])
        cursor = body.get("next_cursor")
        if not cursor or not body["rows"]:
            return rows


def load_rows(path: str) -> dict:
    with open(path) as f:
        text = f.read().strip()
    # A peer's stdout may hold log lines before the JSON line.
    return json.loads(text.splitlines()[-1] if not text.startswith("{\"tooth\"") else text)


def project(rows, cols, key):
    return {tuple(r[c] for c in key): {c: r.get(c) for c in cols} for r in rows}


def diff(name, a_name, a, b_name, b, limit=5) -> int:
    bad = 0
    for k in sorted(set(a) | set(b), key=repr):
        if a.get(k) != b.get(k):
            if bad < limit:
                print(f"  {name} {k}: {a_name}={a.get(k)} {b_name}={b.get(k)}")
            bad += 1
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wearflow", help="base URL of wearflow's HTTP API")
    src.add_argument("--wearflow-rows", help="wearflow rows already saved in the peers' format")
    ap.add_argument("--save-wearflow", help="also save wearflow's rows here")
    ap.add_argument("peers", nargs="+")
    args = ap.parse_args()
    if args.wearflow:
        ref = {"tooth": fetch_view(args.wearflow, "tooth_wear"),
               "balances": fetch_view(args.wearflow, "inventory_balances")}
        if args.save_wearflow:
            with open(args.save_wearflow, "w") as f:
                json.dump(ref, f)
    else:
        ref = load_rows(args.wearflow_rows)
    ref_t = project(ref["tooth"], TOOTH_COLS, ["device_id"])
    ref_b = project(ref["balances"], BAL_COLS, ["warehouse", "sku"])
    print(f"wearflow: {len(ref_t)} tooth rows, {len(ref_b)} balance rows")
    failures = 0
    readings = {}
    for path in args.peers:
        peer = load_rows(path)
        t = project(peer["tooth"], TOOTH_COLS, ["device_id"])
        b = project(peer["balances"], BAL_COLS, ["warehouse", "sku"])
        readings[path] = project(peer["tooth"], ["readings"], ["device_id"])
        bad = diff("tooth", "wearflow", ref_t, path, t) + diff("balance", "wearflow", ref_b, path, b)
        print(f"{path}: {len(t)} tooth rows, {len(b)} balance rows: "
              + ("AGREE" if bad == 0 else f"{bad} rows DIFFER"))
        failures += bad
    paths = list(readings)
    for other in paths[1:]:
        bad = diff("readings", paths[0], readings[paths[0]], other, readings[other])
        print(f"readings {paths[0]} vs {other}: " + ("AGREE" if bad == 0 else f"{bad} DIFFER"))
        failures += bad
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
