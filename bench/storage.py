"""Benchmark: database bytes with and without the restatement window.

1. Measured: the benchmark hour (12 files x 500,000 rows) processed by
   ``update_network_stats``; raw CSV bytes, stored state bytes, database bytes in use;
   then a run after the hour became final, and the bytes in use again.
2. Measured: 7 simulated days of small files (one update run per day), once with
   ``KPI_RESTATE_DAYS=3`` and once with a window longer than the run (nothing dropped),
   printing after each day the state bytes, the hours holding states and the bytes in use.
3. Computed from 1 and 2: database bytes after N days at the benchmark volume.

    python bench/storage.py                         # SQLite under bench/out/storage/
    python bench/storage.py --database-url mysql://root@127.0.0.1:3306/na_bench_storage
    python bench/storage.py --skip-hour             # only parts 2 and 3 (needs an earlier part 1)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "storage"
START = datetime(2021, 7, 18, tzinfo=UTC)
SUBSCRIBER_KEY = "bench-subscriber-key-0123456789abcdef0123456789"
WINDOW_DAYS = 3
NO_WINDOW_DAYS = 3650


def env_for(database_url: str, window_days: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KPI_SUBSCRIBER_KEY": SUBSCRIBER_KEY,
        "KPI_RESTATE_DAYS": str(window_days),
        "KPI_LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "network_analysis.settings",
    }


def database_reset(database_url: str) -> None:
    """An empty, migrated database."""
    from django.db import connection

    from network_analysis.env import database_from_url

    connection.close()  # this process's own connection, to the database about to go

    db = database_from_url(database_url, base_dir=ROOT)
    if db["ENGINE"].endswith("mysql"):
        import MySQLdb

        connection = MySQLdb.connect(
            host=db["HOST"], port=int(db["PORT"] or 3306), user=db["USER"], passwd=db["PASSWORD"]
        )
        cursor = connection.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{db['NAME']}`")
        cursor.execute(f"CREATE DATABASE `{db['NAME']}` CHARACTER SET utf8mb4")
        connection.close()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(db["NAME"] + suffix).unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        env=env_for(database_url, WINDOW_DAYS),
        check=True,
        cwd=ROOT,
    )


def update(database_url: str, folder: Path, now: datetime, window_days: int) -> float:
    began = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "update_network_stats",
            "--now",
            now.isoformat(),
            "--input-dir",
            str(folder),
            "--no-progress",
            "-v",
            "0",
        ],
        env=env_for(database_url, window_days),
        check=True,
        cwd=ROOT,
    )
    return time.perf_counter() - began


def bytes_in_use() -> int:
    """Bytes the database's tables and indexes occupy (free pages not counted)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            figures = []
            for pragma in ("page_count", "freelist_count", "page_size"):
                cursor.execute(f"PRAGMA {pragma}")
                figures.append(cursor.fetchone()[0])
            return (figures[0] - figures[1]) * figures[2]
        cursor.execute("SHOW TABLES")
        for (table,) in cursor.fetchall():
            cursor.execute(f"ANALYZE TABLE `{table}`")
            cursor.fetchall()
        cursor.execute(
            "SELECT SUM(data_length + index_length) FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        )
        return int(cursor.fetchone()[0])


def state_figures() -> tuple[int, int]:
    """Bytes of the states referenced (kept in the state store), and the hours holding states."""
    from django.db.models import Sum

    from kpis.models import FileState, IntervalLedger, IntervalType

    state = FileState.objects.aggregate(total=Sum("size"))["total"] or 0
    hours = IntervalLedger.objects.filter(interval=IntervalType.ONE_HOUR, states_kept=True)
    return state, hours.count()


def benchmark_hour(database_url: str) -> dict[str, float]:
    """Part 1, measured: the benchmark hour, while its states are kept and once it is final."""
    from kpis.sampledata import Population, write_sample_files

    folder = OUT / "hour-12x500000"
    if len(list(folder.glob("*.csv"))) != 12:
        write_sample_files(
            folder,
            start=START,
            intervals=12,
            parts=1,
            rows=500_000,
            population=Population(subscribers=200_000, cells=5_000, services=60, seed=1),
        )
    raw = sum(path.stat().st_size for path in folder.glob("*.csv"))
    database_reset(database_url)
    empty = bytes_in_use()
    seconds = update(database_url, folder, START + timedelta(hours=1, minutes=5), WINDOW_DAYS)
    state, _ = state_figures()
    kept = bytes_in_use()
    update(database_url, folder, START + timedelta(days=WINDOW_DAYS, hours=1, minutes=5), 3)
    final = bytes_in_use()
    figures = {
        "raw_bytes": raw,
        "state_bytes": state,
        "db_bytes_states_kept": kept - empty,
        "db_bytes_final": final - empty,
        "update_seconds": seconds,
    }
    print("1. the benchmark hour, measured (12 files x 500,000 rows):")
    print(f"   raw CSV bytes                          {raw:>14,}")
    print(f"   stored state bytes                     {state:>14,}  ({state / raw:.1%} of raw)")
    print(f"   database bytes, states kept            {kept - empty:>14,}")
    print(f"   database bytes, hour final             {final - empty:>14,}")
    print(f"   update_network_stats                   {seconds:>13.1f} s")
    return figures


def simulated_days(database_url: str, days: int, rows: int) -> dict[int, list[dict[str, int]]]:
    """Part 2, measured: ``days`` days of one small file per interval, a run per day."""
    from kpis.sampledata import Population, write_sample_files

    folder = OUT / f"days-{days}x288x{rows}"
    if len(list(folder.glob("*.csv"))) != days * 288:
        write_sample_files(
            folder,
            start=START,
            intervals=days * 288,
            parts=1,
            rows=rows,
            population=Population(subscribers=20_000, cells=500, services=30, seed=1),
        )
    by_window: dict[int, list[dict[str, int]]] = {}
    for window in (WINDOW_DAYS, NO_WINDOW_DAYS):
        database_reset(database_url)
        empty = bytes_in_use()
        rows_out = []
        for day in range(1, days + 1):
            update(database_url, folder, START + timedelta(days=day, minutes=5), window)
            state, hours = state_figures()
            rows_out.append(
                {"day": day, "state": state, "hours": hours, "db": bytes_in_use() - empty}
            )
        by_window[window] = rows_out
    label = {WINDOW_DAYS: f"{WINDOW_DAYS}-day window", NO_WINDOW_DAYS: "no window"}
    print(f"\n2. {days} simulated days, one {rows}-row file per interval, measured:")
    print(f"   {'day':>3} | {'window':<13} | {'state bytes':>13} | {'hours':>5} | {'db bytes':>13}")
    for window, figures in by_window.items():
        for row in figures:
            print(
                f"   {row['day']:>3} | {label[window]:<13} | {row['state']:>13,} | "
                f"{row['hours']:>5} | {row['db']:>13,}"
            )
    return by_window


def computed(hour: dict[str, float], days: dict[int, list[dict[str, int]]]) -> None:
    """Part 3: database bytes after N days at the benchmark volume, from parts 1 and 2."""
    windowed = days[WINDOW_DAYS]
    # What stays per day once states are gone: KPI rows, ledgers, file records.
    last = windowed[-1]
    rest_per_day = (last["db"] - last["state"]) / last["day"]
    state_per_hour = hour["db_bytes_states_kept"] - hour["db_bytes_final"]
    kept_hours = WINDOW_DAYS * 24 + 1  # the window, plus the hour that ended last
    print("\n3. computed for the benchmark volume (12 x 500,000 rows per hour):")
    print(f"   database bytes per hour of states      {state_per_hour:>14,.0f}  (part 1)")
    print(f"   database bytes per day without states  {rest_per_day:>14,.0f}  (part 2)")
    print(f"   {'days':>5} | {'no window':>17} | {f'{WINDOW_DAYS}-day window':>17}")
    for n in (1, 3, 7, 30, 365):
        without = n * (rest_per_day + 24 * state_per_hour)
        with_window = n * rest_per_day + min(n * 24, kept_hours) * state_per_hour
        print(f"   {n:>5} | {without / 1e9:>15.2f} GB | {with_window / 1e9:>15.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=f"sqlite:///{OUT / 'db.sqlite3'}")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows", type=int, default=300, help="Rows per file in part 2.")
    parser.add_argument("--skip-hour", action="store_true", help="Reuse part 1's saved figures.")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    os.environ.update(env_for(args.database_url, WINDOW_DAYS))
    import django

    django.setup()
    from django.db import connection

    print(f"database: {connection.vendor}")
    saved = OUT / f"hour-{connection.vendor}.json"
    if args.skip_hour:
        hour = json.loads(saved.read_text())
    else:
        hour = benchmark_hour(args.database_url)
        saved.write_text(json.dumps(hour))
    days = simulated_days(args.database_url, args.days, args.rows)
    computed(hour, days)


if __name__ == "__main__":
    main()
