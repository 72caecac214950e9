"""Read load on the API while update_network_stats writes, over a year of rows.

Builds a SQLite database holding a year of five-minute and hourly rows of both
KPIs (bulk inserted), serves it with gunicorn on 127.0.0.1, holds a steady
read load with wrk on /api/KPIs/1/ and /api/KPIs/2/ with one-day filters while
update_network_stats processes new files, then prints errors, p50/p99 latency
and requests per second. Loopback only, bounded in time. Run: make load
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
TOP_N = 3

LUA = r"""
-- One-day windows over the year, alternating the two KPIs.
math.randomseed(os.time())
local token = os.getenv("KPI_TOKEN")
local year_start = %(year_start)d
request = function()
  local day = math.random(0, 363)
  local from = os.date("!%%Y-%%m-%%dT00:00:00Z", year_start + day * 86400)
  local to = os.date("!%%Y-%%m-%%dT00:00:00Z", year_start + (day + 1) * 86400)
  local kpi = math.random(1, 2)
  local path = "/api/KPIs/" .. kpi .. "/?interval_start_timestamp__gte=" .. from
    .. "&interval_end_timestamp__lte=" .. to
  return wrk.format("GET", path, {["Authorization"] = "Token " .. token})
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare_database(kind: str, *, mysql_url: str, work: Path, suffix: str) -> str:
    """A DATABASE_URL for a new, empty database: a SQLite file in ``work``, or a MariaDB database.

    The MariaDB database is named after the one in ``mysql_url`` plus ``suffix`` and is
    dropped first if a previous run left it behind.
    """
    if kind == "sqlite":
        return f"sqlite:///{work / 'load.sqlite3'}"
    url = mysql_url.rstrip("/") + suffix
    _mysql_admin(url, "DROP DATABASE IF EXISTS `{name}`")
    _mysql_admin(url, "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return url


def drop_database(url: str) -> None:
    if url.startswith("mysql"):
        _mysql_admin(url, "DROP DATABASE IF EXISTS `{name}`")


def _mysql_admin(url: str, statement: str) -> None:
    import MySQLdb

    parts = urlsplit(url)
    connection = MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
    )
    try:
        connection.cursor().execute(statement.format(name=unquote(parts.path.lstrip("/"))))
    finally:
        connection.close()


def setup_django(database_url: str, input_dir: Path) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["KPI_INPUT_DIR"] = str(input_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "network_analysis.settings")
    import django

    django.setup()


def build_year(*, days: int) -> tuple[int, float]:
    """Insert ``days`` days of five-minute and hourly rows of both KPIs; return the row count."""
    from django.core.management import call_command
    from django.db import connection, transaction

    from kpis.models import CellUniqueUsers, ServiceTrafficVolume

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    rows = 0
    for model, key, value in (
        (ServiceTrafficVolume, "service_id", "total_bytes"),
        (CellUniqueUsers, "cell_id", "number_of_unique_users"),
    ):
        table = model._meta.db_table
        quote, adapt = connection.ops.quote_name, connection.ops.adapt_datetimefield_value
        sql = (
            f"INSERT INTO {quote(table)} (interval_start_timestamp, interval_end_timestamp, "
            f"{quote('interval')}, {key}, {value}) VALUES (%s, %s, %s, %s, %s)"
        )
        batch: list[tuple[object, ...]] = []
        for step, interval, count in (
            (timedelta(minutes=5), 1, days * 288),
            (timedelta(hours=1), 2, days * 24),
        ):
            for index in range(count):
                start = YEAR_START + index * step
                for rank in range(TOP_N):
                    batch.append(
                        (
                            adapt(start),
                            adapt(start + step),
                            interval,
                            1 + (index + rank) % 500,
                            10**9 * (TOP_N - rank) + index,
                        )
                    )
                if len(batch) >= 30_000:
                    with transaction.atomic(), connection.cursor() as cursor:
                        cursor.executemany(sql, batch)
                    rows += len(batch)
                    batch.clear()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
        rows += len(batch)
    return rows, time.perf_counter() - started


def query_plan() -> str:
    """How the database runs the API's one-day query (it must use an index)."""
    from kpis.api.filters import IntervalFilter
    from kpis.api.views import KpiRowsView

    view = KpiRowsView(kwargs={"kpi_id": "1"})
    queryset = IntervalFilter(
        {
            "interval_start_timestamp__gte": "2025-06-01T00:00:00Z",
            "interval_end_timestamp__lte": "2025-06-02T00:00:00Z",
        },
        queryset=view.get_queryset(),
    ).qs
    return queryset.explain()


def api_token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username="load")
    return str(Token.objects.get_or_create(user=user)[0].key)


def write_input(input_dir: Path, *, hours: int, rows: int) -> int:
    from kpis.sampledata import Population, write_sample_files

    files = write_sample_files(
        input_dir,
        start=YEAR_START + timedelta(days=365),
        intervals=hours * 12,
        parts=2,
        rows=rows,
        population=Population(subscribers=50_000, cells=2_000, services=300, seed=3),
    )
    return len(files)


def parse_wrk(output: str) -> dict[str, str]:
    def find(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, output)
        return match.group(1) if match else default

    return {
        "requests": find(r"(\d+) requests in"),
        "rps": find(r"Requests/sec:\s+([\d.]+)"),
        "p50": find(r"50%\s+([\d.]+\w+)", "?"),
        "p99": find(r"99%\s+([\d.]+\w+)", "?"),
        "non_2xx": find(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": str(
            sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30, help="Seconds of load (default 30).")
    parser.add_argument("--connections", type=int, default=4, help="Open connections (4).")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2).")
    parser.add_argument("--days", type=int, default=365, help="Days of rows in the database.")
    parser.add_argument("--update-hours", type=int, default=6, help="Hours of new files.")
    parser.add_argument("--rows", type=int, default=20_000, help="Rows per new file.")
    parser.add_argument(
        "--database", choices=("sqlite", "mysql"), default="sqlite", help="Database (sqlite)."
    )
    parser.add_argument(
        "--mysql-url",
        default="mysql://root@127.0.0.1:3306/network_analysis",
        help="MariaDB/MySQL server and base name; the run uses <name>_load and drops it.",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (make load does it on Debian as root)")
        return 2

    work = Path(tempfile.mkdtemp(prefix="kpi-load-"))
    input_dir = work / "input"
    database_url = prepare_database(
        args.database, mysql_url=args.mysql_url, work=work, suffix="_load"
    )
    setup_django(database_url, input_dir)
    try:
        return measure(args, work=work, input_dir=input_dir)
    finally:
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, *, work: Path, input_dir: Path) -> int:
    """Build the rows, serve them, load them while the update runs; 0 when all went well."""
    rows, seconds = build_year(days=args.days)
    print(f"database: {rows} KPI rows ({args.days} days, 5-minute and hourly) in {seconds:.0f} s")
    plan = query_plan()
    print(f"one-day query plan: {plan}")
    uses_index = (
        "INDEX" in plan.upper() and "SCAN " not in plan.upper().replace("SCAN USING", "")
        if args.database == "sqlite"
        else " range " in f" {plan.lower()} "
    )
    files = write_input(input_dir, hours=args.update_hours, rows=args.rows)
    token = api_token()
    script = work / "kpis.lua"
    script.write_text(LUA % {"year_start": int(YEAR_START.timestamp())})

    env = {
        **os.environ,
        "KPI_TOKEN": token,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        # The bench measures the service, not the throttle.
        "KPI_API_THROTTLE_USER": "100000000/minute",
        "KPI_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "network_analysis.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--chdir",
            str(ROOT),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("gunicorn did not start")
                    return 1
                time.sleep(0.2)

        # Warm every worker up (imports, first connection) before measuring.
        for _ in range(4 * args.workers):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/KPIs/1/?interval=2",
                headers={"Authorization": f"Token {token}"},
            )
            urllib.request.urlopen(request, timeout=30).read()
        load = subprocess.Popen(
            [
                "wrk",
                "--latency",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(min(5, args.duration / 4))  # let the load settle, then write meanwhile
        update_started = time.perf_counter()
        update = subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "update_network_stats",
                "--no-progress",
                "--now",
                (YEAR_START + timedelta(days=366)).isoformat(),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=args.duration * 20,
        )
        update_seconds = time.perf_counter() - update_started
        wrk_output, _ = load.communicate(timeout=args.duration + 60)
    finally:
        server.terminate()
        server.wait(timeout=30)

    figures = parse_wrk(wrk_output)
    errors = int(figures["non_2xx"]) + int(figures["socket_errors"])
    print(wrk_output)
    print(
        f"update_network_stats during the load: exit {update.returncode}, {files} files, "
        f"{update_seconds:.1f} s: {update.stdout.strip()}"
    )
    print(
        f"RESULT database={args.database} requests={figures['requests']} errors={errors} "
        f"rps={figures['rps']} "
        f"p50={figures['p50']} p99={figures['p99']} index_used={'yes' if uses_index else 'no'} "
        f"update_exit={update.returncode}"
    )
    return 0 if errors == 0 and update.returncode == 0 and uses_index else 1


if __name__ == "__main__":
    sys.exit(main())
