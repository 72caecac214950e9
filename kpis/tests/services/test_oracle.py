"""Every stored row against an independent, straightforward computation over the same files."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings

from kpis.models import CellUniqueUsers, ServiceTrafficVolume
from kpis.pipeline import interval_start_for_epoch_ms, parse_file_name
from kpis.sampledata import Population, write_sample_files
from kpis.tests.conftest import InputFolder, RunResult, utc

TOP_N = 4
Expected = dict[tuple[int, datetime], list[tuple[int, int]]]


def straightforward_kpis(folder: Path) -> tuple[Expected, Expected]:
    """Read every file row by row and compute both KPIs per interval and per hour."""
    volume: dict[tuple[int, datetime], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    users: dict[tuple[int, datetime], dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(folder.iterdir()):
        epoch_ms = parse_file_name(path.name)
        assert epoch_ms is not None
        start = interval_start_for_epoch_ms(epoch_ms)
        hour = start.replace(minute=0)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", newline="") as handle:
            for row in csv.DictReader(handle):
                total = int(row["bytes_uplink"]) + int(row["bytes_downlink"])
                for key in ((1, start), (2, hour)):
                    volume[key][int(row["service_id"])] += total
                    users[key][int(row["cell_id"])].add(row["msisdn"].strip())

    def top(values: dict[int, int]) -> list[tuple[int, int]]:
        return sorted(values.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]

    services = {key: top(per_service) for key, per_service in volume.items()}
    cells = {
        key: top({cell: len(subscribers) for cell, subscribers in per_cell.items()})
        for key, per_cell in users.items()
    }
    return services, cells


def stored(model: type, key_field: str, value_field: str) -> Expected:
    rows: Expected = defaultdict(list)
    for interval, start, key, value in model.objects.order_by(  # type: ignore[attr-defined]
        "interval", "interval_start_timestamp", f"-{value_field}", key_field
    ).values_list("interval", "interval_start_timestamp", key_field, value_field):
        rows[(interval, start)].append((key, value))
    return dict(rows)


@pytest.mark.django_db
@override_settings(KPI_TOP_N=TOP_N)
def test_every_row_matches_a_straightforward_computation(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    start = utc("2021-07-18T00:00")
    # Two hours, three parts per interval, one of them gzipped: subscribers recur
    # across parts, intervals and cells.
    for part, gzipped in ((0, False), (1, True), (2, False)):
        write_sample_files(
            input_folder.path,
            start=start,
            intervals=24,
            parts=1,
            rows=700 + 100 * part,
            population=Population(400, 30, 12, seed=7 + part),
            gzipped=gzipped,
        )
        for path in input_folder.path.glob("*.0.csv*"):
            path.rename(path.with_name(path.name.replace(".0.csv", f".{part + 10}.csv")))
    assert len(list(input_folder.path.iterdir())) == 72

    result = run_update("2021-07-18T02:01Z")

    assert result.exit_code == 0, result.stderr
    expected_services, expected_cells = straightforward_kpis(input_folder.path)
    assert len(expected_services) == 24 + 2
    assert stored(ServiceTrafficVolume, "service_id", "total_bytes") == expected_services
    assert stored(CellUniqueUsers, "cell_id", "number_of_unique_users") == expected_cells
    # Exactness of the hour is not the sum of its intervals' top rows.
    hour = expected_cells[(2, start)]
    interval_sum = sum(
        value
        for (kind, at), rows in expected_cells.items()
        if kind == 1 and at < start + timedelta(hours=1)
        for _, value in rows
    )
    assert sum(value for _, value in hour) < interval_sum
