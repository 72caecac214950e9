"""The update run against a real database and real files: scheduling, late files, ledgers."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from kpis.models import (
    CellUniqueUsers,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
    RunLock,
    ServiceTrafficVolume,
)
from kpis.services import (
    UPDATE_LOCK_NAME,
    LockBusy,
    run_lock,
    run_lock_acquire,
)
from kpis.tests.conftest import InputFolder, RunResult, utc

pytestmark = pytest.mark.django_db

Run = Callable[..., RunResult]


def services(interval: int, start: str) -> list[tuple[int, int]]:
    return list(
        ServiceTrafficVolume.objects.filter(interval=interval, interval_start_timestamp=utc(start))
        .order_by("-total_bytes", "service_id")
        .values_list("service_id", "total_bytes")
    )


def cells(interval: int, start: str) -> list[tuple[int, int]]:
    return list(
        CellUniqueUsers.objects.filter(interval=interval, interval_start_timestamp=utc(start))
        .order_by("-number_of_unique_users", "cell_id")
        .values_list("cell_id", "number_of_unique_users")
    )


def snapshot() -> dict[str, list[tuple[object, ...]]]:
    """Everything a run decides, without ids and processing times."""
    return {
        "services": sorted(
            ServiceTrafficVolume.objects.values_list(
                "interval", "interval_start_timestamp", "service_id", "total_bytes"
            )
        ),
        "cells": sorted(
            CellUniqueUsers.objects.values_list(
                "interval", "interval_start_timestamp", "cell_id", "number_of_unique_users"
            )
        ),
        "ledger": sorted(
            IntervalLedger.objects.values_list(
                "interval", "interval_start_timestamp", "revision", "files_counted", "rows_accepted"
            )
        ),
    }


class TestScheduling:
    def test_an_interval_waits_for_its_grace_period(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 10)])
        # The interval ends at 00:05; the default grace is 60 s.
        assert run_update("2021-07-18T00:05:59Z").exit_code == 0
        assert services(1, "2021-07-18T00:00") == []
        run_update("2021-07-18T00:06:00Z")
        assert services(1, "2021-07-18T00:00") == [(1, 20)]

    def test_it_catches_up_after_a_gap_oldest_first_and_rolls_up_due_hours(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 1, 0)])
        input_folder.write("2021-07-18T00:55", [("b", 2, 2, 2, 0)])
        input_folder.write("2021-07-18T01:10", [("c", 3, 3, 3, 0)])
        result = run_update("2021-07-18T01:30Z")
        assert result.exit_code == 0
        assert "intervals processed: 3" in result.stdout
        assert "hours rolled up: 1" in result.stdout
        assert services(2, "2021-07-18T00:00") == [(2, 2), (1, 1)]
        # The 01:00 hour is not due before 02:01.
        assert services(2, "2021-07-18T01:00") == []
        assert services(1, "2021-07-18T01:10") == [(3, 3)]
        run_update("2021-07-18T02:01Z")
        assert services(2, "2021-07-18T01:00") == [(3, 3)]

    def test_a_first_run_years_later_only_touches_intervals_with_files(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 1, 1)])
        result = run_update("2026-11-27T12:00Z")
        assert "intervals processed: 1" in result.stdout
        assert IntervalLedger.objects.count() == 2  # the interval and its hour
        assert services(2, "2021-07-18T00:00") == [(1, 2)]

    def test_a_due_interval_without_files_has_no_rows(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:10", [("a", 1, 1, 1, 1)])
        run_update("2021-07-18T02:00Z")
        assert services(1, "2021-07-18T00:05") == []
        assert not IntervalLedger.objects.filter(interval_start_timestamp=utc("2021-07-18T00:05"))

    def test_rerunning_with_the_same_files_and_clock_changes_nothing(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        for minute in range(0, 60, 5):
            input_folder.write(f"2021-07-18T00:{minute:02d}", [("a", minute, 1, minute, 1)])
        run_update("2021-07-18T01:01Z")
        before = snapshot()
        ids = sorted(ServiceTrafficVolume.objects.values_list("id", flat=True))
        second = run_update("2021-07-18T01:01Z")
        assert "intervals processed: 0" in second.stdout
        assert "hours rolled up: 0" in second.stdout
        assert snapshot() == before
        assert sorted(ServiceTrafficVolume.objects.values_list("id", flat=True)) == ids


class TestLateAndChangedFiles:
    def test_a_late_file_recomputes_its_interval_and_hour_without_double_counting(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0), ("b", 1, 2, 5, 0)])
        input_folder.write("2021-07-18T00:05", [("a", 1, 1, 1, 0)])
        run_update("2021-07-18T01:10Z")
        assert cells(2, "2021-07-18T00:00") == [(1, 2)]

        input_folder.write("2021-07-18T00:00", [("a", 1, 2, 0, 100), ("c", 1, 3, 1, 0)], part=1)
        result = run_update("2021-07-18T01:15Z")

        assert "intervals processed: 1" in result.stdout
        assert "files read: 1," in result.stdout
        assert "hours rolled up: 1" in result.stdout
        assert services(1, "2021-07-18T00:00") == [(2, 105), (1, 10), (3, 1)]
        assert cells(1, "2021-07-18T00:00") == [(1, 3)]
        assert services(2, "2021-07-18T00:00") == [(2, 105), (1, 11), (3, 1)]
        assert cells(2, "2021-07-18T00:00") == [(1, 3)]
        ledger = IntervalLedger.objects.get(
            interval=IntervalType.FIVE_MINUTES, interval_start_timestamp=utc("2021-07-18T00:00")
        )
        assert (ledger.revision, ledger.files_counted, ledger.rows_accepted) == (2, 2, 4)
        hour = IntervalLedger.objects.get(interval=IntervalType.ONE_HOUR)
        assert (hour.revision, hour.rows_accepted, hour.needs_rollup) == (2, 5, False)

    def test_a_changed_file_replaces_its_old_counts(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        path = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        input_folder.write("2021-07-18T00:00", [("b", 2, 2, 3, 0)], part=1)
        run_update("2021-07-18T01:01Z")
        path.write_bytes(path.read_bytes() + b"z,1,1,1000,0\n")

        run_update("2021-07-18T01:02Z")

        assert services(1, "2021-07-18T00:00") == [(1, 1010), (2, 3)]
        assert services(2, "2021-07-18T00:00") == [(1, 1010), (2, 3)]
        assert cells(2, "2021-07-18T00:00") == [(1, 2), (2, 1)]
        record = InputFileRecord.objects.get(name=path.name)
        assert (record.rows_accepted, record.interval_revision) == (2, 2)

    def test_a_touched_but_unchanged_file_is_not_recomputed(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        path = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        run_update("2021-07-18T00:10Z")
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

        result = run_update("2021-07-18T00:10Z")

        assert "intervals processed: 0" in result.stdout
        record = InputFileRecord.objects.get(name=path.name)
        assert record.mtime_ns == path.stat().st_mtime_ns
        assert record.interval_revision == 1

    def test_the_same_content_under_a_new_name_is_never_counted_twice(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        original = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        run_update("2021-07-18T00:10Z")
        copy = input_folder.write_raw(
            original.name.replace(".0.csv", ".5.csv"), original.read_bytes()
        )

        result = run_update("2021-07-18T00:10Z")

        assert "duplicates: 1" in result.stdout
        assert services(1, "2021-07-18T00:00") == [(1, 10)]
        record = InputFileRecord.objects.get(name=copy.name)
        assert (record.status, record.duplicate_of) == (InputFileStatus.DUPLICATE, original.name)

    def test_a_vanished_file_keeps_its_counts(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        gone = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        run_update("2021-07-18T00:10Z")
        gone.unlink()
        input_folder.write("2021-07-18T00:00", [("b", 1, 2, 1, 0)], part=1)

        run_update("2021-07-18T01:10Z")

        assert services(1, "2021-07-18T00:00") == [(1, 10), (2, 1)]
        assert services(2, "2021-07-18T00:00") == [(1, 10), (2, 1)]
        record = InputFileRecord.objects.get(name=gone.name)
        assert record.missing_since is not None
        assert record.status == InputFileStatus.COUNTED
        ledger = IntervalLedger.objects.get(interval=1)
        assert ledger.files_missing == 1


class TestBadInput:
    def test_bad_rows_are_counted_and_the_good_ones_used(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write(
            "2021-07-18T00:00", [("a", 1, 1, 10, 0), ("b", "x", 1, 1, 1), ("c", 1, 1, -5, 0)]
        )
        result = run_update("2021-07-18T00:10Z")
        assert result.exit_code == 0
        assert "rows accepted: 1, rows rejected: 2" in result.stdout
        ledger = IntervalLedger.objects.get(interval=1)
        assert ledger.rejects == {"malformed_integer": 1, "negative_integer": 1}
        assert services(1, "2021-07-18T00:00") == [(1, 10)]

    def test_a_bad_file_is_recorded_and_skipped_and_the_run_exits_non_zero(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        bad = input_folder.write("2021-07-18T00:00", [("b", 1)], part=1, header=("msisdn", "x"))
        input_folder.write("2021-07-18T00:05", [("c", 2, 2, 1, 0)])

        result = run_update("2021-07-18T01:10Z")

        assert result.exit_code == 1
        assert "missing required column(s)" in result.stderr
        assert bad.name in result.stderr
        assert services(1, "2021-07-18T00:00") == [(1, 10)]
        assert services(1, "2021-07-18T00:05") == [(2, 1)]
        assert services(2, "2021-07-18T00:00") == [(1, 10), (2, 1)]
        record = InputFileRecord.objects.get(name=bad.name)
        assert record.status == InputFileStatus.FAILED
        assert "cell_id" in record.error
        hour = IntervalLedger.objects.get(interval=2)
        assert (hour.files_failed, hour.is_complete) == (1, False)
        # Reported once: the next run has nothing new to say.
        assert run_update("2021-07-18T01:15Z").exit_code == 0

    def test_a_fixed_bad_file_is_read_again(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        bad = input_folder.write("2021-07-18T00:00", [("b", 1)], header=("msisdn", "x"))
        run_update("2021-07-18T00:10Z")
        fixed = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        assert fixed == bad
        assert run_update("2021-07-18T00:10Z").exit_code == 0
        assert services(1, "2021-07-18T00:00") == [(1, 10)]


class TestDryRunAndRanges:
    def test_a_dry_run_reports_but_stores_nothing(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        result = run_update("2021-07-18T01:10Z", "--dry-run")
        assert "dry run, nothing stored: intervals processed: 1" in result.stdout
        assert "hours rolled up: 1" in result.stdout
        assert not ServiceTrafficVolume.objects.exists()
        assert not InputFileRecord.objects.exists()
        assert not IntervalLedger.objects.exists()

    def test_since_and_until_recompute_a_range_on_purpose(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        for minute in (0, 5, 10):
            input_folder.write(f"2021-07-18T00:{minute:02d}", [("a", 1, 1, minute + 1, 0)])
        run_update("2021-07-18T01:10Z")

        result = run_update(
            "2021-07-18T01:10Z", "--since", "2021-07-18T00:05Z", "--until", "2021-07-18T00:10Z"
        )

        assert "intervals processed: 1 (changed: 0)" in result.stdout
        assert "hours rolled up: 1" in result.stdout
        revisions = dict(
            IntervalLedger.objects.filter(interval=1).values_list(
                "interval_start_timestamp", "revision"
            )
        )
        assert revisions == {
            utc("2021-07-18T00:00"): 1,
            utc("2021-07-18T00:05"): 2,
            utc("2021-07-18T00:10"): 1,
        }


class TestPrivacy:
    def test_no_msisdn_is_stored_in_the_clear(
        self, input_folder: InputFolder, run_update: Run, state_dir: Path
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("+491799887766", 1, 1, 10, 0)])
        run_update("2021-07-18T01:10Z")
        blobs = b"".join(path.read_bytes() for path in state_dir.rglob("*") if path.is_file())
        assert blobs
        assert b"491799887766" not in blobs
        assert "491799887766" not in str(list(InputFileRecord.objects.values()))


class TestRunLock:
    def test_only_one_holder_at_a_time(self) -> None:
        stale = timedelta(minutes=15)
        assert run_lock_acquire(name=UPDATE_LOCK_NAME, holder="host:1:a", stale_after=stale)
        assert not run_lock_acquire(name=UPDATE_LOCK_NAME, holder="host:2:b", stale_after=stale)

    def test_a_stale_lock_is_taken_over(self) -> None:
        RunLock.objects.create(
            name=UPDATE_LOCK_NAME, holder="elsewhere:1:a", heartbeat_at=utc("2021-01-01T00:00")
        )
        assert run_lock_acquire(
            name=UPDATE_LOCK_NAME, holder="me:2:b", stale_after=timedelta(minutes=15)
        )

    def test_the_lock_of_a_dead_local_process_is_taken_over(self) -> None:
        import socket

        dead_pid = 2**22 + 17  # above the kernel's largest pid: never a live process
        RunLock.objects.create(
            name=UPDATE_LOCK_NAME,
            holder=f"{socket.gethostname()}:{dead_pid}:x",
            heartbeat_at=utc("2999-01-01T00:00"),
        )
        with run_lock(stale_after=timedelta(minutes=15)):
            assert f":{os.getpid()}:" in RunLock.objects.get().holder
        assert RunLock.objects.get().holder == ""

    def test_a_busy_lock_makes_the_command_exit_quietly(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        input_folder.write("2021-07-18T00:00", [("a", 1, 1, 10, 0)])
        with run_lock(stale_after=timedelta(minutes=15)):
            result = run_update("2021-07-18T01:10Z")
            with pytest.raises(LockBusy), run_lock(stale_after=timedelta(minutes=15)):
                pass
        assert result.exit_code == 0
        assert "another update_network_stats run is in progress" in result.stdout
        assert not ServiceTrafficVolume.objects.exists()
