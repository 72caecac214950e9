"""The command as cron runs it: a real process on the test database."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from kpis.models import (
    CellUniqueUsers,
    InputFileRecord,
    IntervalLedger,
    ServiceTrafficVolume,
    UpdateRun,
)
from kpis.sampledata import Population, write_sample_files
from kpis.tests.conftest import InputFolder, RunResult, command_process, utc

pytestmark = pytest.mark.django_db(transaction=True)


def rows() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return (
        sorted(
            ServiceTrafficVolume.objects.values_list(
                "interval", "interval_start_timestamp", "service_id", "total_bytes"
            )
        ),
        sorted(
            CellUniqueUsers.objects.values_list(
                "interval", "interval_start_timestamp", "cell_id", "number_of_unique_users"
            )
        ),
    )


def intervals_processed(stdout: str) -> int:
    if "another update_network_stats run is in progress" in stdout:
        return 0
    match = re.search(r"intervals processed: (\d+)", stdout)
    assert match, stdout
    return int(match[1])


def test_two_runs_started_at_once_never_double_process(input_folder: InputFolder) -> None:
    write_sample_files(
        input_folder.path,
        start=utc("2021-07-18T00:00"),
        intervals=12,
        parts=2,
        rows=3000,
        population=Population(subscribers=500, cells=40, services=10, seed=3),
    )
    args = (
        "update_network_stats",
        "--now",
        "2021-07-18T02:00Z",
        "--input-dir",
        str(input_folder.path),
    )

    processes = [command_process(*args) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    # Whichever way the two runs interleave, each interval is processed exactly once.
    processed = [intervals_processed(out) for out, _ in outputs]
    assert sorted(processed) == [0, 12], outputs
    assert InputFileRecord.objects.count() == 24
    assert set(IntervalLedger.objects.filter(interval=1).values_list("revision", flat=True)) == {1}
    concurrent = rows()

    # The same files processed by one run alone give the same rows.
    ServiceTrafficVolume.objects.all().delete()
    CellUniqueUsers.objects.all().delete()
    InputFileRecord.objects.all().delete()
    IntervalLedger.objects.all().delete()
    alone = command_process(*args)
    alone.communicate(timeout=300)
    assert rows() == concurrent


def test_the_summary_line_and_exit_status_under_cron(input_folder: InputFolder) -> None:
    input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0), ("b", 2, 1, "x", 0)])
    input_folder.write("2021-07-18T00:05", [("a", 1)], header=("msisdn", "cell"))

    process = command_process(
        "update_network_stats", "--now", "2021-07-18T01:10Z", "--input-dir", str(input_folder.path)
    )
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 1
    assert stdout.strip().splitlines()[-1] == (
        "intervals processed: 2 (changed: 1), files read: 2, files failed: 1, duplicates: 0, "
        "rows accepted: 1, rows rejected: 1, hours rolled up: 1"
    )
    assert "missing required column(s): cell_id" in stderr
    # One log line per interval, with its figures.
    assert "interval=2021-07-18T00:00Z revision=1 files_read=1" in stderr


def modules_imported(stderr: str) -> set[str]:
    """The top-level packages a process imported, read from its ``-X importtime`` report."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def test_a_run_with_nothing_to_read_never_loads_pandas_or_pyarrow(
    input_folder: InputFolder,
) -> None:
    input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
    args = ["update_network_stats", "--now", "2021-07-18T01:10Z", "--no-progress"]
    args += ["--input-dir", str(input_folder.path)]
    heavy = {"pandas", "pyarrow", "numpy"}

    runs = []
    for _ in range(2):
        process = command_process(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        runs.append((intervals_processed(stdout), modules_imported(stderr)))

    (read, reading_imports), (idle, idle_imports) = runs
    assert (read, idle) == (1, 0)
    assert heavy <= reading_imports  # the report sees them when a file is read
    assert not heavy & idle_imports


def test_a_malformed_clock_is_a_clear_error(input_folder: InputFolder) -> None:
    process = command_process(
        "update_network_stats", "--now", "yesterday", "--input-dir", str(input_folder.path)
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "'yesterday' is not an ISO 8601 time" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--since", "yesterday"),
            "argument --since: 'yesterday' is not an ISO 8601 time, e.g. 2021-07-18T01:05:00Z",
        ),
        (("--workers", "0"), "argument --workers: 0 is less than 1"),
        (
            ("--since", "2021-07-18T06:00Z", "--until", "2021-07-18T00:00Z"),
            "--since 2021-07-18T06:00:00Z is not before --until 2021-07-18T00:00:00Z: the range "
            "would hold no interval",
        ),
        (
            ("--since", "2021-07-18T00:00Z", "--until", "2021-07-18T00:00Z"),
            "--since 2021-07-18T00:00:00Z is not before --until 2021-07-18T00:00:00Z: the range "
            "would hold no interval",
        ),
    ],
)
def test_a_usage_error_is_one_line_and_exit_status_2(
    input_folder: InputFolder, args: tuple[str, ...], message: str
) -> None:
    input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
    process = command_process(
        "update_network_stats", "--input-dir", str(input_folder.path), *args, "--no-progress"
    )
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 2
    assert stdout == ""
    assert stderr.splitlines() == [f"manage.py update_network_stats: error: {message}"]
    # Nothing ran: no file read, no run recorded.
    assert InputFileRecord.objects.count() == 0
    assert UpdateRun.objects.count() == 0


def test_a_usage_error_of_the_prune_command_is_one_line_too() -> None:
    process = command_process("prune_network_stats", "--keep-days", "7", "--now", "today")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.splitlines() == [
        "manage.py prune_network_stats: error: argument --now: 'today' is not an ISO 8601 "
        "time, e.g. 2021-07-18T01:05:00Z"
    ]


def test_a_missing_input_folder_is_a_clear_error(tmp_path: object) -> None:
    process = command_process(
        "update_network_stats", "--input-dir", "/nonexistent/input", "--now", "2021-07-18T00:00Z"
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "input folder /nonexistent/input does not exist" in stderr


def test_a_malformed_setting_stops_start_up_naming_the_variable(input_folder: InputFolder) -> None:
    process = command_process(
        "update_network_stats", "--input-dir", str(input_folder.path), env={"KPI_TOP_N": "three"}
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert stderr.splitlines() == [
        "error: KPI_TOP_N='three' is not a whole number: use a whole number of at least 1."
    ]


@pytest.mark.django_db(transaction=True)
def test_files_whose_names_break_the_contract_are_counted_and_named_at_verbosity_2(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", [("4917000001", 1, 1, 10, 0)])
    for name in ("usage.csv", "notes.txt"):
        input_folder.write_raw(name, b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n")
    # An upload in progress and a hidden file are not mistakes: they are not counted.
    input_folder.write_raw("network.records-1626566720000.1.csv.tmp", b"partial")
    input_folder.write_raw(".DS_Store", b"")

    quiet = run_update("2021-07-18T01:10Z")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout.strip().endswith("files ignored: 2")
    assert "usage.csv" not in quiet.stderr

    verbose = command_process(
        "update_network_stats",
        *("--now", "2021-07-18T01:10Z", "--input-dir", str(input_folder.path), "-v", "2"),
    )
    stdout, stderr = verbose.communicate(timeout=120)
    assert "files ignored: 2" in stdout
    assert "2 file(s) ignored: their names do not follow the contract" in stderr
    assert "notes.txt, usage.csv" in stderr
