"""The restatement window: final hours lose their states, too-late files, explicit restatement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from kpis.models import (
    CellUniqueUsers,
    FileState,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
    ServiceTrafficVolume,
)
from kpis.sampledata import file_name
from kpis.services.retention import final_hour_states_drop
from kpis.tests.conftest import InputFolder, RunResult, command_process, utc

pytestmark = pytest.mark.django_db

Run = Callable[..., RunResult]

# Two hours of files, processed while they are recent.
DAY = ["2021-07-18T00:00", "2021-07-18T00:10", "2021-07-18T00:55", "2021-07-18T01:20"]
RECENT = "2021-07-18T02:05Z"
# With the default window of 3 days both hours (ending 01:00 and 02:00) are final by then.
LATER = "2021-07-21T02:30Z"
HOUR_00_COMMAND = (
    "python manage.py update_network_stats --since 2021-07-18T00:00Z --until 2021-07-18T01:00Z"
)


def rows_for(seed: int, subscribers: int = 4) -> list[tuple[object, ...]]:
    """Rows that differ by seed: a file's content is never a duplicate of another's."""
    return [
        (f"49170{seed:03d}{n:04d}", 10 + (seed + n) % 3, 1 + n % 4, 100 * seed + n, seed)
        for n in range(subscribers)
    ]


@pytest.fixture
def processed(input_folder: InputFolder, run_update: Run) -> InputFolder:
    """Two parts per interval of ``DAY``, processed while recent: every state is kept."""
    for index, start in enumerate(DAY):
        for part in (0, 1):
            input_folder.write(start, rows_for(10 * index + part), part=part)
    assert run_update(RECENT).exit_code == 0
    assert FileState.objects.count() == 2 * len(DAY)
    return input_folder


def kpi_rows() -> dict[str, list[tuple[object, ...]]]:
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
    }


LEDGER_FIGURES = (
    "interval",
    "interval_start_timestamp",
    "files_counted",
    "files_failed",
    "files_duplicate",
    "files_missing",
    "files_too_late",
    "intervals_processed",
    "rows_accepted",
    "rows_rejected",
    "rejects",
)


def ledger_figures() -> list[tuple[object, ...]]:
    return list(IntervalLedger.objects.order_by(*LEDGER_FIGURES[:2]).values_list(*LEDGER_FIGURES))


def everything() -> dict[str, Any]:
    """The whole stored outcome, revisions and processing times included."""
    return {
        **kpi_rows(),
        "ledger": list(IntervalLedger.objects.order_by("pk").values()),
        "records": list(InputFileRecord.objects.order_by("pk").values()),
        "states": sorted(FileState.objects.values_list("file_id", "seq")),
    }


def states_of_hour(start: str) -> int:
    hour = utc(start)
    return FileState.objects.filter(
        file__interval_start_timestamp__gte=hour,
        file__interval_start_timestamp__lt=hour + timedelta(hours=1),
    ).count()


def ledger(start: str, interval: IntervalType = IntervalType.FIVE_MINUTES) -> IntervalLedger:
    return IntervalLedger.objects.get(interval=interval, interval_start_timestamp=utc(start))


class TestFinalHours:
    def test_a_run_drops_the_states_of_final_hours_and_keeps_rows_ledgers_and_records(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        rows, figures = kpi_rows(), ledger_figures()
        records = list(InputFileRecord.objects.order_by("pk").values())
        recent_hour = "2021-07-21T00:00"
        processed.write(recent_hour, rows_for(99))

        result = run_update(LATER)

        assert result.exit_code == 0, result.stderr
        assert "hours made final: 2" in result.stdout
        assert (states_of_hour("2021-07-18T00:00"), states_of_hour("2021-07-18T01:00")) == (0, 0)
        assert states_of_hour(recent_hour) == 1  # within the window: kept
        recent = utc(recent_hour)
        after = kpi_rows()
        assert {name: [r for r in v if r[1] != recent] for name, v in after.items()} == rows
        assert [f for f in ledger_figures() if f[1] != recent] == figures
        assert list(InputFileRecord.objects.order_by("pk").values())[: len(records)] == records
        kept = dict(IntervalLedger.objects.values_list("interval_start_timestamp", "states_kept"))
        assert {start for start, keep in kept.items() if keep} == {utc(recent_hour)}

    def test_the_states_of_an_hour_stay_until_it_has_been_final_for_the_window(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        # The hour 00:00 ended 2021-07-18T01:00: final strictly after three days.
        assert run_update("2021-07-21T01:00Z").exit_code == 0
        assert states_of_hour("2021-07-18T00:00") == 6
        assert run_update("2021-07-21T01:01Z").exit_code == 0
        assert states_of_hour("2021-07-18T00:00") == 0
        assert states_of_hour("2021-07-18T01:00") == 2

    def test_the_window_is_a_setting(
        self, processed: InputFolder, run_update: Run, settings: Any
    ) -> None:
        settings.KPI_RESTATE_DAYS = 0
        assert run_update("2021-07-18T02:06Z").exit_code == 0
        assert FileState.objects.count() == 0

    def test_each_run_drops_a_bounded_number_of_hours_oldest_first(
        self, processed: InputFolder
    ) -> None:
        dropped = final_hour_states_drop(now=utc("2021-07-25T00:00"), window=timedelta(0), limit=1)
        assert dropped == [utc("2021-07-18T00:00")]
        assert (states_of_hour("2021-07-18T00:00"), states_of_hour("2021-07-18T01:00")) == (0, 2)
        dropped = final_hour_states_drop(now=utc("2021-07-25T00:00"), window=timedelta(0), limit=1)
        assert dropped == [utc("2021-07-18T01:00")]
        assert FileState.objects.count() == 0

    def test_an_old_hour_never_processed_is_read_whole_then_made_final(
        self, input_folder: InputFolder, run_update: Run
    ) -> None:
        for index, start in enumerate(DAY):
            input_folder.write(start, rows_for(index))

        result = run_update("2026-11-27T12:00Z")

        assert result.exit_code == 0, result.stderr
        assert InputFileRecord.objects.filter(status=InputFileStatus.COUNTED).count() == 4
        assert ServiceTrafficVolume.objects.filter(interval=IntervalType.ONE_HOUR).count() > 0
        assert FileState.objects.count() == 0
        assert not IntervalLedger.objects.filter(states_kept=True).exists()


class TestTooLate:
    def test_a_new_file_for_a_final_hour_is_recorded_counted_nowhere_and_fails_the_run(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        assert run_update(LATER).exit_code == 0
        rows, records = kpi_rows(), InputFileRecord.objects.count()
        late = processed.write("2021-07-18T00:10", rows_for(500), part=7)

        result = run_update(LATER)

        assert result.exit_code == 1
        assert f"file {late.name} is too late" in result.stderr
        assert f"{HOUR_00_COMMAND} --input-dir {processed.path}" in result.stderr
        assert "files too late: 1" in result.stdout
        assert kpi_rows() == rows
        record = InputFileRecord.objects.get(name=late.name)
        assert (record.status, record.rows_accepted) == (InputFileStatus.TOO_LATE, 0)
        assert InputFileRecord.objects.count() == records + 1
        assert not FileState.objects.exists()
        interval, hour = (
            ledger("2021-07-18T00:10"),
            ledger("2021-07-18T00:00", IntervalType.ONE_HOUR),
        )
        assert (interval.files_too_late, interval.files_counted, interval.is_complete) == (
            1,
            2,
            False,
        )
        assert (hour.files_too_late, hour.files_counted, hour.is_complete) == (1, 6, False)
        # Reported once: the next run finds nothing new.
        again = run_update(LATER)
        assert again.exit_code == 0, again.stderr
        assert "too late" not in again.stderr

    def test_a_file_for_a_new_interval_of_a_final_hour_is_too_late_too(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        assert run_update(LATER).exit_code == 0
        late = processed.write("2021-07-18T00:30", rows_for(501))

        result = run_update(LATER)

        assert result.exit_code == 1
        assert late.name in result.stderr
        entry = ledger("2021-07-18T00:30")
        assert (entry.revision, entry.files_too_late, entry.states_kept) == (0, 1, False)
        assert not ServiceTrafficVolume.objects.filter(
            interval=IntervalType.FIVE_MINUTES, interval_start_timestamp=utc("2021-07-18T00:30")
        ).exists()

    def test_a_changed_file_of_a_final_hour_is_too_late_and_its_counted_content_stays(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        assert run_update(LATER).exit_code == 0
        rows = kpi_rows()
        name = file_name(interval_start=utc("2021-07-18T00:55"), part=1)
        processed.write("2021-07-18T00:55", rows_for(502, subscribers=9), part=1)

        result = run_update(LATER)

        assert result.exit_code == 1
        assert f"file {name} is too late" in result.stderr
        assert kpi_rows() == rows
        record = InputFileRecord.objects.get(name=name)
        assert (record.status, record.rows_accepted) == (InputFileStatus.TOO_LATE, 4)
        assert ledger("2021-07-18T00:55").files_too_late == 1

    def test_a_late_file_within_the_window_is_still_merged(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        processed.write("2021-07-18T00:10", rows_for(503), part=7)
        result = run_update("2021-07-20T00:00Z")
        assert result.exit_code == 0, result.stderr
        assert ledger("2021-07-18T00:10").files_counted == 3

    def test_the_api_shows_too_late_files_and_whether_an_interval_is_restatable(
        self, processed: InputFolder, run_update: Run, admin_user: Any
    ) -> None:
        assert run_update(LATER).exit_code == 0
        processed.write("2021-07-18T00:10", rows_for(504), part=7)
        assert run_update(LATER).exit_code == 1
        processed.write("2021-07-21T00:00", rows_for(505))
        assert run_update(LATER).exit_code == 0
        client = APIClient()
        client.force_authenticate(admin_user)

        response = api_get_at(LATER, client, "/api/intervals/", {"interval": 1, "limit": 100})

        assert response.status_code == 200
        items = {item["interval_start_timestamp"]: item for item in response.json()["results"]}
        late = items["2021-07-18T00:10:00Z"]
        assert (late["files_too_late"], late["restatable"], late["complete"]) == (1, False, False)
        on_time = items["2021-07-18T00:00:00Z"]
        assert (on_time["files_too_late"], on_time["restatable"], on_time["complete"]) == (
            0,
            False,
            True,
        )
        assert items["2021-07-21T00:00:00Z"]["restatable"] is True


def api_get_at(moment: str, client: APIClient, url: str, query: dict[str, Any]) -> Any:
    """A GET answered as if the wall clock said ``moment``."""
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr(timezone, "now", lambda: datetime.fromisoformat(moment))
        return client.get(url, query)


class TestRestatableAfterACatchUp:
    """Three days caught up in one run with a window of one day: more hours are final than
    one run drops the states of, and ``restatable`` must still say what a late file gets."""

    CATCH_UP = "2021-07-21T00:02Z"

    @pytest.fixture
    def caught_up(self, input_folder: InputFolder, run_update: Run, settings: Any) -> Any:
        settings.KPI_RESTATE_DAYS = 1
        start = utc("2021-07-18T00:00")
        for hour in range(72):
            moment = start + timedelta(hours=hour)
            input_folder.write(f"{moment:%Y-%m-%dT%H:%M}", rows_for(100 + hour))
        assert run_update(self.CATCH_UP).exit_code == 0
        return input_folder

    def restatable(self, admin_user: Any) -> dict[str, bool]:
        client = APIClient()
        client.force_authenticate(admin_user)
        response = api_get_at(self.CATCH_UP, client, "/api/intervals/", {"interval": 2})
        assert response.status_code == 200
        return {item["interval_start_timestamp"]: item["restatable"] for item in response.json()}

    def test_restatable_is_false_for_every_final_hour_even_with_its_states_kept(
        self, caught_up: InputFolder, admin_user: Any
    ) -> None:
        restatable = self.restatable(admin_user)

        # Final: every hour that ended more than a day before 2021-07-21T00:02, that is
        # the 48 hours from 07-18T00:00 to 07-19T23:00; the run dropped the states of 24.
        kept = set(
            IntervalLedger.objects.filter(
                interval=IntervalType.ONE_HOUR, states_kept=True
            ).values_list("interval_start_timestamp", flat=True)
        )
        assert len(kept) == 72 - 24
        final = {
            f"{utc('2021-07-18T00:00') + timedelta(hours=h):%Y-%m-%dT%H:%M:%SZ}" for h in range(48)
        }
        assert {start for start, yes in restatable.items() if not yes} == final
        assert sum(restatable.values()) == 72 - 48
        assert utc("2021-07-19T12:00") in kept  # kept, yet final

    @pytest.mark.parametrize(
        ("interval", "restatable", "status"),
        [
            ("2021-07-19T12:10", False, InputFileStatus.TOO_LATE),  # final, states still kept
            ("2021-07-18T03:10", False, InputFileStatus.TOO_LATE),  # final, states dropped
            ("2021-07-19T23:10", False, InputFileStatus.TOO_LATE),  # the newest final hour
            ("2021-07-20T00:10", True, InputFileStatus.COUNTED),  # ended less than a day ago
        ],
    )
    def test_a_late_file_gets_what_restatable_said(
        self,
        caught_up: InputFolder,
        run_update: Run,
        admin_user: Any,
        interval: str,
        restatable: bool,
        status: InputFileStatus,
    ) -> None:
        hour = f"{interval[:14]}00:00Z"
        assert self.restatable(admin_user)[hour] is restatable

        late = caught_up.write(interval, rows_for(77), part=3)
        result = run_update(self.CATCH_UP)

        assert InputFileRecord.objects.get(name=late.name).status == status
        assert result.exit_code == (0 if restatable else 1), result.stderr


def fresh_computation(folder: InputFolder, run_update: Run) -> list[object]:
    """The rows and ledger figures a database that never saw these files computes from them."""
    for model in (ServiceTrafficVolume, CellUniqueUsers, IntervalLedger, InputFileRecord):
        model.objects.all().delete()
    assert run_update(RECENT).exit_code == 0
    return [kpi_rows(), ledger_figures()]


class TestRestatement:
    def test_restating_a_final_hour_rereads_all_its_files_and_equals_a_fresh_computation(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        assert run_update(LATER).exit_code == 0
        processed.write("2021-07-18T00:10", rows_for(600), part=7)
        processed.write("2021-07-18T00:30", rows_for(601))
        assert run_update(LATER).exit_code == 1
        revision_01 = ledger("2021-07-18T01:00", IntervalType.ONE_HOUR).revision

        # One interval named: its whole (final) hour is restated.
        result = run_update(LATER, "--since", "2021-07-18T00:10Z", "--until", "2021-07-18T00:15Z")

        assert result.exit_code == 0, result.stderr
        assert "files read: 8" in result.stdout
        restated = [kpi_rows(), ledger_figures()]
        assert not InputFileRecord.objects.filter(status=InputFileStatus.TOO_LATE).exists()
        assert ledger("2021-07-18T00:00", IntervalType.ONE_HOUR).files_counted == 8
        # States written by the restatement are dropped again: the hour is still final.
        assert not FileState.objects.exists()
        assert not IntervalLedger.objects.filter(states_kept=True).exists()
        assert ledger("2021-07-18T01:00", IntervalType.ONE_HOUR).revision == revision_01
        assert restated == fresh_computation(processed, run_update)

    def test_a_restatement_missing_a_counted_file_is_refused_and_changes_nothing(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        assert run_update(LATER).exit_code == 0
        processed.write("2021-07-18T01:20", rows_for(700), part=7)
        assert run_update(LATER).exit_code == 1
        gone = processed.path / file_name(interval_start=utc("2021-07-18T00:10"), part=1)
        gone.unlink()
        before = everything()

        # Both hours named: the first misses a file, so neither is restated.
        result = run_update(LATER, "--since", "2021-07-18T00:00Z", "--until", "2021-07-18T02:00Z")

        assert result.exit_code == 1
        assert (
            f"hour 2021-07-18T00:00Z cannot be restated: 1 counted file(s) are gone from the "
            f"input folder and their states were dropped: {gone.name}"
        ) in result.stderr
        assert "nothing was changed" in result.stderr
        assert everything() == before

    def test_a_counted_file_gone_while_its_state_is_kept_does_not_block_a_restatement(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        (processed.path / file_name(interval_start=utc("2021-07-18T00:10"), part=1)).unlink()
        rows = kpi_rows()
        result = run_update(RECENT, "--since", "2021-07-18T00:00Z", "--until", "2021-07-18T01:00Z")
        assert result.exit_code == 0, result.stderr
        assert kpi_rows() == rows
        assert ledger("2021-07-18T00:10").files_missing == 1


class TestPrune:
    def test_prune_still_deletes_old_rows_and_drops_the_states_of_hours_it_forgets(
        self, processed: InputFolder, run_update: Run
    ) -> None:
        from django.core.management import call_command

        call_command(
            "prune_network_stats",
            "--now",
            "2021-07-19T01:30Z",
            "--keep-days",
            "1",
            "--hourly-keep-days",
            "1",
            "-v",
            "0",
        )

        assert not ServiceTrafficVolume.objects.filter(
            interval_start_timestamp__lt=utc("2021-07-18T01:00")
        ).exists()
        assert states_of_hour("2021-07-18T00:00") == 0
        assert states_of_hour("2021-07-18T01:00") == 2
        assert InputFileRecord.objects.count() == 2 * len(DAY)
        # Its ledger is gone, its states too: a new file for that hour is too late.
        late = processed.write("2021-07-18T00:10", rows_for(800), part=7)
        result = run_update("2021-07-19T02:00Z")
        assert result.exit_code == 1
        assert late.name in result.stderr


def test_a_malformed_window_stops_start_up() -> None:
    for value, message in (("-1", "KPI_RESTATE_DAYS='-1' is less than 0"), ("3d", "'3d'")):
        process = command_process("check", env={"KPI_RESTATE_DAYS": value})
        _, stderr = process.communicate(timeout=120)
        assert process.returncode != 0
        assert message in stderr


def test_the_admin_shows_too_late_files_and_restatable(
    processed: InputFolder, run_update: Run, admin_client: Any
) -> None:
    assert run_update(LATER).exit_code == 0
    processed.write("2021-07-18T00:10", rows_for(900), part=7)
    assert run_update(LATER).exit_code == 1

    ledger_page = admin_client.get("/admin/kpis/intervalledger/").content.decode()
    files_page = admin_client.get("/admin/kpis/inputfilerecord/?status=too_late").content.decode()

    assert "Files too late" in ledger_page
    assert "Restatable" in ledger_page
    assert file_name(interval_start=utc("2021-07-18T00:10"), part=7) in files_page
    assert "too late" in files_page
