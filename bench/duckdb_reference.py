"""Reference computation of both KPIs with DuckDB, written as a DuckDB user would.

Run as its own process so that its time and memory are measured apart:

    python bench/duckdb_reference.py --top-n 3 --output rows.json FILE...

Per file, one ``read_csv`` (msisdn as VARCHAR and trimmed, integers BIGINT)
into a temporary table feeds a ``GROUP BY service_id`` of the byte totals
and a ``SELECT DISTINCT cell_id, msisdn``, both kept in temporary tables; a
file over 1 GiB is not held whole, each of the two queries reads it instead.
The five-minute and hourly top-N rows then come from plain SQL over those
(``COUNT(DISTINCT)`` for the hour), one hour at a time, as an hourly job
would. DuckDB runs on all cores (its default).
It imports nothing from the project, so it is an independent check.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import duckdb

_NAME = re.compile(r"^[^/]+-(\d{13})\.\d+\.csv(\.gz)?$")
_INTERVAL_S = 300
_HOUR_S = 3600
_COLUMNS = {
    "msisdn": "VARCHAR",
    "cell_id": "BIGINT",
    "service_id": "BIGINT",
    "bytes_uplink": "BIGINT",
    "bytes_downlink": "BIGINT",
}
_OPTIONS = "header = true, columns = ?"
_RECORD = "trim(msisdn) AS msisdn, cell_id, service_id, bytes_uplink, bytes_downlink"
# A file up to this size is parsed once and held in memory; a bigger one is streamed twice.
_READ_ONCE_MAX_BYTES = 1 << 30


def interval_start(path: Path) -> int:
    """Epoch seconds of the interval a file belongs to (closing stamp floored, minus 5 min)."""
    match = _NAME.match(path.name)
    if match is None:
        raise SystemExit(f"not a contract file name: {path.name}")
    closed_s = int(match.group(1)) // 1000
    return closed_s - closed_s % _INTERVAL_S - _INTERVAL_S


def compute(files: list[Path], top_n: int) -> list[list[object]]:
    """All five-minute and hourly top-N rows as [kpi, start_epoch_s, interval, key, value]."""
    con = duckdb.connect()
    by_hour: dict[int, list[Path]] = defaultdict(list)
    for path in files:
        start = interval_start(path)
        by_hour[start - start % _HOUR_S].append(path)
    rows: list[list[object]] = []
    # An hour at a time, as a job run every hour would: memory does not grow with the hours.
    for _, hour_files in sorted(by_hour.items()):
        rows.extend(hour_rows(con, sorted(hour_files), top_n))
    return rows


def hour_rows(con: duckdb.DuckDBPyConnection, files: list[Path], top_n: int) -> list[list[object]]:
    """The top-N rows of one hour's files: each interval's and the hour's."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE services (start BIGINT, service_id BIGINT, total HUGEINT);"
        "CREATE OR REPLACE TEMP TABLE pairs (start BIGINT, cell_id BIGINT, msisdn VARCHAR);"
    )
    for path in files:
        start = interval_start(path)
        if path.stat().st_size <= _READ_ONCE_MAX_BYTES:
            # Parsed once into a temporary table that both aggregates scan.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE records AS "
                f"SELECT {_RECORD} FROM read_csv(?, {_OPTIONS})",
                [str(path), _COLUMNS],
            )
            source, parameters = "records", []
        else:
            # Too big to hold whole: each aggregate streams the file itself.
            source = f"(SELECT {_RECORD} FROM read_csv(?, {_OPTIONS}))"
            parameters = [str(path), _COLUMNS]
        con.execute(
            "INSERT INTO services SELECT ?, service_id, SUM(bytes_uplink + bytes_downlink) "
            f"FROM {source} GROUP BY service_id",
            [start, *parameters],
        )
        con.execute(
            f"INSERT INTO pairs SELECT DISTINCT ?, cell_id, msisdn FROM {source}",
            [start, *parameters],
        )
    con.execute("DROP TABLE IF EXISTS records")

    rows: list[list[object]] = []
    queries = {
        # (kpi, interval): SQL giving (start, key, value); several parts of one interval add up.
        (1, 1): "SELECT start, service_id, SUM(total) FROM services GROUP BY ALL",
        (1, 2): (
            f"SELECT start - start % {_HOUR_S}, service_id, SUM(total) FROM services GROUP BY ALL"
        ),
        (2, 1): "SELECT start, cell_id, COUNT(DISTINCT msisdn) FROM pairs GROUP BY ALL",
        (2, 2): (
            f"SELECT start - start % {_HOUR_S}, cell_id, COUNT(DISTINCT msisdn) FROM pairs "
            "GROUP BY ALL"
        ),
    }
    for (kpi, interval), query in queries.items():
        # The contract's tie-break: the larger value first, then the smaller key.
        ranked = con.execute(
            f"""
            SELECT s, k, v FROM (
                SELECT s, k, v, ROW_NUMBER() OVER (PARTITION BY s ORDER BY v DESC, k ASC) AS r
                FROM ({query}) AS q(s, k, v)
            ) WHERE r <= ? ORDER BY s, r
            """,
            [top_n],
        ).fetchall()
        rows.extend([kpi, int(s), interval, int(k), int(v)] for s, k, v in ranked)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-n", type=int, default=3, help="Rows per interval and KPI.")
    parser.add_argument("--output", type=Path, required=True, help="Where to write the rows.")
    parser.add_argument("files", type=Path, nargs="+", help="Raw files in the input contract.")
    args = parser.parse_args()
    args.output.write_text(json.dumps(compute(args.files, args.top_n)))


if __name__ == "__main__":
    main()
