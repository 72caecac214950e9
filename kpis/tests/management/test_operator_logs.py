"""What an operator sees from update_network_stats: verbosity, log format, re-processing."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from django.conf import settings

from kpis.models import IntervalLedger, ServiceTrafficVolume
from kpis.tests.conftest import InputFolder, RunResult, command_process, database_url, utc

NOW = "2021-07-18T02:00:00Z"
ROWS = [
    ("4917000001", "10", "1", "100", "900"),
    ("4917000002", "10", "2", "50", "50"),
    ("4917000003", "11", "1", "10", "10"),
]


def run_command(folder: InputFolder, *args: str, env: dict[str, str] | None = None) -> RunResult:
    process = command_process(
        "update_network_stats", "--now", NOW, "--input-dir", str(folder.path), *args, env=env
    )
    stdout, stderr = process.communicate(timeout=300)
    return RunResult(process.returncode, stdout, stderr)


@pytest.fixture
def two_intervals_and_a_bad_file(input_folder: InputFolder) -> InputFolder:
    input_folder.write("2021-07-18T00:00", ROWS)
    input_folder.write("2021-07-18T00:05", ROWS[:2])
    input_folder.write("2021-07-18T00:10", ROWS, header=("msisdn", "cell_id"))
    return input_folder


@pytest.mark.django_db(transaction=True)
def test_verbosity_0_prints_only_errors(two_intervals_and_a_bad_file: InputFolder) -> None:
    result = run_command(two_intervals_and_a_bad_file, "--verbosity", "0")

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines
    errors = (" ERROR kpis.update ", "failed file ", "CommandError: 1 file(s) could not be read")
    assert all(any(error in line for error in errors) for line in lines), lines
    assert IntervalLedger.objects.filter(interval=1).count() == 3


@pytest.mark.django_db(transaction=True)
def test_verbosity_1_logs_each_interval_and_prints_the_summary(
    two_intervals_and_a_bad_file: InputFolder,
) -> None:
    result = run_command(two_intervals_and_a_bad_file)

    assert result.exit_code == 1
    assert "intervals processed: 3 (changed: 2), files read: 3, files failed: 1" in result.stdout
    info = [line for line in result.stderr.splitlines() if " INFO kpis.update " in line]
    # Where the files are read is said first when it is not this process (KPI_WORKERS > 1).
    if settings.KPI_WORKERS > 1:
        workers = min(settings.KPI_WORKERS, 3)
        assert f"reading 3 file(s) on {workers} local worker processes" in info.pop(0)
    assert len(info) == 4  # three intervals, one hour
    assert "interval=2021-07-18T00:00Z revision=1 files_read=1" in info[0]
    assert "DEBUG" not in result.stderr
    assert "\r" not in result.stderr  # no progress bar without a terminal


@pytest.mark.django_db(transaction=True)
def test_verbosity_2_adds_a_line_per_file(two_intervals_and_a_bad_file: InputFolder) -> None:
    result = run_command(two_intervals_and_a_bad_file, "-v", "2")

    debug = [line for line in result.stderr.splitlines() if " DEBUG kpis.update " in line]
    assert len(debug) == 2  # the two readable files
    assert "rows accepted=3 rejected=0" in debug[0]


@pytest.mark.django_db(transaction=True)
def test_json_logs_give_one_object_per_interval_with_its_figures(
    two_intervals_and_a_bad_file: InputFolder,
) -> None:
    result = run_command(two_intervals_and_a_bad_file, env={"KPI_LOG_FORMAT": "json"})

    lines = result.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Besides the logs, stderr has only the command's own closing error lines.
    assert [line.split(" ")[0] for line in lines if not line.startswith("{")] == [
        "failed",
        "CommandError:",
    ]
    figures = [record for record in records if "kind" in record]
    assert [(r["kind"], r["interval_start"]) for r in figures] == [
        ("interval", "2021-07-18T00:00:00Z"),
        ("interval", "2021-07-18T00:05:00Z"),
        ("interval", "2021-07-18T00:10:00Z"),
        ("hour", "2021-07-18T00:00:00Z"),
    ]
    for record in figures:
        ledger = IntervalLedger.objects.get(
            interval=1 if record["kind"] == "interval" else 2,
            interval_start_timestamp=record["interval_start"],
        )
        assert record["level"] == "INFO"
        assert record["logger"] == "kpis.update"
        assert record["revision"] == ledger.revision
        assert record["files_failed"] == ledger.files_failed
        assert record["rows_accepted"] == ledger.rows_accepted
        assert record["time"]
    # The interval whose only file failed has no rows, so nothing changed there.
    assert [record["changed"] for record in figures] == [True, True, False, True]
    errors = [record for record in records if record["level"] == "ERROR"]
    assert len(errors) == 1
    assert "missing" in errors[0]["message"]


@pytest.mark.parametrize(
    ("variable", "value"), [("KPI_LOG_FORMAT", "xml"), ("KPI_LOG_LEVEL", "LOUD")]
)
def test_a_malformed_log_setting_stops_start_up_naming_it(variable: str, value: str) -> None:
    process = command_process("check", env={variable: value})
    _, stderr = process.communicate(timeout=300)

    assert process.returncode != 0
    assert f"{variable}={value!r}" in stderr


@pytest.mark.django_db
def test_since_until_re_reads_a_range_even_when_size_and_time_are_unchanged(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    first = input_folder.write("2021-07-18T00:00", ROWS)
    input_folder.write("2021-07-18T00:05", ROWS)
    assert run_update(NOW).exit_code == 0
    # A fixed file of the same size, copied back with its old time (rsync -t does this).
    stat = first.stat()
    first.write_bytes(first.read_bytes().replace(b",1,100,900", b",3,100,900"))
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert first.stat().st_size == stat.st_size

    plain = run_update(NOW)
    assert "intervals processed: 0" in plain.stdout

    again = run_update(NOW, "--since", "2021-07-18T00:00Z", "--until", "2021-07-18T00:05Z")
    assert again.exit_code == 0
    assert again.stdout.strip() == (
        "re-processed intervals from 2021-07-18T00:00Z until 2021-07-18T00:05Z: "
        "intervals processed: 1 (changed: 1), files read: 1, files failed: 0, duplicates: 0, "
        "rows accepted: 3, rows rejected: 0, hours rolled up: 1"
    )
    rows = ServiceTrafficVolume.objects.filter(
        interval=1, interval_start_timestamp=utc("2021-07-18T00:00")
    )
    services = [(row.service_id, row.total_bytes) for row in cast(list[ServiceTrafficVolume], rows)]
    assert sorted(services) == [(1, 20), (2, 100), (3, 1000)]
    untouched = IntervalLedger.objects.get(
        interval=1, interval_start_timestamp=utc("2021-07-18T00:05")
    )
    assert untouched.revision == 1


@pytest.mark.parametrize(
    "columns",
    [
        pytest.param(0, id="a-terminal-that-reports-no-size"),
        pytest.param(60, id="a-terminal-of-60-columns"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_run_by_hand_on_a_terminal_shows_a_progress_bar(
    two_intervals_and_a_bad_file: InputFolder, columns: int
) -> None:
    controller, terminal = pty.openpty()
    # A fresh pseudo-terminal reports 0x0 until someone sizes it, as a terminal emulator does.
    if columns:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "update_network_stats",
            *("--now", NOW, "--input-dir", str(two_intervals_and_a_bad_file.path)),
        ],
        env={**os.environ, "DATABASE_URL": database_url()},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the command has closed the terminal
        while chunk := os.read(controller, 4096):
            chunks.append(chunk)
    os.close(controller)
    process.communicate(timeout=300)

    shown = b"".join(chunks).decode(errors="replace")
    assert "0/3 [" in shown
    bars = re.findall(r" *\d+%\|[^|]*\| \d/3 \[[^\]]*\]", shown)
    assert bars, shown
    assert all("interval" in bar for bar in bars), bars  # n interval/s, or n s/interval
    # As wide as the terminal (80 when it reports no size), less the last column.
    assert {len(bar) for bar in bars} == {(columns or 80) - 1}, bars
