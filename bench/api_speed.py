"""Milliseconds per one-day API request against the raw SQL of the same query.

Builds a database of 30 days of five-minute and hourly rows of both KPIs (936
rows per KPI and day), then times, in one process with Django's test client:
the view's own SQL through a plain cursor, the JSON request and the CSV request
(authentication, throttling, filters, serialising, rendering, middleware).
The three are timed in turn (SQL, JSON, CSV, SQL, ...), so that a machine whose
speed drifts slows all three alike. Prints the medians of ``--repeat`` rounds and
the ratio to the raw SQL.
Run: .venv/bin/python bench/api_speed.py [--database mysql --mysql-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import YEAR_START, build_year, drop_database, prepare_database, setup_django

DAY = "2025-01-15T00:00:00Z", "2025-01-16T00:00:00Z"


def timed_in_turn(
    actions: dict[str, Callable[[], object]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time in ms of each action, run in turn ``repeat`` times.

    On a busy machine the CPU time is the steadier figure; with SQLite it includes
    the database's work, with MariaDB only the client's.
    """
    for action in actions.values():
        action()  # warm caches, connections, imports
    wall: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            action()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return {
        name: (statistics.median(wall[name]) * 1000, statistics.median(cpu[name]) * 1000)
        for name in actions
    }


def measure(kpi: int, repeat: int) -> list[tuple[str, tuple[float, float], int]]:
    """(what, (wall ms, CPU ms), bytes or rows) for the raw SQL, JSON and CSV."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from kpis.api.filters import IntervalFilter
    from kpis.api.views import KpiRowsView

    start, end = DAY
    query = {"interval_start_timestamp__gte": start, "interval_end_timestamp__lte": end}
    view = KpiRowsView(kwargs={"kpi_id": str(kpi)})
    sql, params = IntervalFilter(query, queryset=view.get_queryset()).qs.query.sql_with_params()

    def raw() -> list[tuple[object, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    user, _ = get_user_model().objects.get_or_create(username="speed")
    token = Token.objects.get_or_create(user=user)[0].key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    path = (
        f"/api/KPIs/{kpi}/?interval_start_timestamp__gte={start}&interval_end_timestamp__lte={end}"
    )

    def get(suffix: str) -> Callable[[], bytes]:
        def request() -> bytes:
            response = client.get(path + suffix)
            assert response.status_code == 200, response.content[:300]
            return bytes(response.content)

        return request

    times = timed_in_turn({"raw SQL": raw, "JSON": get(""), "CSV": get("&format=csv")}, repeat)
    return [
        ("raw SQL", times["raw SQL"], len(raw())),
        ("JSON", times["JSON"], len(get("")())),
        ("CSV", times["CSV"], len(get("&format=csv")())),
    ]


def database_arguments(parser: argparse.ArgumentParser, *, suffix: str, repeat: int) -> None:
    """The options of a benchmark over :func:`days_of_rows`'s database."""
    parser.add_argument("--database", choices=("sqlite", "mysql"), default="sqlite")
    parser.add_argument(
        "--mysql-url",
        default="mysql://root@127.0.0.1:3306/network_analysis",
        help=f"MariaDB/MySQL server and base name; the run uses <name>{suffix} and drops it.",
    )
    parser.add_argument("--days", type=int, default=30, help="Days of rows (30).")
    parser.add_argument("--repeat", type=int, default=repeat, help=f"Timed rounds ({repeat}).")


@contextlib.contextmanager
def days_of_rows(args: argparse.Namespace, *, suffix: str) -> Iterator[int]:
    """Django set up on a new database holding ``args.days`` days of rows; yields their count.

    The user rate is unlimited, so that requests are measured, not refused. The
    database is dropped at the end.
    """
    with tempfile.TemporaryDirectory(prefix=f"kpi{suffix.replace('_', '-')}-") as folder:
        work = Path(folder)
        url = prepare_database(args.database, mysql_url=args.mysql_url, work=work, suffix=suffix)
        os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"  # the test client's host
        setup_django(url, work / "input")
        try:
            from django.conf import settings

            settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"] = "100000000/minute"
            rows, _ = build_year(days=args.days)
            yield rows
        finally:
            from django.db import connection

            connection.close()
            drop_database(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    database_arguments(parser, suffix="_speed", repeat=100)
    args = parser.parse_args()

    with days_of_rows(args, suffix="_speed") as rows:
        print(
            f"{args.database}: {rows} KPI rows ({args.days} days from {YEAR_START:%Y-%m-%d}); "
            f"one day = {DAY[0]} to {DAY[1]}, medians of {args.repeat} rounds"
        )
        for kpi in (1, 2):
            figures = measure(kpi, args.repeat)
            sql_wall, sql_cpu = figures[0][1]
            for what, (wall, cpu), size in figures:
                unit = "rows" if what == "raw SQL" else "bytes"
                print(
                    f"  KPI {kpi} {what:8} wall {wall:7.2f} ms ({wall / sql_wall:5.2f}x raw)"
                    f"  CPU {cpu:7.2f} ms ({cpu / sql_cpu:5.2f}x)  {size} {unit}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
