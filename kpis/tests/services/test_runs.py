"""The run history: every update_network_stats run records how it ended."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from kpis.models import UpdateRun
from kpis.services import (
    RUNS_KEPT_AT_LEAST,
    UPDATE_LOCK_NAME,
    RunSummary,
    run_lock_acquire,
    update_run_record,
    update_run_recorded,
    update_runs_prune,
)
from kpis.tests.conftest import InputFolder, RunResult, command_process, utc

NOW = "2021-07-18T01:10:00Z"
ROWS = [
    ("4917000001", "10", "1", "100", "900"),
    ("4917000002", "10", "2", "50", "50"),
    ("4917000003", "11", "1", "10", "-10"),
]


@pytest.mark.django_db
def test_a_run_records_when_it_ended_how_long_it_took_and_its_figures(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", ROWS)
    input_folder.write("2021-07-18T00:05", ROWS[:2])
    before = timezone.now()

    result = run_update(NOW)

    after = timezone.now()
    run = UpdateRun.objects.get()
    assert result.exit_code == 0
    assert before <= run.started_at <= run.finished_at <= after
    assert run.duration_seconds == (run.finished_at - run.started_at).total_seconds() > 0
    figures = (
        run.exit_status,
        run.intervals_processed,
        run.files_read,
        run.files_failed,
        run.rows_accepted,
        run.rows_rejected,
        run.hours_rolled_up,
        run.error,
    )
    assert figures == (0, 2, 2, 0, 4, 1, 1, "")
    assert (
        "intervals processed: 2 (changed: 2), files read: 2, files failed: 0, duplicates: 0, "
        "rows accepted: 4, rows rejected: 1, hours rolled up: 1"
    ) in result.stdout


@pytest.mark.django_db
def test_a_run_with_a_failed_file_is_recorded_with_exit_status_1_and_the_file(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", ROWS)
    bad = input_folder.write("2021-07-18T00:05", ROWS, header=("msisdn", "cell_id"))

    assert run_update(NOW).exit_code == 1

    run = UpdateRun.objects.get()
    assert (run.exit_status, run.files_read, run.files_failed) == (1, 2, 1)
    first, second = run.error.splitlines()
    assert first == "1 file(s) could not be read"
    assert second.startswith(f"{bad.name}: missing required column(s)")


@pytest.mark.django_db
def test_a_run_stopped_by_an_error_is_recorded_with_it(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("update_network_stats", "--input-dir", str(tmp_path / "gone"))

    run = UpdateRun.objects.get()
    assert run.exit_status == 1
    assert run.error == f"input folder {tmp_path / 'gone'} does not exist or is not a folder"
    assert run.intervals_processed == 0


@pytest.mark.django_db
def test_an_unexpected_error_is_recorded_and_still_raised() -> None:
    with pytest.raises(ZeroDivisionError), update_run_recorded():
        _ = 1 / 0

    run = UpdateRun.objects.get()
    assert (run.exit_status, run.error) == (1, "ZeroDivisionError: division by zero")


@pytest.mark.django_db(transaction=True)
def test_the_recorded_exit_status_is_the_one_the_process_exits_with(
    input_folder: InputFolder,
) -> None:
    input_folder.write("2021-07-18T00:00", ROWS, header=("msisdn", "cell_id"))
    process = command_process(
        "update_network_stats", "--now", NOW, "--input-dir", str(input_folder.path)
    )
    process.communicate(timeout=300)

    assert process.returncode == 1
    assert UpdateRun.objects.get().exit_status == 1


@pytest.mark.django_db
def test_dry_runs_and_runs_that_find_the_lock_taken_leave_no_record(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", ROWS)
    assert "dry run" in run_update(NOW, "--dry-run").stdout
    assert run_lock_acquire(
        name=UPDATE_LOCK_NAME, holder="elsewhere:1:run", stale_after=timedelta(minutes=15)
    )

    busy = run_update(NOW)

    assert busy.stdout.strip().endswith("nothing to do.")
    assert not UpdateRun.objects.exists()


def test_a_run_whose_record_cannot_be_written_fails_with_its_own_error(tmp_path: Path) -> None:
    process = command_process(
        "update_network_stats",
        "--input-dir",
        str(tmp_path),
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/no-such-folder/db.sqlite3"},
    )
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 1
    assert "database error, nothing half-written was kept" in stderr
    assert "could not record this run in the run history" in stderr
    assert "Traceback" not in stderr


def make_runs(*ends: str) -> list[UpdateRun]:
    return [
        update_run_record(
            started_at=utc(end) - timedelta(seconds=30),
            duration=timedelta(seconds=30),
            exit_status=0,
            summary=RunSummary(),
        )
        for end in ends
    ]


@pytest.mark.django_db
def test_pruning_deletes_runs_that_ended_before_the_cutoff() -> None:
    # With --keep-days 1 at NOW the cutoff is 2021-07-17T01:10; the second run ends on it.
    make_runs("2021-07-16T00:00", "2021-07-17T01:10")
    recent = [utc("2021-07-17T01:11") + timedelta(minutes=5 * n) for n in range(RUNS_KEPT_AT_LEAST)]
    make_runs(*(f"{end:%Y-%m-%dT%H:%M}" for end in recent))

    out = io.StringIO()
    call_command("prune_network_stats", "--keep-days", "1", "--now", NOW, stdout=out)

    kept = list(UpdateRun.objects.order_by("finished_at").values_list("finished_at", flat=True))
    assert kept == recent
    assert out.getvalue().strip().endswith("; update runs: 2")


@pytest.mark.django_db
def test_pruning_always_keeps_the_newest_runs() -> None:
    runs = make_runs("2021-07-01T00:00", "2021-07-02T00:00", "2021-07-03T00:00")

    assert update_runs_prune(before=utc("2021-07-18T00:00"), keep_at_least=2, dry_run=True) == 1
    assert UpdateRun.objects.count() == 3
    assert update_runs_prune(before=utc("2021-07-18T00:00"), keep_at_least=2) == 1
    assert list(UpdateRun.objects.order_by("id")) == runs[1:]
