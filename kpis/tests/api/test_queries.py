"""The API's time filters read only the index range they ask for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from kpis.api.filters import IntervalFilter
from kpis.api.views import KpiRowsView
from kpis.models import ServiceTrafficVolume
from kpis.tests.conftest import utc

ONE_DAY = {
    "interval_start_timestamp__gte": "2025-06-01T00:00:00Z",
    "interval_end_timestamp__lte": "2025-06-02T00:00:00Z",
}


def one_day_queryset():
    view = KpiRowsView(kwargs={"kpi_id": "1"})
    return IntervalFilter(ONE_DAY, queryset=view.get_queryset()).qs


@pytest.mark.django_db
def test_the_end_filter_keeps_exactly_the_intervals_ending_in_time() -> None:
    start = utc("2025-05-31T22:00")
    for index in range(60):  # five-minute and hourly rows around the day's edges
        moment = start + index * timedelta(hours=1)
        for interval, length in ((1, timedelta(minutes=5)), (2, timedelta(hours=1))):
            ServiceTrafficVolume.objects.create(
                interval_start_timestamp=moment,
                interval_end_timestamp=moment + length,
                interval=interval,
                service_id=index,
                total_bytes=1,
            )
    rows = list(one_day_queryset().values_list("interval_start_timestamp", "interval"))
    assert rows[0] == (utc("2025-06-01T00:00"), 1)
    assert rows[-1] == (utc("2025-06-01T23:00"), 2)
    assert len(rows) == 48


@pytest.mark.django_db
def test_the_one_day_query_reads_one_day_of_the_start_index() -> None:
    plan = one_day_queryset().explain()
    if connection.vendor == "sqlite":
        assert "USING INDEX" in plan
        assert "interval_start_timestamp>? AND interval_start_timestamp<?" in plan
    else:
        assert "range" in plan
        assert "kpis_servic_interva" in plan
