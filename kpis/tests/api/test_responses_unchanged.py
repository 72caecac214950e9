"""Every API response, byte for byte, against saved bodies of a fixed database.

The saved bodies in ``golden/`` pin the exact output (JSON spacing, number and
date formats, CSV quoting and line ends, error texts) so that speed work or a
new renderer cannot change a byte unnoticed. ``KPI_GOLDEN_UPDATE=1`` rewrites
them; review the diff before committing it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kpis.models import CellUniqueUsers, IntervalLedger, IntervalType, ServiceTrafficVolume
from kpis.tests.conftest import interval_times, utc

pytestmark = pytest.mark.django_db

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = GOLDEN / "manifest.json"
FIVE, HOUR = IntervalType.FIVE_MINUTES, IntervalType.ONE_HOUR
TOKEN = "0123456789abcdef0123456789abcdef01234567"
BIGGEST = 2**63 - 1


@dataclass(frozen=True)
class Case:
    """One request: who sends it, to which path, with which extra headers."""

    name: str
    path: str
    auth: str = "token"  # "token", "none" or "wrong"
    method: str = "get"
    headers: dict[str, str] = field(default_factory=dict)


DAY = (
    "interval_start_timestamp__gte=2021-07-18T00:00:00Z"
    "&interval_end_timestamp__lte=2021-07-19T00:00:00Z"
)
CASES = [
    Case("kpi_list", "/api/KPIs/"),
    *(
        case
        for kpi in (1, 2)
        for case in (
            Case(f"kpi{kpi}_all", f"/api/KPIs/{kpi}/"),
            Case(f"kpi{kpi}_five_minutes", f"/api/KPIs/{kpi}/?interval=1"),
            Case(f"kpi{kpi}_hours", f"/api/KPIs/{kpi}/?interval=2"),
            Case(
                f"kpi{kpi}_start_gte",
                f"/api/KPIs/{kpi}/?interval_start_timestamp__gte=2021-07-18T00:05:00Z",
            ),
            Case(
                f"kpi{kpi}_start_gte_offset",
                f"/api/KPIs/{kpi}/?interval_start_timestamp__gte=2021-07-18T02:00:00%2B02:00",
            ),
            Case(
                f"kpi{kpi}_start_gte_naive",
                f"/api/KPIs/{kpi}/?interval_start_timestamp__gte=2021-07-18T00:05:00",
            ),
            Case(
                f"kpi{kpi}_end_lte",
                f"/api/KPIs/{kpi}/?interval_end_timestamp__lte=2021-07-18T00:05:00Z",
            ),
            Case(f"kpi{kpi}_one_day", f"/api/KPIs/{kpi}/?{DAY}"),
            Case(
                f"kpi{kpi}_seed_example",
                f"/api/KPIs/{kpi}/?interval_start_timestamp__gte=2021-07-18T00%3A00%3A00Z"
                "&interval_end_timestamp__lte=&interval=1",
            ),
            Case(
                f"kpi{kpi}_empty_filters",
                f"/api/KPIs/{kpi}/?interval_start_timestamp__gte=&interval_end_timestamp__lte="
                "&interval=",
            ),
            Case(
                f"kpi{kpi}_no_rows",
                f"/api/KPIs/{kpi}/?interval=2&interval_end_timestamp__lte=2021-07-18T00:30:00Z",
            ),
            Case(f"kpi{kpi}_limit", f"/api/KPIs/{kpi}/?limit=2"),
            Case(f"kpi{kpi}_limit_offset", f"/api/KPIs/{kpi}/?limit=2&offset=2"),
            Case(f"kpi{kpi}_last_page", f"/api/KPIs/{kpi}/?limit=3&offset=9"),
            Case(f"kpi{kpi}_past_the_end", f"/api/KPIs/{kpi}/?limit=3&offset=100"),
            Case(f"kpi{kpi}_offset_only", f"/api/KPIs/{kpi}/?offset=2"),
            Case(f"kpi{kpi}_limit_capped", f"/api/KPIs/{kpi}/?limit=100000&interval=2"),
            Case(f"kpi{kpi}_limit_filtered", f"/api/KPIs/{kpi}/?limit=2&offset=1&interval=1"),
            Case(f"kpi{kpi}_csv", f"/api/KPIs/{kpi}/?format=csv"),
            Case(f"kpi{kpi}_csv_filtered", f"/api/KPIs/{kpi}/?format=csv&{DAY}&interval=1"),
            Case(f"kpi{kpi}_csv_paged", f"/api/KPIs/{kpi}/?format=csv&limit=2&offset=2"),
            Case(
                f"kpi{kpi}_csv_no_rows", f"/api/KPIs/{kpi}/?format=csv&interval=2&limit=5&offset=50"
            ),
            Case(
                f"kpi{kpi}_csv_empty",
                f"/api/KPIs/{kpi}/?format=csv&interval_end_timestamp__lte=2000-01-01T00:00:00Z",
            ),
            Case(f"kpi{kpi}_accept_csv", f"/api/KPIs/{kpi}/", headers={"Accept": "text/csv"}),
            Case(
                f"kpi{kpi}_accept_json",
                f"/api/KPIs/{kpi}/?interval=2",
                headers={"Accept": "application/json"},
            ),
        )
    ),
    Case("ledger_all", "/api/intervals/"),
    Case("ledger_hours", "/api/intervals/?interval=2"),
    Case("ledger_filtered", f"/api/intervals/?{DAY}&interval=1"),
    Case("ledger_limit_offset", "/api/intervals/?limit=2&offset=1"),
    Case("ledger_csv", "/api/intervals/?format=csv"),
    Case("ledger_csv_paged", "/api/intervals/?format=csv&limit=2&offset=2"),
    Case(
        "ledger_csv_empty",
        "/api/intervals/?format=csv&interval_start_timestamp__gte=2030-01-01T00:00:00Z",
    ),
    # Errors.
    Case("error_unknown_kpi", "/api/KPIs/3/"),
    Case("error_kpi_not_a_number", "/api/KPIs/abc/"),
    Case("error_bad_interval", "/api/KPIs/1/?interval=9"),
    Case("error_bad_start", "/api/KPIs/2/?interval_start_timestamp__gte=yesterday"),
    Case("error_bad_end", "/api/KPIs/1/?interval_end_timestamp__lte=2021-13-01T00:00:00Z"),
    Case("error_limit_zero", "/api/KPIs/1/?limit=0"),
    Case("error_bad_offset", "/api/KPIs/1/?limit=5&offset=-1"),
    Case("error_csv_stays_json", "/api/KPIs/1/?format=csv&interval=9"),
    Case("error_ledger_bad_limit", "/api/intervals/?limit=ten"),
    Case("error_ledger_bad_start", "/api/intervals/?interval_start_timestamp__gte=x"),
    Case("error_post", "/api/KPIs/1/", method="post"),
    Case("error_anonymous_list", "/api/KPIs/", auth="none"),
    Case("error_anonymous_rows", "/api/KPIs/1/", auth="none"),
    Case("error_anonymous_ledger", "/api/intervals/?format=csv", auth="none"),
    Case("error_wrong_token", "/api/KPIs/2/", auth="wrong"),
]


def build_database() -> None:
    """Fixed rows with fixed ids: ties, both interval types, extreme values, odd ledger states."""
    user = User.objects.create_user("golden", password="not-a-real-password-1")
    Token.objects.create(user=user, key=TOKEN)

    # (id, start, interval, key, value); ids deliberately out of time order.
    kpi_rows = [
        (17, "2021-07-18T00:05", FIVE, 3, 11500),
        (4, "2021-07-18T00:00", HOUR, 1, 2**40),
        (9, "2021-07-18T00:00", FIVE, 3, 11500),
        (2, "2021-07-18T00:00", FIVE, 1, 16100),
        (30, "2021-07-18T00:00", FIVE, 2, 11500),
        (5, "2021-07-17T23:55", FIVE, 9, 1),
        (11, "2021-07-18T00:05", FIVE, 7, BIGGEST),
        (12, "2021-07-18T00:05", FIVE, 8, 0),
        (40, "2021-07-18T01:00", HOUR, 4, 0),
        (41, "2021-07-18T00:00", HOUR, 7, BIGGEST),
        (42, "2021-07-18T00:00", HOUR, 2, 2**40),
        (50, "2021-07-18T23:55", FIVE, 123456789012, 99),
    ]
    for row_id, start, interval, key, value in kpi_rows:
        ServiceTrafficVolume.objects.create(
            id=row_id, **interval_times(start, interval), service_id=key, total_bytes=value
        )
        CellUniqueUsers.objects.create(
            id=1000 + row_id,
            **interval_times(start, interval),
            cell_id=key,
            number_of_unique_users=min(value, 2**32 - 1),
        )

    processed = datetime.fromisoformat("2021-07-18T00:06:01.250000+00:00")
    ledger = [
        dict(id=3, **interval_times("2021-07-17T23:55", FIVE), revision=1, files_counted=2,
             rows_accepted=800, processed_at=processed - timedelta(minutes=5)),
        dict(id=1, **interval_times("2021-07-18T00:00", FIVE), revision=2, files_counted=3,
             files_failed=1, files_duplicate=1, rows_accepted=799, rows_rejected=3,
             rejects={"missing_value": 1, "malformed_integer": 2}, processed_at=processed),
        dict(id=7, **interval_times("2021-07-18T00:05", FIVE), revision=1, files_counted=2,
             files_missing=0, rows_accepted=BIGGEST,
             processed_at=processed + timedelta(seconds=1, microseconds=7)),
        dict(id=8, **interval_times("2021-07-18T00:00", HOUR), revision=3, intervals_processed=3,
             files_counted=7, files_failed=1, rows_accepted=1599, rows_rejected=3,
             rejects={"wrong_field_count": 1, "invalid_msisdn": 2}, needs_rollup=True,
             processed_at=processed),
        dict(id=9, **interval_times("2021-07-18T01:00", HOUR), revision=1, intervals_processed=12,
             files_counted=24, rows_accepted=9600, processed_at=utc("2021-07-18T02:01")),
        dict(id=2, **interval_times("2021-07-18T02:00", HOUR), revision=0, files_missing=12,
             needs_rollup=True, processed_at=None),
    ]  # fmt: skip
    for entry in ledger:
        IntervalLedger.objects.create(**entry)


def client_for(case: Case) -> APIClient:
    api = APIClient()
    if case.auth == "token":
        api.credentials(HTTP_AUTHORIZATION=f"Token {TOKEN}")
    elif case.auth == "wrong":
        api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    return api


def fetch(case: Case) -> tuple[int, str, bytes]:
    """The status, content type and exact body of ``case`` against the fixed database."""
    extra = {
        f"HTTP_{name.upper().replace('-', '_')}": value for name, value in case.headers.items()
    }
    response = getattr(client_for(case), case.method)(case.path, **extra)
    return response.status_code, response["Content-Type"], response.content


def body_file(name: str, content_type: str) -> Path:
    return GOLDEN / f"{name}.{'csv' if content_type.startswith('text/csv') else 'json'}"


@pytest.fixture
def fixed_database(monkeypatch: pytest.MonkeyPatch) -> None:
    cache.clear()  # throttle counters
    build_database()
    # And a fixed clock: the ledger's restatable depends on how long ago each hour ended.
    monkeypatch.setattr(timezone, "now", lambda: utc("2021-07-18T03:00"))


def test_the_saved_cases_are_the_cases_requested() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert sorted(manifest) == sorted(case.name for case in CASES)
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_response_is_byte_identical_to_the_saved_one(fixed_database: None, case: Case) -> None:
    status, content_type, content = fetch(case)
    if os.environ.get("KPI_GOLDEN_UPDATE") == "1":
        _save(case, status, content_type, content)
        pytest.skip("saved; review the diff of kpis/tests/api/golden/")
    saved = json.loads(MANIFEST.read_text())[case.name]
    assert (status, content_type) == (saved["status"], saved["content_type"])
    assert content == body_file(case.name, content_type).read_bytes()


def _save(case: Case, status: int, content_type: str, content: bytes) -> None:
    GOLDEN.mkdir(exist_ok=True)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    manifest[case.name] = {
        "path": case.path,
        "auth": case.auth,
        "method": case.method,
        "headers": case.headers,
        "status": status,
        "content_type": content_type,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    body_file(case.name, content_type).write_bytes(content)
