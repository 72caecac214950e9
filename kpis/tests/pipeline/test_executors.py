"""The per-file work on an executor: the same database in every mode, and the faults of each."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from kpis.models import FileState, InputFileRecord, InputFileStatus, RunLock
from kpis.pipeline import aggregate_file, scan_input_dir
from kpis.pipeline.executors import ExecutorConfig, FileExecutor, executor_for
from kpis.registry import KPIS
from kpis.sampledata import file_name, write_sample_files
from kpis.services import UpdateConfig
from kpis.services.read import reads_in_order
from kpis.tests.conftest import InputFolder, RunResult, utc
from kpis.tests.faults import (
    Snapshot,
    assert_part_of,
    database_clear,
    database_snapshot,
    stored_states,
)

# The same scenario and subprocess helpers as the crash tests.
from kpis.tests.management.test_reliability import NOW, POPULATION, START, finish, update_process

HASH_KEY = "0123456789abcdef"
LATER_NS = 1_767_580_000_000_000_000


def mixed_input(folder: InputFolder) -> None:
    """18 intervals of two files, plus a file with bad rows, an unreadable one and a re-delivery."""
    written = write_sample_files(
        folder.path, start=START, intervals=18, parts=2, rows=300, population=POPULATION
    )
    folder.write(
        "2026-01-05T00:10", [("4917000001", "7", "3", "10", "x"), ("", "7", "3", "1", "1")], part=5
    )
    folder.write_raw(
        file_name(interval_start=utc("2026-01-05T00:20"), part=6), b"not,a,contract\n1,2,3\n"
    )
    # The same content as a file of the first interval, delivered again under another name.
    folder.write_raw(
        file_name(interval_start=utc("2026-01-05T01:15"), part=7), written[0].read_bytes()
    )


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A Dask cluster of two worker processes on this machine; its scheduler's address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster.scheduler_address


# --- identical results ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_in_process_a_local_pool_and_a_dask_cluster_store_the_same_database(
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    dask_cluster: str,
    settings: Any,
) -> None:
    mixed_input(input_folder)
    late = START.replace(minute=35)
    # Files of about 10 kB: each is read as a few byte ranges, wherever it runs.
    settings.KPI_READ_RANGE_BYTES = 4096

    def two_runs(*options: str) -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
        first = run_update(NOW, "--no-progress", *options)
        assert first.exit_code == 1, first.stderr  # the unreadable file
        assert "intervals processed: 18 " in first.stdout
        # A late file and a file rewritten in place, read by a second run.
        # Fixed times, so that every mode records the same fingerprints.
        late_file = input_folder.write(
            late.strftime("%Y-%m-%dT%H:%M"), [("4917", "1", "2", "3", "4")], part=8
        )
        os.utime(late_file, ns=(LATER_NS, LATER_NS))
        rewritten = input_folder.path / file_name(interval_start=START, part=1)
        original, original_ns = rewritten.read_bytes(), rewritten.stat().st_mtime_ns
        rewritten.write_bytes(original + b"4917000002,9,9,100,100\n")
        os.utime(rewritten, ns=(LATER_NS, LATER_NS))
        second = run_update(NOW, "--no-progress", *options)
        assert second.exit_code == 0, second.stderr
        assert "intervals processed: 2 " in second.stdout
        result = database_snapshot(), stored_states()
        # Back to the first input for the next mode.
        late_file.unlink()
        rewritten.write_bytes(original)
        os.utime(rewritten, ns=(original_ns, original_ns))
        database_clear()
        return result

    in_process = two_runs("--workers", "1")
    local_pool = two_runs("--workers", "2")
    settings.KPI_DASK_SCHEDULER = dask_cluster
    on_dask = two_runs()

    assert in_process[0]["files"], "something was stored"
    assert local_pool == in_process
    assert on_dask == in_process


@pytest.mark.django_db
def test_a_run_with_several_workers_reads_in_a_pool_and_says_so(
    input_folder: InputFolder, run_update: Callable[..., RunResult], caplog: Any
) -> None:
    write_sample_files(
        input_folder.path, start=START, intervals=2, parts=2, rows=50, population=POPULATION
    )
    with caplog.at_level("INFO", logger="kpis.update"):
        assert run_update(NOW, "--workers", "2").exit_code == 0
    assert "reading 4 file(s) on 2 local worker processes" in caplog.text


def test_one_worker_or_one_file_stays_in_the_calling_process() -> None:
    with executor_for(ExecutorConfig(workers=1), files=10) as executor:
        assert executor.in_process
    with executor_for(ExecutorConfig(workers=8), files=1) as executor:
        assert executor.in_process
    with executor_for(ExecutorConfig(workers=8), files=3) as executor:
        assert executor.kind == "process pool"
        assert executor.description == "3 local worker processes"
        pids = {executor.submit(os.getpid).result() for _ in range(6)}
        assert os.getpid() not in pids


def test_a_pool_worker_never_loads_django() -> None:
    with executor_for(ExecutorConfig(workers=2), files=2) as executor:
        here = executor.submit(
            eval, "'kpis.pipeline.aggregates' in __import__('sys').modules"
        ).result()
        django = executor.submit(eval, "'django' in __import__('sys').modules").result()
    assert (here, django) == (True, False)


def test_a_file_outcome_comes_back_from_a_worker_unchanged(input_folder: InputFolder) -> None:
    path = input_folder.write(
        "2026-01-05T00:00", [("4917000001", "7", "3", "10", "5"), ("x", "7", "3", "1", "1")]
    )
    here = aggregate_file(path, hash_key=HASH_KEY)
    with executor_for(ExecutorConfig(workers=2), files=2) as executor:
        there = executor.submit(aggregate_file, path, hash_key=HASH_KEY).result()
    assert there.partial is not None and here.partial is not None
    assert [kpi.rank(there.partial, 100) for kpi in KPIS] == [
        kpi.rank(here.partial, 100) for kpi in KPIS
    ]
    assert (there.stats.rows_accepted, dict(there.stats.rejects), there.stats.sha256) == (
        here.stats.rows_accepted,
        dict(here.stats.rejects),
        here.stats.sha256,
    )


def test_the_files_in_flight_stay_within_the_executor_slots(input_folder: InputFolder) -> None:
    written = write_sample_files(
        input_folder.path, start=START, intervals=10, parts=2, rows=20, population=POPULATION
    )
    files = scan_input_dir(input_folder.path)
    assert len(files) == len(written)
    batches: dict[Any, list[Any]] = {}
    for input_file in files:
        batches.setdefault(input_file.interval_start, []).append(input_file)
    lock = threading.Lock()
    submitted = 0
    most = 0
    yielded = 0

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            nonlocal submitted, most
            with lock:
                submitted += 1
                most = max(most, submitted - yielded)
            return super().submit(fn, *args, **kwargs)

    with Counting(max_workers=2) as threads:
        executor = FileExecutor(
            kind="process pool", executor=threads, slots=5, description="threads"
        )
        config = UpdateConfig(
            input_dir=input_folder.path,
            now=START,
            top_n=3,
            grace=timedelta(0),
            hash_key=HASH_KEY,
            block_size=1 << 20,
        )
        order = []
        for start, outcomes in reads_in_order(
            sorted(batches.items()), config=config, executor=executor, heartbeat=lambda: None
        ):
            order.append(start)
            assert len(outcomes) == 2
            with lock:
                yielded += len(outcomes)
    assert order == sorted(batches)
    assert submitted == 20
    assert 4 <= most <= 5  # two intervals of two files fit in five slots, three do not


def test_the_lock_is_renewed_while_the_command_waits_for_workers(
    input_folder: InputFolder,
) -> None:
    input_folder.write("2026-01-05T00:00", [("4917000001", "7", "3", "10", "5")])
    files = scan_input_dir(input_folder.path)
    beats = threading.Semaphore(0)

    class Waiting(ThreadPoolExecutor):
        """Each read starts only once the command has renewed its lock three times."""

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            def after_three_beats() -> Any:
                for _ in range(3):
                    assert beats.acquire(timeout=10), "the lock was not renewed while waiting"
                return fn(*args, **kwargs)

            return super().submit(after_three_beats)

    config = UpdateConfig(
        input_dir=input_folder.path,
        now=START,
        top_n=3,
        grace=timedelta(0),
        hash_key=HASH_KEY,
        block_size=1 << 20,
    )
    with Waiting(max_workers=1) as threads:
        executor = FileExecutor(kind="process pool", executor=threads, slots=2, description="x")
        [(start, outcomes)] = list(
            reads_in_order(
                [(files[0].interval_start, files)],
                config=config,
                executor=executor,
                heartbeat=beats.release,
            )
        )
    assert start == files[0].interval_start
    assert outcomes[files[0].name].stats.rows_accepted == 1


# --- settings and options ------------------------------------------------------


@pytest.mark.django_db
def test_workers_must_be_a_positive_number(input_folder: InputFolder) -> None:
    for bad in ("0", "-2", "two"):
        with pytest.raises(CommandError, match="--workers"):
            call_command(
                "update_network_stats",
                "--input-dir",
                str(input_folder.path),
                "--workers",
                bad,
                stdout=io.StringIO(),
                stderr=io.StringIO(),
            )


# --- faults --------------------------------------------------------------------


def kill_workers_while_reading(
    process: subprocess.Popen[str], folder: Path, *, kills: int
) -> list[str]:
    """SIGKILL ``kills`` pool workers of ``process``, each while it has an input file open."""
    command = psutil.Process(process.pid)
    killed: list[str] = []
    while len(killed) < kills and process.poll() is None:
        try:
            workers = command.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for worker in workers:
            try:
                reading = [f.path for f in worker.open_files() if f.path.startswith(str(folder))]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if reading:
                worker.send_signal(signal.SIGKILL)
                killed.append(Path(reading[0]).name)
                time.sleep(0.5)  # let the command see it before looking for the next one
                break
        time.sleep(0.002)
    return killed


def run_killing_workers(
    folder: InputFolder, run_update: Callable[..., RunResult], *, kills: int
) -> tuple[Snapshot, list[str], RunResult]:
    """An uninterrupted run's database, then a two-worker run with ``kills`` workers killed.

    Returns the uninterrupted database, what was killed and the interrupted run's result.
    """
    # Files large enough that a worker is caught with one open.
    write_sample_files(
        folder.path, start=START, intervals=6, parts=2, rows=60_000, population=POPULATION
    )
    assert run_update(NOW, "--workers", "1").exit_code == 0
    expected = database_snapshot()
    database_clear()

    process = update_process(folder, "--workers", "2", env={"KPI_READ_BLOCK_BYTES": str(64 * 1024)})
    killed = kill_workers_while_reading(process, folder.path, kills=kills)
    return expected, killed, finish(process)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pool_worker_killed_while_reading_is_replaced_and_the_run_completes(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    expected, killed, result = run_killing_workers(input_folder, run_update, kills=1)

    assert len(killed) == 1, "no worker was caught reading"
    assert result.exit_code == 0, result.stderr
    assert "a worker process died while reading; reading" in result.stderr
    assert "intervals processed: 6 " in result.stdout
    assert database_snapshot() == expected
    assert RunLock.objects.get().holder == ""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_workers_that_keep_dying_stop_the_run_cleanly_and_the_next_run_completes(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    expected, killed, result = run_killing_workers(input_folder, run_update, kills=2)

    assert len(killed) == 2, "no worker was caught reading"
    assert result.exit_code == 1, result.stderr
    assert "CommandError: a worker process died while reading" in result.stderr
    assert "the next run reads them again" in result.stderr
    assert "Traceback" not in result.stderr
    stored = database_snapshot()
    if stored["files"]:
        assert_part_of(stored, expected)
    assert RunLock.objects.get().holder == ""

    rerun = finish(update_process(input_folder, "--workers", "2"))
    assert rerun.exit_code == 0, rerun.stderr
    assert database_snapshot() == expected


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_scheduler_stops_the_run_with_one_line_and_nothing_stored(
    input_folder: InputFolder,
) -> None:
    write_sample_files(
        input_folder.path, start=START, intervals=2, parts=2, rows=50, population=POPULATION
    )
    address = f"tcp://127.0.0.1:{closed_port()}"
    result = finish(
        update_process(
            input_folder,
            env={"KPI_DASK_SCHEDULER": address, "KPI_DASK_CONNECT_SECONDS": "1"},
        )
    )

    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"CommandError: KPI_DASK_SCHEDULER={address}: cannot reach")
    assert "nothing was read or stored" in lines[0]
    assert not any(database_snapshot().values())
    assert RunLock.objects.get().holder == ""


@pytest.fixture
def blind_dask_worker(input_folder: InputFolder) -> Iterator[str]:
    """A Dask scheduler whose one worker sees an empty folder where the input folder is."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding a folder from one process needs root and unshare")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=0,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        # A private mount namespace: an empty tmpfs over the input folder, for this worker only.
        script = (
            f"mount -t tmpfs none {input_folder.path} && exec {sys.executable} -m "
            f"distributed.cli.dask_worker {cluster.scheduler_address} --nthreads 1 "
            "--no-nanny --no-dashboard"
        )
        worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env={**os.environ, "PYTHONPATH": str(settings.BASE_DIR)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            cluster.get_client().wait_for_workers(1, timeout=60)
            yield cluster.scheduler_address
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.django_db
def test_a_dask_worker_that_cannot_see_the_folder_fails_each_file_with_a_clear_error(
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    blind_dask_worker: str,
    settings: Any,
) -> None:
    written = write_sample_files(
        input_folder.path, start=START, intervals=2, parts=2, rows=50, population=POPULATION
    )
    settings.KPI_DASK_SCHEDULER = blind_dask_worker

    result = run_update(NOW)

    assert result.exit_code == 1
    assert "4 file(s) could not be read" in result.stderr
    records = InputFileRecord.objects.order_by("name")
    assert [r.name for r in records] == sorted(p.name for p in written)
    for record in records:
        assert record.status == InputFileStatus.FAILED
        path = input_folder.path / record.name
        assert record.error == (
            f"a Dask worker could not find {path}: every worker must see the input folder "
            "at the same path as this machine (shared storage)"
        )
        assert f"failed file {record.name}: a Dask worker could not find" in result.stderr
    assert not FileState.objects.exists()
