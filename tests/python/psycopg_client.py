"""The Postgres wire protocol through psycopg 3 (extended protocol, server-side prepared
statements with parameters), as a Python analyst would use it.

Usage: psycopg_client.py HOST PORT; prints a JSON report and exits non-zero on a failed check.
"""

import json
import sys

import psycopg
from psycopg import errors


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    report = {}
    with psycopg.connect(host=host, port=port, user="wearflow", dbname="wearflow", autocommit=True) as conn:
        with conn.cursor() as cur:
            # Extended protocol: parse/bind/execute with typed parameters, prepared on the server.
            query = (
                "SELECT device_id, remaining_mm FROM tooth_wear "
                "WHERE machine_id = %s AND remaining_mm < %s ORDER BY device_id"
            )
            cur.execute(query, ("M0001", 1000.0), prepare=True)
            first = cur.fetchall()
            cur.execute(query, ("M0001", 1000.0), prepare=True)
            again = cur.fetchall()
            assert first == again and first, f"prepared statement answers differ: {first} {again}"
            report["teeth_m0001"] = [[d, float(mm)] for d, mm in first]

            # A join between two live views.
            cur.execute(
                "SELECT m.machine_id, count(t.device_id) FROM machine_health m "
                "JOIN tooth_wear t ON t.machine_id = m.machine_id "
                "WHERE m.teeth_known >= %s GROUP BY m.machine_id ORDER BY m.machine_id",
                (1,),
            )
            report["teeth_per_machine"] = [[m, int(n)] for m, n in cur.fetchall()]

            # Live with history, binary results for timestamps.
            cur.execute(
                "SELECT count(*) FROM telemetry_history h JOIN tooth_wear t "
                "ON t.device_id = h.device_id WHERE h.ts <= as_of()",
                binary=True,
            )
            report["history_rows_joined"] = int(cur.fetchone()[0])

            # A syntax error carries SQLSTATE 42601 and leaves the connection usable.
            try:
                cur.execute("SELEC 1")
                raise AssertionError("a syntax error was accepted")
            except errors.SyntaxError as error:
                assert error.sqlstate == "42601", error.sqlstate
                report["syntax_error"] = error.sqlstate

            # Files outside the archive cannot be read.
            refused = {}
            for name, sql in [
                ("path_as_table", "SELECT * FROM '/etc/passwd'"),
                ("external_table", "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'"),
            ]:
                try:
                    cur.execute(sql)
                    rows = cur.fetchall()
                    raise AssertionError(f"{name} was not refused: {rows[:3]}")
                except psycopg.Error as error:
                    refused[name] = error.sqlstate
            report["refused"] = refused

            cur.execute("SELECT 1")
            assert cur.fetchone()[0] == 1, "connection unusable after errors"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
