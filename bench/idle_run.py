"""Benchmark: an update run with nothing new, over a folder of 100,000 processed files.

History is simulated, not processed: header-only files named by the contract (one
per five-minute interval, about 347 days), and for each a ledger record with its
real size and mtime plus the interval and hourly ledger entries a run would have
left (states dropped, except in the last KPI_RESTATE_DAYS). Then it times, each in
its own process and several times, in rounds: Django's start-up alone, and the idle
``update_network_stats`` run. It also times, in this process, the steps of the idle
run that grow with the folder, checks that the idle run imports neither pandas nor
pyarrow, and times what importing them costs a run that reads files.

    python bench/idle_run.py                       # SQLite, under bench/out/idle_run/
    python bench/idle_run.py --database-url mysql://root@127.0.0.1:3306/na_bench_idle
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "idle_run"
START = datetime(2021, 7, 18, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)
HEADER = b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n"
SUBSCRIBER_KEY = "bench-subscriber-key-0123456789abcdef0123456789"
RESTATE_DAYS = 3


def run_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KPI_SUBSCRIBER_KEY": SUBSCRIBER_KEY,
        "KPI_RESTATE_DAYS": str(RESTATE_DAYS),
        "KPI_LOG_LEVEL": "WARNING",
    }


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of ``command``, run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def create_database(url: str) -> None:
    """MySQL/MariaDB: create the benchmark's database if it does not exist yet."""
    from network_analysis.env import database_from_url

    db = database_from_url(url, base_dir=ROOT)
    if not db["ENGINE"].endswith("mysql"):
        return
    import MySQLdb

    connection = MySQLdb.connect(
        host=db["HOST"], port=int(db["PORT"] or 3306), user=db["USER"], passwd=db["PASSWORD"]
    )
    connection.cursor().execute(
        f"CREATE DATABASE IF NOT EXISTS `{db['NAME']}` CHARACTER SET utf8mb4"
    )
    connection.close()


class Clock:
    """Wall and CPU time of this process since the last lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        lap = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return lap


def write_files(folder: Path, count: int) -> None:
    """Header-only files, one per interval; kept between runs of the benchmark."""
    from kpis.sampledata import file_name

    folder.mkdir(parents=True, exist_ok=True)
    existing = sum(1 for _ in os.scandir(folder))
    if existing == count:
        return
    for entry in os.scandir(folder):
        os.unlink(entry.path)
    for index in range(count):
        (folder / file_name(interval_start=START + index * FIVE_MINUTES, part=0)).write_bytes(
            HEADER
        )


def simulate_history(folder: Path, now: datetime) -> None:
    """The ledger a year of runs leaves behind, written with bulk_create."""
    from django.db import transaction

    from kpis.models import InputFileRecord, InputFileStatus, IntervalLedger, IntervalType
    from kpis.pipeline import HOUR, scan_input_dir
    from kpis.services.restatement import hour_is_final

    window = timedelta(days=RESTATE_DAYS)
    files = scan_input_dir(folder)
    if InputFileRecord.objects.count() == len(files):
        return  # simulated by an earlier run over the same files
    sha256 = "0" * 64
    with transaction.atomic():
        InputFileRecord.objects.all().delete()
        IntervalLedger.objects.all().delete()
        InputFileRecord.objects.bulk_create(
            (
                InputFileRecord(
                    name=f.name,
                    interval_start_timestamp=f.interval_start,
                    size=f.size,
                    mtime_ns=f.mtime_ns,
                    sha256=sha256,
                    status=InputFileStatus.COUNTED,
                    interval_revision=1,
                    processed_at=now,
                )
                for f in files
            ),
            batch_size=2000,
        )
        hours = sorted({f.interval_start.replace(minute=0) for f in files})
        ledgers = [
            IntervalLedger(
                interval=IntervalType.FIVE_MINUTES,
                interval_start_timestamp=f.interval_start,
                interval_end_timestamp=f.interval_start + FIVE_MINUTES,
                revision=1,
                files_counted=1,
                processed_at=now,
                states_kept=not hour_is_final(
                    f.interval_start.replace(minute=0), now=now, window=window
                ),
            )
            for f in files
        ]
        ledgers += [
            IntervalLedger(
                interval=IntervalType.ONE_HOUR,
                interval_start_timestamp=hour,
                interval_end_timestamp=hour + HOUR,
                revision=1,
                files_counted=12,
                intervals_processed=12,
                processed_at=now,
                states_kept=not hour_is_final(hour, now=now, window=window),
            )
            for hour in hours
        ]
        IntervalLedger.objects.bulk_create(ledgers, batch_size=2000)


def in_process_steps(folder: Path, now: datetime) -> dict[str, tuple[float, float]]:
    """Time the steps of an idle run that see every file, and the ones they replaced."""
    from kpis.models import InputFileRecord
    from kpis.pipeline import scan_input_dir
    from kpis.services.folder import folder_list
    from kpis.services.update import UpdateConfig, _dirty_files

    config = UpdateConfig(
        input_dir=folder,
        now=now,
        top_n=3,
        grace=timedelta(seconds=60),
        hash_key="",
        block_size=1 << 20,
        restate_window=timedelta(days=RESTATE_DAYS),
    )
    steps: dict[str, tuple[float, float]] = {}
    clock = Clock()
    listing = folder_list(folder)
    steps["list the folder (one stat per file)"] = clock.lap()
    dirty = _dirty_files(listing, config)
    steps["fingerprint query + a look-up per file"] = clock.lap()
    assert not dirty, f"{len(dirty)} files look new: the simulated history is wrong"
    # What an idle run did before, kept here for comparison only.
    clock.lap()
    names = [f.name for f in scan_input_dir(folder)]
    steps["(before) scan_input_dir"] = clock.lap()
    fingerprint = InputFileRecord.objects.only(
        "name", "size", "mtime_ns", "sha256", "missing_since"
    )
    known: dict[str, InputFileRecord] = {}
    for offset in range(0, len(names), 900):
        known.update(fingerprint.in_bulk(names[offset : offset + 900], field_name="name"))
    steps["(before) lookups by name, 900 at a time"] = clock.lap()
    return steps


def heavy_imports(command: list[str], env: dict[str, str]) -> list[str]:
    """Which of pandas, pyarrow and numpy ``command`` imports, from its ``-X importtime`` report."""
    report = subprocess.run(
        command,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ).stderr
    imported = {
        line.rsplit("|", 1)[1].strip() for line in report.splitlines() if "import time:" in line
    }
    return sorted(imported & {"pandas", "pyarrow", "numpy"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", type=int, default=100_000, help="Processed files in the folder (100,000)."
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="Timed runs of each command, after a warm-up (3)."
    )
    parser.add_argument(
        "--database-url",
        default=f"sqlite:///{OUT / 'db.sqlite3'}",
        help="A database of its own: it is migrated and its ledger replaced.",
    )
    args = parser.parse_args()

    folder = OUT / "input"
    env = run_env(args.database_url)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "network_analysis.settings")
    sys.path.insert(0, str(ROOT))
    OUT.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    write_files(folder, args.files)
    print(f"{args.files} files in {folder} ({time.perf_counter() - began:.1f} s to prepare)")
    create_database(args.database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    import django

    django.setup()
    from django.db import connection

    # Three days after the last interval: the last three days are still within the window.
    now = START + args.files * FIVE_MINUTES + timedelta(days=RESTATE_DAYS)
    began = time.perf_counter()
    simulate_history(folder, now)
    print(f"ledger: {args.files} file records simulated ({time.perf_counter() - began:.1f} s)")
    print(f"database: {connection.vendor}")

    python = sys.executable
    startup_commands = {
        "django.setup() alone": [python, "-c", "import django; django.setup()"],
        "manage.py check": [python, "manage.py", "check"],
    }
    update = [
        python,
        "manage.py",
        "update_network_stats",
        "--now",
        now.isoformat(),
        "--input-dir",
        str(folder),
        "--no-progress",
    ]
    empty = OUT / "empty"
    empty.mkdir(exist_ok=True)
    startup_commands["update_network_stats, empty folder"] = [
        *update[:-2],
        str(empty),
        "--no-progress",
    ]
    env["DJANGO_SETTINGS_MODULE"] = "network_analysis.settings"
    commands = {**startup_commands, "idle update_network_stats": update}
    for command in commands.values():
        timed(command, env)  # warm the page cache and the database
    # Round by round, so that a command and the ones it is compared with see the same
    # machine: on a shared host the speed of a core drifts by a third from minute to minute.
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    for _ in range(args.repeat):
        for label, command in commands.items():
            runs[label].append(timed(command, env))
    results = {
        label: (
            statistics.median(wall for wall, _ in times),
            statistics.median(cpu for _, cpu in times),
        )
        for label, times in runs.items()
    }
    print(f"{'':<42} {'wall':>8} {'cpu':>8}   (medians of {args.repeat} runs)")
    for label, (wall, cpu) in results.items():
        print(f"{label:<42} {wall:6.2f} s {cpu:6.2f} s")
    idle = results["idle update_network_stats"]
    for label, base in (
        ("django.setup()", results["django.setup() alone"]),
        ("the empty-folder run", results["update_network_stats, empty folder"]),
    ):
        print(
            f"{'idle run minus ' + label:<42} {idle[0] - base[0]:6.2f} s "
            f"{idle[1] - base[1]:6.2f} s   (goal: at most 1 s)"
        )
    print(f"load average when done: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    heavy = heavy_imports(update, env)
    print(f"pandas, pyarrow, numpy imported by the idle run: {', '.join(heavy) or 'none'}")
    # What a run that reads a file pays on top of the idle run's imports.
    imports = {
        module: statistics.median(
            cpu for _, cpu in (timed([python, "-c", f"import {module}"], env) for _ in range(3))
        )
        for module in ("kpis.pipeline", "kpis.pipeline.aggregates")
    }
    print(
        "importing pandas and pyarrow (a run that reads files): "
        f"{imports['kpis.pipeline.aggregates'] - imports['kpis.pipeline']:.2f} s of CPU"
    )
    print("steps of the idle run that see every file, in this process:")
    for label, (wall, cpu) in in_process_steps(folder, now).items():
        print(f"  {label:<40} {wall:6.2f} s {cpu:6.2f} s")


if __name__ == "__main__":
    main()
