"""prune_network_stats: old five-minute rows go; hourly rows and file records stay."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kpis.models import (
    CellUniqueUsers,
    FileState,
    InputFileRecord,
    IntervalLedger,
    ServiceTrafficVolume,
)
from kpis.services import kpi_rows_prune
from kpis.tests.conftest import InputFolder, RunResult, utc

pytestmark = pytest.mark.django_db

NOW = "2021-07-18T01:10:00Z"
ROWS = [("4917000001", "10", "1", "100", "900"), ("4917000002", "11", "2", "5", "5")]
# With --keep-days 1 at NOW the cutoff is 2021-07-17T01:10.
OLD = ["2021-07-16T12:00", "2021-07-17T01:05"]  # the second ends exactly at the cutoff
RECENT = ["2021-07-17T01:10", "2021-07-18T00:00"]


@pytest.fixture
def processed(input_folder: InputFolder, run_update: Callable[..., RunResult]) -> InputFolder:
    for index, start in enumerate(OLD + RECENT):
        # Different bytes per file: the same content twice would be a duplicate delivery.
        input_folder.write(start, [(*row[:4], str(index)) for row in ROWS])
    assert run_update(NOW).exit_code == 0
    return input_folder


def starts(model: Any, interval: int) -> list[str]:
    moments = model.objects.filter(interval=interval).values_list(
        "interval_start_timestamp", flat=True
    )
    return sorted({f"{moment:%Y-%m-%dT%H:%M}" for moment in moments})


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prune_network_stats", "--now", NOW, *args, stdout=out)
    return out.getvalue()


def test_it_deletes_old_five_minute_rows_and_keeps_hourly_rows_and_files(
    processed: InputFolder,
) -> None:
    hours_before = starts(ServiceTrafficVolume, 2)
    files_before = (InputFileRecord.objects.count(), FileState.objects.count())

    output = prune("--keep-days", "1")

    for model in (ServiceTrafficVolume, CellUniqueUsers, IntervalLedger):
        assert starts(model, 1) == RECENT
    assert starts(ServiceTrafficVolume, 2) == hours_before
    assert starts(IntervalLedger, 2) == hours_before
    assert (InputFileRecord.objects.count(), FileState.objects.count()) == files_before
    assert output.strip() == (
        "deleted intervals older than 1 day(s): ServiceTrafficVolume five minutes: 4, "
        "CellUniqueUsers five minutes: 4, IntervalLedger five minutes: 2; hourly rows kept; "
        "update runs: 0"
    )


def test_hourly_keep_days_also_deletes_old_hours(processed: InputFolder) -> None:
    prune("--keep-days", "1", "--hourly-keep-days", "1")

    # The hour 2021-07-17T01:00 ends after the cutoff: kept.
    assert starts(ServiceTrafficVolume, 2) == ["2021-07-17T01:00", "2021-07-18T00:00"]
    assert starts(IntervalLedger, 2) == ["2021-07-17T01:00", "2021-07-18T00:00"]


def test_a_dry_run_counts_and_deletes_nothing(processed: InputFolder) -> None:
    before = ServiceTrafficVolume.objects.count(), IntervalLedger.objects.count()

    output = prune("--keep-days", "1", "--hourly-keep-days", "1", "--dry-run")

    assert (ServiceTrafficVolume.objects.count(), IntervalLedger.objects.count()) == before
    assert output.startswith("would delete intervals older than 1 day(s): ")
    assert "ServiceTrafficVolume one hour: 2, CellUniqueUsers one hour: 2" in output


def test_the_next_update_does_not_bring_pruned_intervals_back(
    processed: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    prune("--keep-days", "1")

    assert "intervals processed: 0 " in run_update(NOW).stdout
    assert starts(ServiceTrafficVolume, 1) == RECENT


def test_the_service_reports_per_table_counts(processed: InputFolder) -> None:
    counts = kpi_rows_prune(five_minute_before=utc("2021-07-17T00:00"), dry_run=True)

    assert counts == {
        "ServiceTrafficVolume five minutes": 2,
        "CellUniqueUsers five minutes": 2,
        "IntervalLedger five minutes": 1,
    }


@pytest.mark.parametrize(
    "args",
    [
        ("--keep-days", "0"),
        ("--keep-days", "two"),
        ("--keep-days", "7", "--hourly-keep-days", "3"),
    ],
)
def test_it_refuses_unclear_retention(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        prune(*args)
