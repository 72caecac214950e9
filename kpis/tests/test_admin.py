"""The read-only admin: counts readable at a glance, every time with its zone."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client

from kpis.models import (
    CellUniqueUsers,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
    ServiceTrafficVolume,
)
from kpis.tests.conftest import utc

pytestmark = pytest.mark.django_db

START = utc("2021-07-18T00:05")
END = START + timedelta(minutes=5)
# How a list shows a time: it may wrap between date, clock and zone, never inside the date.
LISTED_START = '<span class="nowrap">2021-07-18</span> <span class="nowrap">00:05:00</span> UTC'


def five_minutes() -> dict[str, object]:
    return {
        "interval": IntervalType.FIVE_MINUTES,
        "interval_start_timestamp": START,
        "interval_end_timestamp": END,
    }


def page(client: Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def test_kpi_lists_show_counts_with_thousands_separators(admin_client: Client) -> None:
    ServiceTrafficVolume.objects.create(**five_minutes(), service_id=7, total_bytes=1234567890123)
    CellUniqueUsers.objects.create(**five_minutes(), cell_id=4711, number_of_unique_users=25000)

    services = page(admin_client, "/admin/kpis/servicetrafficvolume/")
    cells = page(admin_client, "/admin/kpis/celluniqueusers/")

    assert "1,234,567,890,123" in services
    assert "25,000" in cells
    # Keys are names, not quantities: no separator.
    assert ">7<" in services and ">4711<" in cells
    for listing in (services, cells):
        assert LISTED_START in listing
        assert "0:10:00</span> UTC" in listing


def test_the_ledger_and_file_lists_show_rows_grouped_and_times_with_their_zone(
    admin_client: Client,
) -> None:
    IntervalLedger.objects.create(
        **five_minutes(), revision=1, files_counted=2, rows_accepted=1440000, processed_at=END
    )
    record = InputFileRecord.objects.create(
        name="network.records-1626567001000.0.csv",
        interval_start_timestamp=START,
        size=1,
        mtime_ns=1,
        status=InputFileStatus.COUNTED,
        rows_accepted=20000,
        rows_rejected=1234,
        processed_at=END + timedelta(seconds=3),
    )

    ledger = page(admin_client, "/admin/kpis/intervalledger/")
    files = page(admin_client, "/admin/kpis/inputfilerecord/")
    detail = page(admin_client, f"/admin/kpis/inputfilerecord/{record.pk}/change/")

    assert "1,440,000" in ledger and LISTED_START in ledger
    assert "20,000" in files and "1,234" in files and LISTED_START in files
    assert "00:10:03</span> UTC" in files
    # The detail page: 24-hour, zone named, as on the API and the dashboard.
    assert "2021-07-18 00:10:03 UTC" in detail
    assert not re.search(r"\b[ap]\.m\.", detail)


def test_the_admin_has_no_sidebar_taking_width_from_its_lists(admin_client: Client) -> None:
    assert 'id="nav-sidebar"' not in page(admin_client, "/admin/kpis/intervalledger/")
