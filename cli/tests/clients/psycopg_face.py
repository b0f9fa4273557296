"""Queries Projector's Postgres face with psycopg 3 (cli/tests/pg.rs runs this).

Usage: psycopg_face.py PORT KEYS_JSON [--tls TOKEN]

Prints one JSON object: the rows of key lookups with server-side parameters (prepared
after the first execution), the count of accounts with a balance over 1000 (an integer
parameter sent in binary), one value of each column type as psycopg reads it, the
SQLSTATE of a refused DDL, a syntax error and a missing view, and a query's answer after
those errors.
"""

import json
import sys

import psycopg


def main():
    port = int(sys.argv[1])
    keys = json.loads(sys.argv[2])
    params = dict(host="127.0.0.1", port=port, user="psycopg", dbname="bank", connect_timeout=10)
    if len(sys.argv) > 3 and sys.argv[3] == "--tls":
        params.update(sslmode="require", password=sys.argv[4])
    else:
        params.update(sslmode="disable")
    out = {}
    # autocommit off, as applications run it: psycopg sends BEGIN before the first
    # statement and ROLLBACK after an error.
    with psycopg.connect(**params) as conn:
        rows = {}
        with conn.cursor() as cur:
            for key in keys:
                cur.execute(
                    "SELECT owner, balance, deposits FROM accounts WHERE account_id = %s",
                    (key,),
                    prepare=True,
                )
                row = cur.fetchone()
                rows[key] = list(row) if row else None
            out["rows"] = rows
            cur.execute("SELECT count(*) FROM accounts WHERE balance > %b", (1000,))
            out["richer"] = cur.fetchone()[0]
            cur.execute(
                "SELECT CAST(1 AS SMALLINT) AS i2, CAST(2 AS INT) AS i4, CAST(3 AS BIGINT) AS i8, "
                "CAST(2.25 AS DOUBLE) AS f8, true AS b, 'ü' AS t, DATE '2024-02-29' AS d, "
                "to_timestamp_millis(1700000000123) AS ts, "
                "to_timestamp_millis(1700000000123) AT TIME ZONE 'UTC' AS tstz, "
                "X'00ff' AS by, make_array(1, 2, 3) AS arr, CAST(NULL AS BIGINT) AS null"
            )
            row = cur.fetchone()
            names = [d.name for d in cur.description]
            values = {}
            for name, value in zip(names, row):
                if isinstance(value, memoryview):
                    value = bytes(value)
                if name == "by":
                    values[name] = repr(value)
                else:
                    values[name] = str(value)
            out["types"] = values
        errors = {}
        for name, sql in [
            ("ddl", "CREATE TABLE t (a int)"),
            ("syntax", "SELECT (1"),
            ("missing", "SELECT * FROM no_such_view"),
        ]:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                errors[name] = None
            except psycopg.Error as e:
                errors[name] = e.sqlstate
                conn.rollback()
        out["errors"] = errors
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            out["after_errors"] = cur.fetchone()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
