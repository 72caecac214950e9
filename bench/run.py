"""Benchmark: update_network_stats against DuckDB and Polars references, same files.

Generates the data set deterministically under bench/out/data/ with
``manage.py generate_sample_data`` (kept between runs, so re-runs skip it),
then, per scenario, runs each side in its own process: the project's
``update_network_stats`` as a user runs it (a fresh SQLite database migrated
beforehand, ``--now`` after the data, ``--no-progress``), then
``bench/duckdb_reference.py`` and ``bench/polars_reference.py``. It measures
wall time and memory, the peak of the summed RSS of each side's whole process
tree (worker processes, and a Dask scheduler and workers when started here),
sampled every 20 ms; it checks that all sides give the same five-minute and
hourly rows and prints the tables. Exits 1 if any rows differ.

    python bench/run.py                     # 12 files (1 h), 48 files (4 h), scaling table
    BENCH_BIG=1 python bench/run.py         # and one 5 GB file (minutes to generate, once)
    python bench/run.py --quick             # 20,000 rows per file: checks the bench itself
    python bench/run.py --scenarios hour    # only the 12-file hour (and its scaling table)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MANAGE = str(ROOT / "manage.py")

START = datetime(2021, 7, 18, tzinfo=UTC)
# Average size of one generated CSV row, to turn --large-gb into a row count.
BYTES_PER_ROW = 33
SUBSCRIBER_KEY = "bench-subscriber-key-0123456789abcdef0123456789"
SAMPLE_EVERY_S = 0.02
QUICK_ROWS = 20_000
QUICK_LARGE_GB = 0.05

Row = tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    files: list[Path]
    rows: int
    now: datetime


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_mib: float


@dataclass
class Outcome:
    """One side of one scenario: its measures (None when not run) and its KPI rows."""

    measure: Measure | None = None
    rows: list[Row] = field(default_factory=list)
    note: str = ""


class TreeSampler(threading.Thread):
    """Polls the summed RSS of some processes and all their descendants; keeps the peak.

    ``peak_single`` is the peak RSS of the largest single process seen.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        super().__init__(daemon=True)
        self.roots = [psutil.Process(pid) for pid in roots]
        self.peak_bytes = 0
        self.peak_single = 0
        self._stop_event = threading.Event()

    def sample(self) -> int:
        seen: set[int] = set()
        total = 0
        for root in self.roots:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in tree:
                if process.pid in seen:
                    continue
                seen.add(process.pid)
                with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss = process.memory_info().rss
                    total += rss
                    self.peak_single = max(self.peak_single, rss)
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self._stop_event.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measured(
    command: list[str], *, env: dict[str, str], log: Path, also: Sequence[int] = ()
) -> Measure:
    """Run ``command``; its wall time and the peak summed RSS of its tree (and of ``also``)."""
    with open(log, "wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = TreeSampler([process.pid, *also])
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed ({process.returncode}); see {log}")
    # A peak shorter than the sampling period may be missed by the sampler, but never one of
    # the command's own process: the kernel's high-water mark (KiB) is a floor.
    peak = max(sampler.peak_bytes, usage.ru_maxrss * 1024)
    return Measure(seconds=seconds, peak_mib=peak / 2**20)


def median_measure(measures: list[Measure]) -> Measure:
    return Measure(
        seconds=statistics.median(m.seconds for m in measures),
        peak_mib=statistics.median(m.peak_mib for m in measures),
    )


def base_env(work: Path, args: argparse.Namespace) -> dict[str, str]:
    """The environment of every process the bench starts; each run picks its own workers."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in ("KPI_WORKERS", "KPI_DASK_SCHEDULER")
    }
    return {
        **inherited,
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "KPI_DATA_DIR": str(work),
        "KPI_SUBSCRIBER_KEY": SUBSCRIBER_KEY,
        "KPI_TOP_N": str(args.top_n),
        "KPI_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def generate(args: argparse.Namespace) -> list[Scenario]:
    """Write (or reuse) the files of each requested scenario."""
    shape = f"{args.rows}-{args.subscribers}-{args.cells}-{args.services}-{args.seed}"
    population = [
        *("--subscribers", str(args.subscribers), "--cells", str(args.cells)),
        *("--services", str(args.services), "--seed", str(args.seed)),
    ]
    scenarios = []
    hours_dir = args.out / "data" / f"hours-{shape}"
    if {"hour", "four-hours"} & set(args.scenarios):
        wanted = 4 if "four-hours" in args.scenarios else 1
        marker = hours_dir / ".complete-hours"
        have = int(marker.read_text()) if marker.exists() else 0
        if have < wanted:
            print(f"generating {(wanted - have) * 12} files of {args.rows:,} rows in {hours_dir}")
            env = base_env(args.out, args)
            subprocess.run(
                [
                    *(PYTHON, MANAGE, "generate_sample_data"),
                    *("--start", (START + timedelta(hours=have)).isoformat()),
                    *("--hours", str(wanted - have), "--parts", "1", "--rows", str(args.rows)),
                    *population,
                    *("--output-dir", str(hours_dir)),
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            marker.write_text(str(wanted))
        files = sorted(hours_dir.glob("*.csv"))
        for key, hours in (("hour", 1), ("four-hours", 4)):
            if key in args.scenarios:
                scenarios.append(
                    Scenario(
                        key=key,
                        name=f"{hours * 12} files ({hours} h)",
                        files=files[: hours * 12],
                        rows=hours * 12 * args.rows,
                        now=START + timedelta(hours=hours, minutes=10),
                    )
                )
    if "large" in args.scenarios:
        scenarios.append(large_scenario(args, shape))
    return scenarios


def large_scenario(args: argparse.Namespace, shape: str) -> Scenario:
    """One big file of the first interval; the sample-data command writes files of one size,
    so this one is drawn chunk by chunk with the same generator."""
    sys.path.insert(0, str(ROOT))
    from kpis.sampledata import Population, file_name, write_large_file

    rows = int(args.large_gb * 1e9 / BYTES_PER_ROW)
    path = args.out / "data" / f"large-{rows}-{shape}" / file_name(interval_start=START, part=0)
    if not path.exists():
        print(f"generating one file of {rows:,} rows ({args.large_gb} GB) in {path.parent}")
        population = Population(
            subscribers=args.subscribers, cells=args.cells, services=args.services, seed=args.seed
        )
        write_large_file(path, rows=rows, population=population, stream_seed=[0, 0])
    size_gb = path.stat().st_size / 1e9
    return Scenario(
        key="large",
        name=f"1 file ({size_gb:.{1 if size_gb >= 1 else 2}f} GB)",
        files=[path],
        rows=rows,
        now=START + timedelta(hours=1, minutes=10),
    )


def project_rows(db: Path) -> list[Row]:
    """The KPI rows the project stored, as [kpi, start_epoch_s, interval, key, value]."""
    rows: list[Row] = []
    with sqlite3.connect(db) as connection:
        for kpi, table, key, value in (
            (1, "kpis_servicetrafficvolume", "service_id", "total_bytes"),
            (2, "kpis_celluniqueusers", "cell_id", "number_of_unique_users"),
        ):
            query = f"SELECT interval_start_timestamp, interval, {key}, {value} FROM {table}"
            for start, interval, key_value, number in connection.execute(query):
                moment = datetime.fromisoformat(str(start)).replace(tzinfo=UTC)
                rows.append((kpi, int(moment.timestamp()), interval, key_value, number))
    return sorted(rows)


def run_ours(
    scenario: Scenario,
    args: argparse.Namespace,
    label: str,
    *,
    extra: Sequence[str] = (),
    env_extra: dict[str, str] | None = None,
    also: Sequence[int] = (),
) -> Outcome:
    """update_network_stats on a fresh, migrated SQLite database, ``args.repeat`` times."""
    measures: list[Measure] = []
    rows: list[Row] = []
    for attempt in range(args.repeat):
        work = args.out / "runs" / scenario.key / label
        shutil.rmtree(work, ignore_errors=True)
        input_dir = work / "input"
        input_dir.mkdir(parents=True)
        for path in scenario.files:
            os.link(path, input_dir / path.name)
        env = {**base_env(work, args), **(env_extra or {})}
        subprocess.run([PYTHON, MANAGE, "migrate", "--no-input", "-v", "0"], env=env, check=True)
        command = [
            *(PYTHON, MANAGE, "update_network_stats"),
            *("--now", scenario.now.isoformat(), "--input-dir", str(input_dir)),
            "--no-progress",
            *extra,
        ]
        if args.profile and attempt == 0 and label == "default":
            command = [PYTHON, "-m", "pyinstrument", "-o", str(work / "profile.txt"), *command[1:]]
        measures.append(measured(command, env=env, log=work / "command.log", also=also))
        rows = project_rows(work / "db.sqlite3")
    return Outcome(measure=median_measure(measures), rows=rows)


def run_reference(scenario: Scenario, args: argparse.Namespace, engine: str) -> Outcome:
    """bench/<engine>_reference.py over the scenario's files, ``args.repeat`` times."""
    work = args.out / "runs" / scenario.key / engine
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    output = work / "rows.json"
    command = [
        *(PYTHON, str(ROOT / "bench" / f"{engine}_reference.py")),
        *("--top-n", str(args.top_n), "--output", str(output)),
        *map(str, scenario.files),
    ]
    env = base_env(work, args)
    measures = [measured(command, env=env, log=work / "reference.log") for _ in range(args.repeat)]
    rows = sorted(tuple(int(v) for v in row) for row in json.loads(output.read_text()))
    return Outcome(measure=median_measure(measures), rows=rows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def dask_cluster(args: argparse.Namespace, workers: int) -> Iterator[tuple[str, list[int]]]:
    """A Dask scheduler and ``workers`` single-threaded workers on loopback, started here.

    Yields the scheduler address and the process ids to count in the memory tree.
    """
    from distributed import Client

    work = args.out / "runs" / "dask"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dask = str(Path(PYTHON).parent / "dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = base_env(work, args)
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log = open(work / "scheduler.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        port = address.rsplit(":", 1)[1]
        scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
        processes.append(
            subprocess.Popen(scheduler, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        )
        for index in range(workers):
            log = open(work / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            worker = [
                *(dask, "worker", address, "--host", "127.0.0.1"),
                *("--nworkers", "1", "--nthreads", "1", "--no-dashboard"),
            ]
            processes.append(
                subprocess.Popen(worker, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        pids = [process.pid for process in processes]
        idle_mib = TreeSampler(pids).sample() / 2**20
        print(f"Dask scheduler and {workers} workers up at {address}, {idle_mib:.0f} MiB idle")
        yield address, pids
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def supports_workers(args: argparse.Namespace) -> bool:
    """Whether this checkout's update_network_stats takes ``--workers``."""
    env = base_env(args.out, args)
    result = subprocess.run(
        [PYTHON, MANAGE, "update_network_stats", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return "--workers" in result.stdout


def machine() -> list[str]:
    model = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    versions = []
    for package in ("pandas", "pyarrow", "numpy", "duckdb", "polars", "distributed"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"Machine: {model}, {os.cpu_count()} logical cores ({usable} usable), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"Versions: {', '.join(versions)}",
        f"Load average (1, 5, 15 min) at the start: {load}",
    ]


def seconds(outcome: Outcome) -> str:
    return "n/a" if outcome.measure is None else f"{outcome.measure.seconds:.2f}"


def mib(outcome: Outcome) -> str:
    return "n/a" if outcome.measure is None else f"{outcome.measure.peak_mib:.0f}"


def ratio(ours: Measure | None, theirs: Measure | None, attribute: str) -> str:
    if ours is None or theirs is None:
        return "n/a"
    return f"{getattr(ours, attribute) / getattr(theirs, attribute):.2f}"


def same(ours: Outcome, references: Sequence[Outcome]) -> str:
    """'yes' when every side that ran stored the same rows; else which sides differ."""
    differing = [o.note for o in references if o.measure is not None and o.rows != ours.rows]
    return "yes" if not differing else "NO: " + ", ".join(differing)


def markdown(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        cells = [
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(header), rule, *map(render, lines)])


def report_differences(name: str, ours: Outcome, references: Sequence[Outcome]) -> None:
    for reference in references:
        if reference.measure is None or reference.rows == ours.rows:
            continue
        print(f"{name}: rows differ between ours and {reference.note}", file=sys.stderr)
        mine, theirs = set(ours.rows), set(reference.rows)
        for row in sorted(mine ^ theirs)[:20]:
            side = "ours only" if row in mine else f"{reference.note} only"
            print(f"  {side}: {row}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["hour", "four-hours", "large"],
        default=None,
        help="Which scenarios to run (default hour and four-hours, and large with BENCH_BIG=1).",
    )
    parser.add_argument(
        "--big",
        action="store_true",
        default=os.environ.get("BENCH_BIG", "") not in ("", "0"),
        help="Add the one-big-file scenario (also BENCH_BIG=1).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help=f"{QUICK_ROWS:,} rows per file, a {QUICK_LARGE_GB} GB big file (also BENCH_QUICK=1).",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=int(os.environ.get("BENCH_ROWS", "0")) or None,
        help="Rows per five-minute file (default 500,000; also BENCH_ROWS).",
    )
    parser.add_argument("--large-gb", type=float, default=None, help="Size of the big file (5).")
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--cells", type=int, default=5_000)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument(
        "--repeat",
        type=int,
        default=int(os.environ.get("BENCH_REPEAT", "3")),
        help="Runs of each measure; the median is shown (also BENCH_REPEAT).",
    )
    parser.add_argument(
        "--no-scaling", action="store_true", help="Skip the scaling table of the 12-file hour."
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "out", help="Data and run folder."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Run the command under pyinstrument; the profile is written beside its database.",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="Write the data set, run nothing."
    )
    args = parser.parse_args()
    args.rows = args.rows or (QUICK_ROWS if args.quick else 500_000)
    args.large_gb = args.large_gb or (QUICK_LARGE_GB if args.quick else 5.0)
    if args.scenarios is None:
        args.scenarios = ["hour", "four-hours", *(["large"] if args.big else [])]
    args.out.mkdir(parents=True, exist_ok=True)

    scenarios = generate(args)
    if args.generate_only:
        return
    header_lines = machine()
    print("\n".join(header_lines), flush=True)
    have_polars = find_spec("polars") is not None

    results: dict[str, tuple[Outcome, Outcome, Outcome]] = {}
    for scenario in scenarios:
        print(f"running {scenario.name}: ours ...", flush=True)
        ours = run_ours(scenario, args, "default")
        print(f"running {scenario.name}: DuckDB ...", flush=True)
        duck = run_reference(scenario, args, "duckdb")
        duck.note = "DuckDB"
        polars = Outcome(note="Polars")
        if have_polars:
            print(f"running {scenario.name}: Polars ...", flush=True)
            polars = run_reference(scenario, args, "polars")
            polars.note = "Polars"
        report_differences(scenario.name, ours, [duck, polars])
        results[scenario.key] = (ours, duck, polars)

    lines = []
    for scenario in scenarios:
        ours, duck, polars = results[scenario.key]
        lines.append(
            [
                scenario.name,
                f"{scenario.rows:,}",
                seconds(ours),
                mib(ours),
                seconds(duck),
                mib(duck),
                seconds(polars),
                mib(polars),
                ratio(ours.measure, duck.measure, "seconds"),
                ratio(ours.measure, duck.measure, "peak_mib"),
                str(len(ours.rows)),
                same(ours, [duck, polars]),
            ]
        )
    header = [
        "scenario",
        "rows",
        "ours s",
        "ours MiB",
        "DuckDB s",
        "DuckDB MiB",
        "Polars s",
        "Polars MiB",
        "time ratio vs DuckDB",
        "mem ratio",
        "KPI rows",
        "same rows",
    ]
    all_same = all(line[-1] == "yes" for line in lines)
    print()
    print(markdown(header, lines))
    hour, four = results.get("hour"), results.get("four-hours")
    if hour and four and hour[0].measure and four[0].measure:
        growth = four[0].measure.peak_mib / hour[0].measure.peak_mib - 1
        print(f"\nOur peak memory from 12 to 48 files: {growth:+.1%}")

    hour_scenario = next((s for s in scenarios if s.key == "hour"), None)
    if hour_scenario is not None and not args.no_scaling:
        all_same = scaling(hour_scenario, args, results["hour"]) and all_same
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nLoad average at the end: {load}. Memory: peak of the summed RSS of each side's")
    print("process tree, sampled every 20 ms. Figures from a loaded machine are indicative only.")
    if not all_same:
        sys.exit(1)


def scaling(
    scenario: Scenario, args: argparse.Namespace, hour: tuple[Outcome, Outcome, Outcome]
) -> bool:
    """The 12-file hour with 1 and 2 local workers and on 2 Dask workers; True if rows agree."""
    ours, duck, polars = hour
    has_workers = supports_workers(args)
    has_dask = has_workers and find_spec("distributed") is not None
    modes: list[tuple[str, Outcome]] = []
    for count in (1, 2):
        label = f"--workers {count}"
        if has_workers:
            print(f"running {scenario.name}: ours {label} ...", flush=True)
            modes.append(
                (
                    label,
                    run_ours(scenario, args, f"workers-{count}", extra=["--workers", str(count)]),
                )
            )
        else:
            modes.append((label, Outcome(note="this checkout has no --workers")))
    label = "2 Dask workers"
    if has_dask:
        print(f"running {scenario.name}: ours on {label} ...", flush=True)
        with dask_cluster(args, 2) as (address, pids):
            outcome = run_ours(
                scenario, args, "dask-2", env_extra={"KPI_DASK_SCHEDULER": address}, also=pids
            )
        modes.append((label, outcome))
    else:
        reason = "no --workers" if not has_workers else "distributed is not installed"
        modes.append((label, Outcome(note=reason)))

    lines = [
        [
            "default",
            seconds(ours),
            mib(ours),
            ratio(ours.measure, duck.measure, "seconds"),
            ratio(ours.measure, duck.measure, "peak_mib"),
            same(ours, [duck, polars]),
        ]
    ]
    agree = True
    for label, outcome in modes:
        if outcome.measure is None:
            lines.append([label, "n/a", "n/a", "n/a", "n/a", f"n/a ({outcome.note})"])
            continue
        verdict = same(outcome, [duck, polars])
        agree = agree and verdict == "yes"
        report_differences(f"{scenario.name}, {label}", outcome, [duck, polars])
        lines.append(
            [
                label,
                seconds(outcome),
                mib(outcome),
                ratio(outcome.measure, duck.measure, "seconds"),
                ratio(outcome.measure, duck.measure, "peak_mib"),
                verdict,
            ]
        )
    print(f"\nScaling, {scenario.name} (DuckDB: {seconds(duck)} s, {mib(duck)} MiB):")
    header = ["ours", "s", "MiB", "time ratio vs DuckDB", "mem ratio", "same rows"]
    print(markdown(header, lines))
    if has_dask:
        print("The Dask row's memory includes the scheduler and workers (nanny processes too).")
    return agree


if __name__ == "__main__":
    main()
