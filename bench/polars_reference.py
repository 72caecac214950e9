"""Reference computation of both KPIs with Polars, written as a Polars user would.

Run as its own process so that its time and memory are measured apart:

    python bench/polars_reference.py --top-n 3 --output rows.json FILE...

Per file, one lazy ``scan_csv`` (msisdn as String and trimmed, integers
Int64) feeds a ``group_by("service_id")`` of the byte totals and a
``unique()`` of the (cell_id, msisdn) pairs, collected together so the file
is scanned once; the five-minute and hourly top-N rows then come from
``group_by`` over those (``n_unique`` for the hour), one hour at a time, as
an hourly job would. Polars runs on all cores with its default (streaming)
engine. It imports nothing from the project.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import polars as pl

_NAME = re.compile(r"^[^/]+-(\d{13})\.\d+\.csv(\.gz)?$")
_INTERVAL_S = 300
_HOUR_S = 3600
_SCHEMA = {
    "msisdn": pl.String,
    "cell_id": pl.Int64,
    "service_id": pl.Int64,
    "bytes_uplink": pl.Int64,
    "bytes_downlink": pl.Int64,
}


def interval_start(path: Path) -> int:
    """Epoch seconds of the interval a file belongs to (closing stamp floored, minus 5 min)."""
    match = _NAME.match(path.name)
    if match is None:
        raise SystemExit(f"not a contract file name: {path.name}")
    closed_s = int(match.group(1)) // 1000
    return closed_s - closed_s % _INTERVAL_S - _INTERVAL_S


def top(frame: pl.DataFrame, key: str, value: str, top_n: int) -> pl.DataFrame:
    """The top ``top_n`` rows of each start: the larger value first, then the smaller key."""
    return (
        frame.sort(["start", value, key], descending=[False, True, False])
        .group_by("start", maintain_order=True)
        .head(top_n)
        .select("start", key, value)
    )


def compute(files: list[Path], top_n: int) -> list[list[object]]:
    """All five-minute and hourly top-N rows as [kpi, start_epoch_s, interval, key, value]."""
    by_hour: dict[int, list[Path]] = defaultdict(list)
    for path in files:
        start = interval_start(path)
        by_hour[start - start % _HOUR_S].append(path)
    rows: list[list[object]] = []
    # An hour at a time, as a job run every hour would: memory does not grow with the hours.
    for _, hour_files in sorted(by_hour.items()):
        rows.extend(hour_rows(sorted(hour_files), top_n))
    return rows


def hour_rows(files: list[Path], top_n: int) -> list[list[object]]:
    """The top-N rows of one hour's files: each interval's and the hour's."""
    services: list[pl.DataFrame] = []
    pairs: list[pl.DataFrame] = []
    for path in files:
        start = interval_start(path)
        records = pl.scan_csv(path, schema=_SCHEMA).with_columns(pl.col("msisdn").str.strip_chars())
        by_service = records.group_by("service_id").agg(
            (pl.col("bytes_uplink") + pl.col("bytes_downlink")).sum().alias("total")
        )
        distinct_pairs = records.select("cell_id", "msisdn").unique()
        totals, cell_pairs = pl.collect_all([by_service, distinct_pairs])
        services.append(totals.with_columns(start=pl.lit(start, pl.Int64)))
        pairs.append(cell_pairs.with_columns(start=pl.lit(start, pl.Int64)))

    all_services = pl.concat(services)
    all_pairs = pl.concat(pairs)
    hour = (pl.col("start") - pl.col("start") % _HOUR_S).alias("start")
    tables = {
        # Several parts of one interval add up; distinct counts are over the whole interval.
        (1, 1): all_services.group_by("start", "service_id").agg(pl.col("total").sum()),
        (1, 2): all_services.group_by(hour, "service_id").agg(pl.col("total").sum()),
        (2, 1): all_pairs.group_by("start", "cell_id").agg(
            pl.col("msisdn").n_unique().alias("total")
        ),
        (2, 2): all_pairs.group_by(hour, "cell_id").agg(pl.col("msisdn").n_unique().alias("total")),
    }
    rows: list[list[object]] = []
    for (kpi, interval), table in tables.items():
        key = "service_id" if kpi == 1 else "cell_id"
        for s, k, v in top(table, key, "total", top_n).iter_rows():
            rows.append([kpi, int(s), interval, int(k), int(v)])
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
