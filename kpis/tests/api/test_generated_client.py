"""A client generated from the live schema by openapi-python-client reads the whole API.

Each call goes to a live gunicorn; what the client parses (typed rows, enums, pages,
error bodies) must equal the raw JSON the server sent.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kpis.tests.conftest import LiveApi

pytestmark = pytest.mark.slow

PACKAGE = "kpi_api_client"
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


@pytest.fixture
def client_package(live_api: LiveApi, tmp_path: Path) -> Iterator[ModuleType]:
    """The client generated into a temporary folder from the server's own schema, imported."""
    schema = tmp_path / "schema.json"
    with urllib.request.urlopen(f"{live_api.url}/api/schema/?format=json") as response:
        schema.write_bytes(response.read())
    config = tmp_path / "client.yaml"
    config.write_text(f"project_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n")
    tools = Path(sys.executable).parent
    result = subprocess.run(
        [
            *(str(tools / "openapi-python-client"), "generate", "--path", str(schema)),
            *("--meta", "none", "--config", str(config)),
            *("--output-path", str(tmp_path / PACKAGE)),
        ],
        cwd=tmp_path,
        # Its post-hooks run ruff, which is installed beside it.
        env={**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _load(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _values(value: Any) -> Any:
    """JSON with its times as datetimes: ``Z`` and ``+00:00`` spell the same instant."""
    if isinstance(value, dict):
        return {key: _values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_values(item) for item in value]
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        return datetime.fromisoformat(value)
    return value


def _parsed_equals_raw(response: Any) -> Any:
    """The parsed body of ``response``, after checking it equals the JSON sent."""
    parsed = response.parsed
    raw = json.loads(response.content)
    as_dict = [item.to_dict() for item in parsed] if isinstance(parsed, list) else parsed.to_dict()
    assert _values(as_dict) == _values(raw)
    return parsed


def test_the_generated_client_reads_every_endpoint_with_typed_rows(
    client_package: ModuleType, live_api: LiveApi
) -> None:
    client = client_package.AuthenticatedClient(
        base_url=live_api.url, token=live_api.token, prefix="Token"
    )
    models = _load("models")
    kpis = _parsed_equals_raw(_load("api.kpis.kpis_list").sync_detailed(client=client))
    assert [(kpi.id, kpi.name) for kpi in kpis] == [
        (1, "ServiceTrafficVolume"),
        (2, "CellUniqueUsers"),
    ]

    for operation, row_type, page_type in (
        (
            "service_traffic_volume_rows",
            models.ServiceTrafficVolume,
            models.ServiceTrafficVolumePage,
        ),
        ("cell_unique_users_rows", models.CellUniqueUsers, models.CellUniqueUsersPage),
    ):
        rows_of = _load(f"api.kpis.{operation}")
        five = models.IntervalEnum.VALUE_1
        rows = _parsed_equals_raw(rows_of.sync_detailed(client=client, interval=five))
        assert len(rows) > 20
        assert all(isinstance(row, row_type) and row.interval is five for row in rows)
        assert all(isinstance(row.interval_start_timestamp, datetime) for row in rows)

        pages, offset = [], 0
        while True:
            page = rows_of.sync_detailed(client=client, interval=five, limit=7, offset=offset)
            pages.append(_parsed_equals_raw(page))
            assert isinstance(pages[-1], page_type) and pages[-1].count == len(rows)
            if pages[-1].next_ is None:
                break
            offset += 7
        assert [row.to_dict() for page in pages for row in page.results] == [
            row.to_dict() for row in rows
        ]

        start = rows[-1].interval_start_timestamp
        window = rows_of.sync_detailed(
            client=client,
            interval_start_timestamp_gte=start.astimezone(timezone(timedelta(hours=2))),
            interval_end_timestamp_lte=start + timedelta(minutes=5),
        )
        assert [row.to_dict() for row in _parsed_equals_raw(window)] == [
            row.to_dict() for row in rows if row.interval_start_timestamp == start
        ]

    hours = _load("api.intervals.intervals_list").sync_detailed(
        client=client, interval=models.IntervalEnum.VALUE_2, limit=1
    )
    ledger = _parsed_equals_raw(hours)
    assert isinstance(ledger, models.IntervalLedgerPage) and ledger.count == 2
    assert ledger.results[0].interval is models.IntervalEnum.VALUE_2
    assert ledger.next_ is not None and ledger.previous is None


def test_the_generated_client_parses_every_error(
    client_package: ModuleType, live_api: LiveApi
) -> None:
    client = client_package.AuthenticatedClient(
        base_url=live_api.url, token=live_api.token, prefix="Token"
    )
    models = _load("models")
    rows_of = _load("api.kpis.service_traffic_volume_rows")

    too_late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))
    response = rows_of.sync_detailed(client=client, interval_end_timestamp_lte=too_late)
    error = _parsed_equals_raw(response)
    assert response.status_code == 400 and isinstance(error, models.QueryError)
    assert error.interval_end_timestamp_lte == ["Must be a time from 0001-01-02 to 9999-12-30."]

    error = _parsed_equals_raw(rows_of.sync_detailed(client=client, limit=0))
    assert isinstance(error, models.QueryError) and list(error.to_dict()) == ["limit"]

    stranger = client_package.AuthenticatedClient(
        base_url=live_api.url, token="0" * 40, prefix="Token"
    )
    for call in (
        _load("api.kpis.kpis_list").sync_detailed,
        _load("api.intervals.intervals_list").sync_detailed,
        rows_of.sync_detailed,
    ):
        response = call(client=stranger)
        assert response.status_code == 401
        assert _parsed_equals_raw(response).detail == "Invalid token."


def test_the_generated_client_reads_health_anonymously_and_revalidates_by_etag(
    client_package: ModuleType, live_api: LiveApi
) -> None:
    anonymous = client_package.Client(base_url=live_api.url)
    models = _load("models")
    health_check = _load("api.health.health_check")

    # lag_seconds, and with it the tag, moves on every second: a pair of requests that
    # straddles a second gets a new body, so a few pairs are allowed to find one that does not.
    for _ in range(3):
        response = health_check.sync_detailed(client=anonymous)
        health = _parsed_equals_raw(response)
        assert response.status_code == 200 and isinstance(health, models.Health)
        assert health.status is models.HealthStatusEnum.OK
        assert isinstance(health.latest_interval_end, datetime) and health.lag_seconds > 0

        etag = response.headers["ETag"]
        again = health_check.sync_detailed(client=anonymous, if_none_match=etag)
        if again.status_code == 304:
            break
        assert again.status_code == 200 and again.headers["ETag"] != etag
        assert _parsed_equals_raw(again).lag_seconds > health.lag_seconds
    assert again.status_code == 304 and again.parsed is None and again.content == b""


def test_times_compare_as_instants() -> None:
    assert _values("2021-07-18T00:00:00Z") == _values("2021-07-18T02:00:00+02:00")
    assert _values("2021-07-18T00:00:00Z") == datetime(2021, 7, 18, tzinfo=UTC)
    assert _values("not a time") == "not a time"
