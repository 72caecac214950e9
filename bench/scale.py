"""Benchmark at an operator's volume: the scale hour and one 10 M-row file.

Two cases, drawn once with the sample generator (seeded, chunk by chunk, so
memory stays bounded) and kept under ``<out>/data/`` for later runs:

* the scale hour: 12 five-minute files of 5 M rows each, 3 M subscribers,
  30,000 cells, 60 services (about 2.1 GB);
* one file of 10 M rows (about 358 MB) in the first interval.

Each case runs ``update_network_stats`` as a process on SQLite and, with
``--database mysql``, on a throwaway MariaDB/MySQL database at its default
settings, then the DuckDB and Polars references of ``bench/run.py``. Per run
it reports the median wall time, the peak summed RSS of the process tree and
of its largest single process, the ratio to DuckDB, the database's growth and
the state store's size per hour of input, and whether the KPI rows equal
SQLite's and DuckDB's. ``--dask`` adds the scale hour on 2 local Dask workers
against the local pool. The figures go to stdout and, between the
``bench:scale`` markers, into docs/performance.md.

    python bench/scale.py --scale 0.02                # a 2 % model of both cases, in seconds
    python bench/scale.py                             # full scale (minutes; GBs of data)
    python bench/scale.py --database sqlite mysql --dask
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run as bench  # the sibling bench module, found through the path above

ROOT = bench.ROOT
PYTHON = bench.PYTHON
MANAGE = bench.MANAGE
START = bench.START
MARK_START = "<!-- bench:scale:start -->"
MARK_END = "<!-- bench:scale:end -->"
INPUT_HOUR_S = 3600

Row = tuple[int, ...]


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    files: list[Path]
    rows: int
    hours_of_input: float
    now: datetime
    repeat: int

    @property
    def raw_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Measure:
    seconds: float
    tree_mib: float
    largest_mib: float


@dataclass
class Result:
    """One side of one case: median measures, KPI rows, storage growth (None when not run)."""

    label: str
    measure: Measure | None = None
    rows: list[Row] = field(default_factory=list)
    database_growth: int | None = None
    state_bytes: int | None = None
    state_note: str = ""
    note: str = ""


def measured(
    command: list[str], *, env: dict[str, str], log: Path, also: Sequence[int] = ()
) -> Measure:
    """Run ``command``: wall time, peak summed RSS of its tree and of its largest process."""
    with open(log, "wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = bench.TreeSampler([process.pid, *also])
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit {code}: {tail[0][:200]} (see {log})")
    # The kernel's high-water mark of the command itself is a floor for both peaks.
    own = usage.ru_maxrss * 1024
    return Measure(
        seconds=seconds,
        tree_mib=max(sampler.peak_bytes, own) / 2**20,
        largest_mib=max(sampler.peak_single, own) / 2**20,
    )


def median(measures: list[Measure]) -> Measure:
    return Measure(
        seconds=statistics.median(m.seconds for m in measures),
        tree_mib=statistics.median(m.tree_mib for m in measures),
        largest_mib=statistics.median(m.largest_mib for m in measures),
    )


# --- data ------------------------------------------------------------------------------------


def population_for(args: argparse.Namespace) -> tuple[int, int, int]:
    """Subscribers, cells and services at ``args.scale`` (never below a workable floor)."""
    return (
        max(1_000, round(args.subscribers * args.scale)),
        max(100, round(args.cells * args.scale)),
        args.services,
    )


def draw(path: Path, rows: int, args: argparse.Namespace, stream_seed: list[int]) -> None:
    from kpis.sampledata import Population, write_large_file

    subscribers, cells, services = population_for(args)
    population = Population(subscribers=subscribers, cells=cells, services=services, seed=args.seed)
    write_large_file(path, rows=rows, population=population, stream_seed=stream_seed)


def cases(args: argparse.Namespace) -> list[Case]:
    """Write (or reuse) the files of the requested cases; each case's folder is its shape."""
    from kpis.sampledata import file_name

    subscribers, cells, services = population_for(args)
    shape = f"{subscribers}-{cells}-{services}-{args.seed}"
    found = []
    if "scale-hour" in args.cases:
        rows = max(1_000, round(args.hour_rows * args.scale))
        folder = args.out / "data" / f"scale-hour-{rows}-{shape}"
        files = []
        for index in range(12):
            interval_start = START + timedelta(minutes=5 * index)
            path = folder / file_name(interval_start=interval_start, part=0)
            if not path.exists():
                print(f"generating {path.name} ({rows:,} rows) in {folder}", flush=True)
                draw(path, rows, args, [int(interval_start.timestamp()) // 300, 0])
            files.append(path)
        found.append(
            Case(
                key="scale-hour",
                name=f"scale hour, 12 x {rows:,} rows",
                files=files,
                rows=12 * rows,
                hours_of_input=1.0,
                now=START + timedelta(hours=1, minutes=10),
                repeat=args.repeat_big,
            )
        )
    if "ten-million" in args.cases:
        rows = max(1_000, round(args.file_rows * args.scale))
        folder = args.out / "data" / f"one-file-{rows}-{shape}"
        path = folder / file_name(interval_start=START, part=0)
        if not path.exists():
            print(f"generating {path.name} ({rows:,} rows) in {folder}", flush=True)
            draw(path, rows, args, [0, 0])
        found.append(
            Case(
                key="ten-million",
                name=f"one file, {rows:,} rows",
                files=[path],
                rows=rows,
                hours_of_input=1 / 12,
                now=START + timedelta(hours=1, minutes=10),
                repeat=args.repeat_big,
            )
        )
    return found


# --- databases -------------------------------------------------------------------------------


def mysql_connect(url: str, database: str | None = None):  # type: ignore[no-untyped-def]
    import MySQLdb

    parts = urlparse(url)
    return MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        passwd=parts.password or "",
        **({"db": database} if database else {}),
    )


def mysql_throwaway(url: str) -> str:
    """A fresh database named ``<url's name>_scale``; its URL."""
    parts = urlparse(url)
    name = (parts.path.lstrip("/") or "na_bench") + "_scale"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"unsafe database name {name!r}")
    connection = mysql_connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        connection.close()
    return parts._replace(path=f"/{name}").geturl()


def mysql_bytes(url: str) -> int:
    name = urlparse(url).path.lstrip("/")
    connection = mysql_connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
            "WHERE table_schema = %s",
            [name],
        )
        (size,) = cursor.fetchone()
        return int(size)
    finally:
        connection.close()


def mysql_analyze_all(url: str) -> None:
    """Refresh every table's size statistics, which InnoDB otherwise updates lazily."""
    name = urlparse(url).path.lstrip("/")
    connection = mysql_connect(url, name)
    try:
        cursor = connection.cursor()
        cursor.execute("SHOW TABLES")
        for (table,) in cursor.fetchall():
            cursor.execute(f"ANALYZE TABLE `{table}`")
            cursor.fetchall()
    finally:
        connection.close()


KPI_TABLES = (
    (1, "kpis_servicetrafficvolume", "service_id", "total_bytes"),
    (2, "kpis_celluniqueusers", "cell_id", "number_of_unique_users"),
)


def mysql_rows(url: str) -> list[Row]:
    connection = mysql_connect(url, urlparse(url).path.lstrip("/"))
    rows: list[Row] = []
    try:
        cursor = connection.cursor()
        for kpi, table, key, value in KPI_TABLES:
            cursor.execute(
                f"SELECT interval_start_timestamp, `interval`, {key}, {value} FROM {table}"
            )
            for start, interval, key_value, number in cursor.fetchall():
                moment = (
                    start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
                )
                moment = moment.replace(tzinfo=UTC)
                rows.append(
                    (kpi, int(moment.timestamp()), int(interval), int(key_value), int(number))
                )
    finally:
        connection.close()
    return sorted(rows)


def sqlite_bytes(path: Path) -> int:
    return sum(
        candidate.stat().st_size
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )


def state_store(work: Path) -> tuple[int, str]:
    """The size of the folder KPI_STATE_URL names (default <KPI_DATA_DIR>/state)."""
    url = os.environ.get("KPI_STATE_URL", "")
    if url and not url.startswith(("file://", "/")):
        return 0, f"not measured ({url})"
    folder = Path(url.removeprefix("file://")) if url else work / "state"
    if not folder.exists():
        return 0, "states in database"
    size = sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())
    return size, ""


# --- runs ------------------------------------------------------------------------------------


def run_ours(
    case: Case,
    args: argparse.Namespace,
    label: str,
    *,
    database: str,
    env_extra: dict[str, str] | None = None,
    also: Sequence[int] = (),
) -> Result:
    """update_network_stats on a fresh, migrated database, ``case.repeat`` times."""
    result = Result(label=label)
    measures: list[Measure] = []
    for _ in range(case.repeat):
        work = args.out / "runs" / case.key / label
        shutil.rmtree(work, ignore_errors=True)
        input_dir = work / "input"
        input_dir.mkdir(parents=True)
        for path in case.files:
            os.link(path, input_dir / path.name)
        env = {**bench.base_env(work, args), **(env_extra or {})}
        if database == "mysql":
            env["DATABASE_URL"] = mysql_throwaway(args.mysql_url)
        with open(work / "migrate.log", "wb") as log:
            subprocess.run(
                [PYTHON, MANAGE, "migrate", "--no-input", "-v", "0"],
                env=env,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if database == "mysql":
            mysql_analyze_all(env["DATABASE_URL"])
            before = mysql_bytes(env["DATABASE_URL"])
        else:
            before = sqlite_bytes(work / "db.sqlite3")
        command = [
            *(PYTHON, MANAGE, "update_network_stats"),
            *("--now", case.now.isoformat(), "--input-dir", str(input_dir)),
            "--no-progress",
        ]
        try:
            measures.append(measured(command, env=env, log=work / "command.log", also=also))
        except RuntimeError as failure:
            result.note = str(failure)
            return result
        if database == "mysql":
            mysql_analyze_all(env["DATABASE_URL"])
            result.database_growth = mysql_bytes(env["DATABASE_URL"]) - before
            result.rows = mysql_rows(env["DATABASE_URL"])
        else:
            result.database_growth = sqlite_bytes(work / "db.sqlite3") - before
            result.rows = bench.project_rows(work / "db.sqlite3")
        result.state_bytes, result.state_note = state_store(work)
    result.measure = median(measures)
    return result


def run_reference(case: Case, args: argparse.Namespace, engine: str) -> Result:
    """bench/<engine>_reference.py over the case's files, ``case.repeat`` times."""
    result = Result(label=engine)
    work = args.out / "runs" / case.key / engine
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    output = work / "rows.json"
    command = [
        *(PYTHON, str(ROOT / "bench" / f"{engine}_reference.py")),
        *("--top-n", str(args.top_n), "--output", str(output)),
        *map(str, case.files),
    ]
    env = bench.base_env(work, args)
    try:
        result.measure = median(
            [measured(command, env=env, log=work / "reference.log") for _ in range(case.repeat)]
        )
    except RuntimeError as failure:
        result.note = str(failure)
        return result
    result.rows = sorted(tuple(int(v) for v in row) for row in json.loads(output.read_text()))
    return result


# --- report ----------------------------------------------------------------------------------


def growth_mb(size: int | None, case: Case) -> str:
    """The growth and, in brackets, the growth per hour of input, in MB."""
    if size is None:
        return "n/a"
    return f"{size / 1e6:.1f} ({size / case.hours_of_input / 1e6:.1f}/h)"


def verdict(result: Result, against: Sequence[Result]) -> str:
    if result.measure is None:
        return "n/a"
    differing = [o.label for o in against if o.measure is not None and o.rows != result.rows]
    compared = [o.label for o in against if o.measure is not None and o is not result]
    if not compared:
        return "-"
    return "yes" if not differing else "NO: " + ", ".join(differing)


def case_table(case: Case, results: list[Result]) -> str:
    duck = next((r for r in results if r.label == "duckdb"), None)
    sqlite = next((r for r in results if r.label == "ours, SQLite"), None)
    header = [
        "run",
        "s",
        "tree MiB",
        "largest MiB",
        "time vs DuckDB",
        "DB growth MB",
        "state store MB",
        "= SQLite",
        "= DuckDB",
    ]
    lines = []
    for result in results:
        if result.measure is None:
            lines.append([result.label, f"failed: {result.note}", *["n/a"] * 7])
            continue
        ratio = (
            f"{result.measure.seconds / duck.measure.seconds:.2f}x"
            if duck is not None and duck.measure is not None
            else "n/a"
        )
        state = growth_mb(result.state_bytes, case)
        if result.state_note:
            state = f"{state} ({result.state_note})"
        lines.append(
            [
                result.label,
                f"{result.measure.seconds:.2f}",
                f"{result.measure.tree_mib:.0f}",
                f"{result.measure.largest_mib:.0f}",
                ratio,
                growth_mb(result.database_growth, case),
                state if result.label.startswith("ours") else "-",
                verdict(result, [sqlite] if sqlite and result is not sqlite else []),
                verdict(result, [duck] if duck and result is not duck else []),
            ]
        )
    intervals = round(case.hours_of_input * 12)
    title = (
        f"**{case.name}** ({case.raw_bytes / 1e6:,.0f} MB of CSV, {intervals} five-minute "
        f"interval(s) of input; median of {case.repeat} run(s))"
    )
    text = f"{title}\n\n{bench.markdown(header, lines)}"
    pool = next((r for r in results if r.label == "ours, SQLite"), None)
    dask = next((r for r in results if "Dask" in r.label), None)
    if pool and dask and pool.measure and dask.measure:
        text += (
            f"\n\n2 local Dask workers vs the local pool: "
            f"{dask.measure.seconds / pool.measure.seconds:.2f}x the time, "
            f"{dask.measure.tree_mib / pool.measure.tree_mib:.2f}x the memory of the tree."
        )
    return text


def write_docs(path: Path, section: str) -> None:
    """Replace the text between the markers in ``path`` (or append it, creating the file)."""
    block = f"{MARK_START}\n{section.rstrip()}\n{MARK_END}\n"
    text = path.read_text() if path.exists() else "# Performance\n\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine_line() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    total_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                total_kib = int(line.split()[1])
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date}; {model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"{total_kib / 2**20:.1f} GiB RAM; load average at the start {load}"
    )


def skipped_sides(args: argparse.Namespace) -> list[str]:
    """A sentence naming the sides this run left out, so a table is not read as complete."""
    left_out = [
        *(["MariaDB"] if "mysql" not in args.database else []),
        *(["2 Dask workers"] if not args.dask and "scale-hour" in args.cases else []),
        *(name for name in ("DuckDB", "Polars") if name.lower() not in args.references),
    ]
    return [f"Not run this time: {', '.join(left_out)}."] if left_out else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("BENCH_SCALE", "1")),
        help="Multiplies rows, subscribers and cells (also BENCH_SCALE); 0.02 checks the bench.",
    )
    parser.add_argument("--cases", nargs="+", choices=["scale-hour", "ten-million"], default=None)
    parser.add_argument(
        "--database",
        nargs="+",
        choices=["sqlite", "mysql"],
        default=os.environ.get("BENCH_DATABASES", "sqlite mysql").split(),
        help="Where ours stores its rows (also BENCH_DATABASES); mysql is skipped, with a "
        "message, when the server of --mysql-url does not answer.",
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/na_bench"),
        help="A server and a name; the bench uses the throwaway database <name>_scale.",
    )
    parser.add_argument(
        "--dask",
        action="store_true",
        default=os.environ.get("BENCH_DASK", "") not in ("", "0"),
        help="Also the scale hour on 2 local Dask workers (also BENCH_DASK=1).",
    )
    parser.add_argument(
        "--references",
        nargs="*",
        choices=["duckdb", "polars"],
        default=os.environ.get("BENCH_REFERENCES", "duckdb polars").split(),
        help="Which peers to run (also BENCH_REFERENCES); Polars needs ~12 GB on the scale hour.",
    )
    parser.add_argument("--hour-rows", type=int, default=5_000_000)
    parser.add_argument("--file-rows", type=int, default=10_000_000)
    parser.add_argument("--subscribers", type=int, default=3_000_000)
    parser.add_argument("--cells", type=int, default=30_000)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument(
        "--repeat-big",
        type=int,
        default=int(os.environ.get("BENCH_REPEAT_BIG", "1")),
        help="Runs of each measure of the big cases; the median is shown.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--docs",
        type=Path,
        default=ROOT / "docs" / "performance.md",
        help="Where the figures are written between the bench:scale markers.",
    )
    parser.add_argument("--no-docs", action="store_true", help="Print only.")
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args()
    args.cases = args.cases or ["scale-hour", "ten-million"]
    args.out.mkdir(parents=True, exist_ok=True)

    found = cases(args)
    if args.generate_only:
        return
    if "mysql" in args.database:
        try:
            mysql_connect(args.mysql_url).close()
        except Exception as failure:
            print(f"MariaDB/MySQL skipped: {args.mysql_url} does not answer ({failure})")
            args.database = [name for name in args.database if name != "mysql"]
    machine = machine_line()
    print(machine, flush=True)
    tables = []
    all_same = True
    for case in found:
        results: list[Result] = []
        for database in args.database:
            label = "ours, SQLite" if database == "sqlite" else "ours, MariaDB"
            print(f"running {case.name}: {label} ...", flush=True)
            results.append(run_ours(case, args, label, database=database))
        if case.key == "scale-hour" and args.dask and bench.find_spec("distributed"):
            print(f"running {case.name}: ours on 2 Dask workers ...", flush=True)
            with bench.dask_cluster(args, 2) as (address, pids):
                results.append(
                    run_ours(
                        case,
                        args,
                        "ours, SQLite, 2 Dask workers",
                        database="sqlite",
                        env_extra={"KPI_DASK_SCHEDULER": address},
                        also=pids,
                    )
                )
        for engine in args.references:
            print(f"running {case.name}: {engine} ...", flush=True)
            results.append(run_reference(case, args, engine))
        table = case_table(case, results)
        all_same = all_same and "NO:" not in table and "failed" not in table
        print("\n" + table + "\n", flush=True)
        tables.append(table)
    section = "\n\n".join(
        [
            "## At an operator's volume (`bench/scale.py`)",
            f"Machine: {machine}. Scale {args.scale:g}.",
            *tables,
            *skipped_sides(args),
            "Memory: peak of the summed RSS of the whole process tree (tree) and of its largest "
            "process, sampled every 20 ms. Growth and state store per hour of input. The Dask row "
            "counts the scheduler and workers. Figures from a shared, loaded machine are "
            "indicative only.",
        ]
    )
    if not args.no_docs:
        write_docs(args.docs, section)
        print(f"written to {args.docs}")
    if not all_same:
        sys.exit(1)


if __name__ == "__main__":
    main()
