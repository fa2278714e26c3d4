"""DuckDB's side of `wearflow-bench sql`: the time-range aggregate over the archive, timed.

Usage: duckdb_time_range.py ARCHIVE_DIR FROM_TS TO_TS; prints JSON (groups, p50_ms, runs).
"""

import json
import sys
import time

import duckdb


def main() -> None:
    archive, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    query = """
        SELECT machine_id, count(*), avg(remaining_mm), max(load_kn)
        FROM read_parquet(?, hive_partitioning = true)
        WHERE ts >= CAST(? AS TIMESTAMPTZ) AND ts < CAST(? AS TIMESTAMPTZ)
        GROUP BY machine_id
    """
    args = [f"{archive}/telemetry/**/*.parquet", start, end]
    times = []
    groups = 0
    for _ in range(5):
        started = time.perf_counter()
        groups = len(con.execute(query, args).fetchall())
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    print(json.dumps({"groups": groups, "p50_ms": times[len(times) // 2], "runs_ms": times}))


if __name__ == "__main__":
    main()
