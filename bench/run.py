"""Benchmark: the project's update_network_stats against a DuckDB reference, same files.

Generates the data set deterministically under bench/out/ (kept between runs),
then for each scenario runs both in their own process, measures wall time and
peak RSS, checks that they give the same five-minute and hourly rows, and
prints a table. Exits 1 if any rows differ.

    python bench/run.py                      # 12 files, 48 files, one 5 GB file
    python bench/run.py --large-gb 0.5       # a smaller large file, to try it quickly
    python bench/run.py --scenarios hour     # only the 12-file hour
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kpis.sampledata import (  # noqa: E402 - the project root must be importable first
    Population,
    file_name,
    write_large_file,
    write_sample_files,
)

START = datetime(2021, 7, 18, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)
# Average size of one generated CSV row, to turn --large-gb into a row count.
BYTES_PER_ROW = 33
SUBSCRIBER_KEY = "bench-subscriber-key-0123456789abcdef0123456789"


@dataclass(frozen=True)
class Scenario:
    name: str
    files: list[Path]
    rows: int
    now: datetime


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_rss_mb: float


def measured(command: list[str], *, env: dict[str, str], log: Path) -> Measure:
    """Run ``command``; return its wall time and peak RSS (the process and its children)."""
    began = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed ({process.returncode}); see {log}")
    # Linux reports ru_maxrss in KiB.
    return Measure(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024)


def generate(args: argparse.Namespace, out: Path) -> list[Scenario]:
    """Write (or reuse) the files of each requested scenario."""
    population = Population(
        subscribers=args.subscribers, cells=args.cells, services=args.services, seed=args.seed
    )
    scenarios = []
    shape = f"{args.rows}-{args.subscribers}-{args.cells}-{args.services}-{args.seed}"
    hours_dir = out / "data" / f"hours-{shape}"
    wanted_hours = 4 if "four-hours" in args.scenarios else 1
    if {"hour", "four-hours"} & set(args.scenarios):
        marker = hours_dir / ".complete-hours"
        have_hours = int(marker.read_text()) if marker.exists() else 0
        if have_hours < wanted_hours:
            print(f"generating {wanted_hours * 12} files of {args.rows:,} rows in {hours_dir} ...")
            shutil.rmtree(hours_dir, ignore_errors=True)
            write_sample_files(
                hours_dir,
                start=START,
                intervals=wanted_hours * 12,
                parts=1,
                rows=args.rows,
                population=population,
            )
            marker.write_text(str(wanted_hours))
        all_files = sorted(
            (hours_dir / file_name(interval_start=START + i * INTERVAL, part=0))
            for i in range(wanted_hours * 12)
        )
        for name, hours in (("hour", 1), ("four-hours", 4)):
            if name in args.scenarios:
                scenarios.append(
                    Scenario(
                        name=f"{hours * 12} files ({hours} h)",
                        files=all_files[: hours * 12],
                        rows=hours * 12 * args.rows,
                        now=START + timedelta(hours=hours, minutes=10),
                    )
                )
    if "large" in args.scenarios:
        rows = int(args.large_gb * 1e9 / BYTES_PER_ROW)
        path = out / "data" / f"large-{rows}-{shape}" / file_name(interval_start=START, part=0)
        if not path.exists():
            print(f"generating one file of {rows:,} rows ({args.large_gb} GB) in {path.parent} ...")
            shutil.rmtree(path.parent, ignore_errors=True)
            write_large_file(path, rows=rows, population=population, stream_seed=[0, 0])
        size_gb = path.stat().st_size / 1e9
        scenarios.append(
            Scenario(
                name=f"1 file ({size_gb:.1f} GB)",
                files=[path],
                rows=rows,
                now=START + timedelta(hours=1, minutes=10),
            )
        )
    return scenarios


def project_rows(db: Path) -> list[list[object]]:
    """The KPI rows the project stored, in the reference's shape."""
    rows: list[list[object]] = []
    with sqlite3.connect(db) as connection:
        for kpi, table, key, value in (
            (1, "kpis_servicetrafficvolume", "service_id", "total_bytes"),
            (2, "kpis_celluniqueusers", "cell_id", "number_of_unique_users"),
        ):
            query = f"SELECT interval_start_timestamp, interval, {key}, {value} FROM {table}"
            for start, interval, key_value, number in connection.execute(query):
                moment = datetime.fromisoformat(str(start)).replace(tzinfo=UTC)
                rows.append([kpi, int(moment.timestamp()), interval, key_value, number])
    return rows


def run_scenario(scenario: Scenario, args: argparse.Namespace, out: Path) -> dict[str, object]:
    """Run the project and the reference on one scenario; return the measures and the check."""
    work = out / "runs" / re.sub(r"[^a-z0-9.]+", "-", scenario.name.lower()).strip("-")
    shutil.rmtree(work, ignore_errors=True)
    input_dir = work / "input"
    input_dir.mkdir(parents=True)
    for path in scenario.files:
        os.link(path, input_dir / path.name)
    db = work / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "KPI_DATA_DIR": str(work),
        "KPI_SUBSCRIBER_KEY": SUBSCRIBER_KEY,
        "KPI_TOP_N": str(args.top_n),
        "KPI_LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    manage = str(ROOT / "manage.py")
    subprocess.run([python, manage, "migrate", "--no-input", "-v", "0"], env=env, check=True)
    command = [
        python,
        manage,
        "update_network_stats",
        "--now",
        scenario.now.isoformat(),
        "--input-dir",
        str(input_dir),
        "--no-progress",
    ]
    if args.profile:
        command = [python, "-m", "pyinstrument", "-o", str(work / "profile.txt"), *command[1:]]
    project = measured(command, env=env, log=work / "project.log")

    reference_out = work / "duckdb-rows.json"
    reference = measured(
        [
            python,
            str(ROOT / "bench" / "duckdb_reference.py"),
            "--top-n",
            str(args.top_n),
            "--output",
            str(reference_out),
            *map(str, scenario.files),
        ],
        env=env,
        log=work / "duckdb.log",
    )
    ours = sorted(map(tuple, project_rows(db)))
    theirs = sorted(map(tuple, json.loads(reference_out.read_text())))
    if ours != theirs:
        print(f"{scenario.name}: rows differ", file=sys.stderr)
        for row in sorted(set(ours) ^ set(theirs))[:20]:
            side = "project only" if row in set(ours) else "duckdb only"
            print(f"  {side}: {row}", file=sys.stderr)
    return {
        "scenario": scenario.name,
        "rows": scenario.rows,
        "project": project,
        "duckdb": reference,
        "kpi_rows": len(ours),
        "same": ours == theirs,
    }


def print_table(results: list[dict[str, object]]) -> None:
    header = (
        f"| {'scenario':<18} | {'rows':>11} | {'project s':>9} | {'project MB':>10} | "
        f"{'DuckDB s':>8} | {'DuckDB MB':>9} | {'time ratio':>10} | {'mem ratio':>9} | "
        f"{'KPI rows':>8} | {'same':<4} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for result in results:
        ours, theirs = result["project"], result["duckdb"]
        assert isinstance(ours, Measure) and isinstance(theirs, Measure)
        print(
            f"| {result['scenario']:<18} | {result['rows']:>11,} | {ours.seconds:>9.2f} | "
            f"{ours.peak_rss_mb:>10.0f} | {theirs.seconds:>8.2f} | {theirs.peak_rss_mb:>9.0f} | "
            f"{ours.seconds / theirs.seconds:>10.2f} | "
            f"{ours.peak_rss_mb / theirs.peak_rss_mb:>9.2f} | {result['kpi_rows']:>8} | "
            f"{'yes' if result['same'] else 'NO':<4} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["hour", "four-hours", "large"],
        default=["hour", "four-hours", "large"],
        help="Which scenarios to run (default all three).",
    )
    parser.add_argument("--large-gb", type=float, default=5.0, help="Size of the large file.")
    parser.add_argument("--rows", type=int, default=500_000, help="Rows per five-minute file.")
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--cells", type=int, default=5_000)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "out", help="Data and run folder."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Run the project under pyinstrument; the profile is written beside its database.",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="Write the data set, run nothing."
    )
    args = parser.parse_args()

    scenarios = generate(args, args.out)
    if args.generate_only:
        return
    results = []
    for scenario in scenarios:
        print(f"running {scenario.name} ...", flush=True)
        results.append(run_scenario(scenario, args, args.out))
    print()
    print_table(results)
    peaks = {r["scenario"]: r["project"] for r in results}
    hour, four = peaks.get("12 files (1 h)"), peaks.get("48 files (4 h)")
    if isinstance(hour, Measure) and isinstance(four, Measure):
        growth = four.peak_rss_mb / hour.peak_rss_mb - 1
        print(f"\nproject peak memory from 12 to 48 files: {growth:+.1%}")
    if not all(result["same"] for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
