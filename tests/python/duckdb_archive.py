"""An independent reader of wearflow's Parquet archive: DuckDB computes an aggregate over the
Hive-partitioned telemetry files.

Usage: duckdb_archive.py ARCHIVE_DIR FROM_TS TO_TS; prints the aggregate as JSON.
"""

import json
import sys

import duckdb


def main() -> None:
    archive, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    row = con.execute(
        """
        SELECT count(*), count(DISTINCT device_id), min(remaining_mm), max(remaining_mm),
               sum(load_kn), count(DISTINCT hour)
        FROM read_parquet(?, hive_partitioning = true)
        WHERE ts >= CAST(? AS TIMESTAMPTZ) AND ts < CAST(? AS TIMESTAMPTZ)
        """,
        [f"{archive}/telemetry/**/*.parquet", start, end],
    ).fetchone()
    keys = ["rows", "devices", "min_remaining_mm", "max_remaining_mm", "sum_load_kn", "hours"]
    print(json.dumps(dict(zip(keys, [float(v) if v is not None else None for v in row]))))


if __name__ == "__main__":
    main()
