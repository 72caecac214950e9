"""Faults: crashes, overlapping runs, files that arrive late, twice, changed or not at all."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kpis.models import (
    CellUniqueUsers,
    FileState,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
    RunLock,
    ServiceTrafficVolume,
)
from kpis.pipeline import HOUR, INTERVAL, hour_start_for, parse_file_name
from kpis.pipeline.files import interval_start_for_epoch_ms
from kpis.sampledata import Population, write_sample_files
from kpis.tests.conftest import InputFolder, RunResult, command_process, utc
from kpis.tests.faults import assert_part_of, database_clear, database_snapshot, fault_env

START = utc("2026-01-05T00:00")
NOW = "2026-01-05T02:10Z"  # both hours are due; the second has six intervals only
POPULATION = Population(subscribers=400, cells=30, services=25, seed=11)


def sample_files(folder: InputFolder, *, intervals: int = 18, rows: int = 300) -> list[Path]:
    return write_sample_files(
        folder.path, start=START, intervals=intervals, parts=2, rows=rows, population=POPULATION
    )


def update_process(folder: InputFolder, *extra: str, env: dict[str, str] | None = None):
    key_env = {"KPI_SUBSCRIBER_KEY": settings.KPI_SUBSCRIBER_KEY, "KPI_LOG_LEVEL": "INFO"}
    return command_process(
        "update_network_stats",
        "--now",
        NOW,
        "--input-dir",
        str(folder.path),
        "--no-progress",
        *extra,
        env={**key_env, **(env or {})},
    )


def finish(process) -> RunResult:
    stdout, stderr = process.communicate(timeout=300)
    return RunResult(process.returncode, stdout, stderr)


def reference_snapshot(run_update: Callable[..., RunResult]) -> dict[str, list[tuple]]:
    """What one uninterrupted run stores; the database is emptied again afterwards."""
    assert run_update(NOW).exit_code == 0
    snapshot = database_snapshot()
    database_clear()
    return snapshot


# --- crashes -----------------------------------------------------------------

# 18 intervals of two files: 36 files read, 36 states saved, rows replaced for
# intervals 1-12, hour 0 (call 13), intervals 13-18, hour 1 (call 20).
KILL_POINTS = {
    "while_reading_a_file": "kpis.pipeline.tasks:file_to_state:7:reading",
    # The state is in the store, nothing references it yet.
    "after_a_state_is_written": "kpis.pipeline.tasks:file_to_state:7:after",
    "between_intervals": "kpis.services.update:interval_persist:6:before",
    # Between the state's reference and the commit of the interval that makes it count.
    "inside_the_interval_transaction": "kpis.services.persist:file_states_replace:9:after",
    "inside_the_first_hour_roll_up": "kpis.services.persist:_kpi_rows_replace:13:after",
    "inside_the_last_hour_roll_up": "kpis.services.persist:_kpi_rows_replace:20:after",
}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kill_at", KILL_POINTS.values(), ids=KILL_POINTS.keys())
def test_a_run_killed_anywhere_is_completed_by_the_next_one(
    kill_at: str,
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    tmp_path: Path,
    state_dir: Path,
) -> None:
    sample_files(input_folder)
    expected = reference_snapshot(run_update)

    # The fault injector wraps functions of the command's process: reading must happen there.
    # Killed pool workers are tested in test_executors.py.
    workers = "1" if ":file_to_state:" in kill_at else "2"
    crashed = finish(
        update_process(
            input_folder, env=fault_env(tmp_path / "fi", KILL_AT=kill_at, KPI_WORKERS=workers)
        )
    )
    assert crashed.exit_code == -signal.SIGKILL, crashed.stderr
    assert_part_of(database_snapshot(), expected)
    holder = RunLock.objects.get().holder
    assert holder.split(":")[1].isdigit(), "the killed run held the lock"

    rerun = finish(update_process(input_folder))
    assert rerun.exit_code == 0, rerun.stderr
    assert "took over the lock of a run that died" in rerun.stderr
    assert database_snapshot() == expected
    assert RunLock.objects.get().holder == ""
    # What the killed run wrote and never committed is gone; nothing referenced is missing.
    in_store = {p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*") if p.is_file()}
    assert in_store == set(FileState.objects.values_list("key", flat=True))

    again = finish(update_process(input_folder))
    assert again.exit_code == 0, again.stderr
    assert "intervals processed: 0 " in again.stdout
    assert database_snapshot() == expected


# --- overlapping runs --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_three_runs_started_at_once_store_exactly_one_runs_rows(
    input_folder: InputFolder, run_update: Callable[..., RunResult], tmp_path: Path
) -> None:
    sample_files(input_folder)
    expected = reference_snapshot(run_update)

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = fault_env(tmp_path / "fi", BARRIER_DIR=str(barrier))
    processes = [update_process(input_folder, env=env) for _ in range(3)]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes)
        time.sleep(0.01)
    (barrier / "go").touch()  # all three ask for the lock now
    results = [finish(process) for process in processes]

    assert [r.exit_code for r in results] == [0, 0, 0], [r.stderr for r in results]
    busy = "another update_network_stats run is in progress; nothing to do."
    losers = [r for r in results if r.stdout.strip() == busy]
    winners = [r for r in results if "intervals processed: 18 " in r.stdout]
    assert (len(winners), len(losers)) == (1, 2), [r.stdout for r in results]
    assert database_snapshot() == expected


# --- files that arrive late, twice, changed or not at all --------------------


def oracle(folder: Path, top_n: int) -> dict[str, list[tuple]]:
    """KPI rows of every five-minute interval and hour, computed plainly from the files."""
    volume: dict[tuple[datetime, int], Counter[int]] = defaultdict(Counter)
    users: dict[tuple[datetime, int], dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in folder.iterdir():
        epoch_ms = parse_file_name(path.name)
        if epoch_ms is None:
            continue
        start = interval_start_for_epoch_ms(epoch_ms)
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.name.endswith(".gz") else data).decode()
        for row in csv.DictReader(io.StringIO(text)):
            for key in ((start, 1), (hour_start_for(start), 2)):
                total = int(row["bytes_uplink"]) + int(row["bytes_downlink"])
                volume[key][int(row["service_id"])] += total
                users[key][int(row["cell_id"])].add(row["msisdn"].strip())

    def ranked(values: dict[int, int]) -> list[tuple[int, int]]:
        return sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]

    def end(start: datetime, interval: int) -> datetime:
        return start + (INTERVAL if interval == 1 else HOUR)

    return {
        "service_rows": sorted(
            (start, end(start, kind), kind, key, value)
            for (start, kind), totals in volume.items()
            for key, value in ranked(totals)
        ),
        "cell_rows": sorted(
            (start, end(start, kind), kind, key, value)
            for (start, kind), cells in users.items()
            for key, value in ranked({cell: len(s) for cell, s in cells.items()})
        ),
    }


def stored_rows() -> dict[str, list[tuple]]:
    times = ("interval_start_timestamp", "interval_end_timestamp", "interval")
    return {
        "service_rows": sorted(
            ServiceTrafficVolume.objects.values_list(*times, "service_id", "total_bytes")
        ),
        "cell_rows": sorted(
            CellUniqueUsers.objects.values_list(*times, "cell_id", "number_of_unique_users")
        ),
    }


@pytest.fixture
def update_log() -> Iterator[io.StringIO]:
    """What the update command logs (the kpis loggers do not propagate to the root)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("kpis.update")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def ledger(start: str, interval: IntervalType = IntervalType.FIVE_MINUTES) -> IntervalLedger:
    return IntervalLedger.objects.get(interval_start_timestamp=utc(start), interval=interval)


def rows_for(start: str, subscribers: int = 5, service: int = 1) -> list[list[object]]:
    return [
        [f"4917{start[-5:-3]}{n:04d}", n % 3 + 1, service + n % 2, 100 * n, 7]
        for n in range(subscribers)
    ]


@pytest.mark.django_db
def test_a_late_file_recomputes_its_interval_and_hour_without_counting_twice(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 6))
    input_folder.write("2026-01-05T00:05", rows_for("2026-01-05T00:05", 4))
    assert run_update("2026-01-05T01:05Z").exit_code == 0
    assert stored_rows() == oracle(input_folder.path, settings.KPI_TOP_N)

    late = rows_for("2026-01-05T00:00", 9, service=7)  # same subscribers plus new ones
    input_folder.write("2026-01-05T00:00", late, part=3)
    result = run_update("2026-01-05T01:30Z")
    assert result.exit_code == 0
    assert "intervals processed: 1 (changed: 1), files read: 1," in result.stdout
    assert stored_rows() == oracle(input_folder.path, settings.KPI_TOP_N)
    assert (ledger("2026-01-05T00:00").revision, ledger("2026-01-05T00:00").files_counted) == (2, 2)
    assert ledger("2026-01-05T00:05").revision == 1
    assert ledger("2026-01-05T00:00", IntervalType.ONE_HOUR).revision == 2


@pytest.mark.django_db
def test_a_file_delivered_twice_under_new_names_is_counted_once(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    original = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 6))
    assert run_update("2026-01-05T00:30Z").exit_code == 0
    before = stored_rows()

    same_interval = input_folder.write_raw(
        original.name.replace(".0.csv", ".5.csv"), original.read_bytes()
    )
    other_interval = input_folder.path / original.name.replace("-1767571", "-1767572")
    other_interval.write_bytes(original.read_bytes())
    assert parse_file_name(other_interval.name) is not None
    result = run_update("2026-01-05T03:00Z")

    assert result.exit_code == 0
    assert "duplicates: 2" in result.stdout
    records = {r.name: r for r in InputFileRecord.objects.all()}
    for copy in (same_interval, other_interval):
        assert records[copy.name].status == InputFileStatus.DUPLICATE
        assert records[copy.name].duplicate_of == original.name
    assert [r for r in stored_rows()["service_rows"] if r[2] == 1] == [
        r for r in before["service_rows"] if r[2] == 1
    ]
    assert ledger("2026-01-05T00:00").files_duplicate == 1


@pytest.mark.django_db
@pytest.mark.parametrize("same_size", [True, False], ids=["same_size", "new_size"])
def test_a_file_rewritten_in_place_replaces_its_old_content(
    same_size: bool, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    path = input_folder.write("2026-01-05T00:00", [["a", 1, 1, 100, 0], ["b", 1, 2, 200, 0]])
    input_folder.write("2026-01-05T00:00", [["c", 2, 3, 50, 0]], part=1)
    assert run_update("2026-01-05T01:05Z").exit_code == 0

    new_rows = [["a", 1, 1, 900, 0], ["b", 1, 2, 200, 0]]
    if not same_size:
        new_rows.append(["d", 4, 4, 1, 1])
    stat = path.stat()
    input_folder.write("2026-01-05T00:00", new_rows)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (path.stat().st_size == stat.st_size) is same_size

    result = run_update("2026-01-05T01:10Z")
    assert result.exit_code == 0
    assert "intervals processed: 1 (changed: 1), files read: 1," in result.stdout
    assert stored_rows() == oracle(input_folder.path, settings.KPI_TOP_N)
    assert ledger("2026-01-05T00:00").revision == 2
    assert ledger("2026-01-05T00:00", IntervalType.ONE_HOUR).revision == 2


@pytest.mark.django_db
def test_a_file_only_touched_is_not_read_again(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    path = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00"))
    assert run_update("2026-01-05T01:05Z").exit_code == 0
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 5_000_000_000))
    result = run_update("2026-01-05T01:10Z")
    assert "intervals processed: 0 " in result.stdout
    assert InputFileRecord.objects.get().mtime_ns == path.stat().st_mtime_ns


@pytest.mark.django_db
def test_a_vanished_file_keeps_its_counts_even_when_its_interval_is_recomputed(
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    update_log: io.StringIO,
) -> None:
    gone = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 6))
    input_folder.write("2026-01-05T00:05", rows_for("2026-01-05T00:05", 3))
    assert run_update("2026-01-05T00:20Z").exit_code == 0
    with_it = oracle(input_folder.path, settings.KPI_TOP_N)
    gone_copy = gone.read_bytes()
    gone.unlink()

    assert run_update("2026-01-05T00:25Z").exit_code == 0
    assert InputFileRecord.objects.get(name=gone.name).status == InputFileStatus.COUNTED

    # A late file makes the interval be recomputed: the vanished file still counts.
    late = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 8, 4), part=1)
    result = run_update("2026-01-05T01:05Z")
    assert result.exit_code == 0
    assert f"file {gone.name} is gone from the input folder; its counts are kept" in (
        update_log.getvalue()
    )
    record = InputFileRecord.objects.get(name=gone.name)
    assert record.missing_since is not None
    assert ledger("2026-01-05T00:00").files_missing == 1
    assert ledger("2026-01-05T00:00", IntervalType.ONE_HOUR).files_missing == 1

    gone.write_bytes(gone_copy)  # put back for the oracle: the counts must match all three
    os.utime(gone, ns=(0, record.mtime_ns))
    assert stored_rows() == oracle(input_folder.path, settings.KPI_TOP_N)
    assert stored_rows() != with_it
    assert late.exists()


@pytest.mark.django_db
def test_a_vanished_file_put_back_unchanged_is_found_again_without_being_read(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    gone = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 6))
    assert run_update("2026-01-05T00:20Z").exit_code == 0
    gone_copy, gone_mtime_ns = gone.read_bytes(), gone.stat().st_mtime_ns
    gone.unlink()
    # A late file makes the interval be recomputed, which marks the vanished one missing.
    input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00", 8, 4), part=1)
    assert run_update("2026-01-05T00:25Z").exit_code == 0
    assert InputFileRecord.objects.get(name=gone.name).missing_since is not None

    gone.write_bytes(gone_copy)
    os.utime(gone, ns=(0, gone_mtime_ns))
    result = run_update("2026-01-05T00:30Z")

    assert "intervals processed: 0 " in result.stdout
    record = InputFileRecord.objects.get(name=gone.name)
    assert (record.missing_since, record.status) == (None, InputFileStatus.COUNTED)


@pytest.mark.django_db
def test_a_file_rewritten_into_garbage_is_flagged_not_silently_dropped(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    path = input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00"))
    assert run_update("2026-01-05T01:05Z").exit_code == 0
    path.write_bytes(b"not,a,csv\n1,2,3\n")
    result = run_update("2026-01-05T01:10Z")
    assert result.exit_code == 1
    assert f"failed file {path.name}: missing required column(s)" in result.stderr
    assert InputFileRecord.objects.get().status == InputFileStatus.FAILED
    api = admin_client().get("/api/intervals/", {"interval_start_timestamp__gte": "2026-01-05"})
    flags = {(row["interval"], row["complete"]) for row in api.json()}
    assert flags == {(1, False), (2, False)}


# --- the ledger over the API and in admin ------------------------------------


def admin_client() -> APIClient:
    user, _ = get_user_model().objects.get_or_create(
        username="ops", defaults={"is_staff": True, "is_superuser": True}
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.mark.django_db
def test_the_ledger_flags_hours_with_missing_intervals_or_failed_files(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    for index in range(12):  # 00:00-01:00 complete
        input_folder.write(f"2026-01-05T00:{index * 5:02d}", rows_for("2026-01-05T00:00"))
    for index in range(11):  # 01:00-02:00 has no 01:55 file
        input_folder.write(f"2026-01-05T01:{index * 5:02d}", rows_for("2026-01-05T01:00"))
    for index in range(12):  # 02:00-03:00 has a failed file
        input_folder.write(f"2026-01-05T02:{index * 5:02d}", rows_for("2026-01-05T02:00"))
    input_folder.write("2026-01-05T02:30", [["x"]], part=1, header=["msisdn"])
    assert run_update("2026-01-05T03:05Z").exit_code == 1

    client = admin_client()
    hours = client.get("/api/intervals/", {"interval": 2}).json()
    assert [(h["interval_start_timestamp"], h["complete"]) for h in hours] == [
        ("2026-01-05T00:00:00Z", True),
        ("2026-01-05T01:00:00Z", False),
        ("2026-01-05T02:00:00Z", False),
    ]
    assert [h["intervals_processed"] for h in hours] == [12, 11, 12]
    assert [h["files_failed"] for h in hours] == [0, 0, 1]

    window = client.get(
        "/api/intervals/",
        {
            "interval_start_timestamp__gte": "2026-01-05T02:25:00Z",
            "interval_end_timestamp__lte": "2026-01-05T02:35:00Z",
            "interval": "",
        },
    ).json()
    assert [(row["interval_start_timestamp"], row["complete"]) for row in window] == [
        ("2026-01-05T02:25:00Z", True),
        ("2026-01-05T02:30:00Z", False),
    ]
    bad = client.get("/api/intervals/", {"interval_start_timestamp__gte": "yesterday"})
    assert bad.status_code == 400
    assert "interval_start_timestamp__gte" in bad.json()


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["intervalledger", "inputfilerecord"])
def test_admin_shows_the_ledger_read_only(
    model: str, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2026-01-05T00:00", rows_for("2026-01-05T00:00"))
    assert run_update("2026-01-05T01:05Z").exit_code == 0
    user = get_user_model().objects.create_superuser("boss", password="x" * 20)
    client = Client()
    client.force_login(user)

    listing = client.get(f"/admin/kpis/{model}/")
    assert listing.status_code == 200
    assert b"2026" in listing.content
    assert f"/admin/kpis/{model}/add/".encode() not in listing.content
    assert client.get(f"/admin/kpis/{model}/add/").status_code == 403
    pk = (
        (IntervalLedger if model == "intervalledger" else InputFileRecord).objects.earliest("pk").pk
    )
    detail = client.get(f"/admin/kpis/{model}/{pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert client.post(f"/admin/kpis/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
